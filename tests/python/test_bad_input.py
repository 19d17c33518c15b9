"""Malformed / truncated / abandoned requests must never leave partial objects."""

import socket
import struct
import time

import pytest

from helpers import (
    KiB,
    MiB,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    expect_error,
    get_bytes,
    object_exists,
    put,
    raw_request_head,
    read_http_response,
)

DECLARED = 4 * MiB


def _open_put(gateway, path, declared_length, *, chunked_trailer=False, query=None):
    """Open a socket and send the signed headers of a PUT (no body yet)."""
    extra = {"content-length": str(declared_length)}
    payload_hash = UNSIGNED_PAYLOAD
    if chunked_trailer:
        payload_hash = STREAMING_UNSIGNED_TRAILER
        extra.update({
            "content-encoding": "aws-chunked",
            "x-amz-decoded-content-length": str(declared_length - 1024),
            "x-amz-trailer": "x-amz-checksum-crc32",
        })
    headers = gateway.signed_headers("PUT", path, payload_hash=payload_hash, headers=extra, query=query)
    sock = gateway.raw_socket()
    sock.sendall(raw_request_head("PUT", path, headers, query))
    return sock


def _assert_not_server_error(status):
    # Connection closed without a response is acceptable; a 4xx is expected
    # otherwise; a 2xx (stored!) or 5xx is a bug.
    assert status is None or 400 <= status < 500, f"unexpected HTTP {status}"


def _settle():
    time.sleep(0.5)


@pytest.mark.parametrize("preexisting", [False, True], ids=["new-key", "overwrite"])
def test_body_shorter_than_content_length(gateway, s3, bucket, preexisting):
    if preexisting:
        put(s3, bucket, "short", b"old content")
    sock = _open_put(gateway, f"/{bucket}/short", DECLARED)
    try:
        sock.sendall(b"x" * (100 * KiB))
        sock.shutdown(socket.SHUT_WR)  # EOF long before Content-Length
        try:
            status, _, body = read_http_response(sock)
        except socket.timeout:
            pytest.fail("server neither answered nor closed the connection after a truncated body")
    finally:
        sock.close()
    _assert_not_server_error(status)
    _settle()
    if preexisting:
        assert get_bytes(s3, bucket, "short") == b"old content"
    else:
        assert not object_exists(s3, bucket, "short")
        assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


@pytest.mark.parametrize("chunked_trailer", [False, True], ids=["plain", "aws-chunked"])
@pytest.mark.parametrize("preexisting", [False, True], ids=["new-key", "overwrite"])
def test_client_disconnects_mid_upload(gateway, s3, bucket, preexisting, chunked_trailer):
    if preexisting:
        put(s3, bucket, "abandoned", b"old content")
    sock = _open_put(gateway, f"/{bucket}/abandoned", DECLARED, chunked_trailer=chunked_trailer)
    if chunked_trailer:
        sock.sendall(b"%x\r\n" % (1 * MiB) + b"y" * (512 * KiB))  # half a chunk
    else:
        sock.sendall(b"y" * (1 * MiB))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not a clean EOF
    _settle()
    if preexisting:
        assert get_bytes(s3, bucket, "abandoned") == b"old content"
    else:
        assert not object_exists(s3, bucket, "abandoned")
        assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    # The server is still healthy.
    put(s3, bucket, "after", b"fine")
    assert get_bytes(s3, bucket, "after") == b"fine"


def test_upload_part_disconnect_leaves_no_part(gateway, s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    sock = _open_put(gateway, f"/{bucket}/mpu", DECLARED, query={"partNumber": "1", "uploadId": upload_id})
    sock.sendall(b"z" * (1 * MiB))
    sock.close()
    _settle()
    assert s3.list_parts(Bucket=bucket, Key="mpu", UploadId=upload_id).get("Parts", []) == []


@pytest.mark.parametrize("part_number", [0, 10001])
def test_invalid_part_number(s3, bucket, part_number):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    expect_error(
        lambda: s3.upload_part(Bucket=bucket, Key="mpu", UploadId=upload_id, PartNumber=part_number, Body=b"x"),
        "InvalidArgument", 400,
    )


def test_garbage_request_line_gets_4xx(gateway):
    with gateway.raw_socket() as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        status, _, _ = read_http_response(sock)
    _assert_not_server_error(status)


def test_unsupported_authorization_scheme(gateway, bucket):
    with gateway.raw_socket() as sock:
        sock.sendall(raw_request_head("GET", f"/{bucket}", {
            "host": gateway.host, "authorization": "Bogus abc", "content-length": "0",
        }))
        status, _, _ = read_http_response(sock)
    assert status is not None and 400 <= status < 500
