"""Multipart uploads and boto3 managed transfers."""

import filecmp

import pytest
from boto3.s3.transfer import TransferConfig

from helpers import (
    MiB,
    expect_error,
    get_bytes,
    multipart_etag,
    put,
    random_bytes,
    single_put_etag,
    status_of,
)

PART = 5 * MiB


def _start(s3, bucket, key, **kwargs):
    return s3.create_multipart_upload(Bucket=bucket, Key=key, **kwargs)["UploadId"]


def _upload_parts(s3, bucket, key, upload_id, parts):
    """Upload `parts` (list of bytes) as parts 1..N; returns Complete's part list."""
    completed = []
    for number, data in enumerate(parts, start=1):
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        assert resp["ETag"] == single_put_etag(data)
        completed.append({"PartNumber": number, "ETag": resp["ETag"]})
    return completed


def _complete(s3, bucket, key, upload_id, completed):
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
    )


@pytest.mark.slow
def test_multipart_roundtrip(s3_any, bucket):
    s3 = s3_any
    parts = [random_bytes(PART), random_bytes(PART), random_bytes(123_457)]
    upload_id = _start(s3, bucket, "big", ContentType="application/x-mpu", Metadata={"kind": "mpu"})

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("big", upload_id)]

    completed = _upload_parts(s3, bucket, "big", upload_id, parts)
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (c["PartNumber"], c["ETag"], len(d)) for c, d in zip(completed, parts)
    ]

    resp = _complete(s3, bucket, "big", upload_id, completed)
    assert resp["ETag"] == multipart_etag(parts)
    assert resp["Key"] == "big"

    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ETag"] == multipart_etag(parts)
    assert head["ContentLength"] == sum(map(len, parts))
    assert head["ContentType"] == "application/x-mpu"
    assert head["Metadata"] == {"kind": "mpu"}
    assert get_bytes(s3, bucket, "big") == b"".join(parts)
    # Range across a part boundary.
    joined = b"".join(parts)
    ranged = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={PART - 10}-{PART + 9}")
    assert ranged["Body"].read() == joined[PART - 10 : PART + 10]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_single_part_upload_may_be_small(s3, bucket):
    upload_id = _start(s3, bucket, "one")
    completed = _upload_parts(s3, bucket, "one", upload_id, [b"tiny"])
    resp = _complete(s3, bucket, "one", upload_id, completed)
    assert resp["ETag"] == multipart_etag([b"tiny"])
    assert get_bytes(s3, bucket, "one") == b"tiny"


def test_reuploading_a_part_replaces_it(s3, bucket):
    upload_id = _start(s3, bucket, "re")
    _upload_parts(s3, bucket, "re", upload_id, [b"old part"])
    completed = _upload_parts(s3, bucket, "re", upload_id, [b"new part"])
    listed = s3.list_parts(Bucket=bucket, Key="re", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, len(b"new part"))]
    _complete(s3, bucket, "re", upload_id, completed)
    assert get_bytes(s3, bucket, "re") == b"new part"


def test_in_progress_upload_is_invisible(s3, bucket):
    upload_id = _start(s3, bucket, "pending")
    _upload_parts(s3, bucket, "pending", upload_id, [b"data"])
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="pending"), "404", 404)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_abort(s3, bucket):
    upload_id = _start(s3, bucket, "aborted")
    _upload_parts(s3, bucket, "aborted", upload_id, [b"part one"])
    assert status_of(s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload_id)) == 204
    expect_error(
        lambda: s3.upload_part(Bucket=bucket, Key="aborted", UploadId=upload_id, PartNumber=2, Body=b"late"),
        "NoSuchUpload", 404,
    )
    expect_error(lambda: s3.list_parts(Bucket=bucket, Key="aborted", UploadId=upload_id), "NoSuchUpload", 404)
    expect_error(
        lambda: _complete(s3, bucket, "aborted", upload_id, [{"PartNumber": 1, "ETag": single_put_etag(b"part one")}]),
        "NoSuchUpload", 404,
    )
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="aborted"), "404", 404)


def test_unknown_upload_id(s3, bucket):
    expect_error(
        lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId="does-not-exist", PartNumber=1, Body=b"x"),
        "NoSuchUpload", 404,
    )


