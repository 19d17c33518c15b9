"""The gateway against real KMS servers: PyKMIP (KMIP over mutual TLS) and
moto (the AWS KMS API), next to the embedded local KMS. Keys are checked on
the KMS itself; outages are real (a stopped server, a cut or hung link).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

import helpers
from conftest import Gateway, sealgate_bin, unique_bucket_name
from kms_backends import BACKENDS, KMS_TIMEOUT_MS, wait_until

SIZES = [0, 1, 65_537, 5 * 1024 * 1024 + 1]


def _backend(request, tmp_path_factory):
    backend = BACKENDS[request.param](tmp_path_factory.mktemp(f"kms-{request.param}"))
    request.addfinalizer(backend.close)
    return backend


@pytest.fixture(scope="module", params=["kmip", "aws"])
def remote_kms(request, tmp_path_factory):
    """A real remote KMS server, shared by this module's tests on one worker."""
    return _backend(request, tmp_path_factory)


def _gateway(backend, tmp_path_factory, **kwargs):
    # No bucket-key cache: every operation asks the KMS, as these tests
    # expect (the cache has its own tests in test_bucket_keys.py).
    kms_args = backend.gateway_args(**kwargs) + ["--kms-cache-ttl", "0"]
    gw = Gateway(tmp_path_factory.mktemp(f"gw-{backend.name}"), kms_args=kms_args)
    gw.start()
    return gw


@pytest.fixture
def remote_gateway(remote_kms, tmp_path_factory):
    gw = _gateway(remote_kms, tmp_path_factory)
    yield gw
    gw.stop()


def _encrypted_bucket(gw) -> str:
    name = unique_bucket_name("kms")
    gw.encrypting_client().create_bucket(Bucket=name)
    return name


def _error_code(excinfo) -> tuple[int, str]:
    err = excinfo.value.response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


PART = 5 * 1024 * 1024


def _put_sized(s3, bucket, key, size) -> bytes:
    """A single PUT, or a multipart upload of 5 MiB parts above 5 MiB."""
    body = os.urandom(size)
    if size <= PART:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        return body
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, size, PART), start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                              Body=body[start:start + PART])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return body


def _kms_calls(gw, backend: str, operation: str, outcome: str) -> float:
    pattern = (
        rf'^sealgate_kms_calls_total\{{(?=[^}}]*backend="{backend}")(?=[^}}]*operation="{operation}")'
        rf'(?=[^}}]*outcome="{outcome}")[^}}]*\}} (\S+)$'
    )
    match = re.search(pattern, gw.admin_get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def _bucket_keys(backend, bucket: str) -> list[str]:
    if backend.name == "kmip":
        return backend.keys_named(f"sealgate:{bucket}")
    return [k for k in backend.keys_tagged(bucket) if backend.key_state(k) == "Enabled"]


def test_an_encrypted_bucket_gets_its_own_key_on_the_kms(remote_kms, remote_gateway):
    bucket = _encrypted_bucket(remote_gateway)
    keys = _bucket_keys(remote_kms, bucket)
    assert len(keys) == 1, keys
    # A plaintext bucket creates nothing on the KMS.
    plain = unique_bucket_name("plain")
    remote_gateway.client().create_bucket(Bucket=plain)
    assert _bucket_keys(remote_kms, plain) == []


def test_objects_of_several_sizes_round_trip_and_survive_a_gateway_restart(remote_kms, remote_gateway):
    s3 = remote_gateway.client()
    bucket = _encrypted_bucket(remote_gateway)
    bodies = {f"obj-{size}": _put_sized(s3, bucket, f"obj-{size}", size) for size in SIZES}
    for key, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body, key
        assert got["ContentLength"] == len(body)
    assert _kms_calls(remote_gateway, remote_kms.name, "unwrap_data_key", "ok") >= len(bodies)
    remote_gateway.restart()
    s3 = remote_gateway.client()
    for key, body in bodies.items():
        assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).digest() == \
            hashlib.sha256(body).digest(), key


def test_a_kms_outage_fails_closed_and_heals_without_a_gateway_restart(remote_kms, remote_gateway):
    gw = remote_gateway
    s3 = gw.client()
    bucket = _encrypted_bucket(gw)
    plain = unique_bucket_name("plain")
    s3.create_bucket(Bucket=plain)
    s3.put_object(Bucket=bucket, Key="before", Body=b"sealed before the outage")
    assert gw.admin_get("/health").json()["kms"]["state"] == "ok"

    remote_kms.down()
    try:
        marker = b"SEALGATE-OUTAGE-MARKER-" + os.urandom(8).hex().encode()
        with pytest.raises(ClientError) as put:
            s3.put_object(Bucket=bucket, Key="during", Body=marker * 100)
        assert _error_code(put) == (503, "ServiceUnavailable")
        with pytest.raises(ClientError) as get:
            s3.get_object(Bucket=bucket, Key="before")
        assert _error_code(get) == (503, "ServiceUnavailable")
        new_bucket = unique_bucket_name("kms")
        with pytest.raises(ClientError) as create:
            gw.encrypting_client().create_bucket(Bucket=new_bucket)
        assert _error_code(create) == (503, "ServiceUnavailable")
        # Nothing was stored: no object, no bucket, no plaintext on disk.
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [o["Key"] for o in listed] == ["before"]
        with pytest.raises(ClientError) as head:
            s3.head_bucket(Bucket=new_bucket)
        assert _error_code(head)[0] == 404
        assert not helpers.files_containing(gw.base_dir, [marker]), "plaintext of a refused PUT reached the disk"
        # Plaintext buckets keep working.
        s3.put_object(Bucket=plain, Key="p", Body=b"plain")
        assert s3.get_object(Bucket=plain, Key="p")["Body"].read() == b"plain"
        health = gw.admin_get("/health")
        assert health.status_code == 503
        assert health.json()["kms"]["state"] == "unavailable"
        # A PUT needs the bucket key (no cache here): its unwrap is what failed.
        assert _kms_calls(gw, remote_kms.name, "unwrap_data_key", "unavailable") >= 1
    finally:
        remote_kms.up()

    assert wait_until(lambda: gw.admin_get("/health").status_code == 200, timeout=30), gw.log_tail()
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"sealed before the outage"
    s3.put_object(Bucket=bucket, Key="after", Body=b"sealed after")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"sealed after"
    gw.encrypting_client().create_bucket(Bucket=unique_bucket_name("kms"))


