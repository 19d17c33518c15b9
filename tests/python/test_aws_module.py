"""The `aws.wasm` policy module: AWS S3's SSE-S3 semantics, through the gateway.

The cases follow the SSE-S3 part of the public S3 conformance suite (ceph
s3-tests: per-object SSE-S3 uploads of several sizes, bucket default
encryption, HEAD/GET refusing the header, multipart, POST, copies between
plain and SSE-S3 objects), written again here against this gateway. The
module is switched to the way an operator does it: `sealgate policy load`.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from conftest import ENCRYPTED, POLICIES_DIR, Gateway, unique_bucket_name
from helpers import add_headers, empty_bucket, expect_error, get_bytes, on_upstream_backend, random_bytes

AWS = POLICIES_DIR / "aws.wasm"
DEFAULT = POLICIES_DIR / "default.wasm"
SSE = "x-amz-server-side-encryption"
MiB = 1024 * 1024


def load_policy(gw: Gateway, path) -> None:
    out = gw.cli_load_policy(path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def aws_gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("sealgate-aws"))
    gw.start()
    load_policy(gw, AWS)
    yield gw
    gw.stop()


@pytest.fixture
def s3(aws_gateway):
    return aws_gateway.client()


@pytest.fixture
def bucket(s3):
    """A bucket created with no encryption header: plain, with its own key."""
    name = unique_bucket_name("aws")
    s3.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3, name)
    s3.delete_bucket(Bucket=name)


def sse_of(response: dict) -> str | None:
    return response["ResponseMetadata"]["HTTPHeaders"].get(SSE)


def marked(size: int) -> bytes:
    """Random bytes that start with a marker the at-rest scans look for."""
    marker = b"AWS-MODULE-PLAINTEXT-" + random_bytes(8).hex().encode()
    return (marker + random_bytes(size))[:size] if size >= len(marker) else random_bytes(size)


def assert_not_at_rest(gw: Gateway, data: bytes) -> None:
    """No plaintext where the gateway stores, and upstream no plaintext
    digest either (the embedded store keeps a sealed object's MD5, its
    ETag, in its own metadata, as AWS answers it; docs/scale-out.md)."""
    needles = [data[:29]]
    if on_upstream_backend():
        needles += [hashlib.md5(data).hexdigest().encode(), hashlib.sha256(data).hexdigest().encode()]
        needles += [hashlib.md5(data).digest(), hashlib.sha256(data).digest()]
    assert gw.stored_containing(needles) == [], "plaintext or its digest stored"


def test_the_cli_switches_to_the_aws_module(aws_gateway):
    info = aws_gateway.policy()
    assert info["name"] == "aws", info
    assert info["sha256"] == hashlib.sha256(AWS.read_bytes()).hexdigest()


@pytest.mark.parametrize("size", [1, 1024, MiB, 8 * MiB])
def test_sse_s3_encrypted_upload(aws_gateway, s3, bucket, size):
    data = marked(size)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data, ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["ServerSideEncryption"] == "AES256"
    assert got["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="obj")["ServerSideEncryption"] == "AES256"
    if size >= 29:
        assert_not_at_rest(aws_gateway, data)


def test_without_the_header_objects_stay_plaintext(aws_gateway, s3, bucket):
    data = marked(4096)
    put = s3.put_object(Bucket=bucket, Key="plain", Body=data)
    assert sse_of(put) is None
    got = s3.get_object(Bucket=bucket, Key="plain")
    assert sse_of(got) is None and got["Body"].read() == data
    # Stored as sent, which also shows the at-rest scan can see plaintext.
    assert aws_gateway.stored_containing([data[:29]]), "the scan found no plaintext object"
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket), "ServerSideEncryptionConfigurationNotFoundError",
                 404)


@pytest.mark.parametrize("size", [1, 1024, MiB, 8 * MiB])
def test_sse_s3_default_upload(aws_gateway, s3, bucket, size):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    data = marked(size)
    assert s3.put_object(Bucket=bucket, Key="obj", Body=data)["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == data
    if size >= 29:
        assert_not_at_rest(aws_gateway, data)


def test_bucket_encryption_put_get_delete(s3, bucket):
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket), "ServerSideEncryptionConfigurationNotFoundError",
                 404)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    s3.put_object(Bucket=bucket, Key="during", Body=b"sealed by default")
    s3.delete_bucket_encryption(Bucket=bucket)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket), "ServerSideEncryptionConfigurationNotFoundError",
                 404)
    assert sse_of(s3.put_object(Bucket=bucket, Key="after", Body=b"plain again")) is None
    # What was sealed stays readable, and still says so.
    got = s3.get_object(Bucket=bucket, Key="during")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"sealed by default"
    # And the object header still seals one object.
    s3.put_object(Bucket=bucket, Key="asked", Body=b"x", ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=bucket, Key="asked")["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize("method", ["head_object", "get_object"])
def test_the_header_on_a_read_is_refused(aws_gateway, bucket, method):
    client = aws_gateway.client()
    client.put_object(Bucket=bucket, Key="obj", Body=b"data", ServerSideEncryption="AES256")
    add_headers(client, method.replace("_object", "").capitalize() + "Object", {SSE: "AES256"})
    expect_error(lambda: getattr(client, method)(Bucket=bucket, Key="obj"),
                 "400" if method == "head_object" else "InvalidArgument", 400)


def test_listings_report_both_kinds_as_head_does(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a-plain", Body=b"p" * 1000)
    s3.put_object(Bucket=bucket, Key="b-sealed", Body=b"s" * 2000, ServerSideEncryption="AES256")
    listed = {o["Key"]: (o["Size"], o["ETag"]) for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    for key, size in [("a-plain", 1000), ("b-sealed", 2000)]:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert listed[key] == (size, head["ETag"]), (key, listed[key], head["ETag"])


@pytest.mark.parametrize("default", [False, True], ids=["header", "bucket-default"])
def test_sse_s3_multipart_upload(aws_gateway, s3, bucket, default):
    if default:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    extra = {} if default else {"ServerSideEncryption": "AES256"}
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", **extra)
    assert created["ServerSideEncryption"] == "AES256"
    parts = [marked(5 * MiB), marked(5 * MiB), marked(1234)]
    etags = []
    for n, body in enumerate(parts, start=1):
        up = s3.upload_part(Bucket=bucket, Key="mp", UploadId=created["UploadId"], PartNumber=n, Body=body)
        assert up["ServerSideEncryption"] == "AES256"
        etags.append({"PartNumber": n, "ETag": up["ETag"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=created["UploadId"],
                                        MultipartUpload={"Parts": etags})
    assert done["ServerSideEncryption"] == "AES256"
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ServerSideEncryption"] == "AES256"
    assert got["Body"].read() == b"".join(parts)
    ranged = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
    assert ranged["Body"].read() == b"".join(parts)[5 * MiB - 10:5 * MiB + 10]
    for part in parts:
        assert_not_at_rest(aws_gateway, part)


@pytest.mark.parametrize("default", [False, True], ids=["field", "bucket-default"])
def test_sse_s3_post_object(aws_gateway, s3, bucket, default):
    if default:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    fields = {} if default else {SSE: "AES256"}
    presigned = aws_gateway.client(signature_version="s3v4").generate_presigned_post(
        Bucket=bucket, Key="posted", Fields=fields, Conditions=[{k: v} for k, v in fields.items()], ExpiresIn=300)
    data = marked(100_000)
    resp = requests.post(presigned["url"], data=presigned["fields"], files={"file": ("f.bin", data)}, timeout=60)
    assert resp.status_code == 204, resp.text
    assert resp.headers.get(SSE) == "AES256"
    got = s3.get_object(Bucket=bucket, Key="posted")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == data
    assert_not_at_rest(aws_gateway, data)


@pytest.mark.parametrize("source_sealed", [False, True], ids=["from-plain", "from-sse-s3"])
@pytest.mark.parametrize("dest_sealed", [False, True], ids=["to-plain", "to-sse-s3"])
@pytest.mark.parametrize("size", [1, 8 * MiB])
def test_copies_between_plain_and_sse_s3(s3, bucket, source_sealed, dest_sealed, size):
    data = random_bytes(size)
    s3.put_object(Bucket=bucket, Key="src", Body=data, **({"ServerSideEncryption": "AES256"} if source_sealed else {}))
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                            **({"ServerSideEncryption": "AES256"} if dest_sealed else {}))
    assert sse_of(copied) == ("AES256" if dest_sealed else None)
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert sse_of(got) == ("AES256" if dest_sealed else None)
    assert got["Body"].read() == data


def test_part_copies_follow_the_upload(s3, bucket):
    source = random_bytes(6 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="AES256")
    copied = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=created["UploadId"], PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["ServerSideEncryption"] == "AES256"
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=created["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1,
                                                             "ETag": copied["CopyPartResult"]["ETag"]}]})
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == source


def test_what_the_default_module_refuses_stays_refused(aws_gateway, s3, bucket):
    expect_error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms"),
                 "InvalidArgument", 400)
    expect_error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", SSECustomerAlgorithm="AES256",
                                       SSECustomerKey="k" * 32), "NotImplemented", 501)
    expect_error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                                       SSEKMSKeyId="some-key"), "InvalidArgument", 400)
    bad = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
    expect_error(lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=bad),
                 "InvalidArgument", 400)
    # The documented header on CreateBucket still makes an encrypted bucket.
    name = unique_bucket_name("aws-enc")
    aws_gateway.encrypting_client().create_bucket(Bucket=name)
    try:
        assert s3.put_object(Bucket=name, Key="k", Body=b"x")["ServerSideEncryption"] == "AES256"
    finally:
        empty_bucket(s3, name)
        s3.delete_bucket(Bucket=name)


def test_a_bucket_from_before_the_switch_gets_its_key_from_bucket_encryption(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    name = unique_bucket_name("before")
    s3.create_bucket(Bucket=name)  # under the default module: no key
    s3.put_object(Bucket=name, Key="old", Body=b"old plaintext")
    load_policy(gw, AWS)
    expect_error(lambda: s3.put_object(Bucket=name, Key="k", Body=b"x", ServerSideEncryption="AES256"),
                 "InvalidArgument", 400)
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=ENCRYPTED)
    s3.delete_bucket_encryption(Bucket=name)
    assert s3.put_object(Bucket=name, Key="k", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] \
        == "AES256"
    assert get_bytes(s3, name, "old") == b"old plaintext"
    # Back to the default module: the sealed object still opens.
    load_policy(gw, DEFAULT)
    got = s3.get_object(Bucket=name, Key="k")
    assert got["ServerSideEncryption"] == "AES256" and got["Body"].read() == b"x"
