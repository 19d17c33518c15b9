"""A loopback TCP forwarder the KMS tests put between the gateway and a
real KMS server, to cut the network without losing the server's state
(moto keeps its keys in memory only).

Modes: ``forward`` (normal), ``down`` (the port refuses connections and open
ones are closed: an unreachable KMS) and ``blackhole`` (connections are
accepted and never answered: a hung KMS). ``delay`` (seconds) holds every
answer back that long: a slow KMS.
"""

from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.mode = "forward"
        self.delay = 0.0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listen()

    # -- control -----------------------------------------------------------
    def down(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            self.mode = "down"
            listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the socket accepting until that call returns.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        self._drop_open()

    def blackhole(self) -> None:
        """Accept connections, never answer."""
        self._drop_open()
        with self._lock:
            self.mode = "blackhole"
        self._ensure_listening()

    def up(self) -> None:
        self._drop_open()
        with self._lock:
            self.mode = "forward"
        self._ensure_listening()

    def close(self) -> None:
        self.down()

    # -- internals ---------------------------------------------------------
    def _ensure_listening(self) -> None:
        with self._lock:
            listening = self._listener is not None
        if not listening:
            self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _drop_open(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                self._open.append(client)
            if mode == "down":
                client.close()
                return
            if mode == "blackhole":
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.append(upstream)
            for a, b, slow in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(a, b, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        pipe(src, dst, (lambda: self.delay) if slow else (lambda: 0.0))


def pipe(src: socket.socket, dst: socket.socket, delay=lambda: 0.0) -> None:
    """Copies `src` to `dst` until either side closes (waiting `delay()`
    seconds before each piece), then shuts both down."""
    try:
        while data := src.recv(65536):
            if wait := delay():
                time.sleep(wait)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
