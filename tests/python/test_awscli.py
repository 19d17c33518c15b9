"""aws-cli v1 against the gateway (subprocess, isolated config)."""

import filecmp
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import unique_bucket_name
from helpers import MiB, all_keys, get_bytes, random_bytes, single_put_etag


@pytest.fixture
def aws(gateway, tmp_path):
    """Run `aws --endpoint-url <gateway> ...`; returns CompletedProcess (check=True)."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=gateway.access_key,
        AWS_SECRET_ACCESS_KEY=gateway.secret_key,
        AWS_DEFAULT_REGION=gateway.region,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials-unused"),
        AWS_MAX_ATTEMPTS="1",
    )

    def run(*args, check=True):
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", gateway.endpoint, *args]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
        return proc

    return run


@pytest.mark.parametrize("size", [100_000, 9 * MiB], ids=["single", "multipart"])
def test_cp_up_and_down(aws, s3, bucket, tmp_path, size):
    src = tmp_path / "up.bin"
    src.write_bytes(random_bytes(size))
    aws("s3", "cp", str(src), f"s3://{bucket}/cli/up.bin")
    assert get_bytes(s3, bucket, "cli/up.bin") == src.read_bytes()

    dst = tmp_path / "down.bin"
    aws("s3", "cp", f"s3://{bucket}/cli/up.bin", str(dst))
    assert filecmp.cmp(src, dst, shallow=False)


def test_ls(aws, s3, bucket):
    s3.put_object(Bucket=bucket, Key="top.txt", Body=b"12345")
    s3.put_object(Bucket=bucket, Key="sub/inner.txt", Body=b"x")
    out = aws("s3", "ls", f"s3://{bucket}/").stdout
    assert "PRE sub/" in out
    top_line = next(line for line in out.splitlines() if line.endswith("top.txt"))
    assert top_line.split()[-2] == "5"

    recursive = aws("s3", "ls", "--recursive", f"s3://{bucket}/").stdout
    assert sorted(line.split()[-1] for line in recursive.splitlines()) == ["sub/inner.txt", "top.txt"]

    assert bucket in aws("s3", "ls").stdout


def test_sync_roundtrip(aws, s3, bucket, tmp_path):
    local = tmp_path / "tree"
    files = {"a.txt": b"alpha", "nested/b.bin": random_bytes(20_000), "nested/deeper/c": b"", "space name.txt": b"s"}
    for rel, data in files.items():
        path = local / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        # sync compares mtimes with second-resolution LastModified; keep local
        # files clearly older so an unchanged tree is never re-uploaded.
        os.utime(path, (time.time() - 3600, time.time() - 3600))

    aws("s3", "sync", str(local), f"s3://{bucket}/synced")
    assert sorted(all_keys(s3, bucket)) == sorted(f"synced/{rel}" for rel in files)
    for rel, data in files.items():
        assert get_bytes(s3, bucket, f"synced/{rel}") == data

    # A second sync uploads nothing.
    second = aws("s3", "sync", str(local), f"s3://{bucket}/synced").stdout
    assert "upload:" not in second

    back = tmp_path / "back"
    aws("s3", "sync", f"s3://{bucket}/synced", str(back))
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data


def test_s3api_head_object(aws, s3, bucket):
    data = b"head me"
    s3.put_object(Bucket=bucket, Key="h", Body=data, ContentType="text/x-cli", Metadata={"via": "cli"})
    out = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "h").stdout)
    assert out["ContentLength"] == len(data)
    assert out["ETag"] == single_put_etag(data)
    assert out["ContentType"] == "text/x-cli"
    assert out["Metadata"] == {"via": "cli"}


def test_s3api_head_missing_object_fails(aws, bucket):
    proc = aws("s3api", "head-object", "--bucket", bucket, "--key", "missing", check=False)
    assert proc.returncode != 0
    assert "404" in proc.stderr


def test_rm_and_mb_rb(aws, s3):
    name = unique_bucket_name("cli")
    aws("s3", "mb", f"s3://{name}")
    s3.put_object(Bucket=name, Key="x", Body=b"x")
    aws("s3", "rm", f"s3://{name}/x")
    assert all_keys(s3, name) == []
    aws("s3", "rb", f"s3://{name}")
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
