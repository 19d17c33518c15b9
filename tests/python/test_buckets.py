"""Bucket-level operations."""

import pytest

from conftest import unique_bucket_name
from helpers import expect_error, put, status_of


def test_create_list_head_delete(s3):
    name = unique_bucket_name()
    assert status_of(s3.create_bucket(Bucket=name)) == 200
    try:
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert name in names
        assert status_of(s3.head_bucket(Bucket=name)) == 200
    finally:
        assert status_of(s3.delete_bucket(Bucket=name)) == 204
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    expect_error(lambda: s3.head_bucket(Bucket=name), "404", 404)


def test_list_buckets_has_creation_date_and_owner(s3, bucket):
    resp = s3.list_buckets()
    entry = next(b for b in resp["Buckets"] if b["Name"] == bucket)
    assert entry["CreationDate"] is not None
    assert "Owner" in resp


@pytest.mark.parametrize(
    "name",
    ["A_B", "ab", "a", "a" * 64, "-leading-dash", "trailing-dash-", "two..dots", "192.168.5.4", "UPPER"],
)
def test_invalid_bucket_names(s3, name):
    expect_error(lambda: s3.create_bucket(Bucket=name), "InvalidBucketName", 400)


def test_boundary_valid_bucket_names(s3):
    suffix = unique_bucket_name("b")
    for name in ("abc", "a.b-c", (suffix + "x" * 63)[:63]):
        s3.create_bucket(Bucket=name)
        try:
            assert status_of(s3.head_bucket(Bucket=name)) == 200
        finally:
            s3.delete_bucket(Bucket=name)


def test_recreate_own_bucket(s3, bucket):
    expect_error(lambda: s3.create_bucket(Bucket=bucket), "BucketAlreadyOwnedByYou", 409)


def test_create_bucket_owned_by_other_user(gateway, bucket):
    bob = gateway.bob()
    expect_error(lambda: bob.create_bucket(Bucket=bucket), "BucketAlreadyExists", 409)


def test_head_missing_bucket(s3):
    expect_error(lambda: s3.head_bucket(Bucket=unique_bucket_name("missing")), "404", 404)


def test_delete_missing_bucket(s3):
    expect_error(lambda: s3.delete_bucket(Bucket=unique_bucket_name("missing")), "NoSuchBucket", 404)


def test_delete_non_empty_bucket(s3, bucket):
    put(s3, bucket, "keep-me")
    expect_error(lambda: s3.delete_bucket(Bucket=bucket), "BucketNotEmpty", 409)
    assert status_of(s3.head_bucket(Bucket=bucket)) == 200


def test_aborted_upload_does_not_block_bucket_delete(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpu")
    s3.abort_multipart_upload(Bucket=bucket, Key="mpu", UploadId=upload["UploadId"])
    assert status_of(s3.delete_bucket(Bucket=bucket)) == 204
    s3.create_bucket(Bucket=bucket)  # let the fixture clean up normally


def test_get_bucket_location(s3, bucket):
    # S3 reports us-east-1 as an empty LocationConstraint.
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") is None


def test_operations_on_missing_bucket(s3):
    missing = unique_bucket_name("missing")
    expect_error(lambda: s3.list_objects_v2(Bucket=missing), "NoSuchBucket", 404)
    expect_error(lambda: s3.list_objects(Bucket=missing), "NoSuchBucket", 404)
    expect_error(lambda: put(s3, missing, "k"), "NoSuchBucket", 404)
    expect_error(lambda: s3.get_object(Bucket=missing, Key="k"), "NoSuchBucket", 404)


def test_get_bucket_versioning_unversioned(s3, bucket):
    resp = s3.get_bucket_versioning(Bucket=bucket)
    assert status_of(resp) == 200
    assert "Status" not in resp
