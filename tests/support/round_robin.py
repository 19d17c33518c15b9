"""A loopback TCP front that sends each new connection to the next of
several gateways, as a load balancer without stickiness would. Clients
that open a connection per request (or several in parallel, as aws-cli,
rclone and s3cmd do) have their requests spread over every gateway.
"""

from __future__ import annotations

import itertools
import socket
import threading

from tcp_proxy import pipe


class RoundRobin:
    def __init__(self, targets: list[int]):
        self._targets = itertools.cycle(list(targets))
        self._lock = threading.Lock()
        self.counts: dict[int, int] = {t: 0 for t in targets}
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                target = next(self._targets)
                self.counts[target] += 1
            threading.Thread(target=self._serve, args=(client, target), daemon=True).start()

    def _serve(self, client: socket.socket, target: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", target), timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
        pipe(client, upstream)

