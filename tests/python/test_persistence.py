"""Restart and crash behaviour. Every test here owns its gateway process."""

import select
import socket
import time

import pytest

from conftest import unique_bucket_name
from helpers import (
    MiB,
    UNSIGNED_PAYLOAD,
    expect_error,
    get_bytes,
    list_v2_all,
    multipart_etag,
    patterned_stream,
    put,
    random_bytes,
    raw_request_head,
    read_http_response,
    single_put_etag,
    tmp_files,
    tree_size,
)

PART = 5 * MiB


def _populate(gw):
    """Create a representative state; returns a description to verify later."""
    s3 = gw.client()
    buckets = [unique_bucket_name("persist"), unique_bucket_name("persist")]
    for name in buckets:
        s3.create_bucket(Bucket=name)
    objects = {
        (buckets[0], "small.txt"): (b"hello persistence", {"a": "1"}, "text/plain"),
        (buckets[0], "dir/ünïcødé 日本"): (random_bytes(3000), {}, "binary/octet-stream"),
        (buckets[1], "big.bin"): (random_bytes(6 * MiB), {"size": "big"}, "application/x-big"),
        (buckets[1], "empty"): (b"", {}, "application/x-empty"),
    }
    for (bucket, key), (data, meta, ctype) in objects.items():
        put(s3, bucket, key, data, Metadata=meta, ContentType=ctype)

    # A completed multipart object...
    mpu_parts = [random_bytes(PART), b"tail"]
    upload_id = s3.create_multipart_upload(Bucket=buckets[0], Key="mpu-done")["UploadId"]
    etags = [s3.upload_part(Bucket=buckets[0], Key="mpu-done", UploadId=upload_id, PartNumber=i, Body=p)["ETag"]
             for i, p in enumerate(mpu_parts, 1)]
    s3.complete_multipart_upload(Bucket=buckets[0], Key="mpu-done", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]})

    # ...and one still in progress.
    first_part = random_bytes(PART)
    pending_id = s3.create_multipart_upload(Bucket=buckets[1], Key="mpu-pending", Metadata={"p": "q"})["UploadId"]
    s3.upload_part(Bucket=buckets[1], Key="mpu-pending", UploadId=pending_id, PartNumber=1, Body=first_part)

    bob = gw.bob()
    bob_bucket = unique_bucket_name("bob")
    bob.create_bucket(Bucket=bob_bucket)
    put(bob, bob_bucket, "bobs", b"bob data")
    return dict(buckets=buckets, objects=objects, mpu_parts=mpu_parts, pending_id=pending_id,
                first_part=first_part, bob_bucket=bob_bucket)


def _verify(gw, state):
    s3 = gw.client()
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert set(state["buckets"]) <= set(names)

    for (bucket, key), (data, meta, ctype) in state["objects"].items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data, key
        assert got["Metadata"] == meta
        assert got["ContentType"] == ctype
        assert got["ETag"] == single_put_etag(data)

    assert get_bytes(s3, state["buckets"][0], "mpu-done") == b"".join(state["mpu_parts"])
    assert s3.head_object(Bucket=state["buckets"][0], Key="mpu-done")["ETag"] == multipart_etag(state["mpu_parts"])

    b0, b1 = state["buckets"]
    assert list_v2_all(s3, b0)[0] == sorted(["small.txt", "dir/ünïcødé 日本", "mpu-done"], key=str.encode)
    if "pending_completed" in state:
        assert list_v2_all(s3, b1)[0] == ["big.bin", "empty", "mpu-pending"]
        assert get_bytes(s3, b1, "mpu-pending") == state["pending_completed"]
        assert s3.list_multipart_uploads(Bucket=b1).get("Uploads", []) == []
    else:
        assert list_v2_all(s3, b1)[0] == ["big.bin", "empty"]

    # Bob's bucket and its ownership survive too.
    bob = gw.bob()
    assert get_bytes(bob, state["bob_bucket"], "bobs") == b"bob data"
    expect_error(lambda: bob.list_objects_v2(Bucket=b0), "AccessDenied", 403)


def _finish_pending_upload(gw, state):
    s3 = gw.client()
    bucket = state["buckets"][1]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mpu-pending", state["pending_id"])]
    parts = s3.list_parts(Bucket=bucket, Key="mpu-pending", UploadId=state["pending_id"])["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in parts] == [
        (1, PART, single_put_etag(state["first_part"]))]
    second = b"second part after restart"
    etag2 = s3.upload_part(Bucket=bucket, Key="mpu-pending", UploadId=state["pending_id"], PartNumber=2,
                           Body=second)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpu-pending", UploadId=state["pending_id"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": parts[0]["ETag"]}, {"PartNumber": 2, "ETag": etag2}]})
    got = s3.get_object(Bucket=bucket, Key="mpu-pending")
    assert got["Body"].read() == state["first_part"] + second
    assert got["Metadata"] == {"p": "q"}
    state["pending_completed"] = state["first_part"] + second


