"""What an encrypted bucket leaves on disk: no plaintext, authenticated chunks.

Every test owns its gateway (private_gateway) so it can scan, restart and
tamper with the data directory freely.
"""

from __future__ import annotations

import os

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import unique_bucket_name
from helpers import (
    KiB,
    MiB,
    assert_read_fails,
    files_containing,
    get_bytes,
    non_validating_client,
    object_data_files,
    put,
    random_bytes,
    read_outcome,
)

MARKER = b"SEALGATE-AT-REST-MARKER-"
CHUNK = 64 * KiB
PART = 5 * MiB


def marker_blob(size: int, tag: bytes = b"") -> bytes:
    unit = MARKER + tag
    return (unit * (size // len(unit) + 1))[:size]


def make_encrypted(gw) -> str:
    name = unique_bucket_name("enc")
    gw.encrypting_client().create_bucket(Bucket=name)
    return name


def new_files(gw, before: set[str]) -> list[str]:
    return sorted(object_data_files(gw.data_dir) - before)


# --------------------------------------------------------------------------
# 9. Nothing of the plaintext on disk
# --------------------------------------------------------------------------


def test_no_plaintext_at_rest(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    bucket = make_encrypted(gw)

    single = marker_blob(1 * MiB, b"single-")
    put(s3, bucket, "single", single)
    put(gw.client(trailer_checksums=True), bucket, "chunked", marker_blob(300 * KiB, b"chunked-"))

    parts = [marker_blob(PART, b"part1-"), marker_blob(PART, b"part2-"), marker_blob(100 * KiB, b"part3-")]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    done = []
    for number, body in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload_id, MultipartUpload={"Parts": done})

    # An upload still in progress, one part copied from the sealed object.
    pending = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="pending", UploadId=pending, PartNumber=1, Body=marker_blob(PART, b"pend-"))
    s3.upload_part_copy(Bucket=bucket, Key="pending", UploadId=pending, PartNumber=2,
                        CopySource={"Bucket": bucket, "Key": "single"}, CopySourceRange="bytes=100-200000")

    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "single"})
    s3.copy_object(Bucket=bucket, Key="copy-mpu", CopySource={"Bucket": bucket, "Key": "mpu"})

    presigned = s3.generate_presigned_post(Bucket=bucket, Key="posted", ExpiresIn=300)
    resp = requests.post(presigned["url"], data=presigned["fields"],
                         files={"file": ("f", marker_blob(200 * KiB, b"posted-"))}, timeout=60)
    assert resp.status_code == 204, resp.text

    # Sanity: everything reads back.
    assert get_bytes(s3, bucket, "single") == single
    assert get_bytes(s3, bucket, "copy-mpu") == b"".join(parts)

    assert len(object_data_files(gw.data_dir)) >= 8
    hits = files_containing(gw.data_dir, [MARKER])
    assert not hits, f"plaintext marker found in the data dir (server running): {hits}"
    hits = files_containing(gw.kms_dir, [MARKER])
    assert not hits, f"plaintext marker found in the KMS dir: {hits}"

    # After a clean stop too (nothing flushed late in plaintext).
    gw.stop()
    hits = files_containing(gw.data_dir, [MARKER])
    assert not hits, f"plaintext marker found in the data dir after stop: {hits}"
    gw.start()

    # The scan itself works: the same content in a plaintext bucket is found.
    s3 = gw.client()
    plain = unique_bucket_name("plain")
    s3.create_bucket(Bucket=plain)
    put(s3, plain, "control", marker_blob(10 * KiB, b"control-"))
    assert files_containing(gw.data_dir, [MARKER + b"control-"]), "scan cannot see plaintext at all"


def test_no_key_material_in_data_dir(private_gateway):
    gw = private_gateway
    make_encrypted(gw)
    key_files = [os.path.join(gw.kms_dir, n) for n in os.listdir(gw.kms_dir)]
    assert key_files
    secrets = []
    for path in key_files:
        with open(path, "rb") as f:
            content = f.read()
        assert content, path
        secrets.append(content.strip())
    hits = files_containing(gw.data_dir, [s for s in secrets if len(s) >= 16])
    assert not hits, f"KMS key file content found in the data dir: {hits}"


# --------------------------------------------------------------------------
# 10. Restart
# --------------------------------------------------------------------------


