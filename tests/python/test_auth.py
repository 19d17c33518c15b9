"""Authentication (SigV4 headers, presigned URLs, anonymous) and multi-user isolation."""

import datetime as dt
import time
import urllib.parse

import pytest
import requests

from conftest import BOB_ACCESS_KEY, BOB_SECRET_KEY
from helpers import expect_error, get_bytes, put, xml_error_code


def test_wrong_secret_key(gateway, bucket):
    bad = gateway.client(secret_key="definitely-not-the-secret")
    expect_error(lambda: bad.list_objects_v2(Bucket=bucket), "SignatureDoesNotMatch", 403)
    expect_error(lambda: put(bad, bucket, "k"), "SignatureDoesNotMatch", 403)
    expect_error(lambda: bad.list_buckets(), "SignatureDoesNotMatch", 403)


def test_bob_with_wrong_secret(gateway):
    bad = gateway.client(BOB_ACCESS_KEY, "not-bobs-secret")
    expect_error(lambda: bad.list_buckets(), "SignatureDoesNotMatch", 403)


def test_unknown_access_key(gateway, bucket):
    stranger = gateway.client(access_key="AKIDONTEXIST", secret_key="whatever")
    expect_error(lambda: stranger.list_objects_v2(Bucket=bucket), "InvalidAccessKeyId", 403)
    expect_error(lambda: stranger.list_buckets(), "InvalidAccessKeyId", 403)


def test_tampered_request_after_signing(gateway, bucket):
    s3 = gateway.client()

    def tamper(request, **_):
        request.url = request.url.replace("/signed-key", "/other-key")  # after signing

    s3.meta.events.register("before-send.s3.PutObject", tamper)
    expect_error(lambda: put(s3, bucket, "signed-key"), "SignatureDoesNotMatch", 403)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="other-key"), "404", 404)


def test_clock_skew_rejected(gateway, bucket):
    put(gateway.client(), bucket, "k", b"data")
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)
    headers = gateway.signed_headers("GET", f"/{bucket}/k", now=stale)
    resp = requests.get(f"{gateway.endpoint}/{bucket}/k", headers=headers, timeout=10)
    assert resp.status_code == 403
    assert xml_error_code(resp.content) == "RequestTimeTooSkewed"


def test_raw_signed_request_works(gateway, bucket):
    """Sanity check for the hand-rolled signer used by the raw-socket tests."""
    put(gateway.client(), bucket, "raw ключ", b"signed by hand")
    path = f"/{bucket}/raw ключ"
    resp = requests.get(gateway.endpoint + urllib.parse.quote(path, safe="/-_.~"),
                        headers=gateway.signed_headers("GET", path), timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.content == b"signed by hand"


def test_presigned_get(s3, presigner, bucket):
    put(s3, bucket, "shared/doc.txt", b"presigned content")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared/doc.txt"}, ExpiresIn=300)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.content == b"presigned content"


def test_presigned_get_with_response_override(s3, presigner, bucket):
    put(s3, bucket, "doc", b"x")
    url = presigner.generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket, "Key": "doc", "ResponseContentDisposition": 'attachment; filename="a b.txt"'},
        ExpiresIn=300,
    )
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Disposition"] == 'attachment; filename="a b.txt"'


def test_presigned_put(s3, presigner, bucket):
    url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "via-url"}, ExpiresIn=300)
    resp = requests.put(url, data=b"uploaded with a presigned url", timeout=10)
    assert resp.status_code == 200, resp.text
    assert get_bytes(s3, bucket, "via-url") == b"uploaded with a presigned url"


def test_presigned_url_tampered(s3, presigner, bucket):
    put(s3, bucket, "a", b"a")
    put(s3, bucket, "b", b"b")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a"}, ExpiresIn=300)
    resp = requests.get(url.replace(f"/{bucket}/a?", f"/{bucket}/b?"), timeout=10)
    assert resp.status_code == 403
    assert xml_error_code(resp.content) == "SignatureDoesNotMatch"


def test_presigned_url_expired(s3, presigner, bucket):
    put(s3, bucket, "ephemeral", b"soon gone")
    url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "ephemeral"}, ExpiresIn=1)
    time.sleep(2.1)
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 403
    assert xml_error_code(resp.content) == "AccessDenied"


