"""Virtual-hosted-style addressing (`--domain`): the bucket in the Host
header, next to path style on the same gateway. Requests are signed by hand
because the test domain does not resolve; they go to 127.0.0.1."""

import requests

from conftest import VIRTUAL_HOST_DOMAIN
from helpers import get_bytes, put, sigv4_headers


def _virtual(gateway, method, bucket, path, body=b""):
    host = f"{bucket}.{VIRTUAL_HOST_DOMAIN}:{gateway.port}"
    headers = sigv4_headers(method, host, path, gateway.access_key, gateway.secret_key)
    return requests.request(method, f"{gateway.endpoint}{path}", headers=headers, data=body, timeout=30)


def test_virtual_hosted_put_is_visible_path_style(gateway, s3, bucket):
    resp = _virtual(gateway, "PUT", bucket, "/dir/virtual.txt", b"via the Host header")
    assert resp.status_code == 200, resp.text
    assert get_bytes(s3, bucket, "dir/virtual.txt") == b"via the Host header"


def test_virtual_hosted_get_and_list(gateway, s3, bucket):
    put(s3, bucket, "listed", b"path style")
    resp = _virtual(gateway, "GET", bucket, "/listed")
    assert resp.status_code == 200 and resp.content == b"path style"
    listing = _virtual(gateway, "GET", bucket, "/")
    assert listing.status_code == 200
    assert b"<Key>listed</Key>" in listing.content
    assert f"<Name>{bucket}</Name>".encode() in listing.content


def test_virtual_hosted_unknown_bucket(gateway):
    resp = _virtual(gateway, "GET", "no-such-bucket-here", "/k")
    assert resp.status_code == 404
    assert b"<Code>NoSuchBucket</Code>" in resp.content
