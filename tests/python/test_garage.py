"""Garage 2.x as the upstream (`make test-garage`, which builds Garage with
`cargo install --locked garage` when it is missing): a three-node cluster
on loopback, replication factor 3.

Garage stores a PutObject whose `If-None-Match` / `If-Match` condition
fails instead of refusing it, and sealgate's bucket records need those
conditions (docs/scale-out.md), so a gateway must refuse to start on it
rather than let two gateways overwrite each other's records.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def test_a_gateway_refuses_to_start_on_garage(garage, tmp_path):
    gw = Gateway(tmp_path / "gw", backend_args=upstream_args(garage))
    done = subprocess.run(gw.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "ignores conditional writes" in done.stderr + done.stdout, done.stderr
    # Nothing of a bucket record was left behind by the probe.
    state = garage.client().list_objects_v2(Bucket="sealgate-state").get("Contents", [])
    assert state == [], state
