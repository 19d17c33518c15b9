"""Writes tests/fixtures/legacy-v1.tar.gz: a data dir and local KMS dir made
by a sealgate release from before the key hierarchy (commit b15568b), whose
data keys are wrapped directly by the KMS. The migration tests start the
current gateway on a copy of it.

    SEALGATE_BIN=/path/to/old/sealgate python3 tests/support/make_legacy_fixture.py

Contents (all bytes derived with `legacy_body(name, size)`):
- bucket `legacy-sealed` (encrypted): `small` (1000 B), `empty` (0 B),
  `multi` (a one-part multipart upload, 70000 B), and a pending multipart
  upload of `pending` with part 1 (70000 B);
- bucket `legacy-plain`: `plain` (1000 B).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from conftest import Gateway, REPO_ROOT  # noqa: E402


def legacy_body(name: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}/{counter}".encode()).digest()
        counter += 1
    return out[:size]


def main() -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="legacy-fixture-"))
    gw = Gateway(base)
    gw.start()
    s3 = gw.client()
    gw.encrypting_client().create_bucket(Bucket="legacy-sealed")
    s3.create_bucket(Bucket="legacy-plain")
    s3.put_object(Bucket="legacy-sealed", Key="small", Body=legacy_body("small", 1000))
    s3.put_object(Bucket="legacy-sealed", Key="empty", Body=b"")
    s3.put_object(Bucket="legacy-plain", Key="plain", Body=legacy_body("plain", 1000))
    upload = s3.create_multipart_upload(Bucket="legacy-sealed", Key="multi")["UploadId"]
    etag = s3.upload_part(Bucket="legacy-sealed", Key="multi", UploadId=upload, PartNumber=1,
                          Body=legacy_body("multi", 70000))["ETag"]
    s3.complete_multipart_upload(Bucket="legacy-sealed", Key="multi", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    pending = s3.create_multipart_upload(Bucket="legacy-sealed", Key="pending")["UploadId"]
    part1 = s3.upload_part(Bucket="legacy-sealed", Key="pending", UploadId=pending, PartNumber=1,
                           Body=legacy_body("pending", 70000))["ETag"]
    gw.stop()
    out = REPO_ROOT / "tests" / "fixtures" / "legacy-v1.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(gw.data_dir, arcname="data")
        tar.add(gw.kms_dir, arcname="kms")
    (REPO_ROOT / "tests" / "fixtures" / "legacy-v1.json").write_text(
        json.dumps({"pending_upload_id": pending, "pending_part1_etag": part1}, indent=2) + "\n")
    print(out, out.stat().st_size)


if __name__ == "__main__":
    main()
