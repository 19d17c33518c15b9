"""A real Garage 2.x cluster on loopback: three nodes in one zone,
replication factor 3, each with its own RPC, S3 and admin port and its own
directories under `base_dir`, one S3 key imported with the right to create
buckets.

    with GarageCluster(tmp_path / "garage") as g:
        client = g.client()             # boto3, path-style, SigV4, region us-east-1
        g.stop_s3()                     # every node down: the S3 port refuses connections
        g.start_s3()                    # back, same ports, same metadata

Its interface is SeaweedCluster's (`s3_endpoint`, `access_key`,
`secret_key`, `client()`, `stop_s3()`, `start_s3()`), so the suites run on
either.

The `garage` binary is `$GARAGE_BIN`, else `garage` on PATH or in
~/.cargo/bin (`cargo install --locked garage`; `make test-garage` does).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

NODES = 3


def find_garage() -> str:
    for c in (os.environ.get("GARAGE_BIN"), shutil.which("garage"), str(Path.home() / ".cargo/bin/garage")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError("garage binary not found: cargo install --locked garage")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GarageCluster:
    def __init__(self, base_dir: Path, nodes: int = NODES):
        self.base_dir = Path(base_dir).resolve()
        self.garage = find_garage()
        self.nodes = nodes
        self.rpc_secret = secrets.token_hex(32)
        # Garage's own key formats: GK + 24 hex digits, and 64 hex digits.
        self.access_key = "GK" + secrets.token_hex(12)
        self.secret_key = secrets.token_hex(32)
        self.region = "us-east-1"
        self.procs: list[subprocess.Popen] = []
        self.configs: list[Path] = []
        self.s3_ports: list[int] = []

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_ports[0]}"

    def _write_config(self, i: int) -> Path:
        node = self.base_dir / f"node{i}"
        (node / "meta").mkdir(parents=True, exist_ok=True)
        (node / "data").mkdir(parents=True, exist_ok=True)
        rpc, s3, admin = _free_port(), _free_port(), _free_port()
        self.s3_ports.append(s3)
        config = node / "garage.toml"
        config.write_text(
            f'metadata_dir = "{node / "meta"}"\n'
            f'data_dir = "{node / "data"}"\n'
            'db_engine = "sqlite"\n'
            f"replication_factor = {self.nodes}\n"
            f'rpc_bind_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_public_addr = "127.0.0.1:{rpc}"\n'
            f'rpc_secret = "{self.rpc_secret}"\n'
            "[s3_api]\n"
            f's3_region = "{self.region}"\n'
            f'api_bind_addr = "127.0.0.1:{s3}"\n'
            'root_domain = ".s3.garage.localhost"\n'
            "[admin]\n"
            f'api_bind_addr = "127.0.0.1:{admin}"\n'
        )
        return config

    def cli(self, *args: str, node: int = 0) -> str:
        done = subprocess.run([self.garage, "-c", str(self.configs[node]), *args],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _until(self, what: str, attempt, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return attempt()
            except Exception as e:  # noqa: BLE001 - not yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Garage: {what}: {e}") from e
                time.sleep(0.5)

    def _spawn(self) -> None:
        for config in self.configs:
            log = open(config.parent / "garage.log", "ab")
            env = {**os.environ, "RUST_LOG": "garage=warn"}
            self.procs.append(subprocess.Popen([self.garage, "-c", str(config), "server"],
                                               stdout=log, stderr=subprocess.STDOUT, env=env))

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.configs = [self._write_config(i) for i in range(self.nodes)]
        # A cluster a test process leaves running (the suites' per-process
        # one) goes with the process.
        atexit.register(self.stop)
        self._spawn()
        ids = self._connect()
        for node_id in ids:
            self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node_id.split("@")[0])
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "sealgate", self.access_key, self.secret_key)
        self.cli("key", "allow", "--create-bucket", self.access_key)
        self._until("S3 ready", self._probe)

    def _connect(self) -> list[str]:
        """Node 0 connects to the others; returns the nodes' ids."""
        ids = [self._until(f"node {i} id", lambda i=i: self.cli("node", "id", "-q", node=i).strip())
               for i in range(self.nodes)]
        for peer in ids[1:]:
            self._until("connect", lambda peer=peer: self.cli("node", "connect", peer))
        return ids

    def _probe(self) -> None:
        c = self.client()
        name = "garage-ready-" + secrets.token_hex(4)
        c.create_bucket(Bucket=name)
        c.put_object(Bucket=name, Key="probe", Body=b"ready")
        assert c.get_object(Bucket=name, Key="probe")["Body"].read() == b"ready"
        c.delete_object(Bucket=name, Key="probe")
        c.delete_bucket(Bucket=name)

    def client(self, node: int = 0):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_ports[node]}",
                            region_name=self.region, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def stop_s3(self) -> None:
        """Every node stopped (one node's S3 port is the gateways' endpoint)."""
        self.stop()

    def start_s3(self) -> None:
        """The nodes again, with their metadata: the layout and key stay."""
        self._spawn()
        self._connect()
        self._until("S3 ready after restart", self._probe)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def __enter__(self) -> "GarageCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