def test_a_hung_kms_is_an_unavailable_kms(tmp_path_factory):
    """A KMS that accepts connections and never answers: 503 after the time limit, not a hang."""
    backend = BACKENDS["aws"](tmp_path_factory.mktemp("kms-hung"))
    gw = _gateway(backend, tmp_path_factory)
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="k", Body=b"x")
        backend.hang()
        started = time.monotonic()
        with pytest.raises(ClientError) as get:
            s3.get_object(Bucket=bucket, Key="k")
        assert _error_code(get) == (503, "ServiceUnavailable")
        assert time.monotonic() - started < KMS_TIMEOUT_MS / 1000 + 10
        backend.up()
        assert wait_until(lambda: gw.admin_get("/health").status_code == 200, timeout=30)
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"
    finally:
        gw.stop()
        backend.close()


def test_deleting_the_bucket_destroys_its_key(remote_kms, remote_gateway):
    s3 = remote_gateway.client()
    bucket = _encrypted_bucket(remote_gateway)
    [key_id] = _bucket_keys(remote_kms, bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="k")
    s3.delete_bucket(Bucket=bucket)
    assert not remote_kms.key_exists(remote_gateway, key_id)
    if remote_kms.name == "aws":
        assert remote_kms.key_state(key_id) == "PendingDeletion"


# KMIP only: moto (5.2) still decrypts under a key pending deletion or
# disabled, where AWS refuses; the AWS backend's mapping of that refusal is
# covered by its unit tests (host/src/kms/aws.rs).
@pytest.mark.parametrize("remote_kms", ["kmip"], indirect=True)
def test_a_key_destroyed_behind_the_gateways_back_is_a_clear_error(remote_kms, remote_gateway):
    s3 = remote_gateway.client()
    bucket = _encrypted_bucket(remote_gateway)
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret content")
    [key_id] = _bucket_keys(remote_kms, bucket)
    with remote_kms.client() as kmip:
        from kmip.core import enums

        kmip.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, key_id)
        kmip.destroy(key_id)
    with pytest.raises(ClientError) as get:
        s3.get_object(Bucket=bucket, Key="k")
    status, code = _error_code(get)
    assert (status, code) == (500, "InternalError"), get.value.response
    assert _kms_calls(remote_gateway, remote_kms.name, "unwrap_data_key", "refused") >= 1


def test_kmip_endpoints_are_tried_in_order(tmp_path_factory):
    backend = BACKENDS["kmip"](tmp_path_factory.mktemp("kms-cluster"))
    dead = f"127.0.0.1:{backend.port + 1 if backend.port < 65535 else 1}"
    gw = _gateway(backend, tmp_path_factory, endpoints=[dead, f"127.0.0.1:{backend.port}"])
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        s3.put_object(Bucket=bucket, Key="k", Body=b"through the second server")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"through the second server"
    finally:
        gw.stop()
        backend.close()


def _run_rewrap(gw, bucket: str, *extra: str) -> subprocess.CompletedProcess:
    """`sealgate kms rewrap`, the operator's command, against the running gateway."""
    return subprocess.run(
        [str(sealgate_bin()), "kms", "rewrap", "--bucket", bucket, "--admin-url", gw.admin, *extra],
        env={**os.environ, "SEALGATE_ADMIN_TOKEN": gw.admin_token},
        capture_output=True, text=True, timeout=120,
    )


def _rewrap(gw, bucket: str, *extra: str) -> dict:
    out = _run_rewrap(gw, bucket, *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.local_only("deep rotation re-wraps every object; the s3 backend refuses it (test_scale_out.py)")
def test_an_interrupted_rotation_resumes_with_the_same_new_key(tmp_path_factory):
    """The KMS goes away mid-rotation (a deep one, which with no key cache asks
    the KMS for every object): the run fails, objects stay readable, a second
    run finishes."""
    backend = BACKENDS["aws"](tmp_path_factory.mktemp("kms-resume"))
    gw = _gateway(backend, tmp_path_factory)
    try:
        s3 = gw.client()
        bucket = _encrypted_bucket(gw)
        # Enough objects that the run takes seconds; the link is cut half a second in.
        bodies = {f"k{i:03}": os.urandom(64) for i in range(300)}
        for key, body in bodies.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        cut = threading.Timer(0.5, backend.down)
        cut.start()
        failed = _run_rewrap(gw, bucket, "--deep")
        cut.join()
        backend.up()
        assert wait_until(lambda: gw.admin_get("/health").status_code == 200, timeout=30)
        assert failed.returncode != 0, f"the rotation finished before the cut: {failed.stdout}"
        # Objects stay readable mid-rotation, whichever key wraps theirs now.
        for key in ("k000", "k299"):
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == bodies[key]
        report = _rewrap(gw, bucket, "--deep")
        assert report["resumed"] is True
        assert 0 < report["objects_rewrapped"] < len(bodies)
        assert report["old_key_destroyed"] is True
        assert backend.key_state(report["old_key_id"]) == "PendingDeletion"
        for key, body in bodies.items():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    finally:
        gw.stop()
        backend.close()
