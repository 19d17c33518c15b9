#!/usr/bin/env python3
"""A real PyKMIP server for the KMIP KMS tests.

As a script:

    python3 tests/support/kmip_server.py --dir D [--port P] [--certs-only]

writes into D an EC P-256 test CA (``ca.pem``), a server certificate for
127.0.0.1/localhost (``server.pem``/``server.key``), two client certificates
(``client.pem``/``client.key``, CN ``sealgate``; ``other-client.pem``/
``other-client.key``, CN ``intruder``: another identity, which PyKMIP makes a
stranger to sealgate's keys), a PyKMIP ``server.conf`` and then runs the
server in the foreground until SIGINT/SIGTERM (or, with ``--exit-on-stdin-eof``,
until its standard input closes: a test that dies does not leave it behind).
Certificates and the database already in D are reused, so a restart on the
same directory serves the same keys. The chosen port is printed as
``port=P`` before serving. The log is ``D/server.log``.

As a module: ``start(dir, port=None)`` runs it as a subprocess and returns
``(process, port)`` once the port accepts connections.

Why EC P-256: PyKMIP 0.11 speaks TLS 1.2 only, and with an RSA certificate
the suites it offers that rustls also offers are none (only CBC ones remain).
"""

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

# PyKMIP 0.11 refers to ciphers cryptography has moved to "decrepit"; they
# still work and we use none of them.
warnings.filterwarnings("ignore", message=".*has been moved to cryptography.hazmat.decrepit")

CLIENT_CN = "sealgate"
OTHER_CLIENT_CN = "intruder"


def _write(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key):
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(subject_cn, issuer_name, issuer_key, public_key, extensions):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(directory, stem, cn, ca_cert, ca_key, eku, san=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    extensions = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([eku]), False),
    ]
    if san:
        extensions.append((x509.SubjectAlternativeName(san), False))
    cert = _cert(cn, ca_cert.subject, ca_key, key.public_key(), extensions)
    _write(os.path.join(directory, stem + ".key"), _key_pem(key), private=True)
    _write(os.path.join(directory, stem + ".pem"), cert.public_bytes(serialization.Encoding.PEM))


def generate_certs(directory):
    """Writes the CA, server and client certificates (once: kept if present)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "other-client.pem")):
        return
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "sealgate test KMIP CA")])
    ca_cert = _cert(
        "sealgate test KMIP CA",
        ca_name,
        ca_key,
        ca_key.public_key(),
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
        ],
    )
    _write(os.path.join(directory, "ca.key"), _key_pem(ca_key), private=True)
    _write(os.path.join(directory, "ca.pem"), ca_cert.public_bytes(serialization.Encoding.PEM))
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    _leaf(directory, "server", "localhost", ca_cert, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, san)
    _leaf(directory, "client", CLIENT_CN, ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    # Written last: its presence means the whole set is there.
    _leaf(directory, "other-client", OTHER_CLIENT_CN, ca_cert, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(directory, port):
    path = os.path.join(directory, "server.conf")
    d = os.path.abspath(directory)
    lines = [
        "[server]",
        "hostname=127.0.0.1",
        "port=%d" % port,
        "certificate_path=%s" % os.path.join(d, "server.pem"),
        "key_path=%s" % os.path.join(d, "server.key"),
        "ca_path=%s" % os.path.join(d, "ca.pem"),
        "auth_suite=TLS1.2",
        "enable_tls_client_auth=True",
        "database_path=%s" % os.path.join(d, "pykmip.sqlite"),
        "logging_level=INFO",
        "",
    ]
    _write(path, "\n".join(lines).encode())
    return path


def _watch_stdin():
    """Interrupts the server once stdin reaches EOF (the test process is gone).

    Reads the raw descriptor, not sys.stdin: a thread blocked in sys.stdin
    holds its buffer lock, and a process multiprocessing forks then (PyKMIP
    starts two) deadlocks closing its copy of sys.stdin."""

    def watch():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()


def _quick_exit(server):
    """Stops without KmipServer.stop(), which joins every session thread for up
    to 10 s each: the database is committed after every operation, so there is
    nothing to flush. The listening socket closes first, so clients see a
    refused connection at once."""
    try:
        server._socket.close()
    except Exception:
        pass
    monitor = getattr(server, "policy_monitor", None)
    if monitor is not None:
        monitor.stop()
        monitor.join(2)
    manager = getattr(server, "manager", None)
    if manager is not None:
        manager.shutdown()
    sys.stdout.flush()
    os._exit(0)


def serve(directory, port, exit_on_stdin_eof=False):
    from kmip.services.server.server import KmipServer

    config = write_config(directory, port)
    server = KmipServer(config_path=config, log_path=os.path.join(os.path.abspath(directory), "server.log"))
    server.start()
    if exit_on_stdin_eof:
        # Only now: start() forks the policy monitor and the manager.
        _watch_stdin()
    print("port=%d" % port, flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        _quick_exit(server)


def wait_for_port(port, process=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("the PyKMIP server exited with %s" % process.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the PyKMIP server did not listen on port %d within %.0f s" % (port, timeout))


def start(directory, port=None):
    """Runs the server as a subprocess; returns (process, port) once it listens.
    Stop it with process.send_signal(signal.SIGINT). It also stops when
    process.stdin is closed, or when this process dies."""
    generate_certs(directory)
    port = port or free_port()
    with open(os.path.join(directory, "stdout.log"), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--dir", directory, "--port", str(port), "--exit-on-stdin-eof"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process)
    except Exception:
        process.kill()
        raise
    return process, port


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="certificates, config, database and log go here")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--certs-only", action="store_true", help="write the certificates and exit")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when standard input closes")
    args = parser.parse_args()
    generate_certs(args.dir)
    if args.certs_only:
        return
    serve(args.dir, args.port or free_port(), args.exit_on_stdin_eof)


if __name__ == "__main__":
    main()
