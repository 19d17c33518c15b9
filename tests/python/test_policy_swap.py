"""Policy modules: hot swap over the admin listener, the CLI, and hostile modules.

Everything that changes the module runs on a private gateway, so the shared
per-worker gateway always keeps the default module.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import CONTRACT_1_DEFAULT, POLICIES_DIR, unique_bucket_name
from helpers import (
    expect_error,
    get_bytes,
    kms_key_files,
    object_exists,
    put,
    put_then_reuse,
    random_bytes,
)

DEFAULT = POLICIES_DIR / "default.wasm"
ENCRYPT_ALL = POLICIES_DIR / "encrypt-all.wasm"
SECURE_PREFIX = POLICIES_DIR / "secure-prefix.wasm"  # the SDK example, guest/examples/secure-prefix
FIXTURES = POLICIES_DIR / "fixtures"
HOSTILE_KINDS = ["loop", "hog", "trap", "garbage"]
HOSTILE_DEADLINE = 5.0  # seconds a request against a misbehaving guest may take


def sha256_file(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_encrypted(s3, bucket) -> bool:
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ServerSideEncryptionConfigurationNotFoundError", exc.response
        return False
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"], rules
    return True


def bucket_exists(s3, name) -> bool:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404, exc.response
        return False
    return True


def load_ok(gw, path) -> dict:
    resp = gw.load_policy(path)
    assert resp.status_code == 200, f"PUT /policy {path.name}: {resp.status_code} {resp.text}"
    info = resp.json()
    assert info["sha256"] == sha256_file(path), info
    return info


def assert_serving(gw) -> None:
    """Plain requests on ordinary buckets still work."""
    s3 = gw.client()
    name = unique_bucket_name("alive")
    s3.create_bucket(Bucket=name)
    data = random_bytes(5000)
    put(s3, name, "k", data)
    assert get_bytes(s3, name, "k") == data
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)


# --------------------------------------------------------------------------
# 12. Hot swap
# --------------------------------------------------------------------------


def test_policy_starts_with_embedded_default(private_gateway):
    info = private_gateway.policy()
    assert info["name"] == "default", info
    assert set(info) >= {"name", "version", "sha256", "contract", "loaded_at", "source"}
    assert info["contract"] == "2.0.0", info
    health = private_gateway.admin_get("/health").json()
    assert health["policy"]["name"] == "default"
    assert health["policy"]["sha256"] == info["sha256"]
    assert health["kms"]["backend"] == "local" and health["kms"]["state"] == "ok", health


def test_hot_swap_encrypt_all_and_back(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    swaps = gw.metric("sealgate_policy_swaps_total")
    before_plain = unique_bucket_name("pre")
    s3.create_bucket(Bucket=before_plain)
    assert not is_encrypted(s3, before_plain)

    info = load_ok(gw, ENCRYPT_ALL)
    assert info["name"] == "encrypt-all", info
    current = gw.policy()
    assert current == info, (current, info)
    assert gw.admin_get("/health").json()["policy"]["name"] == "encrypt-all"
    assert gw.metric("sealgate_policy_swaps_total") == swaps + 1

    keys_before = kms_key_files(gw.kms_dir)
    enc_all = unique_bucket_name("encall")
    s3.create_bucket(Bucket=enc_all)  # no header
    assert is_encrypted(s3, enc_all), "encrypt-all module: a bucket created without header is not encrypted"
    assert len(kms_key_files(gw.kms_dir) - keys_before) == 1, "no KMS key created for the encrypt-all bucket"
    data = random_bytes(100_000)
    before = gw.stored_objects()
    assert put(s3, enc_all, "k", data).get("ServerSideEncryption") == "AES256"
    stored = gw.stored_objects() - before
    assert stored, "nothing stored"
    for item in stored:
        assert data[5000:5064] not in gw.stored_bytes(item), "encrypt-all bucket stored plaintext"

    info = load_ok(gw, DEFAULT)
    assert info["name"] == "default"
    assert gw.policy()["name"] == "default"
    assert gw.metric("sealgate_policy_swaps_total") == swaps + 2
    plain = unique_bucket_name("post")
    s3.create_bucket(Bucket=plain)
    assert not is_encrypted(s3, plain), "default module again: a bucket without header must be plaintext"
    assert "ServerSideEncryption" not in put(s3, plain, "k", b"plain")
    # A bucket's encryption is a property of the bucket, not of the module that created it.
    assert is_encrypted(s3, enc_all)
    got = s3.get_object(Bucket=enc_all, Key="k")
    assert got["Body"].read() == data and got["ServerSideEncryption"] == "AES256"
    assert put(s3, enc_all, "k2", b"later").get("ServerSideEncryption") == "AES256"
    assert not is_encrypted(s3, before_plain)


def test_a_module_built_against_contract_1_runs_beside_2(private_gateway):
    """The 1.0.0 default module (committed as built then) swaps in and
    applies the rules; objects sealed under either contract open under the
    other."""
    gw = private_gateway
    s3, encrypting = gw.client(), gw.encrypting_client()
    under_2 = unique_bucket_name("v2")
    encrypting.create_bucket(Bucket=under_2)
    early = random_bytes(90_000)
    put(s3, under_2, "early", early)

    info = load_ok(gw, CONTRACT_1_DEFAULT)
    assert (info["name"], info["contract"]) == ("default", "1.0.0"), info
    under_1 = unique_bucket_name("v1")
    encrypting.create_bucket(Bucket=under_1)
    assert is_encrypted(s3, under_1)
    data = random_bytes(120_000)
    before = gw.stored_objects()
    assert put(s3, under_1, "k", data).get("ServerSideEncryption") == "AES256"
    for item in gw.stored_objects() - before:
        assert data[4000:4064] not in gw.stored_bytes(item), "1.0.0 module: plaintext at rest"
    assert get_bytes(s3, under_2, "early") == early
    s3.copy_object(Bucket=under_1, Key="copied", CopySource={"Bucket": under_2, "Key": "early"})
    assert get_bytes(s3, under_1, "copied") == early
    plain = unique_bucket_name("plain")
    s3.create_bucket(Bucket=plain)
    expect_error(lambda: s3.put_object(Bucket=plain, Key="k", Body=b"x", ServerSideEncryption="AES256"),
                 "InvalidArgument", 400)

    assert load_ok(gw, DEFAULT)["contract"] == "2.0.0"
    assert get_bytes(s3, under_1, "k") == data and get_bytes(s3, under_1, "copied") == early
    s3.delete_object(Bucket=under_1, Key="k")
    s3.delete_object(Bucket=under_1, Key="copied")
    s3.delete_bucket(Bucket=under_1)  # its key, created under 1.0.0, destroyed under 2.0.0
    expect_error(lambda: s3.head_bucket(Bucket=under_1), "404", 404)


def test_the_sdk_example_module_adds_its_rules_to_the_documented_ones(private_gateway):
    """guest/README.md's worked example, loaded as an operator would: secure-*
    buckets are encrypted without a header and keep their encryption; every
    other bucket follows the documented rules."""
    gw = private_gateway
    info = load_ok(gw, SECURE_PREFIX)
    assert (info["name"], info["version"]) == ("secure-prefix", "1.0.0"), info
    s3 = gw.client()

    secure = unique_bucket_name("secure")
    assert secure.startswith("secure-")
    s3.create_bucket(Bucket=secure)  # no header
    assert is_encrypted(s3, secure)
    data = random_bytes(70_000)
    assert put(s3, secure, "k", data).get("ServerSideEncryption") == "AES256"
    expect_error(lambda: s3.delete_bucket_encryption(Bucket=secure), "AccessDenied", 403)
    assert is_encrypted(s3, secure)
    assert get_bytes(s3, secure, "k") == data

    other = unique_bucket_name("other")
    s3.create_bucket(Bucket=other)
    assert not is_encrypted(s3, other)
    assert "ServerSideEncryption" not in put(s3, other, "k", b"plain")
    s3.put_bucket_encryption(
        Bucket=other,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    s3.delete_bucket_encryption(Bucket=other)  # allowed outside secure-*
    assert not is_encrypted(s3, other)


def test_a_swapped_module_survives_restart_and_sighup(private_gateway):
    """An operator who switched to encrypt-all must not get plaintext buckets
    back after a restart or a SIGHUP with no --policy configured."""
    import signal

    gw = private_gateway
    info = load_ok(gw, ENCRYPT_ALL)
    gw.restart()
    after = gw.policy()
    assert (after["name"], after["sha256"]) == ("encrypt-all", info["sha256"]), after
    assert "kept across a restart" in after["source"], after
    gw.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert gw.policy()["sha256"] == info["sha256"]
    assert gw.is_running()
    s3 = gw.client()
    name = unique_bucket_name("kept")
    s3.create_bucket(Bucket=name)
    assert is_encrypted(s3, name)
    # A damaged kept module stops the start with a clear message; nothing is guessed.
    gw.stop()
    [kept] = (gw.data_dir / "policy").glob("*.wasm")
    kept.write_bytes(kept.read_bytes()[:-1] + b"x")
    out = subprocess.run(gw.command(), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "does not match its sha256" in out.stdout + out.stderr, out.stderr


def test_cli_policy_load(private_gateway):
    gw = private_gateway
    s3 = gw.client()
    out = gw.cli_load_policy(ENCRYPT_ALL)
    assert out.returncode == 0, out.stdout + out.stderr
    info = gw.policy()
    assert info["name"] == "encrypt-all" and info["sha256"] == sha256_file(ENCRYPT_ALL), info
    name = unique_bucket_name("cli")
    s3.create_bucket(Bucket=name)
    assert is_encrypted(s3, name)

    # Refused module: non-zero exit, nothing changes.
    out = gw.cli_load_policy(FIXTURES / "trap-always.wasm")
    assert out.returncode != 0, f"CLI exited 0 for a refused module: {out.stdout}{out.stderr}"
    assert gw.policy() == info
    # Wrong token: non-zero exit, nothing changes.
    out = gw.cli_load_policy(DEFAULT, token="wrong-token")
    assert out.returncode != 0, f"CLI exited 0 with a wrong token: {out.stdout}{out.stderr}"
    assert gw.policy() == info

    out = gw.cli_load_policy(DEFAULT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert gw.policy()["name"] == "default"
    name = unique_bucket_name("cli")
    s3.create_bucket(Bucket=name)
    assert not is_encrypted(s3, name)


@pytest.mark.slow
def test_swap_under_load(private_gateway):
    gw = private_gateway
    setup = gw.client()
    plain = unique_bucket_name("load-plain")
    setup.create_bucket(Bucket=plain)
    enc = unique_bucket_name("load-enc")
    gw.encrypting_client().create_bucket(Bucket=enc)

    stop = threading.Event()
    failures: list[str] = []
    ops = [0] * 8
    lock = threading.Lock()

    def fail(msg):
        with lock:
            failures.append(msg)

    def worker(index):
        s3 = gw.client()
        enc_creator = gw.encrypting_client()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                bucket = enc if n % 2 else plain
                key = f"w{index}/{n}"
                data = random_bytes(1000 + (n * 7919) % 150_000)
                resp = put(s3, bucket, key, data)
                if bucket == enc and resp.get("ServerSideEncryption") != "AES256":
                    fail(f"PUT {bucket}/{key}: not sealed: {resp.get('ServerSideEncryption')!r}")
                got = s3.get_object(Bucket=bucket, Key=key)
                if got["Body"].read() != data:
                    fail(f"GET {bucket}/{key}: wrong body")
                if bucket == enc and got.get("ServerSideEncryption") != "AES256":
                    fail(f"GET {bucket}/{key}: not reported sealed")
                head = s3.head_object(Bucket=bucket, Key=key)
                if head["ContentLength"] != len(data):
                    fail(f"HEAD {bucket}/{key}: length {head['ContentLength']} != {len(data)}")
                if n % 5 == 0:
                    name = f"w{index}-{uuid.uuid4().hex[:10]}"
                    creator = enc_creator if n % 10 == 0 else s3
                    creator.create_bucket(Bucket=name)
                    if creator is enc_creator and not is_encrypted(s3, name):
                        fail(f"CreateBucket {name} with AES256 header: not encrypted")
                    s3.delete_bucket(Bucket=name)
                s3.delete_object(Bucket=bucket, Key=key)
            except Exception as exc:  # any failed client request counts
                fail(f"worker {index} op {n}: {exc!r}")
            ops[index] = n

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    probe = gw.client()
    try:
        time.sleep(0.3)
        for swap in range(20):
            target, name = (ENCRYPT_ALL, "encrypt-all") if swap % 2 == 0 else (DEFAULT, "default")
            info = load_ok(gw, target)
            assert info["name"] == name
            assert gw.policy()["name"] == name
            bucket = unique_bucket_name(f"swap{swap}")
            probe.create_bucket(Bucket=bucket)
            assert is_encrypted(probe, bucket) == (name == "encrypt-all"), (
                f"swap {swap}: bucket created right after loading {name} has the wrong encryption")
            probe.delete_bucket(Bucket=bucket)
            time.sleep(0.15)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    assert not failures, f"{len(failures)} failed client requests during swaps, e.g. {failures[:5]}"
    assert min(ops) >= 5, f"client threads made too little progress: {ops}"
    assert gw.policy()["name"] == "default"
    assert gw.is_running()


# --------------------------------------------------------------------------
# 13. Hostile modules
# --------------------------------------------------------------------------

# The sandbox's limits (HOSTILE_KINDS) and the host-enforced invariants
# (test_policy_invariants.py) both fail a module that breaks them everywhere
# at its self-test.
INVARIANT_KINDS = ["plaintext", "foreign-seal", "leak-keys", "destroy-other"]
REFUSED = [f"{kind}-always.wasm" for kind in HOSTILE_KINDS + INVARIANT_KINDS] + ["wrong-world.wasm"]


@pytest.mark.parametrize("module", REFUSED)
def test_hostile_module_refused(private_gateway, module):
    gw = private_gateway
    s3 = gw.client()
    previous = load_ok(gw, ENCRYPT_ALL)  # a non-default module, so "previous" is unambiguous
    refusals = gw.metric("sealgate_policy_refusals_total")
    swaps = gw.metric("sealgate_policy_swaps_total")
    t0 = time.monotonic()
    resp = gw.load_policy(FIXTURES / module)
    elapsed = time.monotonic() - t0
    assert resp.status_code == 422, f"PUT /policy {module}: {resp.status_code} {resp.text}"
    assert resp.json().get("error"), resp.text
    assert elapsed < 30, f"refusing {module} took {elapsed:.1f}s"
    assert gw.policy() == previous, "a refused module changed GET /policy"
    assert gw.admin_get("/health").json()["policy"]["sha256"] == previous["sha256"]
    assert gw.metric("sealgate_policy_refusals_total") == refusals + 1
    assert gw.metric("sealgate_policy_swaps_total") == swaps
    # The previous module keeps deciding: encrypt-all still encrypts.
    name = unique_bucket_name("after-refusal")
    s3.create_bucket(Bucket=name)
    assert is_encrypted(s3, name)
    assert_serving(gw)
    # Hostile bucket names are nothing special to the previous module.
    hostile = unique_bucket_name("hostile")
    s3.create_bucket(Bucket=hostile)
    put(s3, hostile, "k", b"fine")
    assert get_bytes(s3, hostile, "k") == b"fine"


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_on_hostile_module(private_gateway, kind):
    gw = private_gateway
    s3 = gw.client()
    existing = unique_bucket_name("hostile")
    s3.create_bucket(Bucket=existing)
    put(s3, existing, "old", b"written under the default module")
    normal = unique_bucket_name("normal")
    s3.create_bucket(Bucket=normal)

    failures = gw.metric("sealgate_policy_guest_failures_total")
    module = FIXTURES / f"{kind}-on-hostile.wasm"
    try:
        info = load_ok(gw, module)
        assert gw.policy() == info

        files_before = gw.stored_objects()
        t0 = time.monotonic()
        # Own client: whether the connection survives is test_hostile_500_keeps_connection_usable's job.
        expect_error(lambda: put(gw.client(), existing, "new", random_bytes(100_000)), "InternalError", 500)
        assert time.monotonic() - t0 < HOSTILE_DEADLINE, f"{kind}: PutObject took {time.monotonic() - t0:.1f}s"
        assert gw.stored_objects() == files_before, f"{kind}: refused PutObject left data behind"

        new_bucket = unique_bucket_name("hostile")
        t0 = time.monotonic()
        expect_error(lambda: s3.create_bucket(Bucket=new_bucket), "InternalError", 500)
        assert time.monotonic() - t0 < HOSTILE_DEADLINE, f"{kind}: CreateBucket took {time.monotonic() - t0:.1f}s"
        t0 = time.monotonic()
        expect_error(lambda: gw.encrypting_client().create_bucket(Bucket=new_bucket), "InternalError", 500)
        assert time.monotonic() - t0 < HOSTILE_DEADLINE

        # Other buckets keep working under the same module.
        data = random_bytes(20_000)
        put(s3, normal, "k", data)
        assert get_bytes(s3, normal, "k") == data
        assert_serving(gw)
        assert gw.metric("sealgate_policy_guest_failures_total") >= failures + 3, \
            "sealgate_policy_guest_failures_total did not count the guest failures"
        assert gw.is_running()
    finally:
        restored = gw.load_policy(DEFAULT)
    assert restored.status_code == 200, restored.text
    assert gw.policy()["name"] == "default"
    # Nothing was written by the refused requests.
    assert not object_exists(s3, existing, "new")
    assert not bucket_exists(s3, new_bucket), f"{kind}: CreateBucket that failed with 500 left a bucket"
    assert get_bytes(s3, existing, "old") == b"written under the default module"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=existing)["Contents"]] == ["old"]


@pytest.mark.parametrize("kind", ["trap"])
def test_hostile_500_keeps_connection_usable(private_gateway, kind):
    """A PutObject refused with 500 by a failing guest, sent on a keep-alive
    connection without `Expect: 100-continue`: the next request on the same
    connection must be served, unless the 500 announced `Connection: close`."""
    gw = private_gateway
    hostile = unique_bucket_name("hostile")
    gw.client().create_bucket(Bucket=hostile)
    load_ok(gw, FIXTURES / f"{kind}-on-hostile.wasm")
    try:
        status, follow_up = put_then_reuse(gw, f"/{hostile}/k", {}, 100_000)
        assert status[0] == 500, status
    finally:
        assert gw.load_policy(DEFAULT).status_code == 200
    assert status[1] or follow_up == 200, (
        f"{kind}: PUT /{hostile}/k (100000 B body) -> 500 without `Connection: close`, then the "
        f"connection was dropped: ListBuckets on it got {follow_up!r}")


# --------------------------------------------------------------------------
# 14. Admin auth on /policy
# --------------------------------------------------------------------------


def test_policy_endpoint_requires_token(gateway):
    import requests

    before = gateway.policy()
    assert gateway.admin_get("/policy", token=None).status_code == 401
    assert gateway.admin_get("/policy", token="wrong-token").status_code in (401, 403)
    body = ENCRYPT_ALL.read_bytes()
    assert gateway.admin_put("/policy", body, token=None).status_code == 401
    assert gateway.admin_put("/policy", body, token="wrong-token").status_code in (401, 403)
    resp = requests.put(gateway.admin + "/policy", data=body,
                        headers={"Authorization": gateway.admin_token}, timeout=10)
    assert resp.status_code in (401, 403), "token without the Bearer scheme must not be accepted"
    assert gateway.policy() == before, "an unauthenticated PUT /policy changed the module"


@pytest.mark.parametrize("body", [b"", b"not wasm at all", b"\0asm\x01\0\0\0", b"\0asm" + b"\xff" * 100],
                         ids=["empty", "text", "core-module-header", "bad-bytes"])
def test_policy_put_non_component_refused(gateway, body):
    before = gateway.policy()
    refusals = gateway.metric("sealgate_policy_refusals_total")
    resp = gateway.admin_put("/policy", body)
    assert resp.status_code == 422, f"{resp.status_code} {resp.text}"
    assert resp.headers["Content-Type"].startswith("application/json")
    assert isinstance(resp.json().get("error"), str) and resp.json()["error"]
    assert gateway.policy() == before
    assert gateway.metric("sealgate_policy_refusals_total") == refusals + 1