@pytest.mark.slow
def test_state_survives_graceful_restart(private_gateway):
    state = _populate(private_gateway)
    private_gateway.restart()
    _verify(private_gateway, state)
    _finish_pending_upload(private_gateway, state)
    # And once more, now including the upload completed after the first restart.
    private_gateway.restart()
    _verify(private_gateway, state)


def _new_bucket(gw):
    name = unique_bucket_name()
    gw.client().create_bucket(Bucket=name)
    return name


def test_sigterm_exits_cleanly(private_gateway):
    put(private_gateway.client(), _new_bucket(private_gateway), "k", b"v")
    assert private_gateway.stop() == 0, private_gateway.log_tail()


@pytest.mark.slow
def test_acknowledged_writes_survive_kill9(private_gateway):
    state = _populate(private_gateway)
    private_gateway.kill9()
    private_gateway.start()
    _verify(private_gateway, state)
    _finish_pending_upload(private_gateway, state)


# --------------------------------------------------------------------------
# kill -9 in the middle of a large upload
# --------------------------------------------------------------------------

CRASH_DECLARED = 200 * MiB
CRASH_SENT = 64 * MiB


def _server_already_answered(sock: socket.socket) -> bytes:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return b""
    try:
        return sock.recv(4096, socket.MSG_PEEK) or b"<closed>"
    except OSError as exc:
        return f"<{exc}>".encode()


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
@pytest.mark.parametrize("preexisting", [False, True], ids=["new-key", "overwrite"])
def test_kill9_during_large_put(private_gateway, preexisting):
    gw = private_gateway
    s3 = gw.client()
    bucket = _new_bucket(gw)
    old = random_bytes(256 * 1024)
    if preexisting:
        put(s3, bucket, "K", old, Metadata={"version": "old"})
    put(s3, bucket, "neighbour", b"unrelated")

    # The raw-signed path works at all (so the crash below really happens
    # mid-body, not at authentication).
    probe = gw.raw_socket()
    headers = gw.signed_headers("PUT", f"/{bucket}/probe", headers={"content-length": "5"})
    probe.sendall(raw_request_head("PUT", f"/{bucket}/probe", headers) + b"probe")
    status, _, body = read_http_response(probe)
    probe.close()
    assert status == 200, body
    s3.delete_object(Bucket=bucket, Key="probe")

    bytes_before = tree_size(gw.data_dir)

    sock = gw.raw_socket(timeout=30)
    headers = gw.signed_headers("PUT", f"/{bucket}/K", payload_hash=UNSIGNED_PAYLOAD,
                                headers={"content-length": str(CRASH_DECLARED)})
    sock.sendall(raw_request_head("PUT", f"/{bucket}/K", headers))
    block = random_bytes(1 * MiB)
    for piece in patterned_stream(CRASH_SENT, block):
        sock.sendall(piece)
    early = _server_already_answered(sock)
    assert not early, f"server answered before the body was complete: {early[:300]!r}"

    gw.kill9()
    sock.close()
    gw.start()

    s3 = gw.client()
    if preexisting:
        got = s3.get_object(Bucket=bucket, Key="K")
        assert got["Body"].read() == old
        assert got["Metadata"] == {"version": "old"}
        assert list_v2_all(s3, bucket)[0] == ["K", "neighbour"]
        assert s3.head_object(Bucket=bucket, Key="K")["ContentLength"] == len(old)
    else:
        expect_error(lambda: s3.head_object(Bucket=bucket, Key="K"), "404", 404)
        assert list_v2_all(s3, bucket)[0] == ["neighbour"]
    assert get_bytes(s3, bucket, "neighbour") == b"unrelated"

    if gw.upstream_client() is None:  # upstream, the cut PutObject stored nothing: the listing above shows it
        assert _wait_for(lambda: not tmp_files(gw.data_dir)), f"leftover temp files: {tmp_files(gw.data_dir)}"
        assert _wait_for(lambda: tree_size(gw.data_dir) <= bytes_before + 1 * MiB), (
            f"data dir grew from {bytes_before} to {tree_size(gw.data_dir)} bytes after a crashed upload"
        )

    # The key is writable again after recovery.
    put(s3, bucket, "K", b"new after crash")
    assert get_bytes(s3, bucket, "K") == b"new after crash"