def test_encryption_survives_restart(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    bucket = make_encrypted(gw)
    plain = unique_bucket_name("plain")
    s3.create_bucket(Bucket=plain)
    small = random_bytes(100 * KiB)
    put(s3, bucket, "small", small)
    parts = [random_bytes(PART), random_bytes(CHUNK + 1)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload_id,
                                                     PartNumber=n, Body=b)["ETag"]}
            for n, b in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload_id, MultipartUpload={"Parts": done})
    pending = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
    pending_part = random_bytes(PART)
    e1 = s3.upload_part(Bucket=bucket, Key="pending", UploadId=pending, PartNumber=1, Body=pending_part)["ETag"]

    gw.restart()
    s3 = gw.client()

    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    got = s3.get_object(Bucket=bucket, Key="small")
    assert got["Body"].read() == small and got["ServerSideEncryption"] == "AES256"
    assert get_bytes(s3, bucket, "mpu") == b"".join(parts)
    assert get_bytes(s3, bucket, "mpu", Range=f"bytes={PART - 5}-{PART + 5}") == b"".join(parts)[PART - 5:PART + 6]

    # New writes are still sealed, the pending upload can be finished.
    before = object_data_files(gw.data_dir)
    fresh = random_bytes(90 * KiB)
    assert put(s3, bucket, "fresh", fresh).get("ServerSideEncryption") == "AES256"
    got = s3.get_object(Bucket=bucket, Key="fresh")
    assert got["Body"].read() == fresh and got["ServerSideEncryption"] == "AES256"
    for path in object_data_files(gw.data_dir) - before:
        with open(path, "rb") as f:
            assert fresh[1000:1064] not in f.read(), "new object stored in plaintext after restart"
    tail = random_bytes(1000)
    e2 = s3.upload_part(Bucket=bucket, Key="pending", UploadId=pending, PartNumber=2, Body=tail)["ETag"]
    complete = s3.complete_multipart_upload(Bucket=bucket, Key="pending", UploadId=pending, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert complete.get("ServerSideEncryption") == "AES256"
    assert get_bytes(s3, bucket, "pending") == pending_part + tail

    # The plaintext bucket is still plaintext.
    assert "ServerSideEncryption" not in put(s3, plain, "p", b"plain")
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_encryption(Bucket=plain)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


# --------------------------------------------------------------------------
# 11. Tampering is detected, never served
# --------------------------------------------------------------------------


def _single_file_object(gw, s3, bucket, key, data) -> str:
    before = object_data_files(gw.data_dir)
    put(s3, bucket, key, data)
    files = new_files(gw, before)
    assert len(files) == 1, f"expected one data file for {key}, got {files}"
    return files[0]


def test_tampered_object_is_not_served(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    reader = non_validating_client(gw)
    bucket = make_encrypted(gw)
    data = random_bytes(300 * KiB)
    path = _single_file_object(gw, s3, bucket, "victim", data)
    bystander = random_bytes(100 * KiB)
    put(s3, bucket, "bystander", bystander)
    assert get_bytes(reader, bucket, "victim") == data

    failures_before = gw.metric("sealgate_decrypt_failures_total")
    size = os.path.getsize(path)
    offset = size // 2  # well inside the sealed chunks, past any header
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))

    assert_read_fails(reader, bucket, "victim", data, "byte flipped")
    # A range read of the chunk holding the flipped byte fails too ...
    approx = offset * len(data) // size
    first = max(0, approx - CHUNK)
    last = min(len(data) - 1, approx + CHUNK)
    assert_read_fails(reader, bucket, "victim", data[first:last + 1], "byte flipped, range",
                      Range=f"bytes={first}-{last}")
    # ... and the untouched first chunk can still be read by range (chunked AEAD).
    assert get_bytes(reader, bucket, "victim", Range="bytes=0-99") == data[:100]

    assert gw.metric("sealgate_decrypt_failures_total") > failures_before, \
        "sealgate_decrypt_failures_total did not increase after reading a tampered object"
    # The gateway keeps serving everything else.
    assert get_bytes(s3, bucket, "bystander") == bystander
    assert gw.is_running()


def test_truncated_object_is_not_served(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    reader = non_validating_client(gw)
    bucket = make_encrypted(gw)
    cases = {}
    for key, size, cut in [("half", 300 * KiB, lambda n: n // 2),
                           ("last-byte", 300 * KiB, lambda n: n - 1),
                           ("one-chunk", CHUNK, lambda n: n - 16)]:
        data = random_bytes(size)
        path = _single_file_object(gw, s3, bucket, key, data)
        cases[key] = (data, path, cut)
    for key, (data, path, cut) in cases.items():
        with open(path, "r+b") as f:
            f.truncate(cut(os.path.getsize(path)))
        assert_read_fails(reader, bucket, key, data, f"truncated ({key})")
        if key != "one-chunk":
            assert_read_fails(reader, bucket, key, data[-10:], f"truncated ({key}), tail range",
                              Range="bytes=-10")
    assert gw.is_running()
    fresh = random_bytes(1000)
    put(s3, bucket, "fresh", fresh)
    assert get_bytes(s3, bucket, "fresh") == fresh


def test_chunks_cannot_be_swapped_between_objects(private_gateway):
    """Replacing an object's file with another sealed object's file must not
    make the gateway serve the other object's plaintext under this key."""
    gw = private_gateway
    s3 = gw.client()
    reader = non_validating_client(gw)
    bucket = make_encrypted(gw)
    a = random_bytes(200 * KiB)
    b = random_bytes(200 * KiB)
    path_a = _single_file_object(gw, s3, bucket, "a", a)
    path_b = _single_file_object(gw, s3, bucket, "b", b)
    with open(path_b, "rb") as f:
        blob_b = f.read()
    with open(path_a, "wb") as f:
        f.write(blob_b)
    outcome = read_outcome(reader, bucket, "a")
    assert outcome[0] != "ok", (
        f"GET a served a complete body after its file was replaced by b's "
        f"({'b plaintext' if outcome[1] == b else 'other bytes'})"
    )
