"""Crash/soak harness: clients write, read, delete, copy and complete
multipart uploads on an encrypted and a plain bucket while the gateway is
SIGKILLed and restarted at random moments. Then it checks:

- every acknowledged write reads back byte-identical, every acknowledged
  delete is gone; a write that was cut off by a kill is allowed to be either
  the old or the new content, whole, never anything else (no partial object);
- no temp file and no orphaned data file is left once everything is deleted;
- no sealed object's plaintext marker is on disk.

    python3 tests/soak/soak.py --seconds 300        (make soak)

Prints counts and exits non-zero on any violation. Each client owns its keys,
so what a key should hold is always known.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE.parent / "support"))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from conftest import Gateway  # noqa: E402

BUCKETS = {"soak-sealed": True, "soak-plain": False}
KEYS_PER_CLIENT = 12
GONE = None  # expected content of a deleted key


class Ledger:
    """What each key may hold: a set of possible contents (GONE for absent)."""

    def __init__(self):
        self.possible: dict[tuple[str, str], set] = {}
        self.lock = threading.Lock()
        self.markers: list[bytes] = []

    def start(self, bucket: str, key: str) -> set:
        with self.lock:
            return set(self.possible.get((bucket, key), {GONE}))

    def settle(self, bucket: str, key: str, value) -> None:
        with self.lock:
            self.possible[(bucket, key)] = {value}

    def uncertain(self, bucket: str, key: str, before: set, value) -> None:
        with self.lock:
            self.possible[(bucket, key)] = before | {value}


class Counts:
    def __init__(self):
        self.ops = self.acknowledged = self.cut = self.kills = self.checked = 0
        self.violations: list[str] = []
        self.lock = threading.Lock()

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def body(sealed: bool, ledger: Ledger) -> bytes:
    marker = (b"SOAK-SEALED-" if sealed else b"SOAK-PLAIN-") + os.urandom(12).hex().encode()
    if sealed:
        with ledger.lock:
            ledger.markers.append(marker)
    size = random.choice([0, 100, 5000, 70_000, 300_000])
    return (marker + os.urandom(max(0, size - len(marker))))[: max(size, len(marker))] if size else b""


def client_loop(n: int, gw: Gateway, ledger: Ledger, counts: Counts, stop: threading.Event) -> None:
    try:
        client_ops(n, gw, ledger, counts, stop)
    except Exception as e:  # noqa: BLE001 - a crashed client is a failed run
        counts.violations.append(f"client {n} crashed: {e!r}")


def client_ops(n: int, gw: Gateway, ledger: Ledger, counts: Counts, stop: threading.Event) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=gw.endpoint, region_name=gw.region,
        aws_access_key_id=gw.access_key, aws_secret_access_key=gw.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                      connect_timeout=2, read_timeout=15),
    )
    while not stop.is_set():
        bucket = random.choice(list(BUCKETS))
        key = f"c{n}-{random.randrange(KEYS_PER_CLIENT)}"
        before = ledger.start(bucket, key)
        op = random.choice(["put", "put", "get", "delete", "multipart", "copy"])
        value = None
        try:
            if op == "put":
                value = body(BUCKETS[bucket], ledger)
                s3.put_object(Bucket=bucket, Key=key, Body=value)
            elif op == "delete":
                value = GONE
                s3.delete_object(Bucket=bucket, Key=key)
            elif op == "multipart":
                value = body(BUCKETS[bucket], ledger)
                upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=value)["ETag"]
                s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
            elif op == "copy":
                source = f"c{n}-{random.randrange(KEYS_PER_CLIENT)}"
                sources = ledger.start(bucket, source)
                if len(sources) != 1 or GONE in sources or source == key:
                    continue
                value = next(iter(sources))
                s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
            else:  # get: must be one of the possibilities, and settles it
                try:
                    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                except ClientError as e:
                    if e.response["Error"]["Code"] != "NoSuchKey":
                        raise
                    got = GONE
                counts.add(ops=1, checked=1)
                if got not in before:
                    counts.violations.append(f"GET {bucket}/{key}: {describe(got)} is none of {len(before)} possibilities")
                else:
                    ledger.settle(bucket, key, got)
                continue
            counts.add(ops=1, acknowledged=1)
            ledger.settle(bucket, key, value)
        except (BotoCoreError, ClientError, ConnectionError) as e:
            # Cut off by a kill (or refused while restarting): either outcome may stand.
            counts.add(ops=1, cut=1)
            if op != "get":
                ledger.uncertain(bucket, key, before, value)
            if isinstance(e, ClientError) and e.response["ResponseMetadata"]["HTTPStatusCode"] not in (500, 503):
                counts.violations.append(f"{op} {bucket}/{key}: unexpected {e.response['Error']['Code']}")
            time.sleep(0.2)


def describe(content) -> str:
    return "absent" if content is GONE else f"{len(content)} bytes"


def killer(gw: Gateway, counts: Counts, stop: threading.Event) -> None:
    try:
        while not stop.wait(random.uniform(1.5, 5.0)):
            gw.kill9()
            counts.add(kills=1)
            time.sleep(random.uniform(0.0, 0.5))
            gw.start()
    except BaseException as e:  # noqa: BLE001 - pytest.fail raises a BaseException
        counts.violations.append(f"the gateway did not come back after a kill: {e!r}")


def verify(gw: Gateway, ledger: Ledger, counts: Counts) -> None:
    s3 = gw.client()
    for (bucket, key), possible in sorted(ledger.possible.items()):
        try:
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            got = GONE if e.response["Error"]["Code"] == "NoSuchKey" else f"error {e.response['Error']['Code']}"
        counts.add(checked=1)
        if got not in possible:
            counts.violations.append(f"final {bucket}/{key}: {describe(got) if not isinstance(got, str) else got}")
    # Everything deleted and uploads aborted: no data file may remain.
    for bucket in BUCKETS:
        for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    deadline = time.monotonic() + 10
    leftovers = []
    while time.monotonic() < deadline:
        leftovers = [p for p in (gw.data_dir / "objects").rglob("*") if p.is_file()]
        leftovers += [p for p in (gw.data_dir / "tmp").rglob("*") if p.is_file()]
        if not leftovers:
            break
        time.sleep(0.5)
    if leftovers:
        counts.violations.append(f"{len(leftovers)} data or temp files left after deleting everything")


def at_rest_scan(gw: Gateway, ledger: Ledger, counts: Counts) -> None:
    needles = ledger.markers
    for path in gw.base_dir.rglob("*"):
        if path.is_file() and path.suffix != ".log":
            blob = path.read_bytes()
            hits = [m for m in needles if m in blob]
            if hits:
                counts.violations.append(f"plaintext marker of a sealed object in {path}")


def run(seconds: float, clients: int, base: Path) -> Counts:
    gw = Gateway(base)
    gw.start()
    s3 = gw.client()
    gw.encrypting_client().create_bucket(Bucket="soak-sealed")
    s3.create_bucket(Bucket="soak-plain")
    ledger, counts, stop = Ledger(), Counts(), threading.Event()
    threads = [threading.Thread(target=client_loop, args=(n, gw, ledger, counts, stop)) for n in range(clients)]
    kill_thread = threading.Thread(target=killer, args=(gw, counts, stop))
    for t in threads + [kill_thread]:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads + [kill_thread]:
        t.join()
    gw.restart()  # a clean start: recovery has run
    try:
        verify(gw, ledger, counts)
        gw.stop()
        at_rest_scan(gw, ledger, counts)
    finally:
        if gw.proc is not None:
            gw.stop()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 300)))
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sealgate-soak-") as base:
        counts = run(args.seconds, args.clients, Path(base))
    print(f"operations {counts.ops}, acknowledged {counts.acknowledged}, cut off by kills {counts.cut}, "
          f"kills {counts.kills}, objects checked {counts.checked}, violations {len(counts.violations)}")
    for v in counts.violations[:50]:
        print("VIOLATION:", v)
    return 1 if counts.violations else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
