"""Sync tools through a round-robin front over three gateways (`--backend s3`
on one SeaweedFS cluster), on plain and encrypted buckets: what they make of
sizes and ETags decides whether a second sync transfers nothing, whether a
check passes, and whether what comes back down is what went up.

rclone comes from Debian (`make test-deps` installs it), s3cmd from PyPI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from round_robin import RoundRobin

MIB = 1024 * 1024
# Sizes around the interesting edges: empty, one byte, one sealed chunk and
# one byte more, and files that both tools upload in 5 MiB parts.
SIZES = [0, 1, 65_536, 65_537, 1_000_000, 12 * MIB + 3, 17 * MIB]


def make_tree(root: Path) -> dict[str, bytes]:
    files = {}
    for i, size in enumerate(SIZES):
        rel = f"d{i % 3}/f{i}.bin"
        data = helpers.random_bytes(size)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[rel] = data
    return files


def same_tree(a: Path, b: Path) -> None:
    left = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    right = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert left == right
    for rel in left:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture
def front(fleet):
    proxy = RoundRobin([gw.port for gw in fleet.gateways])
    yield proxy
    proxy.close()


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd[:3]} exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


# ---- rclone


def rclone_env(gw, front: RoundRobin, tmp_path: Path) -> dict[str, str]:
    """An `sg:` remote from the environment alone (no config file)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RCLONE_CONFIG": str(tmp_path / "rclone.conf"),
        "RCLONE_CONFIG_SG_TYPE": "s3",
        "RCLONE_CONFIG_SG_PROVIDER": "Other",
        "RCLONE_CONFIG_SG_ENDPOINT": front.endpoint,
        "RCLONE_CONFIG_SG_ACCESS_KEY_ID": gw.access_key,
        "RCLONE_CONFIG_SG_SECRET_ACCESS_KEY": gw.secret_key,
        "RCLONE_CONFIG_SG_REGION": gw.region,
        "RCLONE_CONFIG_SG_FORCE_PATH_STYLE": "true",
    }


def rclone(env, *args) -> subprocess.CompletedProcess:
    # 5 MiB parts above 5 MiB, so the larger files go up as multipart
    # uploads; one connection per request, so the front spreads every
    # request, not just every transfer, over the gateways.
    flags = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--disable-http-keep-alives", "-v"]
    return run(["rclone", *flags, *args], env)


def copied(done: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"INFO\s+: (\S+): Copied", done.stderr)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_rclone_copy_check_and_a_second_sync_that_transfers_nothing(fleet, front, tmp_path, encrypted):
    bucket = fleet.bucket(encrypted)
    src = tmp_path / "src"
    files = make_tree(src)
    env = rclone_env(fleet.gateways[0], front, tmp_path)
    remote = f"sg:{bucket}"

    assert sorted(copied(rclone(env, "copy", str(src), remote))) == sorted(files)
    check = rclone(env, "check", str(src), remote)
    assert "0 differences found" in check.stderr, check.stderr
    assert "ERROR" not in check.stderr, check.stderr

    again = rclone(env, "sync", str(src), remote)
    assert copied(again) == [], again.stderr

    # Listed sizes are the plaintext sizes.
    listed = rclone(env, "lsf", "-R", "--files-only", "--format", "ps", "--separator", "\t", remote).stdout
    sizes = dict(line.split("\t") for line in listed.splitlines())
    assert {k: int(v) for k, v in sizes.items()} == {k: len(v) for k, v in files.items()}

    # A changed file is the only one a further sync transfers.
    changed = src / "d1/f1.bin"
    changed.write_bytes(b"changed")
    assert copied(rclone(env, "sync", str(src), remote)) == ["d1/f1.bin"]

    down = tmp_path / "down"
    rclone(env, "copy", remote, str(down))
    same_tree(src, down)
    assert all(front.counts.values()), front.counts


# ---- s3cmd


def s3cmd_config(gw, front: RoundRobin, tmp_path: Path) -> Path:
    host = front.endpoint.removeprefix("http://")
    config = tmp_path / "s3cfg"
    config.write_text(
        "[default]\n"
        f"access_key = {gw.access_key}\n"
        f"secret_key = {gw.secret_key}\n"
        f"host_base = {host}\n"
        f"host_bucket = {host}\n"  # path-style
        f"bucket_location = {gw.region}\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "multipart_chunk_size_mb = 5\n"
    )
    return config


def s3cmd(config: Path, *args) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent), "HOME": str(config.parent)}
    return run([shutil.which("s3cmd") or "s3cmd", "-c", str(config), *args], env)


def uploads(done: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"upload: '([^']+)'", done.stdout)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_s3cmd_sync_twice_lists_plaintext_sizes_and_comes_back_whole(fleet, front, tmp_path, encrypted):
    bucket = fleet.bucket(encrypted)
    src = tmp_path / "src"
    files = make_tree(src)
    config = s3cmd_config(fleet.gateways[0], front, tmp_path)
    target = f"s3://{bucket}/"

    first = s3cmd(config, "sync", f"{src}/", target)
    assert len(uploads(first)) == len(files), first.stdout
    second = s3cmd(config, "sync", f"{src}/", target)
    assert uploads(second) == [], second.stdout

    # `s3cmd ls -r`: date, time, size, url — the size is the plaintext size.
    listed = {}
    for line in s3cmd(config, "ls", "-r", target).stdout.splitlines():
        _date, _time, size, url = line.split(None, 3)
        listed[url.removeprefix(target)] = int(size)
    assert listed == {k: len(v) for k, v in files.items()}

    down = tmp_path / "down"
    down.mkdir()
    got = s3cmd(config, "sync", target, f"{down}/")
    assert "WARNING" not in got.stderr, got.stderr  # e.g. an MD5 mismatch on download
    same_tree(src, down)
    assert len([c for c in front.counts.values() if c > 0]) > 1, front.counts
