"""The key hierarchy through the gateway, with the three real KMS backends:
bucket keys cached per gateway (hits, TTL expiry, a key destroyed behind the
gateway's back, KMS outages with and without a cached key, the offline
grace), rotation that rewrites no object, and migration of objects written
before the hierarchy (a data dir made by the previous release).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import time

import pytest
from botocore.exceptions import ClientError

from conftest import REPO_ROOT, Gateway, unique_bucket_name
from kms_backends import BACKENDS, wait_until
from make_legacy_fixture import legacy_body
from test_kms_backends import _backend, _bucket_keys, _error_code, _rewrap

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "legacy-v1.tar.gz"


@pytest.fixture(scope="module", params=["local", "kmip", "aws"])
def any_kms(request, tmp_path_factory):
    return _backend(request, tmp_path_factory)


@pytest.fixture(scope="module", params=["kmip", "aws"])
def remote_kms(request, tmp_path_factory):
    return _backend(request, tmp_path_factory)


def _gateway(backend, tmp_path_factory, *flags: str) -> Gateway:
    gw = Gateway(tmp_path_factory.mktemp(f"gw-bk-{backend.name}"), kms_args=backend.gateway_args() + list(flags))
    gw.start()
    return gw


def _metric(gw, pattern: str) -> float:
    """Sum of every sample of the metric lines matching `pattern`."""
    text = gw.admin_get("/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{pattern}\S* (\S+)$", text, re.M))


def _kms_data_calls(gw) -> float:
    """KMS calls that wrap or unwrap keys (not key creation, not health checks)."""
    return _metric(gw, r'sealgate_kms_calls_total\{[^}]*operation="(?:wrap|unwrap|generate)_data_key"[^}]*\}')


def _cache(gw, outcome: str) -> float:
    return _metric(gw, rf'sealgate_bucket_key_cache_lookups_total\{{outcome="{outcome}"\}}')


def _encrypted_bucket(gw) -> str:
    name = unique_bucket_name("bk")
    gw.encrypting_client().create_bucket(Bucket=name)
    return name


def test_a_cached_bucket_key_serves_every_operation_with_one_kms_call(any_kms, tmp_path_factory):
    gw = _gateway(any_kms, tmp_path_factory)
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        bodies = {f"k{i}": os.urandom(100 + i) for i in range(40)}
        for key, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        for key, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        # One wrap of the new bucket key; everything else from the cache.
        assert _kms_data_calls(gw) == 1, gw.admin_get("/metrics").text
        assert _metric(gw, "sealgate_bucket_keys_created_total") == 1
        assert _cache(gw, "hit") >= 2 * len(bodies) - 1
        # Data keys stay per object: the same body twice is two different ciphertexts.
        s3.put_object(Bucket=bucket, Key="same-1", Body=b"A" * 4096)
        s3.put_object(Bucket=bucket, Key="same-2", Body=b"A" * 4096)
        # A restart empties the cache: one unwrap of the bucket key, then hits again.
        gw.restart()
        s3 = gw.client()
        for key in ("k0", "k1", "k2"):
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[key]
        assert _kms_data_calls(gw) == 1
    finally:
        gw.stop()


def test_ttl_zero_asks_the_kms_on_every_operation(tmp_path_factory):
    backend = BACKENDS["local"](tmp_path_factory.mktemp("bk-ttl0"))
    gw = _gateway(backend, tmp_path_factory, "--kms-cache-ttl", "0")
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        for i in range(5):
            s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
        for i in range(5):
            s3.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read()
        # The first PUT wraps the new bucket key (and opens nothing); each
        # other operation unwraps it once.
        assert _kms_data_calls(gw) == 10
        assert _cache(gw, "hit") == 0
    finally:
        gw.stop()


def test_writes_start_a_new_bucket_key_once_the_current_one_is_older_than_the_max_age(tmp_path_factory):
    backend = BACKENDS["local"](tmp_path_factory.mktemp("bk-age"))
    gw = _gateway(backend, tmp_path_factory, "--bucket-key-max-age", "2s")
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="first", Body=b"first epoch")
        s3.put_object(Bucket=bucket, Key="also-first", Body=b"first epoch too")
        assert _metric(gw, "sealgate_bucket_keys_created_total") == 1
        time.sleep(2.5)
        s3.put_object(Bucket=bucket, Key="second", Body=b"second epoch")
        assert _metric(gw, "sealgate_bucket_keys_created_total") == 2
        gw.restart()
        s3 = gw.client()
        assert s3.get_object(Bucket=bucket, Key="first")["Body"].read() == b"first epoch"
        assert s3.get_object(Bucket=bucket, Key="second")["Body"].read() == b"second epoch"
    finally:
        gw.stop()


def test_an_expired_bucket_key_is_fetched_from_the_kms_again(remote_kms, tmp_path_factory):
    gw = _gateway(remote_kms, tmp_path_factory, "--kms-cache-ttl", "2s")
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="k", Body=b"body")
        s3.get_object(Bucket=bucket, Key="k")["Body"].read()
        before = _kms_data_calls(gw)
        time.sleep(2.5)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"body"
        assert _kms_data_calls(gw) == before + 1
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"body"
        assert _kms_data_calls(gw) == before + 1
    finally:
        gw.stop()


@pytest.mark.parametrize("remote_kms", ["kmip"], indirect=True)
def test_a_master_key_destroyed_behind_the_gateways_back_stops_reads_and_writes_within_the_ttl(
    remote_kms, tmp_path_factory
):
    ttl = 8
    gw = _gateway(remote_kms, tmp_path_factory, "--kms-cache-ttl", f"{ttl}s")
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="k", Body=b"secret content")
        cached_at = time.monotonic()
        [key_id] = _bucket_keys(remote_kms, bucket)
        with remote_kms.client() as kmip:
            from kmip.core import enums

            kmip.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, key_id)
            kmip.destroy(key_id)
        # Within the TTL the gateway still holds the bucket key (documented bound).
        if time.monotonic() - cached_at < ttl - 2:
            assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"secret content"
        time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - cached_at)))
        with pytest.raises(ClientError) as get:
            s3.get_object(Bucket=bucket, Key="k")
        assert _error_code(get) == (500, "InternalError"), get.value.response
        with pytest.raises(ClientError) as put:
            s3.put_object(Bucket=bucket, Key="new", Body=b"must not be stored")
        assert _error_code(put) == (500, "InternalError"), put.value.response
        assert _metric(gw, r'sealgate_kms_calls_total\{[^}]*outcome="refused"[^}]*\}') >= 1
    finally:
        gw.stop()


def test_a_kms_outage_with_a_cached_key_goes_on_until_the_ttl_then_fails_closed(remote_kms, tmp_path_factory):
    gw = _gateway(remote_kms, tmp_path_factory, "--kms-cache-ttl", "4s")
    try:
        s3 = gw.client()
        cached = _encrypted_bucket(gw)
        uncached = _encrypted_bucket(gw)
        s3.put_object(Bucket=cached, Key="before", Body=b"sealed before the outage")
        started = time.monotonic()
        remote_kms.down()
        try:
            if time.monotonic() - started < 3:
                s3.put_object(Bucket=cached, Key="during", Body=b"sealed during the outage")
                assert s3.get_object(Bucket=cached, Key="before")["Body"].read() == b"sealed before the outage"
            # A bucket whose key this gateway does not hold fails closed at once.
            with pytest.raises(ClientError) as put:
                s3.put_object(Bucket=uncached, Key="k", Body=b"x")
            assert _error_code(put) == (503, "ServiceUnavailable")
            time.sleep(max(0.0, 4.5 - (time.monotonic() - started)))
            with pytest.raises(ClientError) as get:
                s3.get_object(Bucket=cached, Key="before")
            assert _error_code(get) == (503, "ServiceUnavailable")
        finally:
            remote_kms.up()
        assert wait_until(lambda: gw.admin_get("/health").status_code == 200, timeout=30)
        assert s3.get_object(Bucket=cached, Key="before")["Body"].read() == b"sealed before the outage"
    finally:
        gw.stop()


@pytest.mark.parametrize("remote_kms", ["aws"], indirect=True)
def test_the_offline_grace_keeps_a_cached_key_while_the_kms_is_unreachable(remote_kms, tmp_path_factory):
    gw = _gateway(remote_kms, tmp_path_factory, "--kms-cache-ttl", "1s", "--kms-offline-grace", "60s")
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="k", Body=b"available")
        remote_kms.down()
        try:
            time.sleep(1.5)
            assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"available"
            s3.put_object(Bucket=bucket, Key="k2", Body=b"written in the grace")
            assert _cache(gw, "stale") >= 1
        finally:
            remote_kms.up()
        assert s3.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"written in the grace"
    finally:
        gw.stop()


def test_rotation_rewraps_bucket_keys_and_rewrites_no_object(any_kms, tmp_path_factory):
    gw = _gateway(any_kms, tmp_path_factory)
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        bodies = {f"k{i}": os.urandom(100 + i) for i in range(30)}
        for key, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        upload = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
        first = os.urandom(5 * 1024 * 1024)
        etag1 = s3.upload_part(Bucket=bucket, Key="pending", UploadId=upload, PartNumber=1, Body=first)["ETag"]
        objects_db = gw.data_dir / "metadata.redb"
        calls_before = _kms_data_calls(gw)

        report = _rewrap(gw, bucket)
        assert report["deep"] is False
        assert report["objects_rewrapped"] == 0 and report["uploads_rewrapped"] == 0
        assert report["bucket_keys_rewrapped"] == 1
        assert report["direct_data_keys_left"] == 0
        assert report["old_key_destroyed"] is True
        assert not any_kms.key_exists(gw, report["old_key_id"])
        # One unwrap and one wrap of the one bucket key, whatever the object count.
        assert _kms_data_calls(gw) - calls_before == 2
        assert objects_db.exists()

        gw.restart()  # nothing cached: every read goes through the re-wrapped bucket key
        s3 = gw.client()
        for key, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        etag2 = s3.upload_part(Bucket=bucket, Key="pending", UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
        s3.complete_multipart_upload(
            Bucket=bucket, Key="pending", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etag2}]},
        )
        assert s3.get_object(Bucket=bucket, Key="pending")["Body"].read() == first + b"tail"
        # Writes after a rotation start a new epoch under the new key.
        created = _metric(gw, "sealgate_bucket_keys_created_total")
        s3.put_object(Bucket=bucket, Key="new", Body=b"after rotation")
        assert _metric(gw, "sealgate_bucket_keys_created_total") == created + 1

        # --deep moves every data key to that epoch and drops the old bucket key.
        deep = _rewrap(gw, bucket, "--deep")
        assert deep["deep"] is True
        assert deep["objects_rewrapped"] == len(bodies) + 2  # + "pending" (completed) and "new"
        assert deep["bucket_keys_dropped"] == 2
        assert deep["old_key_destroyed"] is True
        assert not any_kms.key_exists(gw, deep["old_key_id"])
        gw.restart()
        s3 = gw.client()
        for key, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"after rotation"
    finally:
        gw.stop()


LEGACY = {"small": 1000, "empty": 0, "multi": 70000}


def test_objects_from_before_the_hierarchy_stay_readable_and_deep_rewrap_migrates_them(tmp_path):
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    meta = json.loads((REPO_ROOT / "tests" / "fixtures" / "legacy-v1.json").read_text())
    # The fixture's pending upload was started when the fixture was made:
    # keep the start-up expiry of stale uploads from taking it.
    gw = Gateway(tmp_path, extra_args=["--multipart-expiry", "36500d"])
    os.chmod(gw.kms_dir, 0o700)
    gw.start()
    try:
        s3 = gw.client()
        for key, size in LEGACY.items():
            assert s3.get_object(Bucket="legacy-sealed", Key=key)["Body"].read() == legacy_body(key, size), key
        assert s3.get_object(Bucket="legacy-plain", Key="plain")["Body"].read() == legacy_body("plain", 1000)
        [old_key] = [p.stem for p in gw.kms_dir.glob("*.key")]

        # A default rotation rewrites nothing; the old key stays for the direct data keys.
        report = _rewrap(gw, "legacy-sealed")
        assert report["old_key_id"] == old_key
        assert report["objects_rewrapped"] == 0
        assert report["direct_data_keys_left"] == len(LEGACY) + 1  # + the pending upload
        assert report["old_key_destroyed"] is False
        assert (gw.kms_dir / f"{old_key}.key").exists()
        for key, size in LEGACY.items():
            assert s3.get_object(Bucket="legacy-sealed", Key=key)["Body"].read() == legacy_body(key, size), key
        s3.put_object(Bucket="legacy-sealed", Key="new", Body=b"written under the hierarchy")

        # --deep finishes the rotation: every data key moves into the hierarchy.
        deep = _rewrap(gw, "legacy-sealed", "--deep")
        assert deep["resumed"] is True and deep["old_key_id"] == old_key
        # "new" is already under a bucket key of the new master key: it stays.
        assert deep["objects_rewrapped"] == len(LEGACY)
        assert deep["uploads_rewrapped"] == 1
        assert deep["direct_data_keys_left"] == 0
        assert deep["old_key_destroyed"] is True
        assert not (gw.kms_dir / f"{old_key}.key").exists()

        gw.restart()
        s3 = gw.client()
        for key, size in LEGACY.items():
            assert s3.get_object(Bucket="legacy-sealed", Key=key)["Body"].read() == legacy_body(key, size), key
        assert s3.get_object(Bucket="legacy-sealed", Key="new")["Body"].read() == b"written under the hierarchy"
        # The upload started before the hierarchy completes after the migration.
        upload, etag1 = meta["pending_upload_id"], meta["pending_part1_etag"]
        s3.complete_multipart_upload(
            Bucket="legacy-sealed", Key="pending", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}]},
        )
        got = s3.get_object(Bucket="legacy-sealed", Key="pending")["Body"].read()
        assert got == legacy_body("pending", 70000)
    finally:
        gw.stop()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


@pytest.mark.parametrize("deep", [False, True], ids=["rotation", "deep-rotation"])
def test_rotation_under_concurrent_writes_loses_nothing_and_retires_the_old_key(tmp_path_factory, deep):
    """8 clients PUT and complete multipart uploads without pause while the
    bucket's key is rotated: every acknowledged object reads back, and the
    old master key is gone. A write the rotation overtook answers 503 and is
    retried, as S3 clients do."""
    import threading

    backend = BACKENDS["local"](tmp_path_factory.mktemp("bk-race"))
    gw = _gateway(backend, tmp_path_factory)
    try:
        bucket = _encrypted_bucket(gw)
        acknowledged: dict[str, bytes] = {}
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[str] = []

        def retrying(call):
            for _ in range(20):
                try:
                    return call()
                except ClientError as e:
                    if e.response["ResponseMetadata"]["HTTPStatusCode"] != 503:
                        raise
                    time.sleep(0.05)
            raise AssertionError("still 503 after 20 tries")

        def writer(n: int):
            s3 = gw.client()
            i = 0
            try:
                while not stop.is_set():
                    key, body = f"w{n}-{i}", os.urandom(3000 + i)
                    if i % 3 == 2:
                        def multipart():
                            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
                            etag = retrying(lambda: s3.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                                   PartNumber=1, Body=body)["ETag"])
                            retrying(lambda: s3.complete_multipart_upload(
                                Bucket=bucket, Key=key, UploadId=upload,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}))
                        retrying(multipart)
                    else:
                        retrying(lambda: s3.put_object(Bucket=bucket, Key=key, Body=body))
                    with lock:
                        acknowledged[key] = body
                    i += 1
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(f"{n}: {e!r}")

        def after_more_writes(count: int):
            # Counted, not timed: on a loaded CI machine a fixed sleep let as few
            # as 7 writes through, and the rotations then raced almost nothing.
            with lock:
                target = len(acknowledged) + count
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not failures:
                with lock:
                    if len(acknowledged) >= target:
                        return
                time.sleep(0.02)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        after_more_writes(20)
        first = _rewrap(gw, bucket, *(["--deep"] if deep else []))
        after_more_writes(20)
        second = _rewrap(gw, bucket, *(["--deep"] if deep else []))
        after_more_writes(20)
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures
        assert len(acknowledged) >= 60
        for report in (first, second):
            assert report["old_key_destroyed"] is True, report
            assert not any_kms_key_exists(gw, report["old_key_id"])
        gw.restart()
        s3 = gw.client()
        for key, body in acknowledged.items():
            assert retrying(lambda: s3.get_object(Bucket=bucket, Key=key))["Body"].read() == body, key
    finally:
        gw.stop()


def any_kms_key_exists(gw, key_id: str) -> bool:
    return (gw.kms_dir / f"{key_id}.key").exists()
