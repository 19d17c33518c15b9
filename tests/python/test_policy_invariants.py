"""The host holds the line whatever a policy module decides.

Each fixture module runs the real rules except for buckets named
`hostile*`, where it lies while behaving: it stores plaintext in an
encrypted bucket and claims AES256, seals under keys that are not the
bucket's, leaves keys behind on denied requests, or asks for another
bucket's key to be destroyed. It is loaded through `PUT /policy` like any
module (it passes the self-test), and every such request must be contained:
500 InternalError, nothing written, no key created, used or destroyed that
was not the request's to touch. The `*-always` variants, refused at swap,
are in test_policy_swap.py.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager

from conftest import POLICIES_DIR, unique_bucket_name
from helpers import (
    AWS_SSE,
    add_headers,
    expect_error,
    get_bytes,
    kms_key_files,
    object_exists,
    put,
)

DEFAULT = POLICIES_DIR / "default.wasm"
FIXTURES = POLICIES_DIR / "fixtures"
VIOLATIONS = "sealgate_policy_violations_total"


def key_ids(gw) -> set[str]:
    return {os.path.basename(path)[: -len(".key")] for path in kms_key_files(gw.kms_dir)}


def encrypted_bucket(gw, prefix: str) -> tuple[str, str]:
    """An encrypted bucket created under the current module, and its key id."""
    before = key_ids(gw)
    name = unique_bucket_name(prefix)
    gw.encrypting_client().create_bucket(Bucket=name)
    created = key_ids(gw) - before
    assert len(created) == 1, created
    return name, created.pop()


def victim_with_object(gw) -> tuple[str, str]:
    """Another encrypted bucket with an object, and its key id."""
    victim, victim_key = encrypted_bucket(gw, "victim")
    put(gw.client(), victim, "secret", b"the victim's object")
    return victim, victim_key


def marker_data() -> tuple[bytes, bytes]:
    marker = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
    return marker, marker * 3000


@contextmanager
def loaded(gw, fixture: str):
    resp = gw.load_policy(FIXTURES / fixture)
    assert resp.status_code == 200, f"PUT /policy {fixture}: {resp.status_code} {resp.text}"
    try:
        yield
    finally:
        restored = gw.load_policy(DEFAULT)
        assert restored.status_code == 200, restored.text


def internal_error(call) -> None:
    expect_error(call, "InternalError", 500)


def test_plaintext_decisions_in_encrypted_buckets_are_refused(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    enc, _ = encrypted_bucket(gw, "hostile-enc")
    plain = unique_bucket_name("hostile-plain")
    s3.create_bucket(Bucket=plain)
    put(s3, enc, "old", b"sealed under the default module")
    upload = s3.create_multipart_upload(Bucket=enc, Key="mpu")["UploadId"]
    marker, data = marker_data()
    violations = gw.metric(VIOLATIONS)

    with loaded(gw, "plaintext-on-hostile.wasm"):
        internal_error(lambda: put(s3, enc, "new", data))
        internal_error(lambda: s3.create_multipart_upload(Bucket=enc, Key="mpu2"))
        internal_error(lambda: s3.upload_part(Bucket=enc, Key="mpu", UploadId=upload, PartNumber=1, Body=data))
        internal_error(lambda: s3.copy_object(Bucket=enc, Key="copy", CopySource={"Bucket": enc, "Key": "old"}))
        assert gw.metric(VIOLATIONS) == violations + 4, "violations were not counted"
        # A plain bucket is the module's to leave plain, but the header says
        # what was stored, not what the module claims.
        written = put(s3, plain, "k", b"plain bytes")
        assert "ServerSideEncryption" not in written, written
        assert "ServerSideEncryption" not in s3.head_object(Bucket=plain, Key="k")
        assert AWS_SSE not in s3.get_object(Bucket=plain, Key="k")["ResponseMetadata"]["HTTPHeaders"]
        # A sealed object read through the same module still says so.
        assert s3.head_object(Bucket=enc, Key="old")["ServerSideEncryption"] == "AES256"

    for key in ("new", "mpu2", "copy"):
        assert not object_exists(s3, enc, key), key
    assert s3.list_parts(Bucket=enc, Key="mpu", UploadId=upload).get("Parts", []) == []
    assert gw.stored_containing([marker]) == [], "plaintext of an encrypted bucket reached storage"
    assert get_bytes(s3, enc, "old") == b"sealed under the default module"
    module_sha256 = hashlib.sha256((FIXTURES / "plaintext-on-hostile.wasm").read_bytes()).hexdigest()
    refusals = [line for line in gw.log_tail(400).splitlines() if "policy decision refused" in line]
    assert refusals and all(module_sha256 in line for line in refusals), refusals


def test_keys_outside_the_request_are_refused(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    victim, victim_key = victim_with_object(gw)
    hostile, _ = encrypted_bucket(gw, "hostile-enc")
    hostile_plain = unique_bucket_name("hostile-plain")
    s3.create_bucket(Bucket=hostile_plain)
    _, data = marker_data()
    keys_before = key_ids(gw)
    violations = gw.metric(VIOLATIONS)
    named = gw.client()
    add_headers(named, "CreateBucket", {"x-amz-meta-victim": victim_key})
    add_headers(named, "PutBucketEncryption", {"x-amz-meta-victim": victim_key})
    new_bucket = unique_bucket_name("hostile-new")
    source = {"Bucket": victim, "Key": "secret"}
    aes = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}

    with loaded(gw, "foreign-seal-on-hostile.wasm"):
        # A master key created for another bucket.
        internal_error(lambda: put(s3, hostile, "a", data))
        # A data key under the victim bucket's key, named in a header.
        internal_error(lambda: put(s3, hostile, "b", data, Metadata={"victim": victim_key}))
        # The copy source's own data key, to seal the copy with.
        internal_error(lambda: s3.copy_object(Bucket=hostile, Key="c", CopySource=source))
        internal_error(lambda: s3.copy_object(Bucket=hostile_plain, Key="c", CopySource=source))
        # The victim's key attached to a new bucket, or to an existing one.
        internal_error(lambda: named.create_bucket(Bucket=new_bucket))
        internal_error(lambda: named.put_bucket_encryption(
            Bucket=hostile_plain, ServerSideEncryptionConfiguration=aes))
        assert gw.metric(VIOLATIONS) == violations + 6

    assert key_ids(gw) == keys_before, "a refused request created or destroyed a master key"
    for bucket, key in ((hostile, "a"), (hostile, "b"), (hostile, "c"), (hostile_plain, "c")):
        assert not object_exists(s3, bucket, key), (bucket, key)
    expect_error(lambda: s3.head_bucket(Bucket=new_bucket), "404", 404)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=hostile_plain),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)
    assert get_bytes(s3, victim, "secret") == b"the victim's object"


def test_keys_created_for_refused_requests_are_destroyed(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    hostile_plain = unique_bucket_name("hostile-plain")
    s3.create_bucket(Bucket=hostile_plain)
    keys_before = key_ids(gw)
    new_bucket = unique_bucket_name("hostile-new")
    aes = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}

    with loaded(gw, "leak-keys-on-hostile.wasm"):
        # Created a key, then denied.
        expect_error(lambda: gw.encrypting_client().create_bucket(Bucket=new_bucket), "AccessDenied", 403)
        assert key_ids(gw) == keys_before, "the key of a denied CreateBucket was left in the KMS"
        # Created a key, then answered a malformed decision.
        internal_error(lambda: s3.put_bucket_encryption(Bucket=hostile_plain, ServerSideEncryptionConfiguration=aes))
        assert key_ids(gw) == keys_before, "the key of a failed PutBucketEncryption was left in the KMS"

    expect_error(lambda: s3.head_bucket(Bucket=new_bucket), "404", 404)
    expect_error(lambda: s3.get_bucket_encryption(Bucket=hostile_plain),
                 "ServerSideEncryptionConfigurationNotFoundError", 404)


def test_a_module_cannot_destroy_another_buckets_key(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    victim, victim_key = victim_with_object(gw)
    hostile, hostile_key = encrypted_bucket(gw, "hostile-enc")
    violations = gw.metric(VIOLATIONS)

    with loaded(gw, "destroy-other-on-hostile.wasm"):
        internal_error(lambda: s3.copy_object(Bucket=hostile, Key="c", CopySource={"Bucket": victim, "Key": "secret"}))
        assert gw.metric(VIOLATIONS) == violations + 1
        # Its own key the bucket's deletion still destroys.
        s3.delete_bucket(Bucket=hostile)

    keys = key_ids(gw)
    assert victim_key in keys, "another bucket's key was destroyed"
    assert hostile_key not in keys, "DeleteBucket no longer destroys the bucket's own key"
    assert get_bytes(s3, victim, "secret") == b"the victim's object"