@pytest.mark.parametrize("method,path_fmt", [
    ("GET", "/"), ("GET", "/{bucket}"), ("GET", "/{bucket}/k"), ("PUT", "/{bucket}/anon"),
    ("DELETE", "/{bucket}/k"), ("PUT", "/anon-bucket-creation"),
])
def test_anonymous_requests_denied(gateway, s3, bucket, method, path_fmt):
    put(s3, bucket, "k", b"private")
    resp = requests.request(method, gateway.endpoint + path_fmt.format(bucket=bucket), data=b"x" if method == "PUT" else None,
                            timeout=10)
    assert resp.status_code == 403, resp.text
    assert xml_error_code(resp.content) == "AccessDenied"
    assert get_bytes(s3, bucket, "k") == b"private"
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="anon"), "404", 404)


# --------------------------------------------------------------------------
# Multi-user isolation
# --------------------------------------------------------------------------


def test_other_user_cannot_touch_bucket(gateway, s3, bucket):
    put(s3, bucket, "secret", b"main user's data")
    bob = gateway.bob()
    expect_error(lambda: bob.list_objects_v2(Bucket=bucket), "AccessDenied", 403)
    expect_error(lambda: bob.list_objects(Bucket=bucket), "AccessDenied", 403)
    expect_error(lambda: bob.get_object(Bucket=bucket, Key="secret"), "AccessDenied", 403)
    expect_error(lambda: bob.head_object(Bucket=bucket, Key="secret"), "403", 403)
    expect_error(lambda: put(bob, bucket, "intruder", b"x"), "AccessDenied", 403)
    expect_error(lambda: bob.delete_object(Bucket=bucket, Key="secret"), "AccessDenied", 403)
    expect_error(lambda: bob.delete_bucket(Bucket=bucket), "AccessDenied", 403)
    expect_error(
        lambda: bob.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "secret"}),
        "AccessDenied", 403,
    )
    expect_error(lambda: bob.create_multipart_upload(Bucket=bucket, Key="mpu"), "AccessDenied", 403)
    # Nothing changed.
    assert get_bytes(s3, bucket, "secret") == b"main user's data"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret"]


def test_other_user_cannot_copy_out_of_bucket(gateway, s3, bucket, make_bucket):
    put(s3, bucket, "secret", b"main user's data")
    bob = gateway.bob()
    bobs_bucket = make_bucket(bob)
    expect_error(
        lambda: bob.copy_object(Bucket=bobs_bucket, Key="stolen", CopySource={"Bucket": bucket, "Key": "secret"}),
        "AccessDenied", 403,
    )
    expect_error(lambda: bob.head_object(Bucket=bobs_bucket, Key="stolen"), "404", 404)


def test_other_user_presigned_url_denied(gateway, s3, bucket):
    put(s3, bucket, "secret", b"main user's data")
    for config in ({}, {"signature_version": "s3v4"}):
        bob = gateway.client(BOB_ACCESS_KEY, BOB_SECRET_KEY, **config)
        url = bob.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "secret"}, ExpiresIn=300)
        resp = requests.get(url, timeout=10)
        assert resp.status_code == 403, (config, resp.text)
        assert xml_error_code(resp.content) == "AccessDenied"

    resp = requests.get(url, timeout=10)
    assert resp.status_code == 403
    assert xml_error_code(resp.content) == "AccessDenied"


def test_users_own_buckets_work(gateway, s3, bucket, make_bucket):
    bob = gateway.bob()
    bobs_bucket = make_bucket(bob)
    put(bob, bobs_bucket, "mine", b"bob's data")
    assert get_bytes(bob, bobs_bucket, "mine") == b"bob's data"
    assert [o["Key"] for o in bob.list_objects_v2(Bucket=bobs_bucket)["Contents"]] == ["mine"]

    bob_buckets = [b["Name"] for b in bob.list_buckets()["Buckets"]]
    assert bobs_bucket in bob_buckets
    assert bucket not in bob_buckets


def test_bucket_names_are_global_across_users(gateway, make_bucket):
    bobs_bucket = make_bucket(gateway.bob())
    expect_error(lambda: gateway.client().create_bucket(Bucket=bobs_bucket), "BucketAlreadyExists", 409)