def test_complete_with_wrong_etag(s3, bucket):
    upload_id = _start(s3, bucket, "k")
    completed = _upload_parts(s3, bucket, "k", upload_id, [b"only part"])
    completed[0]["ETag"] = '"0123456789abcdef0123456789abcdef"'
    expect_error(lambda: _complete(s3, bucket, "k", upload_id, completed), "InvalidPart", 400)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="k"), "404", 404)


def test_complete_with_missing_part_number(s3, bucket):
    upload_id = _start(s3, bucket, "k")
    completed = _upload_parts(s3, bucket, "k", upload_id, [b"only part"])
    completed[0]["PartNumber"] = 7  # never uploaded
    expect_error(lambda: _complete(s3, bucket, "k", upload_id, completed), "InvalidPart", 400)


@pytest.mark.slow
def test_complete_out_of_order(s3, bucket):
    parts = [random_bytes(PART), random_bytes(PART)]  # both large: order is the only problem
    upload_id = _start(s3, bucket, "k")
    completed = _upload_parts(s3, bucket, "k", upload_id, parts)
    expect_error(lambda: _complete(s3, bucket, "k", upload_id, completed[::-1]), "InvalidPartOrder", 400)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="k"), "404", 404)
    # The upload is still usable after the failed attempt.
    _complete(s3, bucket, "k", upload_id, completed)
    assert get_bytes(s3, bucket, "k") == b"".join(parts)


def test_non_last_part_too_small(s3, bucket):
    upload_id = _start(s3, bucket, "k")
    completed = _upload_parts(s3, bucket, "k", upload_id, [random_bytes(1 * MiB), random_bytes(1 * MiB)])
    expect_error(lambda: _complete(s3, bucket, "k", upload_id, completed), "EntityTooSmall", 400)
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="k"), "404", 404)


@pytest.mark.slow
def test_upload_part_copy_with_range(s3, bucket):
    source = random_bytes(PART + 2 * MiB)
    put(s3, bucket, "source", source)
    ranges = [(0, PART - 1), (MiB + 7, MiB + 1006)]  # second (last) part: 1000 unaligned bytes
    upload_id = _start(s3, bucket, "assembled")
    completed = []
    for number, (first, last) in enumerate(ranges, start=1):
        resp = s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=number,
            CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange=f"bytes={first}-{last}",
        )
        assert resp["CopyPartResult"]["ETag"] == single_put_etag(source[first : last + 1])
        completed.append({"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]})
    _complete(s3, bucket, "assembled", upload_id, completed)

    pieces = [source[first : last + 1] for first, last in ranges]
    assert get_bytes(s3, bucket, "assembled") == b"".join(pieces)
    assert s3.head_object(Bucket=bucket, Key="assembled")["ETag"] == multipart_etag(pieces)


def test_upload_part_copy_invalid_range(s3, bucket):
    put(s3, bucket, "source", b"0123456789")
    upload_id = _start(s3, bucket, "assembled")
    expect_error(
        lambda: s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=1,
            CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange="bytes=5-100",
        ),
        # ceph/s3-tests test_multipart_copy_invalid_range accepts 400 or 416 with InvalidRange
        "InvalidRange", 416,
    )


def test_list_multipart_uploads_prefix(s3, bucket):
    ids = {key: _start(s3, bucket, key) for key in ("logs/1", "logs/2", "other")}
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix="logs/")["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in uploads) == [
        ("logs/1", ids["logs/1"]), ("logs/2", ids["logs/2"])
    ]


@pytest.mark.slow
def test_managed_transfer_upload_download(s3_any, bucket, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(random_bytes(20 * MiB))
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    s3_any.upload_file(str(src), bucket, "managed.bin", Config=config)

    head = s3_any.head_object(Bucket=bucket, Key="managed.bin")
    assert head["ContentLength"] == 20 * MiB
    assert head["ETag"].endswith('-4"')
    data = src.read_bytes()
    assert head["ETag"] == multipart_etag([data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)])

    dst = tmp_path / "dst.bin"
    s3_any.download_file(bucket, "managed.bin", str(dst), Config=config)
    assert filecmp.cmp(src, dst, shallow=False)
