"""Range GETs, conditional requests and response-* overrides."""

import datetime as dt

import pytest

from helpers import expect_error, put, random_bytes, status_of

SIZE = 1000


@pytest.fixture
def obj(s3, bucket):
    """A 1000-byte object; returns (bucket, key, data, head)."""
    data = random_bytes(SIZE)
    put(s3, bucket, "ranged", data)
    return bucket, "ranged", data, s3.head_object(Bucket=bucket, Key="ranged")


@pytest.mark.parametrize(
    "header,start,end",
    [
        ("bytes=0-9", 0, 9),
        ("bytes=10-19", 10, 19),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=999-999", 999, 999),
        ("bytes=0-0", 0, 0),
        ("bytes=995-5000", 995, 999),
        ("bytes=-5000", 0, 999),
    ],
)
def test_range_get(s3, obj, header, start, end):
    bucket, key, data, _ = obj
    resp = s3.get_object(Bucket=bucket, Key=key, Range=header)
    assert status_of(resp) == 206
    assert resp["ContentRange"] == f"bytes {start}-{end}/{SIZE}"
    assert resp["ContentLength"] == end - start + 1
    assert resp["Body"].read() == data[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-1001", "bytes=5000-6000"])
def test_unsatisfiable_range(s3, obj, header):
    bucket, key, _, _ = obj
    expect_error(lambda: s3.get_object(Bucket=bucket, Key=key, Range=header), "InvalidRange", 416)


def test_range_on_empty_object(s3, bucket):
    put(s3, bucket, "empty", b"")
    expect_error(lambda: s3.get_object(Bucket=bucket, Key="empty", Range="bytes=0-0"), "InvalidRange", 416)


def test_if_match(s3, obj):
    bucket, key, data, head = obj
    resp = s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])
    assert resp["Body"].read() == data
    expect_error(lambda: s3.get_object(Bucket=bucket, Key=key, IfMatch='"0123456789abcdef0123456789abcdef"'),
                 "PreconditionFailed", 412)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key=key, IfMatch='"0123456789abcdef0123456789abcdef"'),
                 "412", 412)


def test_if_none_match(s3, obj):
    bucket, key, data, head = obj
    expect_error(lambda: s3.get_object(Bucket=bucket, Key=key, IfNoneMatch=head["ETag"]), "304", 304)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key=key, IfNoneMatch=head["ETag"]), "304", 304)
    resp = s3.get_object(Bucket=bucket, Key=key, IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    assert resp["Body"].read() == data


def test_if_modified_since(s3, obj):
    bucket, key, data, head = obj
    modified = head["LastModified"]
    expect_error(lambda: s3.get_object(Bucket=bucket, Key=key, IfModifiedSince=modified), "304", 304)
    resp = s3.get_object(Bucket=bucket, Key=key, IfModifiedSince=modified - dt.timedelta(days=1))
    assert resp["Body"].read() == data


def test_if_unmodified_since(s3, obj):
    bucket, key, data, head = obj
    modified = head["LastModified"]
    expect_error(
        lambda: s3.get_object(Bucket=bucket, Key=key, IfUnmodifiedSince=modified - dt.timedelta(days=1)),
        "PreconditionFailed", 412,
    )
    resp = s3.get_object(Bucket=bucket, Key=key, IfUnmodifiedSince=modified + dt.timedelta(days=1))
    assert resp["Body"].read() == data


def test_if_match_takes_precedence_over_if_unmodified_since(s3, obj):
    # RFC 7232 / S3: If-Match true + If-Unmodified-Since false -> 200.
    bucket, key, data, head = obj
    resp = s3.get_object(
        Bucket=bucket, Key=key, IfMatch=head["ETag"],
        IfUnmodifiedSince=head["LastModified"] - dt.timedelta(days=1),
    )
    assert resp["Body"].read() == data


def test_response_header_overrides(s3, obj):
    bucket, key, data, _ = obj
    expires = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    resp = s3.get_object(
        Bucket=bucket,
        Key=key,
        ResponseContentType="text/x-override",
        ResponseContentDisposition='inline; filename="x.bin"',
        ResponseCacheControl="no-store",
        ResponseContentLanguage="fr",
        ResponseContentEncoding="identity",
        ResponseExpires=expires,
    )
    assert resp["ContentType"] == "text/x-override"
    assert resp["ContentDisposition"] == 'inline; filename="x.bin"'
    assert resp["CacheControl"] == "no-store"
    assert resp["ContentLanguage"] == "fr"
    assert resp["ContentEncoding"] == "identity"
    assert resp["Expires"] == expires
    assert resp["Body"].read() == data
    # Overrides apply to that response only.
    assert s3.head_object(Bucket=bucket, Key=key).get("ContentType") != "text/x-override"
