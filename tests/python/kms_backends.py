"""The three KMS backends as the tests drive them: how to point a gateway at
each, how to make it unreachable and bring it back, and how to look at the
keys on the KMS itself (never through the gateway).

- local: the embedded key store (files in a directory).
- kmip: a real PyKMIP server (tests/support/kmip_server.py) with mutual TLS;
  "down" stops the server process, "up" starts it again on the same port
  and database.
- aws: a real moto server speaking the AWS KMS API, behind a TCP proxy:
  moto keeps its keys in memory only, so an outage is simulated by cutting
  the network, not by stopping the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3

import kmip_server
from tcp_proxy import TcpProxy

AWS_REGION = "us-east-1"
AWS_KEY_ID = "testing"
AWS_SECRET = "testing"
# Short enough that fail-closed tests are quick, long enough for a loaded CI machine.
KMS_TIMEOUT_MS = 3000


class LocalBackend:
    name = "local"

    def __init__(self, base: Path):
        self.base = base

    def gateway_args(self) -> list[str]:
        return []

    def key_exists(self, gateway, key_id: str) -> bool:
        return (gateway.kms_dir / f"{key_id}.key").exists()

    def close(self) -> None:
        pass


class KmipBackend:
    name = "kmip"

    def __init__(self, base: Path):
        self.dir = str(base / "kmip")
        self.proc, self.port = kmip_server.start(self.dir)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def gateway_args(self, endpoints: list[str] | None = None) -> list[str]:
        return [
            "--kms", "kmip",
            "--kmip-endpoints", ",".join(endpoints or [f"127.0.0.1:{self.port}"]),
            "--kmip-ca", self.path("ca.pem"),
            "--kmip-cert", self.path("client.pem"),
            "--kmip-key", self.path("client.key"),
            "--kms-timeout-ms", str(KMS_TIMEOUT_MS),
        ]

    def down(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def up(self) -> None:
        assert self.proc is None
        self.proc, _ = kmip_server.start(self.dir, self.port)

    def client(self):
        from kmip.pie.client import ProxyKmipClient

        return ProxyKmipClient(
            hostname="127.0.0.1",
            port=self.port,
            cert=self.path("client.pem"),
            key=self.path("client.key"),
            ca=self.path("ca.pem"),
            config_file="/dev/null",
        )

    def keys_named(self, name: str) -> list[str]:
        """Unique identifiers of the keys with this Name (as sealgate's own identity sees them)."""
        from kmip.core import enums
        from kmip.core.factories.attributes import AttributeFactory

        attribute = AttributeFactory().create_attribute(enums.AttributeType.NAME, name)
        with self.client() as client:
            return list(client.locate(attributes=[attribute]))

    def key_exists(self, gateway, key_id: str) -> bool:
        from kmip.pie import exceptions

        with self.client() as client:
            try:
                client.get_attributes(key_id, ["State"])
                return True
            except exceptions.KmipOperationFailure:
                return False

    def close(self) -> None:
        self.down()


class AwsBackend:
    name = "aws"

    def __init__(self, base: Path):
        self.moto_port = kmip_server.free_port()
        self.log = open(base / "moto.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        kmip_server.wait_for_port(self.moto_port, self.proc)
        self.proxy = TcpProxy(self.moto_port)

    def gateway_args(self) -> list[str]:
        return [
            "--kms", "aws",
            "--aws-kms-endpoint", f"http://127.0.0.1:{self.proxy.port}",
            "--aws-kms-region", AWS_REGION,
            "--aws-access-key-id", AWS_KEY_ID,
            "--aws-secret-access-key", AWS_SECRET,
            "--kms-timeout-ms", str(KMS_TIMEOUT_MS),
        ]

    def down(self) -> None:
        self.proxy.down()

    def hang(self) -> None:
        self.proxy.blackhole()

    def up(self) -> None:
        self.proxy.up()

    def client(self):
        return boto3.client(
            "kms", endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name=AWS_REGION,
            aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET,
        )

    def keys_tagged(self, bucket: str) -> list[str]:
        kms = self.client()
        found = []
        for key in kms.list_keys()["Keys"]:
            tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
            if {"TagKey": "sealgate:bucket", "TagValue": bucket} in tags:
                found.append(key["KeyId"])
        return found

    def key_state(self, key_id: str) -> str:
        return self.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]

    def key_exists(self, gateway, key_id: str) -> bool:
        return self.key_state(key_id) == "Enabled"

    def close(self) -> None:
        self.proxy.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


BACKENDS = {"local": LocalBackend, "kmip": KmipBackend, "aws": AwsBackend}


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.2):
    """Polls `predicate` until it returns something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
