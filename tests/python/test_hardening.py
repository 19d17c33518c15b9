"""What anyone who can reach the port, or an operator's slip, must not be
able to do: hold connections forever, open unbounded numbers of them, or
make the gateway delete data at start-up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Gateway, free_port


def _data_files(gw: Gateway) -> set[str]:
    root = gw.data_dir / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _run_to_exit(gw: Gateway, timeout: float = 30) -> subprocess.CompletedProcess:
    """Starts the binary with gw's flags and waits for it to exit on its own."""
    return subprocess.run(gw.command(), capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if not k.startswith(("SEALGATE_", "AWS_"))})


def _seed(gw: Gateway) -> None:
    s3 = gw.client()
    s3.create_bucket(Bucket="seeded")
    for i in range(3):
        s3.put_object(Bucket="seeded", Key=f"k{i}", Body=os.urandom(1000))


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_data_dir_with_object_files_but_no_metadata_refuses_to_start_and_deletes_nothing(
    private_gateway, damage
):
    gw = private_gateway
    _seed(gw)
    gw.stop()
    files = _data_files(gw)
    assert len(files) == 3
    db = gw.data_dir / "metadata.redb"
    if damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    out = _run_to_exit(gw)
    assert out.returncode != 0
    assert "metadata" in (out.stdout + out.stderr), out.stderr
    assert _data_files(gw) == files, "start-up deleted object files"


def test_a_second_instance_on_the_same_data_dir_exits_and_touches_nothing(private_gateway, tmp_path):
    gw = private_gateway
    _seed(gw)
    # An upload in flight on the first instance keeps its bytes in tmp/.
    in_flight = gw.data_dir / "tmp" / "in-flight-upload"
    in_flight.write_bytes(b"x" * 100)
    second = Gateway(gw.base_dir)
    second.port, second.admin_port = free_port(), free_port()
    out = _run_to_exit(second)
    assert out.returncode != 0
    assert "in use" in (out.stdout + out.stderr), out.stderr
    assert in_flight.exists(), "the second instance wiped the first one's temp files"
    assert gw.client().get_object(Bucket="seeded", Key="k0")["ContentLength"] == 1000


def _signed_put_head(gw: Gateway, bucket: str, key: str, body: bytes) -> bytes:
    """The head of a SigV4-signed PUT of `body` (signed payload hash), to send by hand."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    req = AWSRequest(method="PUT", url=f"{gw.endpoint}/{bucket}/{key}", data=body)
    req.context["client_config"] = Config(s3={"payload_signing_enabled": True})
    S3SigV4Auth(Credentials(gw.access_key, gw.secret_key), "s3", gw.region).add_auth(req)
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: {gw.host}\r\nContent-Length: {len(body)}\r\n"
    for name, value in req.headers.items():
        head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n"


def _limited_gateway(tmp_path_factory, *flags: str) -> Gateway:
    gw = Gateway(tmp_path_factory.mktemp("limits"), kms_args=list(flags))
    gw.start()
    return gw


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the peer closes (or resets) the connection within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_slow_headers_a_stalled_body_and_an_idle_connection_are_disconnected(tmp_path_factory):
    gw = _limited_gateway(tmp_path_factory, "--header-read-timeout", "2s", "--body-stall-timeout", "2s",
                          "--idle-timeout", "2s")
    try:
        # Headers never finished.
        slow = socket.create_connection(("127.0.0.1", gw.port))
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert _closed_within(slow, 10)
        # A body that stops after 10 of 1000 bytes: 400 RequestTimeout, then closed.
        s3 = gw.client()
        s3.create_bucket(Bucket="stall")
        stalled = socket.create_connection(("127.0.0.1", gw.port))
        stalled.sendall(_signed_put_head(gw, "stall", "k", b"y" * 1000) + b"y" * 10)
        stalled.settimeout(15)
        answer = b""
        try:
            while chunk := stalled.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
        assert b"<Code>RequestTimeout</Code>" in answer, answer
        with pytest.raises(Exception):
            s3.head_object(Bucket="stall", Key="k")
        # An idle keep-alive connection after a complete request.
        idle = socket.create_connection(("127.0.0.1", gw.port))
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(5)
        assert idle.recv(65536).startswith(b"HTTP/1.1 ")
        started = time.monotonic()
        assert _closed_within(idle, 10)
        assert time.monotonic() - started >= 1.5
        # The gateway still serves.
        assert s3.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        gw.stop()


def test_connections_beyond_the_cap_wait_instead_of_being_served(tmp_path_factory):
    gw = _limited_gateway(tmp_path_factory, "--max-connections", "4")
    try:
        held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(4)]
        for sock in held:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 ")
        waiting = socket.create_connection(("127.0.0.1", gw.port))
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        waiting.settimeout(1.5)
        with pytest.raises(socket.timeout):
            waiting.recv(65536)
        held[0].close()
        waiting.settimeout(10)
        assert waiting.recv(65536).startswith(b"HTTP/1.1 ")
        for sock in held[1:]:
            sock.close()
    finally:
        gw.stop()
