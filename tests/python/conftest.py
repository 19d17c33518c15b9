"""Fixtures that run the real sealgate binary.

Every pytest-xdist worker is its own pytest session, so the session-scoped
`gateway` fixture gives each worker a private server process, private ports
and private directories. Tests that restart or kill the server use
`private_gateway` instead so they never disturb the shared one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

import helpers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from garage import GarageCluster  # noqa: E402
from seaweed import SeaweedCluster  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "sealgate"
# The default module as built against contract 1.0.0 (guest/fixtures/contract-1.0.0).
CONTRACT_1_DEFAULT = REPO_ROOT / "guest" / "fixtures" / "contract-1.0.0" / "default.wasm"
POLICIES_DIR = Path(os.environ.get("SEALGATE_POLICIES", REPO_ROOT / "target" / "policies"))

# Where the suites' gateways keep objects: the embedded store (local), a
# SeaweedFS upstream (s3) or a Garage one (garage, make test-garage).
TEST_BACKEND = os.environ.get("SEALGATE_TEST_BACKEND", "local")

ACCESS_KEY = "sealgate-test-ak"
SECRET_KEY = "sealgate-test-secret-key-0123456789"
ADMIN_TOKEN = "sealgate-test-admin-token"
REGION = "us-east-1"

BOB_ACCESS_KEY = "bob"
BOB_SECRET_KEY = "bobsecret123"
USERS_TOML = f"""
[[user]]
access_key = "{BOB_ACCESS_KEY}"
secret_key = "{BOB_SECRET_KEY}"
"""

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def sealgate_bin() -> Path:
    path = Path(os.environ.get("SEALGATE_BIN", DEFAULT_BIN))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"sealgate binary not found at {path}; run `cargo build --release` "
            "or set SEALGATE_BIN",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _force_trailer_checksums(model, params, **_):
    """Make botocore use its TLS behaviour over plain HTTP.

    Over https boto3 sends PutObject/UploadPart bodies as aws-chunked with
    x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER and a CRC32
    trailer; over http it falls back to a header checksum. This hook flips the
    already-resolved checksum location to "trailer", exactly what botocore
    does itself for https endpoints.
    """
    algorithm = params.get("context", {}).get("checksum", {}).get("request_algorithm")
    if model.has_streaming_input and isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


# Virtual-hosted-style requests name the bucket in Host: <bucket>.<domain>.
VIRTUAL_HOST_DOMAIN = "s3.sealgate.test"


class Gateway:
    """One sealgate process plus its data dir and (separate) local KMS dir."""

    def __init__(self, base_dir: Path, users_toml: str | None = USERS_TOML, kms_args: list[str] | None = None,
                 backend_args: list[str] | None = None, extra_args: list[str] | None = None):
        self.base_dir = Path(base_dir)
        # Any other flags a test needs (appended last).
        self.extra_args = list(extra_args or [])
        # Flags choosing and configuring the KMS backend (local when empty).
        self.kms_args = list(kms_args or [])
        # Flags choosing the storage backend (the embedded one when empty);
        # SEALGATE_TEST_BACKEND=s3 runs a suite against a SeaweedFS upstream,
        # SEALGATE_TEST_BACKEND=garage against a Garage one.
        self.backend_args = list(backend_args) if backend_args is not None else default_backend_args()
        self.data_dir = self.base_dir / "data"
        self.kms_dir = self.base_dir / "kms"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.kms_dir.mkdir(parents=True, exist_ok=True)
        self.users_file = None
        if users_toml is not None:
            self.users_file = self.base_dir / "users.toml"
            self.users_file.write_text(users_toml)
        self.log_path = self.base_dir / "sealgate.log"
        self.port = free_port()
        self.admin_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.admin_token = ADMIN_TOKEN
        self.region = REGION
        # The suites also cover boto3's default presigning, which is SigV2:
        # allowed here explicitly (the gateway refuses it by default; see
        # test_hardening.py).
        self.allow_sigv2 = True

    # -- addresses ---------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    # -- process control ---------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(sealgate_bin()), "serve",
            "--listen", self.host,
            "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            "--access-key", self.access_key,
            "--secret-key", self.secret_key,
            "--admin-token", self.admin_token,
            "--domain", VIRTUAL_HOST_DOMAIN,
            "--region", self.region,
        ]
        if self.users_file is not None:
            cmd += ["--users", str(self.users_file)]
        if self.allow_sigv2:
            cmd += ["--allow-sigv2"]
        # The local KMS key store always lives outside the data dir.
        cmd += ["--kms-local-dir", str(self.kms_dir)]
        # SEALGATE_TEST_POLICY runs a suite with another module loaded at
        # start (make test: the rules suites on the contract 1.0.0 module).
        policy = os.environ.get("SEALGATE_TEST_POLICY")
        if policy and "--policy" not in self.extra_args:
            cmd += ["--policy", policy]
        return cmd + self.kms_args + self.backend_args + self.extra_args

    def upstream_flag(self, name: str) -> str | None:
        args = self.backend_args
        return args[args.index(name) + 1] if name in args else None

    def upstream_client(self):
        """boto3 straight to this gateway's upstream (None on `local`)."""
        endpoint = self.upstream_flag("--upstream-endpoint")
        if endpoint is None:
            return None
        return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id=self.upstream_flag("--upstream-access-key"),
                            aws_secret_access_key=self.upstream_flag("--upstream-secret-key"),
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def stored_objects(self, include_state: bool = False) -> set:
        """What holds object data where this gateway stores it: the files of
        the embedded store, or (bucket, key, ETag) of every upstream object
        (outside the state buckets unless `include_state`)."""
        up = self.upstream_client()
        if up is None:
            return helpers.object_data_files(self.data_dir)
        found = set()
        for bucket in up.list_buckets()["Buckets"]:
            if bucket["Name"].startswith("sealgate-state") and not include_state:
                continue
            for page in up.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"]):
                found |= {(bucket["Name"], o["Key"], o["ETag"]) for o in page.get("Contents", [])}
        return found

    def stored_containing(self, needles: list[bytes]) -> list:
        """Everything this gateway stored (the whole data dir, or every
        upstream object with its headers, state included) holding a needle."""
        if self.upstream_client() is None:
            return helpers.files_containing(self.data_dir, needles)
        return [item for item in self.stored_objects(include_state=True)
                if any(n in self.stored_bytes(item) for n in needles)]

    def stored_bytes(self, item) -> bytes:
        """An entry of `stored_objects` as the store holds it: the file, or
        the upstream body followed by its response headers."""
        if isinstance(item, tuple):
            got = self.upstream_client().get_object(Bucket=item[0], Key=item[1])
            return got["Body"].read() + repr(got["ResponseMetadata"]["HTTPHeaders"]).encode()
        with open(item, "rb") as f:
            return f.read()

    def start(self) -> None:
        assert self.proc is None, "gateway already running"
        log = open(self.log_path, "ab")
        log.write(f"\n==== start {time.strftime('%H:%M:%S')} ====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Only the flags configure the server: drop any SEALGATE_* and AWS_* settings.
            env={**{k: v for k, v in os.environ.items() if not k.startswith(("SEALGATE_", "AWS_"))},
                 "RUST_BACKTRACE": "1"},
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                pytest.fail(f"sealgate exited with {rc} during startup\n{self.log_tail()}", pytrace=False)
            if port_open(self.port) and port_open(self.admin_port):
                return
            time.sleep(0.05)
        self._signal_and_wait(signal.SIGKILL)
        pytest.fail(f"sealgate not ready after {READY_TIMEOUT}s\n{self.log_tail()}", pytrace=False)

    def _signal_and_wait(self, sig: int) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"sealgate ignored signal {sig} for {STOP_TIMEOUT}s\n{self.log_tail()}")

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM). Returns the exit code."""
        return self._signal_and_wait(signal.SIGTERM)

    def kill9(self) -> None:
        self._signal_and_wait(signal.SIGKILL)

    def restart(self) -> None:
        """SIGTERM, wait, start again on the same ports and directories."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "---- sealgate log tail ----\n" + "\n".join(lines[-n:])

    # -- clients -----------------------------------------------------------
    def client(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        trailer_checksums: bool = False,
        **config_kwargs,
    ):
        """A boto3 S3 client (path style, no SDK retries so errors are visible).

        With trailer_checksums=True, streaming uploads use aws-chunked bodies
        with STREAMING-UNSIGNED-PAYLOAD-TRAILER (boto3's default over TLS).
        """
        config = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=120,
            **config_kwargs,
        )
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=config,
        )
        if trailer_checksums:
            s3.meta.events.register("before-call.s3", _force_trailer_checksums)
        return s3

    def bob(self):
        return self.client(BOB_ACCESS_KEY, BOB_SECRET_KEY)

    def admin_get(self, path: str, token: str | None = ADMIN_TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(self.admin + path, headers=headers, timeout=10)

    def admin_put(self, path: str, body: bytes, token: str | None = ADMIN_TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.put(self.admin + path, data=body, headers=headers, timeout=60)

    def metric(self, name: str) -> float:
        """Value of one unlabelled sample (e.g. sealgate_decrypt_failures_total)."""
        return helpers.metric_value(self.admin_get("/metrics").text, name)

    def policy(self) -> dict:
        resp = self.admin_get("/policy")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def load_policy(self, path: Path) -> requests.Response:
        """PUT /policy with the component bytes (no assertion on the outcome)."""
        return self.admin_put("/policy", Path(path).read_bytes())

    def cli_load_policy(self, path, token: str | None = None) -> subprocess.CompletedProcess:
        """`sealgate policy load`, as an operator runs it."""
        return subprocess.run(
            [str(sealgate_bin()), "policy", "load", str(path), "--admin-url", self.admin,
             "--admin-token", token or self.admin_token],
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )

    def encrypting_client(self, value: str = "AES256", **kwargs):
        """A client whose CreateBucket carries x-amz-scal-server-side-encryption."""
        client = self.client(**kwargs)
        helpers.add_headers(client, "CreateBucket", {helpers.SCAL_SSE: value})
        return client

    def raw_socket(self, timeout: float = 15.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def signed_headers(self, method: str, path: str, **kwargs) -> dict[str, str]:
        return helpers.sigv4_headers(method, self.host, path, self.access_key, self.secret_key, **kwargs)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "local_only(reason): needs the embedded store; skipped when SEALGATE_TEST_BACKEND is s3 or garage")


def pytest_collection_modifyitems(config, items):
    if TEST_BACKEND == "local":
        return
    for item in items:
        marker = item.get_closest_marker("local_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"not on the s3 backend: {marker.args[0]}"))


# Uploads into encrypted buckets whose parts (but the last) are not whole
# 64 KiB chunks, which the s3 backend refuses at Complete (docs/scale-out.md;
# the refusal is tested in test_scale_out.py).
UNALIGNED_SEALED_PARTS = pytest.mark.local_only(
    "a sealed upload's parts but the last must be multiples of 64 KiB upstream")
# Keys SeaweedFS refuses itself, as a file tree would (`.`/`..` segments,
# segments over 255 bytes): its 400 reaches the client.
SEAWEEDFS_REFUSES = pytest.mark.skipif(
    TEST_BACKEND == "s3", reason="SeaweedFS refuses `.`/`..` segments and segments over 255 bytes")
# Keys an upstream would store as another key, or without their data, so
# the gateway refuses to write them (it probes its upstream at start-up,
# storage/upstream/key_limits.rs): SeaweedFS merges `//` and drops a leading
# `/` and the body of `dir/`; Garage drops a leading `/` (seen through boto3
# directly, too).
KEYS_THE_UPSTREAM_CHANGES = {
    "local": set(),
    "s3": {"a//b", "//leading", "trailing/"},
    "garage": {"//leading"},
}[TEST_BACKEND]

# `weed filer` flags that make SeaweedFS refuse what AWS refuses.
SEAWEED_AWS_LIKE = ["-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false"]
_session_upstream = None


def new_upstream_cluster(base_dir: Path):
    """A cluster of the upstream the suites run against, not yet started:
    Garage with SEALGATE_TEST_BACKEND=garage, else SeaweedFS."""
    if TEST_BACKEND == "garage":
        return GarageCluster(base_dir)
    return SeaweedCluster(base_dir, filer_args=SEAWEED_AWS_LIKE)


def upstream_args(cluster, state_bucket: str = "sealgate-state") -> list[str]:
    """Flags pointing a gateway at a SeaweedCluster or GarageCluster."""
    return ["--backend", "s3", "--upstream-endpoint", cluster.s3_endpoint,
            "--upstream-access-key", cluster.access_key, "--upstream-secret-key", cluster.secret_key,
            "--upstream-state-bucket", state_bucket]


def default_backend_args() -> list[str]:
    """Empty (the embedded store), or with SEALGATE_TEST_BACKEND=s3 (or
    garage) the flags for one SeaweedFS (or Garage) cluster per test
    process, started on first use."""
    global _session_upstream
    if TEST_BACKEND == "local":
        return []
    if _session_upstream is None:
        import tempfile

        _session_upstream = new_upstream_cluster(Path(tempfile.mkdtemp(prefix=f"sg-{TEST_BACKEND}-")))
        _session_upstream.start()
    return upstream_args(_session_upstream, state_bucket=f"sealgate-state-{uuid.uuid4().hex[:8]}")


def unique_bucket_name(prefix: str = "t") -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    return f"{prefix}-{worker}-{uuid.uuid4().hex[:12]}"


def _start_gateway(base_dir: Path) -> Gateway:
    gw = Gateway(base_dir)
    gw.start()
    return gw


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    """Shared gateway for this pytest session (= this xdist worker)."""
    gw = _start_gateway(tmp_path_factory.mktemp("sealgate"))
    yield gw
    gw.stop()


@pytest.fixture
def private_gateway(tmp_path_factory):
    """A gateway owned by one test; free to restart or kill -9 it."""
    gw = _start_gateway(tmp_path_factory.mktemp("sealgate-private"))
    yield gw
    if gw.proc is not None:
        gw.stop()


@pytest.fixture
def s3(gateway):
    return gateway.client()


@pytest.fixture
def s3_trailer(gateway):
    return gateway.client(trailer_checksums=True)


@pytest.fixture(params=["header-checksum", "trailer-checksum"])
def s3_any(request, gateway):
    """Both ways boto3 uploads: header checksum (http) and aws-chunked trailer (https)."""
    return gateway.client(trailer_checksums=request.param == "trailer-checksum")


@pytest.fixture(params=["default-presign", "s3v4-presign"])
def presigner(request, gateway):
    """Client for presigned URLs/POSTs, both as boto3 does it by default (legacy
    SigV2 query/POST signatures for S3) and with signature_version="s3v4"."""
    if request.param == "s3v4-presign":
        return gateway.client(signature_version="s3v4")
    return gateway.client()


def _make_bucket(client) -> str:
    name = unique_bucket_name()
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_bucket(gateway):
    """Factory: make_bucket(client=None) -> new bucket name, removed afterwards."""
    created = []

    def factory(client=None):
        client = client or gateway.client()
        name = _make_bucket(client)
        created.append((client, name))
        return name

    yield factory
    for client, name in created:
        if not gateway.is_running():
            continue
        try:
            helpers.empty_bucket(client, name)
            client.delete_bucket(Bucket=name)
        except Exception:  # cleanup only; the test outcome is what matters
            pass


@pytest.fixture
def bucket(make_bucket):
    """A fresh, empty bucket owned by the main user."""
    return make_bucket()


def _make_encrypted_bucket(gw: Gateway) -> str:
    name = unique_bucket_name("enc")
    gw.encrypting_client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_encrypted_bucket(gateway):
    """Factory: a new bucket created with x-amz-scal-server-side-encryption: AES256."""
    created = []

    def factory():
        name = _make_encrypted_bucket(gateway)
        created.append(name)
        return name

    yield factory
    client = gateway.client()
    for name in created:
        if not gateway.is_running():
            continue
        try:
            helpers.empty_bucket(client, name)
            client.delete_bucket(Bucket=name)
        except Exception:  # cleanup only
            pass


@pytest.fixture
def enc_bucket(make_encrypted_bucket):
    """A fresh, empty encrypted bucket owned by the main user."""
    return make_encrypted_bucket()


# ---- Scale-out: several gateways in front of one SeaweedFS cluster.

ENCRYPTED = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


class Fleet:
    """N gateways with one configuration: the same upstream, state bucket,
    users and (shared) local KMS key directory."""

    def __init__(self, base: Path, cluster, count: int = 3, extra_args: list[str] | None = None,
                 state_bucket: str = "sealgate-state"):
        self.cluster = cluster
        self.state_bucket = state_bucket
        self.kms_dir = base / "kms"
        self.gateways = []
        for i in range(count):
            gw = Gateway(base / f"gw{i}", backend_args=upstream_args(cluster, state_bucket) + list(extra_args or []))
            gw.kms_dir = self.kms_dir
            gw.start()
            self.gateways.append(gw)
        self.clients = [gw.client() for gw in self.gateways]

    def stop(self):
        for gw in self.gateways:
            if gw.is_running():
                gw.stop()

    def upstream(self):
        return self.cluster.client()

    def bucket(self, encrypted: bool, via: int = 0) -> str:
        name = f"so-{uuid.uuid4().hex[:12]}"
        self.clients[via].create_bucket(Bucket=name)
        if encrypted:
            self.clients[via].put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTED)
        return name


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    sw = new_upstream_cluster(tmp_path_factory.mktemp("upstream"))
    sw.start()
    yield sw
    sw.stop()


@pytest.fixture(scope="module")
def fleet(cluster, tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("fleet"), cluster)
    yield f
    f.stop()
