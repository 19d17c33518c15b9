"""TLS on both listeners, with certificates the test makes: boto3, aws-cli
and curl trusting the test CA; certificates reloaded on SIGHUP without
dropping open connections; an admin listener beyond loopback needs TLS.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time

import boto3
import pytest
import requests
from botocore.config import Config

import kmip_server
from conftest import Gateway


def _certs(directory) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost (the KMIP tests' generator)."""
    kmip_server.generate_certs(str(directory))
    return {name: directory / f"{name}.pem" for name in ("ca", "server")} | {"key": directory / "server.key"}


class TlsGateway(Gateway):
    def __init__(self, base_dir, certs, admin_tls=True):
        super().__init__(base_dir)
        self.certs = certs
        self.admin_tls = admin_tls

    def command(self):
        live = self.base_dir / "live"
        live.mkdir(exist_ok=True)
        for name in ("server.pem", "server.key"):
            if not (live / name).exists():
                shutil.copy(self.certs["server" if name.endswith("pem") else "key"], live / name)
        cmd = super().command() + ["--tls-cert", str(live / "server.pem"), "--tls-key", str(live / "server.key")]
        if self.admin_tls:
            cmd += ["--admin-tls-cert", str(live / "server.pem"), "--admin-tls-key", str(live / "server.key")]
        return cmd

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"https://127.0.0.1:{self.admin_port}"

    def tls_client(self, ca):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, verify=str(ca),
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )


def test_both_listeners_speak_tls_to_boto3_awscli_and_curl(tmp_path):
    certs = _certs(tmp_path / "pki")
    gw = TlsGateway(tmp_path / "gw", certs)
    gw.start()
    try:
        s3 = gw.tls_client(certs["ca"])
        s3.create_bucket(Bucket="tls")
        s3.put_object(Bucket="tls", Key="k", Body=b"over TLS")
        assert s3.get_object(Bucket="tls", Key="k")["Body"].read() == b"over TLS"

        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=gw.access_key, AWS_SECRET_ACCESS_KEY=gw.secret_key,
                   AWS_DEFAULT_REGION=gw.region, AWS_MAX_ATTEMPTS="1",
                   AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
        src = tmp_path / "up.bin"
        src.write_bytes(os.urandom(300_000))
        out = subprocess.run([sys.executable, "-m", "awscli", "--endpoint-url", gw.endpoint, "--ca-bundle",
                              str(certs["ca"]), "s3", "cp", str(src), "s3://tls/cli.bin"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert s3.get_object(Bucket="tls", Key="cli.bin")["Body"].read() == src.read_bytes()

        health = subprocess.run(["curl", "-sS", "--cacert", str(certs["ca"]), "-H",
                                 f"Authorization: Bearer {gw.admin_token}", f"{gw.admin}/health"],
                                capture_output=True, text=True, timeout=30)
        assert health.returncode == 0 and '"status":"ok"' in health.stdout, health.stdout + health.stderr
        # Plain HTTP on a TLS port gets no S3 answer.
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{gw.port}/", timeout=5).raise_for_status()
        # A client that does not trust the CA refuses the certificate.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{gw.endpoint}/", timeout=5)
    finally:
        gw.stop()


def _served_cert(port: int) -> bytes:
    return ssl.get_server_certificate(("127.0.0.1", port)).encode()


def test_sighup_reloads_certificates_and_keeps_open_connections(tmp_path):
    certs = _certs(tmp_path / "pki")
    gw = TlsGateway(tmp_path / "gw", certs)
    gw.start()
    try:
        # A client that trusts only the first CA, with a connection open.
        old_client = gw.tls_client(certs["ca"])
        assert old_client.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
        before = _served_cert(gw.port)

        renewed = _certs(tmp_path / "pki2")
        shutil.copy(renewed["server"], gw.base_dir / "live" / "server.pem")
        shutil.copy(renewed["key"], gw.base_dir / "live" / "server.key")
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _served_cert(gw.port) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _served_cert(gw.port) != before, "the renewed certificate is not served"
        # The connection opened before the reload still carries requests
        # (a new one would fail: this client does not trust the new CA).
        assert old_client.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
        # New clients verify against the renewed CA.
        assert gw.tls_client(renewed["ca"]).list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
        # A broken file on the next SIGHUP keeps the renewed certificate.
        (gw.base_dir / "live" / "server.pem").write_text("not a certificate")
        gw.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert gw.is_running()
        assert gw.tls_client(renewed["ca"]).list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        gw.stop()


def test_an_admin_listener_beyond_loopback_needs_tls(tmp_path):
    certs = _certs(tmp_path / "pki")
    gw = TlsGateway(tmp_path / "gw", certs, admin_tls=False)
    command = gw.command()
    command[command.index("--admin-listen") + 1] = f"0.0.0.0:{gw.admin_port}"
    out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "not on loopback" in out.stdout + out.stderr, out.stderr
