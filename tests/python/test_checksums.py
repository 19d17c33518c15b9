"""Flexible checksums (header and aws-chunked trailer), Content-MD5."""

import base64
import hashlib

import pytest
import requests
from botocore.exceptions import MissingDependencyException

from helpers import (
    STREAMING_UNSIGNED_TRAILER,
    aws_chunked_body,
    checksum_b64,
    expect_error,
    get_bytes,
    object_exists,
    put,
    random_bytes,
    single_put_etag,
    xml_error_code,
)

ALGORITHMS = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]
CHECKSUM_MISMATCH = ("BadDigest", "XAmzContentChecksumMismatch")
DATA = random_bytes(70_000)


def _assert_stored_checksum(s3, bucket, key, algorithm, data):
    expected = checksum_b64(algorithm, data)
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head.get(f"Checksum{algorithm}") == expected, head
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert got.get(f"Checksum{algorithm}") == expected
    assert got["Body"].read() == data  # botocore also validates the checksum here


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sdk_computed_checksum(s3_any, bucket, algorithm):
    try:
        resp = put(s3_any, bucket, "ck", DATA, ChecksumAlgorithm=algorithm)
    except MissingDependencyException:
        pytest.skip(f"installed botocore cannot compute {algorithm} (needs awscrt)")
    assert resp.get(f"Checksum{algorithm}") == checksum_b64(algorithm, DATA)
    assert resp["ETag"] == single_put_etag(DATA)
    _assert_stored_checksum(s3_any, bucket, "ck", algorithm, DATA)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explicit_checksum_value(s3, bucket, algorithm):
    """Checksum computed by the test itself (covers algorithms botocore lacks)."""
    put(s3, bucket, "ck", DATA, **{f"Checksum{algorithm}": checksum_b64(algorithm, DATA)})
    _assert_stored_checksum(s3, bucket, "ck", algorithm, DATA)


def test_default_put_stores_crc32(s3_any, bucket):
    # boto3 >= 1.36 attaches a CRC32 to every upload by default.
    put(s3_any, bucket, "default", DATA)
    _assert_stored_checksum(s3_any, bucket, "default", "CRC32", DATA)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_wrong_checksum_rejected(s3, bucket, algorithm):
    wrong = checksum_b64(algorithm, DATA + b"tampered")
    expect_error(lambda: put(s3, bucket, "bad", DATA, **{f"Checksum{algorithm}": wrong}), CHECKSUM_MISMATCH, 400)
    assert not object_exists(s3, bucket, "bad")


def test_wrong_checksum_does_not_clobber_existing(s3, bucket):
    put(s3, bucket, "keep", b"original")
    wrong = checksum_b64("CRC32", b"something else")
    expect_error(lambda: put(s3, bucket, "keep", b"replacement", ChecksumCRC32=wrong), CHECKSUM_MISMATCH, 400)
    assert get_bytes(s3, bucket, "keep") == b"original"


def test_content_md5(s3, bucket):
    good = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    put(s3, bucket, "md5", DATA, ContentMD5=good)
    assert get_bytes(s3, bucket, "md5") == DATA

    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    expect_error(lambda: put(s3, bucket, "md5-bad", DATA, ContentMD5=wrong), "BadDigest", 400)
    assert not object_exists(s3, bucket, "md5-bad")


def test_malformed_content_md5(s3, bucket):
    expect_error(lambda: put(s3, bucket, "md5-bad", DATA, ContentMD5="not-base64!"), "InvalidDigest", 400)
    assert not object_exists(s3, bucket, "md5-bad")


def test_upload_part_wrong_checksum(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    wrong = checksum_b64("CRC32", b"nope")
    expect_error(
        lambda: s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload_id, PartNumber=1, Body=DATA,
                               ChecksumCRC32=wrong),
        CHECKSUM_MISMATCH, 400,
    )
    assert s3.list_parts(Bucket=bucket, Key="mpu", UploadId=upload_id).get("Parts", []) == []


# --------------------------------------------------------------------------
# Hand-built aws-chunked trailer requests (algorithm / corruption control)
# --------------------------------------------------------------------------


def _put_with_trailer(gateway, bucket, key, data, algorithm, trailer_value, chunk_size=8192):
    name = f"x-amz-checksum-{algorithm.lower()}"
    body = aws_chunked_body(data, chunk_size, {name: trailer_value})
    path = f"/{bucket}/{key}"
    headers = gateway.signed_headers(
        "PUT", path, payload_hash=STREAMING_UNSIGNED_TRAILER,
        headers={
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(len(data)),
            "x-amz-trailer": name,
            "content-length": str(len(body)),
        },
    )
    return requests.put(gateway.endpoint + path, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256", "CRC64NVME"])
def test_raw_trailer_checksum(gateway, s3, bucket, algorithm):
    resp = _put_with_trailer(gateway, bucket, "trailer", DATA, algorithm, checksum_b64(algorithm, DATA))
    assert resp.status_code == 200, resp.text
    assert resp.headers["ETag"] == single_put_etag(DATA)
    _assert_stored_checksum(s3, bucket, "trailer", algorithm, DATA)


def test_raw_trailer_checksum_mismatch(gateway, s3, bucket):
    resp = _put_with_trailer(gateway, bucket, "trailer-bad", DATA, "CRC32", checksum_b64("CRC32", b"wrong"))
    assert resp.status_code == 400, resp.text
    assert xml_error_code(resp.content) in CHECKSUM_MISMATCH
    assert not object_exists(s3, bucket, "trailer-bad")


def test_raw_trailer_decoded_length_mismatch(gateway, s3, bucket):
    """x-amz-decoded-content-length larger than the chunks actually sent."""
    name = "x-amz-checksum-crc32"
    body = aws_chunked_body(DATA, 8192, {name: checksum_b64("CRC32", DATA)})
    path = f"/{bucket}/short-decoded"
    headers = gateway.signed_headers(
        "PUT", path, payload_hash=STREAMING_UNSIGNED_TRAILER,
        headers={"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(DATA) + 10),
                 "x-amz-trailer": name, "content-length": str(len(body))},
    )
    resp = requests.put(gateway.endpoint + path, data=body, headers=headers, timeout=30)
    assert 400 <= resp.status_code < 500, resp.text
    assert not object_exists(s3, bucket, "short-decoded")
