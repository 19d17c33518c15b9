"""Shared helpers for the sealgate integration tests.

Nothing in here talks to pytest fixtures; everything is plain functions so it
can be imported from any test module (pytest puts this directory on sys.path).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import socket
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from typing import Callable, Iterable, Iterator

import pytest
import requests
from botocore.exceptions import BotoCoreError, ClientError

KiB = 1024
MiB = 1024 * KiB

# --------------------------------------------------------------------------
# Data and digests
# --------------------------------------------------------------------------


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def single_put_etag(data: bytes) -> str:
    """ETag S3 returns for a non-multipart PUT."""
    return f'"{md5_hex(data)}"'


def multipart_etag(parts: Iterable[bytes]) -> str:
    """ETag S3 returns for CompleteMultipartUpload: md5 of the binary part md5s."""
    parts = list(parts)
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def on_upstream_backend() -> bool:
    """The suite runs against `--backend s3` (SEALGATE_TEST_BACKEND=s3 or garage)."""
    return os.environ.get("SEALGATE_TEST_BACKEND", "local") in ("s3", "garage")


def assert_sealed_etag(etag: str, data: bytes) -> None:
    """The ETag of a sealed single PUT, copy or part. The embedded store
    answers the plaintext MD5, as S3 does; with an upstream the plaintext MD5
    cannot exist anywhere the upstream sees, so it is the upstream's MD5 of
    the ciphertext with `-0` (docs/scale-out.md, "ETags and client checks")."""
    if not on_upstream_backend():
        assert etag == single_put_etag(data), "ETag must be the MD5 of the plaintext"
        return
    assert re.fullmatch(r'"[0-9a-f]{32}-0"', etag), etag
    assert md5_hex(data) not in etag, "a plaintext MD5 as the ETag of a sealed object"


def assert_sealed_multipart_etag(etag: str, parts: list[bytes]) -> None:
    """As `assert_sealed_etag`, for a completed sealed upload: S3's
    `"<hex>-N"`, from the plaintext parts' MD5s on the embedded store and
    from the upstream's (of ciphertext) with an upstream."""
    if not on_upstream_backend():
        assert etag == multipart_etag(parts)
        return
    assert re.fullmatch(rf'"[0-9a-f]{{32}}-{len(parts)}"', etag), etag
    assert etag != multipart_etag(parts), "an ETag derived from plaintext MD5s"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _reflected_table(poly: int, width: int) -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc & ((1 << width) - 1))
    return table


_CRC32C_TABLE = _reflected_table(0x82F63B78, 32)
_CRC64NVME_TABLE = _reflected_table(0x9A6C9329AC4BC9B5, 64)


def _reflected_crc(data: bytes, table: list[int], width: int) -> int:
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ mask


def crc32c(data: bytes) -> int:
    return _reflected_crc(data, _CRC32C_TABLE, 32)


def crc64nvme(data: bytes) -> int:
    return _reflected_crc(data, _CRC64NVME_TABLE, 64)


# Standard check values ("123456789") guard the pure-Python implementations.
assert crc32c(b"123456789") == 0xE3069283
assert crc64nvme(b"123456789") == 0xAE8B14860A799888


