"""Admin listener: /health and /metrics."""

import re

import pytest
import requests

from helpers import put

SAMPLE_RE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>[-+]?(?:[0-9.]+(?:[eE][-+]?\d+)?|NaN|[-+]?Inf))(?:\s+-?\d+)?$"
)


def parse_prometheus(text: str) -> tuple[dict[str, float], dict[str, str]]:
    """Return ({'name{labels}': value}, {family: type}).

    Every non-comment line must be a valid sample line.
    """
    samples, types = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# TYPE"):
            _, _, family, kind = line.split(None, 3)
            types[family] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = SAMPLE_RE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match["name"] + (match["labels"] or "")] = float(match["value"])
    return samples, types


def request_counters(text: str) -> dict[str, float]:
    """Counter series about requests, whatever the exact metric name is."""
    samples, types = parse_prometheus(text)
    counters = {}
    for series, value in samples.items():
        name = series.split("{")[0]
        kind = types.get(name) or types.get(name.removesuffix("_total"))
        if "request" in name.lower() and kind == "counter":
            counters[series] = value
    return counters


def test_health(gateway):
    resp = gateway.admin_get("/health")
    assert resp.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_admin_requires_token(gateway, path):
    assert gateway.admin_get(path, token=None).status_code == 401
    assert gateway.admin_get(path, token="wrong-token").status_code in (401, 403)
    resp = requests.get(gateway.admin + path, headers={"Authorization": gateway.admin_token}, timeout=10)
    assert resp.status_code in (401, 403), "token without the Bearer scheme must not be accepted"


def test_metrics_format(gateway):
    resp = gateway.admin_get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples, types = parse_prometheus(resp.text)
    assert samples, "no metrics exposed"
    assert types, "no # TYPE lines"


def test_metrics_request_counts_increase(gateway, s3, bucket):
    before = request_counters(gateway.admin_get("/metrics").text)
    n = 7
    for i in range(n):
        put(s3, bucket, f"m{i}", b"x")
    after = request_counters(gateway.admin_get("/metrics").text)
    assert after, "no request counter found in /metrics"
    total_before = sum(before.values())
    total_after = sum(after.values())
    grown = {s: after[s] - before.get(s, 0.0) for s in after if after[s] - before.get(s, 0.0) >= n}
    assert grown, (
        f"no request counter grew by >= {n} after {n} PUTs "
        f"(sum {total_before} -> {total_after})"
    )
    assert all(after[s] >= before.get(s, 0.0) for s in before if s in after), "a request counter decreased"
