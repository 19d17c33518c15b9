"""Bucket encryption (x-amz-scal-server-side-encryption) through the real gateway.

Product rules (shared/spec/bucket-encryption.rst):
- a bucket created with ``x-amz-scal-server-side-encryption: AES256`` is
  encrypted; every object written into it is sealed with no client header;
- an object-level encryption header on a bucket without bucket encryption, or
  any encryption header whose value is not exactly ``AES256``, is
  ``400 InvalidArgument``; nothing may pass as encrypted when it is not.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from conftest import UNALIGNED_SEALED_PARTS, unique_bucket_name
from helpers import (
    AWS_SSE,
    KiB,
    MiB,
    SCAL_SSE,
    add_headers,
    expect_error,
    kms_key_files,
    assert_sealed_etag,
    assert_sealed_multipart_etag,
    multipart_etag,
    object_exists,
    put,
    put_then_reuse,
    random_bytes,
    single_put_etag,
    xml_error_code,
)

CHUNK = 64 * KiB
PART = 5 * MiB
BAD_VALUES = ["aws:kms", "aes256", "", "AES128", "aws:kms:dsse", "AES 256"]


def test_the_suite_runs_on_the_module_it_was_given(gateway):
    """make test runs this suite twice: on the embedded default (contract
    2.0.0), and with SEALGATE_TEST_POLICY on the default module as built
    against contract 1.0.0; the gateway must really run that module."""
    info = gateway.policy()
    given = os.environ.get("SEALGATE_TEST_POLICY")
    if given:
        assert info["sha256"] == hashlib.sha256(Path(given).read_bytes()).hexdigest(), info
    else:
        assert (info["source"], info["contract"]) == ("embedded default", "2.0.0"), info


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def sse_of(resp: dict) -> str | None:
    return resp.get("ServerSideEncryption")


def assert_sealed_response(resp: dict, what: str) -> None:
    assert sse_of(resp) == "AES256", f"{what}: expected ServerSideEncryption AES256, got {sse_of(resp)!r}"
    assert resp["ResponseMetadata"]["HTTPHeaders"].get(AWS_SSE) == "AES256", what


def assert_plain_response(resp: dict, what: str) -> None:
    assert sse_of(resp) is None, f"{what}: plaintext object reports ServerSideEncryption {sse_of(resp)!r}"
    assert AWS_SSE not in resp["ResponseMetadata"]["HTTPHeaders"], what


def assert_sealed_object(s3, bucket, key, data: bytes) -> None:
    """GET and HEAD give back the exact plaintext and say AES256."""
    got = s3.get_object(Bucket=bucket, Key=key)
    body = got["Body"].read()
    assert len(body) == len(data) and body == data, f"{key}: GET body differs from what was written"
    assert got["ContentLength"] == len(data)
    assert_sealed_response(got, f"GET {key}")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data), f"HEAD {key} must report the plaintext size"
    assert_sealed_response(head, f"HEAD {key}")


def assert_plain_object(s3, bucket, key, data: bytes) -> None:
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == data
    assert_plain_response(got, f"GET {key}")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert_plain_response(head, f"HEAD {key}")


def header_client(gateway, operation: str, headers: dict[str, str]):
    client = gateway.client()
    add_headers(client, operation, headers)
    return client


def not_on_disk(gateway, before: set, *plaintexts: bytes) -> None:
    """Nothing stored since `before` (see `Gateway.stored_objects`: the
    embedded store's files, or the upstream's objects) contains a slice of
    the plaintexts."""
    new = gateway.stored_objects() - before
    assert new, "no object data was stored"
    probes = []
    for data in plaintexts:
        if len(data) >= 64:
            probes += [data[:64], data[len(data) // 2 : len(data) // 2 + 64], data[-64:]]
    for item in new:
        blob = gateway.stored_bytes(item)
        for probe in probes:
            assert probe not in blob, f"plaintext found in storage in {item}"


def mpu(s3, bucket, key, parts: list[bytes], **create_kwargs) -> tuple[dict, list[dict]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **create_kwargs)["UploadId"]
    done, responses = [], []
    for number, body in enumerate(parts, 1):
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        responses.append(resp)
        done.append({"PartNumber": number, "ETag": resp["ETag"]})
    complete = s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    return complete, responses


def post_object(presigner, bucket, key, data, fields=None, conditions=None) -> requests.Response:
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key=key, Fields=fields or {}, Conditions=conditions or [], ExpiresIn=300
    )
    return requests.post(
        presigned["url"], data=presigned["fields"], files={"file": ("upload.bin", data)}, timeout=60
    )


def bucket_exists(s3, name) -> bool:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404, exc.response
        return False
    return True


# --------------------------------------------------------------------------
# 1. CreateBucket with the scal header
# --------------------------------------------------------------------------


def test_create_encrypted_bucket(gateway, make_encrypted_bucket):
    s3 = gateway.client()
    keys_before = kms_key_files(gateway.kms_dir)
    name = make_encrypted_bucket()
    enc = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]
    algos = [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in enc["Rules"]]
    assert algos == ["AES256"], enc
    new_keys = kms_key_files(gateway.kms_dir) - keys_before
    assert len(new_keys) == 1, f"expected one new local-<hex>.key for the bucket, got {new_keys}"
    # Nothing of the key store lives in the data dir.
    assert not kms_key_files(gateway.data_dir), "KMS key files found under the data dir"


def test_plain_bucket_has_no_key_and_no_encryption(gateway, make_bucket):
    s3 = gateway.client()
    keys_before = kms_key_files(gateway.kms_dir)
    name = make_bucket()
    assert kms_key_files(gateway.kms_dir) == keys_before
    expect_error(lambda: s3.get_bucket_encryption(Bucket=name),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_create_bucket_bad_scal_value_refused(gateway, value):
    s3 = gateway.client()
    name = unique_bucket_name("badsse")
    keys_before = kms_key_files(gateway.kms_dir)
    client = gateway.encrypting_client(value)
    try:
        expect_error(lambda: client.create_bucket(Bucket=name), "InvalidArgument", 400)
        assert not bucket_exists(s3, name), f"bucket created despite {SCAL_SSE}: {value!r}"
        assert kms_key_files(gateway.kms_dir) == keys_before, "a KMS key was created for a refused bucket"
    finally:
        if bucket_exists(s3, name):
            s3.delete_bucket(Bucket=name)


def test_create_bucket_aws_sse_header_bad_value_refused(gateway):
    """The spec names both headers; a bad x-amz-server-side-encryption on CreateBucket is refused too."""
    s3 = gateway.client()
    name = unique_bucket_name("badsse")
    client = header_client(gateway, "CreateBucket", {AWS_SSE: "aws:kms"})
    keys_before = kms_key_files(gateway.kms_dir)
    try:
        expect_error(lambda: client.create_bucket(Bucket=name), "InvalidArgument", 400)
        assert not bucket_exists(s3, name)
        assert kms_key_files(gateway.kms_dir) == keys_before
    finally:
        if bucket_exists(s3, name):
            s3.delete_bucket(Bucket=name)


# --------------------------------------------------------------------------
# 2. Every way of writing into an encrypted bucket seals, transparently
# --------------------------------------------------------------------------


def test_put_object_sealed(gateway, enc_bucket):
    s3 = gateway.client()
    before = gateway.stored_objects()
    data = random_bytes(200 * KiB + 17)
    resp = put(s3, enc_bucket, "obj", data)
    assert_sealed_response(resp, "PUT")
    assert_sealed_etag(resp["ETag"], data)
    assert_sealed_object(s3, enc_bucket, "obj", data)
    listed = s3.list_objects_v2(Bucket=enc_bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("obj", len(data))], "listing must show the plaintext size"
    not_on_disk(gateway, before, data)


def test_put_object_sealed_trailer_checksum(gateway, enc_bucket):
    s3 = gateway.client(trailer_checksums=True)
    data = random_bytes(150 * KiB)
    resp = put(s3, enc_bucket, "chunked", data)
    assert_sealed_response(resp, "PUT aws-chunked")
    assert_sealed_object(s3, enc_bucket, "chunked", data)


def test_copy_object_into_encrypted_bucket(gateway, enc_bucket, bucket):
    s3 = gateway.client()
    data = random_bytes(130 * KiB)
    put(s3, bucket, "src", data)
    before = gateway.stored_objects()
    resp = s3.copy_object(Bucket=enc_bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert_sealed_response(resp, "CopyObject")
    assert_sealed_etag(resp["CopyObjectResult"]["ETag"], data)
    assert_sealed_object(s3, enc_bucket, "dst", data)
    not_on_disk(gateway, before, data)


@pytest.mark.parametrize("presign", ["default-presign", "s3v4-presign"])
def test_post_object_sealed(gateway, enc_bucket, presign):
    s3 = gateway.client()
    presigner = gateway.client(signature_version="s3v4") if presign == "s3v4-presign" else s3
    data = random_bytes(100 * KiB + 3)
    before = gateway.stored_objects()
    resp = post_object(presigner, enc_bucket, "posted", data)
    assert resp.status_code == 204, resp.text
    assert resp.headers.get(AWS_SSE) == "AES256", f"PostObject response headers: {dict(resp.headers)}"
    assert_sealed_object(s3, enc_bucket, "posted", data)
    not_on_disk(gateway, before, data)


@UNALIGNED_SEALED_PARTS
def test_multipart_sealed_every_part(gateway, enc_bucket):
    s3 = gateway.client()
    parts = [random_bytes(PART), random_bytes(PART + 12345), random_bytes(70 * KiB + 1)]
    before = gateway.stored_objects()
    upload_id = s3.create_multipart_upload(Bucket=enc_bucket, Key="mpu")
    assert_sealed_response(upload_id, "CreateMultipartUpload")
    done = []
    for number, body in enumerate(parts, 1):
        resp = s3.upload_part(Bucket=enc_bucket, Key="mpu", UploadId=upload_id["UploadId"],
                              PartNumber=number, Body=body)
        assert_sealed_response(resp, f"UploadPart {number}")
        done.append({"PartNumber": number, "ETag": resp["ETag"]})
    # Every part's data file exists already and holds no plaintext.
    not_on_disk(gateway, before, *parts)
    complete = s3.complete_multipart_upload(Bucket=enc_bucket, Key="mpu", UploadId=upload_id["UploadId"],
                                            MultipartUpload={"Parts": done})
    assert_sealed_response(complete, "CompleteMultipartUpload")
    assert_sealed_multipart_etag(complete["ETag"], parts)
    whole = b"".join(parts)
    assert_sealed_object(s3, enc_bucket, "mpu", whole)
    # Part-number reads go through the sealed parts too.
    for number, body in enumerate(parts, 1):
        got = s3.get_object(Bucket=enc_bucket, Key="mpu", PartNumber=number)
        assert got["Body"].read() == body, f"part {number}"
    not_on_disk(gateway, before, *parts)


@UNALIGNED_SEALED_PARTS
def test_upload_part_copy_sealed(gateway, enc_bucket, bucket):
    s3 = gateway.client()
    source = random_bytes(PART + 300 * KiB)
    put(s3, bucket, "plain-src", source)
    put(s3, enc_bucket, "sealed-src", source)
    upload_id = s3.create_multipart_upload(Bucket=enc_bucket, Key="assembled")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=enc_bucket, Key="assembled", UploadId=upload_id, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "plain-src"})
    assert_sealed_response(r1, "UploadPartCopy")
    r2 = s3.upload_part_copy(Bucket=enc_bucket, Key="assembled", UploadId=upload_id, PartNumber=2,
                             CopySource={"Bucket": enc_bucket, "Key": "sealed-src"},
                             CopySourceRange="bytes=65530-200000")
    assert_sealed_response(r2, "UploadPartCopy")
    complete = s3.complete_multipart_upload(
        Bucket=enc_bucket, Key="assembled", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                                   {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]})
    assert_sealed_response(complete, "CompleteMultipartUpload")
    assert_sealed_object(s3, enc_bucket, "assembled", source + source[65530:200001])


def test_plain_bucket_objects_never_say_aes256(gateway, bucket):
    s3 = gateway.client()
    data = random_bytes(90 * KiB)
    assert_plain_response(put(s3, bucket, "p", data), "PUT")
    assert_plain_object(s3, bucket, "p", data)
    copy = s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "p"})
    assert_plain_response(copy, "CopyObject")
    assert_plain_object(s3, bucket, "c", data)
    complete, part_resps = mpu(s3, bucket, "m", [random_bytes(PART), data])
    assert_plain_response(complete, "CompleteMultipartUpload")
    for resp in part_resps:
        assert_plain_response(resp, "UploadPart")
    resp = post_object(s3, bucket, "posted", data)
    assert resp.status_code == 204, resp.text
    assert AWS_SSE not in resp.headers
    assert_plain_object(s3, bucket, "posted", data)


# --------------------------------------------------------------------------
# 3. Object-level encryption headers
# --------------------------------------------------------------------------

OBJECT_HEADERS = [AWS_SSE, SCAL_SSE]


@pytest.mark.parametrize("header", OBJECT_HEADERS)
@pytest.mark.parametrize("value", ["aws:kms", "aes256", "", "AES-256"])
@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_object_header_bad_value_refused(gateway, make_bucket, make_encrypted_bucket, header, value, kind):
    s3 = gateway.client()
    name = make_encrypted_bucket() if kind == "encrypted" else make_bucket()
    client = header_client(gateway, "PutObject", {header: value})
    expect_error(lambda: put(client, name, "k", b"data"), "InvalidArgument", 400)
    assert not object_exists(s3, name, "k")


@pytest.mark.parametrize("header", OBJECT_HEADERS)
def test_object_header_aes256_on_plain_bucket_refused(gateway, bucket, header):
    s3 = gateway.client()
    put(s3, bucket, "src", b"source")
    put_client = header_client(gateway, "PutObject", {header: "AES256"})
    expect_error(lambda: put(put_client, bucket, "k", b"data"), "InvalidArgument", 400)
    copy_client = header_client(gateway, "CopyObject", {header: "AES256"})
    expect_error(lambda: copy_client.copy_object(Bucket=bucket, Key="copied",
                                                 CopySource={"Bucket": bucket, "Key": "src"}),
                 "InvalidArgument", 400)
    mpu_client = header_client(gateway, "CreateMultipartUpload", {header: "AES256"})
    expect_error(lambda: mpu_client.create_multipart_upload(Bucket=bucket, Key="m"), "InvalidArgument", 400)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])) == ["src"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_object_header_aes256_on_plain_bucket_post_refused(gateway, bucket):
    s3 = gateway.client()
    resp = post_object(s3, bucket, "posted", b"data", fields={AWS_SSE: "AES256"},
                       conditions=[{AWS_SSE: "AES256"}])
    stored = object_exists(s3, bucket, "posted")
    assert resp.status_code == 400, (
        f"PostObject with form field {AWS_SSE}=AES256 into a plaintext bucket: expected 400 "
        f"InvalidArgument, got {resp.status_code} {resp.text!r}; object stored: {stored}")
    assert xml_error_code(resp.content) == "InvalidArgument", resp.text
    assert not stored


def test_object_header_aes256_on_plain_bucket_via_boto_param(gateway, bucket):
    s3 = gateway.client()
    expect_error(lambda: put(s3, bucket, "k", b"data", ServerSideEncryption="AES256"), "InvalidArgument", 400)
    assert not object_exists(s3, bucket, "k")


@pytest.mark.parametrize("value", ["aws:kms", "AES256"])
@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_upload_part_header(gateway, make_bucket, make_encrypted_bucket, kind, value):
    """UploadPart follows the same rule: only AES256, only on an encrypted bucket."""
    s3 = gateway.client()
    name = make_encrypted_bucket() if kind == "encrypted" else make_bucket()
    upload_id = s3.create_multipart_upload(Bucket=name, Key="m")["UploadId"]
    client = header_client(gateway, "UploadPart", {AWS_SSE: value})
    call = lambda: client.upload_part(Bucket=name, Key="m", UploadId=upload_id, PartNumber=1, Body=b"part")  # noqa: E731
    if kind == "encrypted" and value == "AES256":
        assert_sealed_response(call(), "UploadPart with AES256")
        assert [p["PartNumber"] for p in s3.list_parts(Bucket=name, Key="m", UploadId=upload_id)["Parts"]] == [1]
    else:
        expect_error(call, "InvalidArgument", 400)
        assert not s3.list_parts(Bucket=name, Key="m", UploadId=upload_id).get("Parts")
    s3.abort_multipart_upload(Bucket=name, Key="m", UploadId=upload_id)


@pytest.mark.parametrize("header", OBJECT_HEADERS)
def test_object_header_aes256_on_encrypted_bucket_accepted(gateway, enc_bucket, bucket, header):
    s3 = gateway.client()
    data = random_bytes(70 * KiB)
    put_client = header_client(gateway, "PutObject", {header: "AES256"})
    assert_sealed_response(put(put_client, enc_bucket, "k", data), "PUT with header")
    assert_sealed_object(s3, enc_bucket, "k", data)
    put(s3, bucket, "src", data)
    copy_client = header_client(gateway, "CopyObject", {header: "AES256"})
    resp = copy_client.copy_object(Bucket=enc_bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "src"})
    assert_sealed_response(resp, "CopyObject with header")
    assert_sealed_object(s3, enc_bucket, "copied", data)
    mpu_client = header_client(gateway, "CreateMultipartUpload", {header: "AES256"})
    complete, _ = mpu(mpu_client, enc_bucket, "m", [data])
    assert_sealed_response(complete, "CompleteMultipartUpload")
    assert_sealed_object(s3, enc_bucket, "m", data)


def test_object_header_aes256_on_encrypted_bucket_post_accepted(gateway, enc_bucket):
    s3 = gateway.client()
    data = random_bytes(10 * KiB)
    resp = post_object(s3, enc_bucket, "posted", data, fields={AWS_SSE: "AES256"},
                       conditions=[{AWS_SSE: "AES256"}])
    assert resp.status_code == 204, resp.text
    assert_sealed_object(s3, enc_bucket, "posted", data)


def test_object_header_bad_value_post_refused(gateway, enc_bucket):
    s3 = gateway.client()
    resp = post_object(s3, enc_bucket, "posted", b"data", fields={AWS_SSE: "aws:kms"},
                       conditions=[{AWS_SSE: "aws:kms"}])
    stored = object_exists(s3, enc_bucket, "posted")
    assert resp.status_code == 400, (
        f"PostObject with form field {AWS_SSE}=aws:kms: expected 400 InvalidArgument, got "
        f"{resp.status_code} {resp.text!r}; object stored: {stored}")
    assert xml_error_code(resp.content) == "InvalidArgument", resp.text
    assert not stored


# --------------------------------------------------------------------------
# 4. SSE-C and SSE-KMS parameters
# --------------------------------------------------------------------------

SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_sse_c_not_implemented(gateway, make_bucket, make_encrypted_bucket, kind):
    s3 = gateway.client()
    name = make_encrypted_bucket() if kind == "encrypted" else make_bucket()
    put(s3, name, "src", b"source")
    expect_error(lambda: put(s3, name, "k", b"data", **SSE_C), "NotImplemented", 501)
    expect_error(lambda: s3.copy_object(Bucket=name, Key="copied", CopySource={"Bucket": name, "Key": "src"},
                                        **SSE_C), "NotImplemented", 501)
    expect_error(lambda: s3.create_multipart_upload(Bucket=name, Key="m", **SSE_C), "NotImplemented", 501)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])) == ["src"]
    assert not s3.list_multipart_uploads(Bucket=name).get("Uploads")
    # Parts of an ordinary upload, copy sources and reads refuse SSE-C too.
    upload_id = s3.create_multipart_upload(Bucket=name, Key="m")["UploadId"]
    source = {"Bucket": name, "Key": "src"}
    copy_source_c = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": "k" * 32}
    expect_error(lambda: s3.upload_part(Bucket=name, Key="m", UploadId=upload_id, PartNumber=1, Body=b"x",
                                        **SSE_C), "NotImplemented", 501)
    expect_error(lambda: s3.upload_part_copy(Bucket=name, Key="m", UploadId=upload_id, PartNumber=1,
                                             CopySource=source, **SSE_C), "NotImplemented", 501)
    expect_error(lambda: s3.upload_part_copy(Bucket=name, Key="m", UploadId=upload_id, PartNumber=1,
                                             CopySource=source, **copy_source_c), "NotImplemented", 501)
    expect_error(lambda: s3.copy_object(Bucket=name, Key="copied", CopySource=source, **copy_source_c),
                 "NotImplemented", 501)
    assert not s3.list_parts(Bucket=name, Key="m", UploadId=upload_id).get("Parts")
    expect_error(lambda: s3.get_object(Bucket=name, Key="src", **SSE_C), "NotImplemented", 501)
    expect_error(lambda: s3.head_object(Bucket=name, Key="src", **SSE_C), "501", 501)
    s3.abort_multipart_upload(Bucket=name, Key="m", UploadId=upload_id)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])) == ["src"]


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
@pytest.mark.parametrize("params", [
    {"SSEKMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/some-key"},
    {"SSEKMSEncryptionContext": "eyJhIjoiYiJ9"},
    {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "some-key"},
    {"ServerSideEncryption": "AES256", "SSEKMSKeyId": "some-key"},
], ids=["key-id", "context", "kms+key-id", "aes256+key-id"])
def test_sse_kms_params_refused(gateway, make_bucket, make_encrypted_bucket, kind, params):
    s3 = gateway.client()
    name = make_encrypted_bucket() if kind == "encrypted" else make_bucket()
    put(s3, name, "src", b"source")
    expect_error(lambda: put(s3, name, "k", b"data", **params), "InvalidArgument", 400)
    expect_error(lambda: s3.copy_object(Bucket=name, Key="copied", CopySource={"Bucket": name, "Key": "src"},
                                        **params), "InvalidArgument", 400)
    expect_error(lambda: s3.create_multipart_upload(Bucket=name, Key="m", **params), "InvalidArgument", 400)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])) == ["src"]
    assert not s3.list_multipart_uploads(Bucket=name).get("Uploads")


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
@pytest.mark.parametrize("field, value, status, code", [
    ("x-amz-server-side-encryption-customer-algorithm", "AES256", 501, "NotImplemented"),
    ("x-amz-server-side-encryption-aws-kms-key-id", "some-key", 400, "InvalidArgument"),
], ids=["sse-c", "kms-key-id"])
def test_sse_post_form_fields_refused(gateway, make_bucket, make_encrypted_bucket, kind, field, value, status,
                                      code):
    """PostObject carries SSE-C / SSE-KMS as form fields; they must be refused like the PUT headers."""
    s3 = gateway.client()
    name = make_encrypted_bucket() if kind == "encrypted" else make_bucket()
    resp = post_object(s3, name, "posted", b"data", fields={field: value}, conditions=[{field: value}])
    assert resp.status_code == status, (
        f"PostObject with form field {field}={value}: expected {status} {code}, got "
        f"{resp.status_code} {resp.text!r}; object stored: {object_exists(s3, name, 'posted')}")
    assert xml_error_code(resp.content) == code, resp.text
    assert not object_exists(s3, name, "posted")


# --------------------------------------------------------------------------
# 5. Put/Get/DeleteBucketEncryption
# --------------------------------------------------------------------------

AES256_CONFIG = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def test_put_bucket_encryption_then_delete(gateway, bucket):
    s3 = gateway.client()
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)
    early = random_bytes(20 * KiB)
    put(s3, bucket, "early", early)

    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=AES256_CONFIG)
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    before = gateway.stored_objects()
    sealed = random_bytes(100 * KiB)
    assert_sealed_response(put(s3, bucket, "sealed", sealed), "PUT after PutBucketEncryption")
    assert_sealed_object(s3, bucket, "sealed", sealed)
    not_on_disk(gateway, before, sealed)
    # The object written before stays what it was.
    assert_plain_object(s3, bucket, "early", early)

    s3.delete_bucket_encryption(Bucket=bucket)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)
    late = random_bytes(30 * KiB)
    assert_plain_response(put(s3, bucket, "late", late), "PUT after DeleteBucketEncryption")
    assert_plain_object(s3, bucket, "late", late)
    # Previously sealed objects remain sealed and readable.
    assert_sealed_object(s3, bucket, "sealed", sealed)
    # ... and the bucket is plaintext again for object-level headers.
    expect_error(lambda: put(s3, bucket, "k", b"x", ServerSideEncryption="AES256"), "InvalidArgument", 400)


def test_delete_bucket_encryption_on_scal_bucket(gateway, enc_bucket):
    s3 = gateway.client()
    sealed = random_bytes(80 * KiB)
    put(s3, enc_bucket, "sealed", sealed)
    s3.delete_bucket_encryption(Bucket=enc_bucket)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=enc_bucket),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)
    late = random_bytes(10 * KiB)
    assert_plain_response(put(s3, enc_bucket, "late", late), "PUT after DeleteBucketEncryption")
    assert_plain_object(s3, enc_bucket, "late", late)
    assert_sealed_object(s3, enc_bucket, "sealed", sealed)


@pytest.mark.parametrize("algorithm", ["aws:kms", "aws:kms:dsse", "aes256"])
def test_put_bucket_encryption_non_aes256_refused(gateway, bucket, algorithm):
    s3 = gateway.client()
    config = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}]}
    # AWS answers MalformedXML for a value outside the SSEAlgorithm enum.
    codes = ("InvalidArgument", "MalformedXML") if algorithm == "aes256" else "InvalidArgument"
    expect_error(lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=config),
                 codes, 400)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=bucket),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)
    assert_plain_response(put(s3, bucket, "k", b"x"), "PUT")


def test_put_bucket_encryption_kms_refused_on_encrypted_bucket(gateway, enc_bucket):
    s3 = gateway.client()
    config = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                                "KMSMasterKeyID": "some-key"}}]}
    expect_error(lambda: s3.put_bucket_encryption(Bucket=enc_bucket, ServerSideEncryptionConfiguration=config),
                 "InvalidArgument", 400)
    rules = s3.get_bucket_encryption(Bucket=enc_bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    assert_sealed_response(put(s3, enc_bucket, "k", b"x"), "PUT")


# --------------------------------------------------------------------------
# 6. DeleteBucket and the bucket key
# --------------------------------------------------------------------------


def test_delete_empty_encrypted_bucket_removes_key(gateway):
    s3 = gateway.client()
    keys_before = kms_key_files(gateway.kms_dir)
    name = unique_bucket_name("enc")
    gateway.encrypting_client().create_bucket(Bucket=name)
    new = kms_key_files(gateway.kms_dir) - keys_before
    assert len(new) == 1, new
    put(s3, name, "k", b"short-lived")
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    assert not bucket_exists(s3, name)
    assert kms_key_files(gateway.kms_dir) == keys_before, "the bucket's KMS key file survived DeleteBucket"


def test_delete_non_empty_encrypted_bucket_keeps_key(gateway, enc_bucket):
    s3 = gateway.client()
    data = random_bytes(50 * KiB)
    put(s3, enc_bucket, "k", data)
    keys_before = kms_key_files(gateway.kms_dir)
    expect_error(lambda: s3.delete_bucket(Bucket=enc_bucket), "BucketNotEmpty", 409)
    assert kms_key_files(gateway.kms_dir) == keys_before, "key file removed by a refused DeleteBucket"
    assert bucket_exists(s3, enc_bucket)
    assert_sealed_object(s3, enc_bucket, "k", data)
    assert_sealed_response(put(s3, enc_bucket, "k2", b"more"), "PUT after refused DeleteBucket")


# --------------------------------------------------------------------------
# 7. Copy combinations
# --------------------------------------------------------------------------

KINDS = ["plain", "encrypted"]


def assert_plain_etag(etag: str, data: bytes) -> None:
    assert etag == single_put_etag(data)


def _bucket_of(kind, make_bucket, make_encrypted_bucket):
    return make_encrypted_bucket() if kind == "encrypted" else make_bucket()


@pytest.mark.parametrize("dst_kind", KINDS)
@pytest.mark.parametrize("src_kind", KINDS)
def test_copy_object_combinations(gateway, make_bucket, make_encrypted_bucket, src_kind, dst_kind):
    s3 = gateway.client()
    src = _bucket_of(src_kind, make_bucket, make_encrypted_bucket)
    dst = _bucket_of(dst_kind, make_bucket, make_encrypted_bucket)
    data = random_bytes(3 * CHUNK + 123)
    put(s3, src, "src", data, Metadata={"m": "v"}, ContentType="text/x-copy")
    resp = s3.copy_object(Bucket=dst, Key="dst", CopySource={"Bucket": src, "Key": "src"})
    etag_check = assert_sealed_etag if dst_kind == "encrypted" else assert_plain_etag
    etag_check(resp["CopyObjectResult"]["ETag"], data)
    check = assert_sealed_object if dst_kind == "encrypted" else assert_plain_object
    (assert_sealed_response if dst_kind == "encrypted" else assert_plain_response)(resp, "CopyObject")
    check(s3, dst, "dst", data)
    head = s3.head_object(Bucket=dst, Key="dst")
    assert head["Metadata"] == {"m": "v"} and head["ContentType"] == "text/x-copy"
    # Copy onto itself in the same bucket (metadata replace) keeps the bytes.
    s3.copy_object(Bucket=dst, Key="dst", CopySource={"Bucket": dst, "Key": "dst"},
                   MetadataDirective="REPLACE", Metadata={"m": "w"})
    check(s3, dst, "dst", data)
    # The source is untouched.
    (assert_sealed_object if src_kind == "encrypted" else assert_plain_object)(s3, src, "src", data)


@pytest.mark.parametrize("dst_kind", ["plain", pytest.param("encrypted", marks=UNALIGNED_SEALED_PARTS)])
@pytest.mark.parametrize("src_kind", KINDS)
def test_upload_part_copy_combinations(gateway, make_bucket, make_encrypted_bucket, src_kind, dst_kind):
    s3 = gateway.client()
    src = _bucket_of(src_kind, make_bucket, make_encrypted_bucket)
    dst = _bucket_of(dst_kind, make_bucket, make_encrypted_bucket)
    source = random_bytes(PART + 3 * CHUNK + 5)
    put(s3, src, "src", source)
    upload_id = s3.create_multipart_upload(Bucket=dst, Key="assembled")["UploadId"]
    # Unaligned big range, the whole object (no range), an uploaded part, and a
    # small last range straddling the first 64 KiB chunk boundary.
    ranges = [(1000, 1000 + PART - 1), None, "upload", (CHUNK - 7, 2 * CHUNK + 6)]
    done, pieces = [], []
    for number, rng in enumerate(ranges, 1):
        if rng == "upload":
            body = random_bytes(PART)
            resp = s3.upload_part(Bucket=dst, Key="assembled", UploadId=upload_id, PartNumber=number, Body=body)
            done.append({"PartNumber": number, "ETag": resp["ETag"]})
            pieces.append(body)
            continue
        extra = {"CopySourceRange": f"bytes={rng[0]}-{rng[1]}"} if rng else {}
        piece = source[rng[0]:rng[1] + 1] if rng else source
        resp = s3.upload_part_copy(Bucket=dst, Key="assembled", UploadId=upload_id, PartNumber=number,
                                   CopySource={"Bucket": src, "Key": "src"}, **extra)
        (assert_sealed_etag if dst_kind == "encrypted" else assert_plain_etag)(resp["CopyPartResult"]["ETag"], piece)
        (assert_sealed_response if dst_kind == "encrypted" else assert_plain_response)(resp, "UploadPartCopy")
        done.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
        pieces.append(piece)
    complete = s3.complete_multipart_upload(Bucket=dst, Key="assembled", UploadId=upload_id,
                                            MultipartUpload={"Parts": done})
    (assert_sealed_response if dst_kind == "encrypted" else assert_plain_response)(complete, "Complete")
    if dst_kind == "encrypted":
        assert_sealed_multipart_etag(complete["ETag"], pieces)
    else:
        assert complete["ETag"] == multipart_etag(pieces)
    expected = b"".join(pieces)
    (assert_sealed_object if dst_kind == "encrypted" else assert_plain_object)(s3, dst, "assembled", expected)


# --------------------------------------------------------------------------
# 8. Ranges and sizes
# --------------------------------------------------------------------------


def _ranges(size: int, rng: random.Random) -> list[tuple[str, int, int]]:
    """(header, first, last) with inclusive expected bounds."""
    out = [
        ("bytes=0-0", 0, 0),
        (f"bytes={size - 1}-{size - 1}", size - 1, size - 1),
        ("bytes=-1", size - 1, size - 1),
        (f"bytes={size - 1}-", size - 1, size - 1),
        ("bytes=0-", 0, size - 1),
        (f"bytes=-{size}", 0, size - 1),
        (f"bytes=10-{size + 5000}", 10, size - 1),
    ]
    for edge in (CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 4 * CHUNK):
        out += [
            (f"bytes={edge}-{edge}", edge, edge),
            (f"bytes={edge - 1}-{edge + 1}", edge - 1, edge + 1),
            (f"bytes={edge}-", edge, size - 1),
            (f"bytes=0-{edge}", 0, edge),
            (f"bytes=-{size - edge}", edge, size - 1),
        ]
    for _ in range(40):
        a = rng.randrange(size)
        b = rng.randrange(a, size)
        out.append((f"bytes={a}-{b}", a, b))
        out.append((f"bytes={a}-", a, size - 1))
        n = rng.randrange(1, size + 1)
        out.append((f"bytes=-{n}", size - n, size - 1))
    return out


def test_range_reads_on_sealed_object(gateway, enc_bucket):
    s3 = gateway.client()
    size = 300 * KiB + 77
    data = random_bytes(size)
    put(s3, enc_bucket, "ranged", data)
    rng = random.Random(0x5EA1)
    for header, first, last in _ranges(size, rng):
        got = s3.get_object(Bucket=enc_bucket, Key="ranged", Range=header)
        body = got["Body"].read()
        assert body == data[first:last + 1], f"{header}: wrong bytes (got {len(body)} bytes)"
        assert got["ContentRange"] == f"bytes {first}-{last}/{size}", header
        assert got["ContentLength"] == last - first + 1, header
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, header
    expect_error(lambda: s3.get_object(Bucket=enc_bucket, Key="ranged", Range=f"bytes={size}-"),
                 "InvalidRange", 416)


def test_range_reads_on_sealed_multipart_object(gateway, enc_bucket):
    s3 = gateway.client()
    parts = [random_bytes(PART), random_bytes(CHUNK + 3)]
    mpu(s3, enc_bucket, "m", parts)
    whole = b"".join(parts)
    for first, last in [(PART - 2, PART + 1), (PART - CHUNK - 1, PART + CHUNK), (PART + CHUNK, PART + CHUNK + 2),
                        (CHUNK - 1, CHUNK), (0, len(whole) - 1)]:
        got = s3.get_object(Bucket=enc_bucket, Key="m", Range=f"bytes={first}-{last}")
        assert got["Body"].read() == whole[first:last + 1], (first, last)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * MiB + 1])
def test_sizes_round_trip_sealed(gateway, enc_bucket, size):
    s3 = gateway.client()
    data = random_bytes(size)
    resp = put(s3, enc_bucket, "obj", data)
    assert_sealed_response(resp, "PUT")
    assert_sealed_etag(resp["ETag"], data)
    assert_sealed_object(s3, enc_bucket, "obj", data)
    if size:
        got = s3.get_object(Bucket=enc_bucket, Key="obj", Range="bytes=-1")
        assert got["Body"].read() == data[-1:]
    listed = s3.list_objects_v2(Bucket=enc_bucket)["Contents"]
    assert listed[0]["Size"] == size


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1])
def test_sizes_round_trip_sealed_trailer_checksum(gateway, enc_bucket, size):
    s3 = gateway.client(trailer_checksums=True)
    data = random_bytes(size)
    assert_sealed_response(put(s3, enc_bucket, "obj", data), "PUT aws-chunked")
    assert_sealed_object(s3, enc_bucket, "obj", data)


# --------------------------------------------------------------------------
# Refusals leave the connection usable
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["sse-bad-value", "sse-on-plain", "sse-c", "no-such-bucket"])
def test_refused_put_keeps_connection_usable(gateway, bucket, case):
    """An encryption refusal of a PUT with a 100 kB body (no Expect: 100-continue)
    on a keep-alive connection: the next request on that connection is served,
    or the refusal says `Connection: close`. (no-such-bucket: the same check for
    an ordinary early refusal, to tell whether the problem is encryption's.)
    While this fails, tests that send several refused requests on one boto3
    client (SSE-C, SSE-KMS) can fail intermittently with ConnectionClosedError
    on the request after a refusal: the same defect, seen through boto3."""
    path, headers, expected = {
        "sse-bad-value": (f"/{bucket}/k", {AWS_SSE: "aws:kms"}, 400),
        "sse-on-plain": (f"/{bucket}/k", {AWS_SSE: "AES256"}, 400),
        "sse-c": (f"/{bucket}/k", {"x-amz-server-side-encryption-customer-algorithm": "AES256"}, 501),
        "no-such-bucket": (f"/{unique_bucket_name('missing')}/k", {}, 404),
    }[case]
    (status, announced_close), follow_up = put_then_reuse(gateway, path, headers, 100_000)
    assert status == expected, status
    assert announced_close or follow_up == 200, (
        f"PUT {path} {headers} (100000 B body) -> {status} without `Connection: close`, then the "
        f"connection was dropped: ListBuckets on it got {follow_up!r}")
    assert not object_exists(gateway.client(), bucket, "k")
