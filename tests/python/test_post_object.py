"""Browser-style POST uploads (PostObject) with boto3-generated policies."""

import base64
import json
import time

import requests

from helpers import expect_error, get_bytes, random_bytes, single_put_etag, xml_error_code


def _post(presigned: dict, data: bytes, fields_override: dict | None = None) -> requests.Response:
    fields = {**presigned["fields"], **(fields_override or {})}
    # The file field must come last; requests sends `data` before `files`.
    return requests.post(presigned["url"], data=fields, files={"file": ("upload.bin", data)}, timeout=60)


def _assert_refused(resp: requests.Response, status: int, codes: tuple[str, ...]) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert xml_error_code(resp.content) in codes, resp.text


def test_post_object_upload(s3, presigner, bucket):
    data = random_bytes(100_000)
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key="posted/file.bin",
        Fields={"Content-Type": "image/png", "x-amz-meta-origin": "browser"},
        Conditions=[{"Content-Type": "image/png"}, {"x-amz-meta-origin": "browser"}],
        ExpiresIn=300,
    )
    resp = _post(presigned, data)
    assert resp.status_code == 204, resp.text
    assert get_bytes(s3, bucket, "posted/file.bin") == data
    head = s3.head_object(Bucket=bucket, Key="posted/file.bin")
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"origin": "browser"}
    assert head["ETag"] == single_put_etag(data)


def test_post_object_success_action_status_201(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key="created", Fields={"success_action_status": "201"},
        Conditions=[{"success_action_status": "201"}], ExpiresIn=300,
    )
    resp = _post(presigned, b"created!")
    assert resp.status_code == 201, resp.text
    assert b"<Key>created</Key>" in resp.content
    assert get_bytes(s3, bucket, "created") == b"created!"


def test_post_object_starts_with_condition(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key="uploads/report.txt", Conditions=[["starts-with", "$key", "uploads/"]],
        ExpiresIn=300,
    )
    resp = _post(presigned, b"starts-with")
    assert resp.status_code == 204, resp.text
    assert get_bytes(s3, bucket, "uploads/report.txt") == b"starts-with"


def test_post_object_filename_substitution(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key="uploads/${filename}", Conditions=[["starts-with", "$key", "uploads/"]],
        ExpiresIn=300,
    )
    resp = _post(presigned, b"filename substitution")
    assert resp.status_code == 204, resp.text
    assert get_bytes(s3, bucket, "uploads/upload.bin") == b"filename substitution"


def test_post_object_expired_policy(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(Bucket=bucket, Key="late", ExpiresIn=1)
    time.sleep(2.1)
    _assert_refused(_post(presigned, b"too late"), 403, ("AccessDenied",))
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="late"), "404", 404)


def test_post_object_tampered_policy(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(Bucket=bucket, Key="victim", ExpiresIn=300)
    policy = json.loads(base64.b64decode(presigned["fields"]["policy"]))
    policy["expiration"] = "2099-01-01T00:00:00Z"
    tampered = base64.b64encode(json.dumps(policy).encode()).decode()
    _assert_refused(_post(presigned, b"evil", {"policy": tampered}), 403, ("SignatureDoesNotMatch", "AccessDenied"))
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="victim"), "404", 404)


def test_post_object_tampered_signature(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(Bucket=bucket, Key="victim", ExpiresIn=300)
    field = "x-amz-signature" if "x-amz-signature" in presigned["fields"] else "signature"
    signature = presigned["fields"][field]
    # Another hex digit: "A" for "a" would be the same signature in upper case
    # (SigV4 hex is compared case-insensitively), and failed 1 run in 16.
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    _assert_refused(_post(presigned, b"evil", {field: forged}), 403, ("SignatureDoesNotMatch",))
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="victim"), "404", 404)


def test_post_object_key_outside_policy(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(Bucket=bucket, Key="allowed", ExpiresIn=300)
    _assert_refused(_post(presigned, b"evil", {"key": "not-allowed"}), 403, ("AccessDenied",))
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="not-allowed"), "404", 404)


def test_post_object_content_length_range(s3, presigner, bucket):
    presigned = presigner.generate_presigned_post(
        Bucket=bucket, Key="bounded", Conditions=[["content-length-range", 1, 10]], ExpiresIn=300
    )
    _assert_refused(_post(presigned, b"x" * 11), 400, ("EntityTooLarge",))
    expect_error(lambda: s3.head_object(Bucket=bucket, Key="bounded"), "404", 404)
    assert _post(presigned, b"x" * 10).status_code == 204
