"""Scale-out: three stateless gateways (`--backend s3`) in front of one real
SeaweedFS cluster (one master, three volume servers, replication 001, a
filer with its S3 API), or with SEALGATE_TEST_BACKEND=garage a three-node
Garage cluster. Every request may go to any gateway; the tests send
consecutive steps to different ones on purpose, and read the upstream
directly (not through sealgate) to see what it learned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

import helpers
from conftest import ENCRYPTED, REPO_ROOT, Fleet, Gateway, new_upstream_cluster, sealgate_bin, upstream_args

sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from round_robin import RoundRobin  # noqa: E402

MARKER = b"SEALGATE-PLAINTEXT-MARKER-"


def upstream_requests(metrics: str, operation: str) -> float:
    """sealgate_upstream_requests_total{operation=...} (0 before the first)."""
    for line in metrics.splitlines():
        if line.startswith(f'sealgate_upstream_requests_total{{operation="{operation}"}} '):
            return float(line.split()[1])
    return 0.0


def marked(n: int) -> bytes:
    return (MARKER * (n // len(MARKER) + 1))[:n]


def upstream_sees_no_plaintext(up, bucket: str, key: str, plaintexts: list[bytes]) -> None:
    """The upstream copy of a sealed object: no marker, no plaintext digest,
    metadata sealed into one opaque value."""
    head = up.head_object(Bucket=bucket, Key=key)
    body = up.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert set(head["Metadata"]) == {"sg"}, head["Metadata"]
    assert head["ContentType"] == "application/octet-stream"
    visible = body + json.dumps(head["ResponseMetadata"]["HTTPHeaders"]).encode()
    assert MARKER not in visible
    for data in plaintexts:
        for digest in (hashlib.md5(data).digest(), hashlib.sha256(data).digest()):
            for form in (digest.hex().encode(), base64.b64encode(digest)):
                assert form not in visible


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_any_gateway_serves_any_object(fleet, encrypted):
    a, b, c = fleet.clients
    bucket = fleet.bucket(encrypted, via=0)
    data = marked(300_000)
    put = b.put_object(Bucket=bucket, Key="dir/obj", Body=data, ContentType="text/x-mine", Metadata={"colour": "blue"})
    got = c.get_object(Bucket=bucket, Key="dir/obj")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/x-mine" and got["Metadata"] == {"colour": "blue"}
    head = a.head_object(Bucket=bucket, Key="dir/obj")
    listed = c.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("dir/obj", len(data), head["ETag"])]
    assert put["ETag"] == head["ETag"] == got["ETag"]
    if encrypted:
        assert head["ETag"].endswith('-0"') and head.get("ServerSideEncryption") == "AES256"
        upstream_sees_no_plaintext(fleet.upstream(), bucket, "dir/obj", [data])
        assert fleet.upstream().head_object(Bucket=bucket, Key="dir/obj")["ContentLength"] > len(data)
    else:
        assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
        raw = fleet.upstream().get_object(Bucket=bucket, Key="dir/obj")
        assert raw["Body"].read() == data and raw["Metadata"] == {"colour": "blue"}
    ranged = a.get_object(Bucket=bucket, Key="dir/obj", Range="bytes=65000-200000")
    assert ranged["Body"].read() == data[65000:200001]
    assert ranged["ContentRange"] == f"bytes 65000-200000/{len(data)}"
    assert a.get_object(Bucket=bucket, Key="dir/obj", Range="bytes=-10")["Body"].read() == data[-10:]
    helpers.expect_error(lambda: b.get_object(Bucket=bucket, Key="dir/obj", IfNoneMatch=head["ETag"]), "304", 304)
    b.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert c.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    c.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "dir/obj"})
    assert a.get_object(Bucket=bucket, Key="copy")["Body"].read() == data
    b.delete_object(Bucket=bucket, Key="copy")
    helpers.expect_error(lambda: a.head_object(Bucket=bucket, Key="copy"), "404", 404)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_multipart_steps_on_different_gateways(fleet, encrypted):
    a, b, c = fleet.clients
    bucket = fleet.bucket(encrypted, via=1)
    upload = a.create_multipart_upload(Bucket=bucket, Key="big", ContentType="video/x-test")["UploadId"]
    parts = {1: marked(5 << 20), 2: helpers.random_bytes(5 << 20), 3: marked(123_457)}
    etags = {}

    def send(client, number, data):
        etags[number] = client.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=number, Body=data)["ETag"]

    threads = [threading.Thread(target=send, args=(cl, n, parts[n])) for cl, n in ((b, 1), (c, 2), (b, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Part 2 again, other bytes, through another gateway: the last one wins.
    # (SeaweedFS keeps both uploads and times parts to the second: a re-send
    # within the same second could be listed as either; see docs/scale-out.md.)
    time.sleep(1.1)
    parts[2] = helpers.random_bytes(5 << 20)
    send(a, 2, parts[2])
    listed = c.list_parts(Bucket=bucket, Key="big", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [
        (n, len(parts[n]), etags[n]) for n in (1, 2, 3)
    ]
    ids = [u["UploadId"] for u in b.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert ids == [upload]
    done = a.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (1, 2, 3)]},
    )
    whole = parts[1] + parts[2] + parts[3]
    got = b.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == whole and got["ContentType"] == "video/x-test"
    assert done["ETag"] == got["ETag"] == c.head_object(Bucket=bucket, Key="big")["ETag"]
    assert c.list_objects_v2(Bucket=bucket)["Contents"][0]["Size"] == len(whole)
    assert b.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    mid = (5 << 20) - 100
    assert c.get_object(Bucket=bucket, Key="big", Range=f"bytes={mid}-{mid + 300}")["Body"].read() == whole[mid:mid + 301]
    if encrypted:
        upstream_sees_no_plaintext(fleet.upstream(), bucket, "big", list(parts.values()))
    # Abort through yet another gateway.
    other = b.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    c.upload_part(Bucket=bucket, Key="gone", UploadId=other, PartNumber=1, Body=b"x")
    a.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=other)
    helpers.expect_error(lambda: b.list_parts(Bucket=bucket, Key="gone", UploadId=other), "NoSuchUpload", 404)


def test_the_sealed_metadata_name_is_reserved_in_plain_buckets(fleet):
    a, b, _ = fleet.clients
    bucket = fleet.bucket(False)
    helpers.expect_error(lambda: a.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"sg": "AgAA"}),
                         "InvalidArgument", 400)
    helpers.expect_error(lambda: b.create_multipart_upload(Bucket=bucket, Key="k", Metadata={"SG": "x"}),
                         "InvalidArgument", 400)
    helpers.expect_error(lambda: a.head_object(Bucket=bucket, Key="k"), "404", 404)


def test_upload_ids_cannot_be_forged_or_moved(fleet):
    a, b, _ = fleet.clients
    bucket = fleet.bucket(True)
    upload = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    upstream_id, payload = upload.rsplit("~", 1)
    # Without its sealing, or under another key, the id is no upload.
    helpers.expect_error(lambda: b.upload_part(Bucket=bucket, Key="k", UploadId=upstream_id, PartNumber=1, Body=b"x"), "NoSuchUpload", 404)
    helpers.expect_error(lambda: b.upload_part(Bucket=bucket, Key="other", UploadId=upload, PartNumber=1, Body=b"x"), "NoSuchUpload", 404)
    helpers.expect_error(lambda: b.upload_part(Bucket=bucket, Key="k", UploadId=upstream_id + "~" + payload[:-4] + "AAAA", PartNumber=1, Body=b"x"), "NoSuchUpload", 404)
    a.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload)


def test_unaligned_sealed_parts_are_refused_with_a_reason(fleet):
    a, b, _ = fleet.clients
    bucket = fleet.bucket(True)
    upload = a.create_multipart_upload(Bucket=bucket, Key="odd")["UploadId"]
    e1 = b.upload_part(Bucket=bucket, Key="odd", UploadId=upload, PartNumber=1, Body=b"y" * ((5 << 20) + 1))["ETag"]
    e2 = a.upload_part(Bucket=bucket, Key="odd", UploadId=upload, PartNumber=2, Body=b"z")["ETag"]
    err = helpers.expect_error(lambda: b.complete_multipart_upload(
        Bucket=bucket, Key="odd", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]}), "InvalidPart", 400)
    assert "64 KiB" in err["Error"]["Message"]
    helpers.expect_error(lambda: a.head_object(Bucket=bucket, Key="odd"), "404", 404)


def test_bucket_state_is_never_stale_across_gateways(fleet):
    a, b, c = fleet.clients
    up = fleet.upstream()
    for i in range(30):
        bucket = fleet.bucket(True, via=i % 3)
        data = marked(1000 + i)
        fleet.clients[(i + 1) % 3].put_object(Bucket=bucket, Key="k", Body=data)
        upstream_sees_no_plaintext(up, bucket, "k", [data])
    # Encryption turned on through A, a PUT through B right after: sealed.
    bucket = fleet.bucket(False, via=0)
    a.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    b.put_object(Bucket=bucket, Key="after", Body=marked(5000))
    upstream_sees_no_plaintext(up, bucket, "after", [marked(5000)])
    # Deleted through A: B answers NoSuchBucket.
    b.delete_object(Bucket=bucket, Key="after")
    a.delete_bucket(Bucket=bucket)
    helpers.expect_error(lambda: b.put_object(Bucket=bucket, Key="k", Body=b"x"), "NoSuchBucket", 404)
    helpers.expect_error(lambda: c.head_bucket(Bucket=bucket), "404", 404)


def put_in_two_halves(gw, bucket: str, key: str, body: bytes, between) -> bytes:
    """A PUT of `body` to gateway `gw`, sent by hand: the head and half the
    body, then `between()` while the gateway waits for the rest; returns
    the answer's first bytes."""
    sock = gw.raw_socket(timeout=15)
    try:
        sock.sendall(helpers.signed_put_head(gw, bucket, key, body) + body[: len(body) // 2])
        time.sleep(0.5)  # the gateway is streaming the first half upstream
        between()
        sock.sendall(body[len(body) // 2:])
        return sock.recv(65536)
    finally:
        sock.close()


def test_a_put_begun_before_its_bucket_was_deleted_never_lands_in_the_recreated_bucket(fleet):
    """The bucket generation guard across gateways: a PUT streaming through
    A while its bucket is deleted through B and created again through C
    (its owner may take the name back at once) is discarded before its last
    bytes go upstream, and answered 503 so the client retries into the new
    bucket, decided anew."""
    a, b, c = fleet.clients
    bucket = fleet.bucket(False, via=0)
    body = marked(300_000)

    def replace_bucket():
        b.delete_bucket(Bucket=bucket)
        c.create_bucket(Bucket=bucket)
        c.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)

    answer = put_in_two_halves(fleet.gateways[0], bucket, "k", body, replace_bucket)
    assert answer.startswith(b"HTTP/1.1 503") and b"deleted and created again" in answer, answer[:400]
    assert not c.list_objects_v2(Bucket=bucket).get("Contents")
    assert not fleet.upstream().list_objects_v2(Bucket=bucket).get("Contents")
    # The retry lands in the new bucket, sealed as it now requires.
    assert a.put_object(Bucket=bucket, Key="k", Body=body)["ServerSideEncryption"] == "AES256"
    upstream_sees_no_plaintext(fleet.upstream(), bucket, "k", [body])


def test_encryption_turned_on_during_a_plain_put_stores_nothing_in_plaintext(fleet):
    """A plain PUT still streaming through A when default encryption is
    turned on through B is refused at its commit: the bucket never gets a
    plaintext object written after its encryption was on."""
    a, b, c = fleet.clients
    bucket = fleet.bucket(False, via=1)
    body = marked(300_000)

    def turn_encryption_on():
        b.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)

    answer = put_in_two_halves(fleet.gateways[0], bucket, "k", body, turn_encryption_on)
    assert answer.startswith(b"HTTP/1.1 503") and b"encryption was turned on" in answer, answer[:400]
    assert not fleet.upstream().list_objects_v2(Bucket=bucket).get("Contents")
    assert a.put_object(Bucket=bucket, Key="k", Body=body)["ServerSideEncryption"] == "AES256"
    upstream_sees_no_plaintext(fleet.upstream(), bucket, "k", [body])


def test_a_write_from_a_cached_record_is_checked_when_it_commits(fleet):
    """Writes start from the gateway's cached record (no state read before
    the body) and read it once at the commit. B caches the record of a plain
    bucket; encryption goes on through A; B's next PUT, started from the
    stale record, is refused rather than stored plain, and its retry seals."""
    a, b, c = fleet.clients
    gw_b = fleet.gateways[1]
    bucket = fleet.bucket(False, via=0)
    b.put_object(Bucket=bucket, Key="before", Body=marked(1000))  # B caches the record
    a.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    err = helpers.expect_error(lambda: b.put_object(Bucket=bucket, Key="after", Body=marked(5000)),
                               "ServiceUnavailable", 503)
    assert "encryption was turned on" in err["Error"]["Message"]
    helpers.expect_error(lambda: fleet.upstream().head_object(Bucket=bucket, Key="after"), "404", 404)
    assert b.put_object(Bucket=bucket, Key="after", Body=marked(5000))["ServerSideEncryption"] == "AES256"
    upstream_sees_no_plaintext(fleet.upstream(), bucket, "after", [marked(5000)])
    # In the steady state a PUT costs its data request and one state read.
    before = gw_b.admin_get("/metrics").text
    for i in range(5):
        b.put_object(Bucket=bucket, Key=f"steady-{i}", Body=marked(2000))
    after = gw_b.admin_get("/metrics").text
    assert upstream_requests(after, "PutObject") - upstream_requests(before, "PutObject") == 5
    assert all_upstream_requests(after) - all_upstream_requests(before) == 10


def first_writes_start_one_bucket_key(fleet, rounds: int = 8) -> None:
    """The first PUT into an encrypted bucket starts its bucket-key epoch, a
    change of the bucket record. Three at once through three gateways: the
    record's compare-and-swap (or its lock) keeps exactly one epoch, and
    every object is sealed under it. A lost update here would leave objects
    under an epoch the record no longer holds: unreadable."""
    up = fleet.upstream()
    for round_ in range(rounds):
        bucket = fleet.bucket(True, via=round_ % 3)
        bodies = {f"k{i}": marked(2000 + 97 * i + round_) for i in range(3)}
        start = threading.Barrier(3)
        failures = []

        def put(client, key):
            start.wait()
            try:
                client.put_object(Bucket=bucket, Key=key, Body=bodies[key])
            except Exception as e:  # noqa: BLE001 - reported below
                failures.append(e)

        threads = [threading.Thread(target=put, args=(cl, key)) for cl, key in zip(fleet.clients, bodies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
        record = json.loads(up.get_object(Bucket=fleet.state_bucket, Key=f"buckets/{bucket}")["Body"].read())
        assert len(record["encryption"]["bucket_keys"]) == 1, record["encryption"]["bucket_keys"]
        for client in fleet.clients:
            for key, body in bodies.items():
                assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    locks = up.list_objects_v2(Bucket=fleet.state_bucket, Prefix="locks/").get("Contents", [])
    assert locks == [], locks


def concurrent_creations_pick_one(fleet, rounds: int = 5) -> None:
    """Concurrent CreateBucket of one name through two gateways: one wins."""
    for _ in range(rounds):
        name = f"race-{uuid.uuid4().hex[:10]}"
        outcomes = []

        def create(client):
            try:
                client.create_bucket(Bucket=name)
                outcomes.append("ok")
            except Exception as e:  # noqa: BLE001 - the error code is what is compared
                outcomes.append(helpers.status_of(getattr(e, "response", {})))

        threads = [threading.Thread(target=create, args=(cl,)) for cl in fleet.clients[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") == 1, outcomes
        assert outcomes.count(409) == 1, outcomes


def test_first_writes_through_three_gateways_start_one_bucket_key(fleet):
    first_writes_start_one_bucket_key(fleet)


@pytest.fixture(scope="module")
def locked_fleet(cluster, tmp_path_factory):
    """Three gateways that change bucket records under the state-bucket lock
    (`--upstream-record-lock`), as they do on Garage, here on any upstream:
    so that `make test` exercises the lock too."""
    f = Fleet(tmp_path_factory.mktemp("locked"), cluster, extra_args=["--upstream-record-lock"],
              state_bucket="sealgate-state-locked")
    yield f
    f.stop()


def test_record_changes_under_the_lock_never_lose_one(locked_fleet):
    assert "bucket records change under a lock" in locked_fleet.gateways[0].log_path.read_text()
    first_writes_start_one_bucket_key(locked_fleet)
    concurrent_creations_pick_one(locked_fleet)
    # Encryption on through one gateway, a PUT through the next: sealed.
    bucket = locked_fleet.bucket(False, via=0)
    locked_fleet.clients[0].put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)
    locked_fleet.clients[1].put_object(Bucket=bucket, Key="after", Body=marked(5000))
    upstream_sees_no_plaintext(locked_fleet.upstream(), bucket, "after", [marked(5000)])


def test_a_bucket_emptied_through_one_gateway_deletes_at_once_through_another(fleet):
    """`aws s3 rb --force` and `rclone purge` delete the objects, then the
    bucket. Garage lists a deleted object for a moment; DeleteBucket must
    not take that for an object still there."""
    for i in range(20):
        bucket = fleet.bucket(i % 2 == 0, via=i % 3)
        keys = [f"k{j}" for j in range(3)]
        for key in keys:
            fleet.clients[i % 3].put_object(Bucket=bucket, Key=key, Body=marked(100))
        fleet.clients[(i + 1) % 3].delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        fleet.clients[(i + 2) % 3].delete_bucket(Bucket=bucket)
    bucket = fleet.bucket(False)
    fleet.clients[0].put_object(Bucket=bucket, Key="stays", Body=b"x")
    helpers.expect_error(lambda: fleet.clients[1].delete_bucket(Bucket=bucket), "BucketNotEmpty", 409)


def test_ownership_and_creation_races_across_gateways(fleet):
    bucket = fleet.bucket(True, via=0)
    bob = fleet.gateways[1].bob()
    helpers.expect_error(lambda: bob.get_object(Bucket=bucket, Key="k"), "AccessDenied", 403)
    helpers.expect_error(lambda: bob.create_bucket(Bucket=bucket), "BucketAlreadyExists", 409)
    concurrent_creations_pick_one(fleet)


def test_listing_costs_one_upstream_request_per_page(fleet):
    a, b, c = fleet.clients
    gw = fleet.gateways[2]
    for encrypted in (False, True):
        bucket = fleet.bucket(encrypted)
        sizes = {f"k{i:03d}": 1000 + i * 70_000 for i in range(25)}
        for key, size in sizes.items():
            a.put_object(Bucket=bucket, Key=key, Body=b"s" * size)
        c.list_objects_v2(Bucket=bucket, MaxKeys=1)  # the record, into c's cache
        before = gw.admin_get("/metrics").text
        keys, pages = {}, 0
        token = None
        while True:
            kwargs = {"ContinuationToken": token} if token else {}
            page = c.list_objects_v2(Bucket=bucket, MaxKeys=10, **kwargs)
            pages += 1
            keys.update({o["Key"]: o["Size"] for o in page["Contents"]})
            token = page.get("NextContinuationToken")
            if not token:
                break
        after = gw.admin_get("/metrics").text
        assert keys == sizes
        assert pages == 3

        def count(text, operation):
            return upstream_requests(text, operation)

        assert count(after, "ListObjectsV2") - count(before, "ListObjectsV2") == pages
        assert count(after, "HeadObject") - count(before, "HeadObject") == 0
        # Nothing else: the record comes from the cache, which lives 2 s, so
        # at most one state read falls in the run of pages.
        assert all_upstream_requests(after) - all_upstream_requests(before) in (pages, pages + 1)


def test_a_bucket_getting_its_second_kind_is_never_listed_with_wrong_sizes(fleet):
    """Listings use a cached record, so the kind a bucket gets second is
    announced a cache lifetime before its first object: a gateway that
    cached the record when the bucket held plain objects only must still
    list the sealed ones written through other gateways with their
    plaintext sizes, at any moment."""
    a, b, c = fleet.clients
    bucket = fleet.bucket(False)
    sizes = {"plain": 100_000}
    a.put_object(Bucket=bucket, Key="plain", Body=marked(100_000))
    assert {o["Key"]: o["Size"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]} == sizes  # cached
    b.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=ENCRYPTED)

    def write(client, key, size):
        # A's cached record predates the encryption: its first PUT is
        # refused at the commit (503, nothing stored), as any SDK would retry.
        for _ in range(5):
            try:
                answer = client.put_object(Bucket=bucket, Key=key, Body=marked(size))
                break
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ServiceUnavailable", e.response
        assert answer["ServerSideEncryption"] == "AES256"

    sealed = {f"sealed-{i}": 70_000 + i * 1000 for i in range(4)}
    writers = [threading.Thread(target=write, args=(client, key, size))
               for client, (key, size) in zip([a, b, a, b], sealed.items())]
    for t in writers:
        t.start()
    listings = 0
    while any(t.is_alive() for t in writers) or listings == 0:
        listed = {o["Key"]: o["Size"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert listed == {k: v for k, v in {**sizes, **sealed}.items() if k in listed}, listed
        listings += 1
    for t in writers:
        t.join()
    listed = {o["Key"]: o["Size"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed == {**sizes, **sealed}


def all_upstream_requests(metrics: str) -> float:
    return sum(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("sealgate_upstream_requests_total{")
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_object_reads_take_no_state_read(fleet, encrypted):
    """A HEAD is one upstream request, and so is a GET of a whole object
    (its headers carry the metadata): the bucket record of a read comes
    from the gateway's short-lived cache."""
    a, _, c = fleet.clients
    gw = fleet.gateways[2]
    bucket = fleet.bucket(encrypted)
    a.put_object(Bucket=bucket, Key="k", Body=marked(50_000))
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == marked(50_000)  # warm
    before = gw.admin_get("/metrics").text
    for _ in range(5):
        assert c.head_object(Bucket=bucket, Key="k")["ContentLength"] == 50_000
    middle = gw.admin_get("/metrics").text
    for _ in range(5):
        assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == marked(50_000)
    after = gw.admin_get("/metrics").text
    # Reading /metrics costs nothing upstream; the cache lives 2 s, so at
    # most one state read falls in each run of five.
    assert all_upstream_requests(middle) - all_upstream_requests(before) in (5, 6)
    assert all_upstream_requests(after) - all_upstream_requests(middle) in (5, 6)


def test_a_deleted_name_is_held_from_other_users_until_caches_expire(fleet):
    """A gateway that cached a bucket's record must not serve its old owner
    the objects of someone who created the name again: another user may
    create a deleted name only after the hold (10 s), its owner at once."""
    a, b, c = fleet.clients
    bob = fleet.gateways[2].bob()
    bucket = fleet.bucket(False, via=0)
    a.put_object(Bucket=bucket, Key="k", Body=b"alice")
    assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == b"alice"  # B caches the record
    a.delete_object(Bucket=bucket, Key="k")
    a.delete_bucket(Bucket=bucket)
    helpers.expect_error(lambda: bob.create_bucket(Bucket=bucket), "OperationAborted", 409)
    # The owner takes the name back at once.
    c.create_bucket(Bucket=bucket)
    c.delete_bucket(Bucket=bucket)
    helpers.expect_error(lambda: bob.create_bucket(Bucket=bucket), "OperationAborted", 409)
    time.sleep(10.5)
    bob.create_bucket(Bucket=bucket)
    bob.put_object(Bucket=bucket, Key="k", Body=b"bob")
    helpers.expect_error(lambda: b.get_object(Bucket=bucket, Key="k"), "AccessDenied", 403)
    helpers.expect_error(lambda: b.head_object(Bucket=bucket, Key="k"), "403", 403)
    assert fleet.gateways[1].bob().get_object(Bucket=bucket, Key="k")["Body"].read() == b"bob"


def rewrap(gw, bucket: str, *extra: str) -> subprocess.CompletedProcess:
    """`sealgate kms rewrap`, the operator's command, against one gateway."""
    return subprocess.run(
        [str(sealgate_bin()), "kms", "rewrap", "--bucket", bucket, "--admin-url", gw.admin, *extra],
        env={**os.environ, "SEALGATE_ADMIN_TOKEN": gw.admin_token},
        capture_output=True, text=True, timeout=120,
    )


def test_key_rotation_rewrites_no_object_and_deep_rotation_is_refused(fleet):
    """A rotation through one gateway moves the bucket to a new master key
    without touching an upstream object; every gateway still reads every
    object. A deep rotation would have to rewrite each object upstream: it
    is refused before it changes anything (it once ran, saw no sealed object
    in the listing and retired the bucket keys the objects needed)."""
    a, b, c = fleet.clients
    up = fleet.upstream()
    bucket = fleet.bucket(True)
    bodies = {f"k{i}": marked(3000 + i) for i in range(5)}
    for key, body in bodies.items():
        a.put_object(Bucket=bucket, Key=key, Body=body)
    etags = {key: up.head_object(Bucket=bucket, Key=key)["ETag"] for key in bodies}

    deep = rewrap(fleet.gateways[0], bucket, "--deep")
    assert deep.returncode != 0 and "deep key rotation" in deep.stderr, (deep.stdout, deep.stderr)
    for client in (a, b, c):
        for key, body in bodies.items():
            assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    done = rewrap(fleet.gateways[1], bucket)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bucket_keys_rewrapped"] >= 1 and report["old_key_destroyed"] is True
    assert {key: up.head_object(Bucket=bucket, Key=key)["ETag"] for key in bodies} == etags
    c.put_object(Bucket=bucket, Key="after", Body=marked(4000))
    for client in (a, b, c):
        for key, body in {**bodies, "after": marked(4000)}.items():
            assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_sealed_object_opens_whatever_the_upstream_part_size(fleet):
    """Re-uploaded upstream with other part boundaries (as a copy or
    replication tool would), the sealed bytes still open."""
    a, b, _ = fleet.clients
    bucket = fleet.bucket(True)
    data = helpers.random_bytes(12 << 20)
    up = fleet.upstream()
    upload = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    six = 6 << 20
    etags = [b.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=n + 1, Body=data[n * six:(n + 1) * six])["ETag"]
             for n in range(2)]
    a.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    raw = up.get_object(Bucket=bucket, Key="k")
    stored, metadata = raw["Body"].read(), raw["Metadata"]
    odd = (5 << 20) + 12345
    again = up.create_multipart_upload(Bucket=bucket, Key="k", Metadata=metadata,
                                       ContentType="application/octet-stream")["UploadId"]
    pieces = [stored[i:i + odd] for i in range(0, len(stored), odd)]
    up_etags = [up.upload_part(Bucket=bucket, Key="k", UploadId=again, PartNumber=n + 1, Body=p)["ETag"]
                for n, p in enumerate(pieces)]
    up.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=again,
                                 MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(up_etags)]})
    assert len(pieces) == 3
    assert b.get_object(Bucket=bucket, Key="k")["Body"].read() == data
    assert a.get_object(Bucket=bucket, Key="k", Range="bytes=5000000-9000000")["Body"].read() == data[5000000:9000001]


STORED_CHUNK = 65_578  # a sealed chunk upstream: 26-byte header, 64 KiB, 16-byte tag


def test_a_tampering_upstream_is_caught(fleet):
    """The upstream holds ciphertext it could change: a flipped byte, a cut
    body, another object's body and metadata, or another object's chunk
    spliced in are never served as a complete body (500 InternalError, or a
    response cut short), and the untouched chunks still read by range."""
    a, b, c = fleet.clients
    up = fleet.upstream()
    bucket = fleet.bucket(True)
    reader = helpers.non_validating_client(fleet.gateways[2])
    originals = {key: helpers.random_bytes(200 * 1024) for key in ("flip", "cut", "moved", "spliced", "other")}
    for key, data in originals.items():
        a.put_object(Bucket=bucket, Key=key, Body=data)

    def stored(key):
        head = up.head_object(Bucket=bucket, Key=key)
        return up.get_object(Bucket=bucket, Key=key)["Body"].read(), head["Metadata"], head["ContentType"]

    def replace(key, body, metadata, content_type):
        up.put_object(Bucket=bucket, Key=key, Body=body, Metadata=metadata, ContentType=content_type)

    body, meta, ctype = stored("flip")
    flipped = bytearray(body)
    flipped[STORED_CHUNK + 1000] ^= 0x01  # inside the second chunk
    replace("flip", bytes(flipped), meta, ctype)
    body, meta, ctype = stored("cut")
    replace("cut", body[: len(body) - 10], meta, ctype)
    other_body, other_meta, other_ctype = stored("other")
    replace("moved", other_body, other_meta, other_ctype)
    body, meta, ctype = stored("spliced")
    replace("spliced", body[:STORED_CHUNK] + other_body[STORED_CHUNK:2 * STORED_CHUNK] + body[2 * STORED_CHUNK:],
            meta, ctype)

    failures_before = fleet.gateways[2].metric("sealgate_decrypt_failures_total")
    for key in ("flip", "cut", "moved", "spliced"):
        helpers.assert_read_fails(reader, bucket, key, originals[key], f"upstream {key}")
    assert helpers.read_outcome(reader, bucket, "moved")[1] != originals["other"]
    helpers.assert_read_fails(reader, bucket, "flip", originals["flip"][65_536:70_000], "flip, range",
                              Range="bytes=65536-69999")
    assert b.get_object(Bucket=bucket, Key="flip", Range="bytes=0-99")["Body"].read() == originals["flip"][:100]
    assert fleet.gateways[2].metric("sealgate_decrypt_failures_total") > failures_before
    assert c.get_object(Bucket=bucket, Key="other")["Body"].read() == originals["other"]


def test_health_metrics_and_policy_agree(fleet):
    shas = set()
    for gw in fleet.gateways:
        health = gw.admin_get("/health").json()
        assert health["backend"] == "s3" and health["upstream"] == "ok"
        shas.add(gw.policy()["sha256"])
    assert len(shas) == 1


def test_aws_cli_sync_through_round_robin(fleet, tmp_path):
    bucket = fleet.bucket(True)
    src = tmp_path / "src"
    for i in range(12):
        path = src / f"d{i % 3}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(helpers.random_bytes(1000 + i * 700_000))
        # Files written a minute before the sync, as a real tree is: `aws s3 sync`
        # re-uploads when the local mtime is newer than LastModified, which S3
        # (and the upstream) give in whole seconds, so a file written in the
        # same second as its upload looked newer and the second sync re-sent it.
        past = time.time() - 60
        os.utime(path, (past, past))
    proxy = RoundRobin([gw.port for gw in fleet.gateways])
    gw = fleet.gateways[0]
    env = {"AWS_ACCESS_KEY_ID": gw.access_key, "AWS_SECRET_ACCESS_KEY": gw.secret_key,
           "AWS_DEFAULT_REGION": gw.region, "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def aws(*args):
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", proxy.endpoint, "s3", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True).stdout

    try:
        first = aws("sync", str(src), f"s3://{bucket}/")
        assert first.count("upload:") == 12
        second = aws("sync", str(src), f"s3://{bucket}/")
        assert "upload:" not in second, second
        down = tmp_path / "down"
        aws("sync", f"s3://{bucket}/", str(down))
        for path in src.rglob("*.bin"):
            assert (down / path.relative_to(src)).read_bytes() == path.read_bytes()
        assert len([c for c in proxy.counts.values() if c > 0]) == 3, proxy.counts
    finally:
        proxy.close()


def test_upstream_outage_is_503_and_heals(tmp_path):
    """Own cluster and gateway: the upstream is stopped under them."""
    sw = new_upstream_cluster(tmp_path / "upstream")
    sw.start()
    gw = Gateway(tmp_path / "gw", backend_args=upstream_args(sw))
    try:
        gw.start()
        s3 = gw.client()
        plain, enc = "plain-b", "enc-b"
        s3.create_bucket(Bucket=plain)
        s3.create_bucket(Bucket=enc)
        s3.put_bucket_encryption(Bucket=enc, ServerSideEncryptionConfiguration=ENCRYPTED)
        s3.put_object(Bucket=enc, Key="before", Body=b"kept")
        sw.stop_s3()
        for bucket in (plain, enc):
            helpers.expect_error(lambda: s3.put_object(Bucket=bucket, Key="during", Body=b"x"), "ServiceUnavailable", 503)
            helpers.expect_error(lambda: s3.get_object(Bucket=bucket, Key="before"), "ServiceUnavailable", 503)
        health = gw.admin_get("/health")
        assert health.status_code == 503 and health.json()["upstream"] == "unavailable"
        sw.start_s3()
        deadline = time.monotonic() + 60
        while gw.admin_get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the gateway did not see the upstream come back"
            time.sleep(0.5)
        assert s3.get_object(Bucket=enc, Key="before")["Body"].read() == b"kept"
        s3.put_object(Bucket=plain, Key="after", Body=b"y")
        helpers.expect_error(lambda: s3.head_object(Bucket=enc, Key="during"), "404", 404)
    finally:
        if gw.is_running():
            gw.stop()
        sw.stop()


def test_a_client_gone_mid_body_leaves_nothing_upstream(fleet):
    a = fleet.clients[0]
    gw = fleet.gateways[0]
    bucket = fleet.bucket(True)
    path = f"/{bucket}/half"
    headers = gw.signed_headers("PUT", path, payload_hash="UNSIGNED-PAYLOAD")
    headers["Content-Length"] = str(1 << 20)
    sock = gw.raw_socket()
    sock.sendall(helpers.raw_request_head("PUT", path, headers))
    sock.sendall(marked(300 << 10))
    time.sleep(0.5)
    sock.close()
    time.sleep(1.0)
    helpers.expect_error(lambda: a.head_object(Bucket=bucket, Key="half"), "404", 404)
    helpers.expect_error(lambda: fleet.upstream().head_object(Bucket=bucket, Key="half"), "404", 404)
    a.put_object(Bucket=bucket, Key="half", Body=b"whole")
    assert fleet.clients[1].get_object(Bucket=bucket, Key="half")["Body"].read() == b"whole"


def test_gateway_killed_mid_part_client_retries_elsewhere(fleet):
    a, b, c = fleet.clients
    bucket = fleet.bucket(True)
    upload = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    victim = fleet.gateways[1]
    part = helpers.random_bytes(5 << 20)
    # A raw, slow upload of part 1 to B, which dies halfway.
    url = f"{victim.endpoint}/{bucket}/k?partNumber=1&uploadId={requests.utils.quote(upload, safe='')}"
    headers = victim.signed_headers("PUT", f"/{bucket}/k", query={"partNumber": "1", "uploadId": upload},
                                    payload_hash="UNSIGNED-PAYLOAD")
    headers["Content-Length"] = str(len(part))

    def slow_body():
        yield part[: 1 << 20]
        time.sleep(1.5)
        yield part[1 << 20:]

    def send():
        try:
            requests.put(url, data=slow_body(), headers=headers, timeout=30)
        except requests.RequestException:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.7)
    victim.kill9()
    sender.join()
    etag = c.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=part)["ETag"]
    a.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == part
    victim.start()


def test_abandoned_and_orphaned_uploads_expire(fleet, tmp_path):
    """The expiry sweep removes uploads clients abandoned and upstream
    uploads no client was ever told of (what a gateway killed between the
    upstream's CreateMultipartUpload and its index write leaves: made here
    straight on the upstream); an orphan only once it is 10 s old, so an
    upload being created is never taken for one."""
    from kms_backends import wait_until

    a = fleet.clients[0]
    up = fleet.upstream()
    bucket = fleet.bucket(True)
    abandoned = a.create_multipart_upload(Bucket=bucket, Key="abandoned")["UploadId"]
    a.upload_part(Bucket=bucket, Key="abandoned", UploadId=abandoned, PartNumber=1, Body=b"x" * 1000)
    up.create_multipart_upload(Bucket=bucket, Key="orphan")
    orphan_made = time.monotonic()

    def upstream_uploads():
        return {u["Key"] for u in up.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    assert upstream_uploads() == {"abandoned", "orphan"}
    sweeper = Gateway(tmp_path / "sweeper", backend_args=upstream_args(fleet.cluster),
                      extra_args=["--multipart-expiry", "1s"])
    sweeper.kms_dir = fleet.kms_dir
    sweeper.start()
    try:
        assert wait_until(lambda: "abandoned" not in upstream_uploads(), timeout=20)
        left = upstream_uploads()
        if time.monotonic() - orphan_made < 9:  # seen before the orphan could be 10 s old
            assert left == {"orphan"}, left
        assert wait_until(lambda: not upstream_uploads(), timeout=30)
        assert not a.list_multipart_uploads(Bucket=bucket).get("Uploads")
    finally:
        sweeper.stop()
