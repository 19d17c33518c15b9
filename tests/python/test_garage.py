"""Garage 2.x as the upstream (`make test-garage`, which builds Garage with
`cargo install --locked garage` when it is missing): a three-node cluster
on loopback, replication factor 3. `make test-garage` also runs the
scale-out and backend suites there (SEALGATE_TEST_BACKEND=garage).

Garage stores a PutObject whose `If-None-Match` / `If-Match` condition
fails instead of refusing it. The gateway finds that at start and changes
its bucket records under a lock in the state bucket instead
(host/src/storage/upstream/record_lock.rs, docs/scale-out.md).
"""

from __future__ import annotations

import os
import sys

import pytest

import helpers
from conftest import REPO_ROOT, Gateway, upstream_args

sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from garage import GarageCluster  # noqa: E402

pytestmark = pytest.mark.skipif(not os.environ.get("SEALGATE_TEST_GARAGE"),
                                reason="Garage runs in make test-garage (it takes a 13-minute build)")


@pytest.fixture(scope="module")
def garage(tmp_path_factory):
    cluster = GarageCluster(tmp_path_factory.mktemp("garage"))
    cluster.start()
    yield cluster
    cluster.stop()


def test_garage_stores_conditional_puts_that_s3_refuses(garage):
    """What the gateway's start-up probe finds. Should a later Garage refuse
    these with 412, this test fails: time to try Garage as an upstream."""
    up = garage.client()
    up.create_bucket(Bucket="conditions")
    up.put_object(Bucket="conditions", Key="k", Body=b"first")
    second = up.put_object(Bucket="conditions", Key="k", Body=b"second", IfNoneMatch="*")
    assert second["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert up.get_object(Bucket="conditions", Key="k")["Body"].read() == b"second"


def test_a_gateway_on_garage_changes_records_under_a_lock(garage, tmp_path):
    gw = Gateway(tmp_path / "gw", backend_args=upstream_args(garage))
    gw.start()
    try:
        assert "bucket records change under a lock" in gw.log_path.read_text()
        s3 = gw.client()
        s3.create_bucket(Bucket="locked")
        helpers.expect_error(lambda: s3.create_bucket(Bucket="locked"), "BucketAlreadyOwnedByYou", 409)
        state = garage.client()
        record = state.get_object(Bucket="sealgate-state", Key="buckets/locked")["Body"].read()
        assert b'"owner"' in record
        s3.delete_bucket(Bucket="locked")
        # Neither the probe nor a released lock leaves anything behind.
        left = [o["Key"] for o in state.list_objects_v2(Bucket="sealgate-state").get("Contents", [])]
        assert [k for k in left if k.startswith(("probes/", "locks/", "buckets/"))] == [], left
    finally:
        gw.stop()