def checksum_b64(algorithm: str, data: bytes) -> str:
    """Base64 checksum value as S3 expects it in x-amz-checksum-<algorithm>."""
    algorithm = algorithm.upper()
    if algorithm == "CRC32":
        return b64((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big"))
    if algorithm == "CRC32C":
        return b64(crc32c(data).to_bytes(4, "big"))
    if algorithm == "CRC64NVME":
        return b64(crc64nvme(data).to_bytes(8, "big"))
    if algorithm == "SHA1":
        return b64(hashlib.sha1(data).digest())
    if algorithm == "SHA256":
        return b64(hashlib.sha256(data).digest())
    raise ValueError(algorithm)


# --------------------------------------------------------------------------
# Error assertions
# --------------------------------------------------------------------------


def signed_put_head(gw, bucket: str, key: str, body: bytes) -> bytes:
    """The head of a SigV4-signed PUT of `body` (signed payload hash) to
    gateway `gw`, to send by hand, e.g. with the body in pieces."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    req = AWSRequest(method="PUT", url=f"{gw.endpoint}/{bucket}/{key}", data=body)
    req.context["client_config"] = Config(s3={"payload_signing_enabled": True})
    S3SigV4Auth(Credentials(gw.access_key, gw.secret_key), "s3", gw.region).add_auth(req)
    head = f"PUT /{bucket}/{key} HTTP/1.1\r\nHost: {gw.host}\r\nContent-Length: {len(body)}\r\n"
    for name, value in req.headers.items():
        head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n"


def expect_error(
    call: Callable[[], object], code: str | tuple[str, ...], status: int
) -> dict:
    """Run `call`, require a botocore ClientError with the given code/status.

    `code` may be a tuple of acceptable codes. For HEAD requests S3 has no
    body, so botocore reports the status as the code (e.g. "404").
    Returns the error response dict for further inspection.
    """
    with pytest.raises(ClientError) as excinfo:
        call()
    response = excinfo.value.response
    actual_code = response["Error"]["Code"]
    actual_status = response["ResponseMetadata"]["HTTPStatusCode"]
    codes = code if isinstance(code, tuple) else (code,)
    assert actual_code in codes and actual_status == status, (
        f"expected {codes} / HTTP {status}, got {actual_code!r} / HTTP {actual_status}: "
        f"{response.get('Error')}"
    )
    return response


def status_of(response: dict) -> int:
    return response["ResponseMetadata"]["HTTPStatusCode"]


def xml_error_code(body: bytes | str) -> str | None:
    """Extract <Code> from an S3 XML error document (None if not parseable)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.split("}")[-1] == "Code":
            return el.text
    return None


# --------------------------------------------------------------------------
# Object / listing helpers
# --------------------------------------------------------------------------


def put(s3, bucket: str, key: str, data: bytes = b"x", **kwargs) -> dict:
    return s3.put_object(Bucket=bucket, Key=key, Body=data, **kwargs)


def get_bytes(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def object_exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def all_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    keys, _ = list_v2_all(s3, bucket, Prefix=prefix)
    return keys


def keys_after_deletes(s3, bucket: str, prefix: str = "") -> list[str]:
    """The bucket's keys once deletions just made show in its listing.
    Garage lists a deleted object for a moment (seen: 38 of 300 deletes
    followed at once by a listing, docs/scale-out.md), so there it waits up
    to 5 s for the listing to be empty; elsewhere it is `all_keys`."""
    keys = all_keys(s3, bucket, prefix)
    if os.environ.get("SEALGATE_TEST_BACKEND") == "garage":
        import time

        deadline = time.monotonic() + 5
        while keys and time.monotonic() < deadline:
            time.sleep(0.1)
            keys = all_keys(s3, bucket, prefix)
    return keys


def utf8_sorted(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def expected_listing(
    keys: Iterable[str], prefix: str = "", delimiter: str | None = None
) -> tuple[list[str], list[str]]:
    """Reference model of an S3 listing: (contents keys, common prefixes)."""
    contents, prefixes = [], set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            prefixes.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
        else:
            contents.append(key)
    return utf8_sorted(contents), utf8_sorted(prefixes)


def _page_entries(page: dict) -> tuple[list[str], list[str]]:
    keys = [o["Key"] for o in page.get("Contents", [])]
    prefixes = [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return keys, prefixes


def _check_page(page: dict, max_keys: int | None) -> None:
    keys, prefixes = _page_entries(page)
    if max_keys is not None:
        assert len(keys) + len(prefixes) <= max_keys, page
    if page["IsTruncated"]:
        assert keys or prefixes, "truncated page without entries"


def list_v2_all(s3, bucket: str, max_pages: int = 1000, **kwargs) -> tuple[list[str], list[str]]:
    """Paginate ListObjectsV2 by hand; returns (keys, prefixes) in server order."""
    keys, prefixes, token = [], [], None
    for _ in range(max_pages):
        args = dict(kwargs)
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(Bucket=bucket, **args)
        _check_page(page, kwargs.get("MaxKeys"))
        page_keys, page_prefixes = _page_entries(page)
        assert page["KeyCount"] == len(page_keys) + len(page_prefixes)
        keys += page_keys
        prefixes += page_prefixes
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return keys, prefixes
        token = page["NextContinuationToken"]
        assert token
    raise AssertionError("ListObjectsV2 pagination did not terminate")


def list_v1_all(s3, bucket: str, max_pages: int = 1000, **kwargs) -> tuple[list[str], list[str]]:
    """Paginate ListObjects (v1) by hand using NextMarker / last key."""
    keys, prefixes, marker = [], [], None
    for _ in range(max_pages):
        args = dict(kwargs)
        if marker is not None:
            args["Marker"] = marker
        page = s3.list_objects(Bucket=bucket, **args)
        _check_page(page, kwargs.get("MaxKeys"))
        page_keys, page_prefixes = _page_entries(page)
        keys += page_keys
        prefixes += page_prefixes
        if not page["IsTruncated"]:
            return keys, prefixes
        if kwargs.get("Delimiter"):
            # S3 always returns NextMarker for truncated delimited listings.
            assert page.get("NextMarker"), "truncated v1 listing with delimiter lacks NextMarker"
            marker = page["NextMarker"]
        else:
            marker = page.get("NextMarker") or page_keys[-1]
    raise AssertionError("ListObjects pagination did not terminate")


def empty_bucket(s3, bucket: str) -> None:
    """Best-effort removal of all objects and multipart uploads."""
    try:
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    except ClientError:
        pass
    while True:
        page = s3.list_objects_v2(Bucket=bucket)
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if not keys:
            return
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# --------------------------------------------------------------------------
# Raw SigV4 requests (for things boto3 cannot express: truncated bodies,
# mid-upload disconnects, hand-built aws-chunked bodies).
# --------------------------------------------------------------------------

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    access_key: str,
    secret_key: str,
    *,
    region: str = "us-east-1",
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    payload_hash: str = UNSIGNED_PAYLOAD,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Return the full header set (incl. Authorization) for a SigV4 S3 request.

    `path` is the raw (unencoded) path, e.g. "/bucket/key with space".
    Every header given is signed.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    all_headers = {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    all_headers.update({k.lower(): str(v) for k, v in (headers or {}).items()})

    canonical_uri = urllib.parse.quote(path, safe="/-_.~")
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((query or {}).items())
    )
    signed = sorted(all_headers)
    canonical_headers = "".join(f"{h}:{' '.join(all_headers[h].split())}\n" for h in signed)
    signed_headers = ";".join(signed)
    canonical_request = "\n".join(
        [method, canonical_uri, canonical_query, canonical_headers, signed_headers, payload_hash]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), date), region), "s3"), "aws4_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return all_headers


def raw_request_head(method: str, path: str, headers: dict[str, str], query: dict[str, str] | None = None) -> bytes:
    target = urllib.parse.quote(path, safe="/-_.~")
    if query:
        target += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_http_response(sock: socket.socket) -> tuple[int | None, dict[str, str], bytes]:
    """Read one HTTP/1.1 response; (None, {}, b"") if the peer just closed.

    Reads until the declared Content-Length (or connection close). Does not
    support chunked responses beyond returning the raw bytes.
    """
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    if b"\r\n\r\n" not in buf:
        return None, {}, buf
    head, body = buf.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    try:
        while length is None or len(body) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        pass
    return status, headers, body


def aws_chunked_body(data: bytes, chunk_size: int, trailers: dict[str, str]) -> bytes:
    """Body for STREAMING-UNSIGNED-PAYLOAD-TRAILER (same framing as botocore)."""
    out = []
    for i in range(0, len(data), chunk_size):
        chunk = data[i : i + chunk_size]
        out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    trailer_lines = b"".join(f"{k}:{v}\r\n".encode() for k, v in trailers.items())
    out.append(b"0\r\n" + trailer_lines + b"\r\n")
    return b"".join(out)


def patterned_stream(total: int, block: bytes) -> Iterator[bytes]:
    """Yield `total` bytes made of repetitions of `block` (no big allocation)."""
    sent = 0
    while sent < total:
        piece = block[: min(len(block), total - sent)]
        sent += len(piece)
        yield piece


# --------------------------------------------------------------------------
# Filesystem accounting (persistence / crash tests)
# --------------------------------------------------------------------------


def tree_size(root: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def tmp_files(root: str) -> list[str]:
    """Regular files whose relative path has a component containing 'tmp'."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if any("tmp" in part.lower() for part in rel.split(os.sep)):
                found.append(rel)
    return found


# --------------------------------------------------------------------------
# Bucket encryption
# --------------------------------------------------------------------------

SCAL_SSE = "x-amz-scal-server-side-encryption"
AWS_SSE = "x-amz-server-side-encryption"


def add_headers(client, operation: str, headers: dict[str, str]) -> None:
    """Add raw headers to every `operation` request of this client (signed)."""

    def hook(request, **_):
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register(f"before-sign.s3.{operation}", hook)


def metric_value(text: str, name: str) -> float:
    """Value of an unlabelled Prometheus sample; 0 if absent is NOT assumed."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return float(parts[1])
    raise AssertionError(f"metric {name} not found in /metrics")


def kms_key_files(kms_dir) -> set[str]:
    """Names of the local KMS key files (`local-<hex>.key`)."""
    found = set()
    for dirpath, _, files in os.walk(kms_dir):
        for name in files:
            if name.startswith("local-") and name.endswith(".key"):
                found.add(os.path.relpath(os.path.join(dirpath, name), kms_dir))
    return found


def object_data_files(data_dir) -> set[str]:
    """Object part files under DATA_DIR/objects (paths relative to it)."""
    root = os.path.join(data_dir, "objects")
    found = set()
    for dirpath, _, files in os.walk(root):
        for name in files:
            found.add(os.path.join(dirpath, name))
    return found


def files_containing(root, needles: Iterable[bytes]) -> list[str]:
    """Every regular file under root whose bytes contain any needle."""
    needles = list(needles)
    hits = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as f:
                    blob = f.read()
            except (FileNotFoundError, IsADirectoryError):
                continue
            if any(n in blob for n in needles):
                hits.append(path)
    return hits


def put_then_reuse(gw, path: str, headers: dict[str, str], size: int):
    """Raw keep-alive PUT of `size` bytes (no Expect: 100-continue), then a
    ListBuckets on the same connection.

    Returns ((status, announced_close), follow_up_status_or_error).
    """
    signed = gw.signed_headers("PUT", path, headers={"content-length": str(size), **headers})
    with gw.raw_socket() as sock:
        sock.sendall(raw_request_head("PUT", path, signed))
        try:
            sock.sendall(b"x" * size)
        except OSError:
            pass  # the server may stop reading once it has answered
        status, resp_headers, _ = read_http_response(sock)
        announced_close = resp_headers.get("connection", "").lower() == "close"
        try:
            sock.sendall(raw_request_head("GET", "/", gw.signed_headers("GET", "/")))
            follow_up = read_http_response(sock)[0]
        except OSError as exc:
            follow_up = repr(exc)
    return (status, announced_close), follow_up


# --------------------------------------------------------------------------
# Reads of tampered objects
# --------------------------------------------------------------------------


def non_validating_client(gw):
    """A client that does not check response checksums itself: the server must
    detect tampering, not botocore's CRC check."""
    return gw.client(response_checksum_validation="when_required")


def read_outcome(client, bucket, key, **kwargs):
    """('error', status, code) | ('broken', repr) | ('ok', body)."""
    try:
        resp = client.get_object(Bucket=bucket, Key=key, **kwargs)
    except ClientError as exc:
        return ("error", exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"])
    except BotoCoreError as exc:  # connection closed before/while sending the head
        return ("broken", repr(exc))
    try:
        body = resp["Body"].read()
    except (BotoCoreError, OSError, requests.exceptions.RequestException, Exception) as exc:  # noqa: B014
        return ("broken", repr(exc))
    return ("ok", body)


def assert_read_fails(client, bucket, key, original: bytes, what: str, **kwargs) -> None:
    outcome = read_outcome(client, bucket, key, **kwargs)
    if outcome[0] == "ok":
        body = outcome[1]
        raise AssertionError(
            f"{what}: GET {key} {kwargs or ''} succeeded with a complete body of {len(body)} bytes "
            f"({'the original plaintext' if original in body else 'NOT the original'}) instead of failing"
        )
    if outcome[0] == "error":
        assert outcome[1:] == (500, "InternalError"), f"{what}: expected 500 InternalError, got {outcome}"
