"""CopyObject."""

from helpers import expect_error, get_bytes, put, random_bytes, single_put_etag

META = {"origin": "source", "n": "1"}


def _put_source(s3, bucket, key="src", data=None):
    data = data if data is not None else random_bytes(4096)
    put(s3, bucket, key, data, Metadata=META, ContentType="text/x-source", CacheControl="no-cache")
    return data


def test_copy_keeps_metadata_by_default(s3, bucket):
    data = _put_source(s3, bucket)
    resp = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert resp["CopyObjectResult"]["ETag"] == single_put_etag(data)
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == META
    assert head["ContentType"] == "text/x-source"
    assert head["CacheControl"] == "no-cache"
    assert head["ETag"] == single_put_etag(data)
    assert get_bytes(s3, bucket, "dst") == data
    # The source is untouched.
    assert get_bytes(s3, bucket, "src") == data


def test_copy_explicit_copy_directive(s3, bucket):
    _put_source(s3, bucket)
    s3.copy_object(
        Bucket=bucket, Key="dst", CopySource=f"{bucket}/src",
        MetadataDirective="COPY", Metadata={"ignored": "yes"},
    )
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == META


def test_copy_replace_directive(s3, bucket):
    data = _put_source(s3, bucket)
    s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE", Metadata={"fresh": "value"}, ContentType="application/json",
    )
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"fresh": "value"}
    assert head["ContentType"] == "application/json"
    assert "CacheControl" not in head
    assert get_bytes(s3, bucket, "dst") == data


def test_copy_source_if_match(s3, bucket):
    data = _put_source(s3, bucket)
    s3.copy_object(Bucket=bucket, Key="ok", CopySource={"Bucket": bucket, "Key": "src"},
                   CopySourceIfMatch=single_put_etag(data))
    assert get_bytes(s3, bucket, "ok") == data
    expect_error(
        lambda: s3.copy_object(Bucket=bucket, Key="bad", CopySource={"Bucket": bucket, "Key": "src"},
                               CopySourceIfMatch='"0123456789abcdef0123456789abcdef"'),
        "PreconditionFailed", 412,
    )
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="bad"), "404", 404)


def test_copy_source_if_none_match(s3, bucket):
    data = _put_source(s3, bucket)
    expect_error(
        lambda: s3.copy_object(Bucket=bucket, Key="bad", CopySource={"Bucket": bucket, "Key": "src"},
                               CopySourceIfNoneMatch=single_put_etag(data)),
        "PreconditionFailed", 412,
    )


def test_copy_across_buckets(s3, make_bucket):
    src_bucket, dst_bucket = make_bucket(), make_bucket()
    data = _put_source(s3, src_bucket, key="dir/src")
    s3.copy_object(Bucket=dst_bucket, Key="copied/here", CopySource={"Bucket": src_bucket, "Key": "dir/src"})
    assert get_bytes(s3, dst_bucket, "copied/here") == data
    assert s3.head_object(Bucket=dst_bucket, Key="copied/here")["Metadata"] == META


def test_copy_key_with_special_characters(s3, bucket):
    key = "dir with space/ünï+cødé?&=.bin"
    data = _put_source(s3, bucket, key=key)
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": key})
    assert get_bytes(s3, bucket, "dst") == data


def test_copy_onto_itself_with_replace_updates_metadata(s3, bucket):
    data = _put_source(s3, bucket)
    s3.copy_object(
        Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE", Metadata={"updated": "true"}, ContentType="text/x-updated",
    )
    head = s3.head_object(Bucket=bucket, Key="src")
    assert head["Metadata"] == {"updated": "true"}
    assert head["ContentType"] == "text/x-updated"
    assert get_bytes(s3, bucket, "src") == data


def test_copy_onto_itself_without_changes_is_rejected(s3, bucket):
    _put_source(s3, bucket)
    expect_error(
        lambda: s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}),
        "InvalidRequest", 400,
    )


def test_copy_missing_source(s3, bucket):
    expect_error(
        lambda: s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "absent"}),
        "NoSuchKey", 404,
    )
