"""ListObjects v1/v2, ListObjectVersions."""

import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import expected_listing, list_v1_all, list_v2_all, put, utf8_sorted

KEYS = [
    "a", "a/b", "a/b/c", "a/b/c/d", "a/bb", "a0", "a//double", "a/./dot", "a/../up",
    "b/1", "b/2", "b/3/x", "b/3/y", "b/4", "c", "dir/", "dir/file", "z", "zz/top",
    "ünïcødé/ключ", "ünïcødé/é", "日本語", "日本語/ファイル", "~tilde", "sp ace/+plus",
    "A-upper", "0-digit",
]
assert len(KEYS) >= 25


@pytest.fixture
def listing_bucket(s3, make_bucket):
    """A bucket populated with KEYS (shared by all listing tests of one test)."""
    name = make_bucket()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: put(s3, name, k, k.encode()), KEYS))
    return name


LIST_CASES = [
    dict(prefix="", delimiter=None),
    dict(prefix="", delimiter="/"),
    dict(prefix="a", delimiter=None),
    dict(prefix="a", delimiter="/"),
    dict(prefix="a/", delimiter="/"),
    dict(prefix="b/", delimiter="/"),
    dict(prefix="ünïcødé/", delimiter=None),
    dict(prefix="nothing-here", delimiter="/"),
]


def _kwargs(case, max_keys=None):
    kwargs = {"Prefix": case["prefix"]}
    if case["delimiter"]:
        kwargs["Delimiter"] = case["delimiter"]
    if max_keys:
        kwargs["MaxKeys"] = max_keys
    return kwargs


@pytest.mark.parametrize("max_keys", [None, 1, 3], ids=["all", "mk1", "mk3"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_listing_pagination_matches_model(s3, listing_bucket, version, max_keys):
    lister = list_v2_all if version == "v2" else list_v1_all
    for case in LIST_CASES:
        keys, prefixes = lister(s3, listing_bucket, **_kwargs(case, max_keys))
        exp_keys, exp_prefixes = expected_listing(KEYS, case["prefix"], case["delimiter"])
        assert keys == exp_keys, case
        assert prefixes == exp_prefixes, case


def test_listing_is_utf8_byte_ordered(s3, listing_bucket):
    keys, _ = list_v2_all(s3, listing_bucket)
    assert keys == utf8_sorted(KEYS)
    # A sanity check of the model itself: unicode sorts after ASCII.
    assert keys.index("z") < keys.index("ünïcødé/é") < keys.index("日本語")


def test_list_v2_fields(s3, listing_bucket):
    resp = s3.list_objects_v2(Bucket=listing_bucket, Prefix="b/", Delimiter="/", MaxKeys=2)
    assert resp["Name"] == listing_bucket
    assert resp["Prefix"] == "b/"
    assert resp["Delimiter"] == "/"
    assert resp["MaxKeys"] == 2
    assert resp["IsTruncated"] is True
    assert resp["KeyCount"] == 2
    obj = resp["Contents"][0]
    assert obj["Key"] == "b/1"
    assert obj["Size"] == len(b"b/1")
    assert obj["ETag"].startswith('"') and obj["LastModified"] is not None


def test_list_v2_start_after(s3, listing_bucket):
    keys, _ = list_v2_all(s3, listing_bucket, StartAfter="b/2")
    assert keys == [k for k in utf8_sorted(KEYS) if k.encode() > b"b/2"]
    keys, _ = list_v2_all(s3, listing_bucket, StartAfter="b/25", MaxKeys=2)  # not an existing key
    assert keys == [k for k in utf8_sorted(KEYS) if k.encode() > b"b/25"]


def test_list_v1_marker(s3, listing_bucket):
    keys, _ = list_v1_all(s3, listing_bucket, Marker="c")
    assert keys == [k for k in utf8_sorted(KEYS) if k.encode() > b"c"]


def test_list_v1_next_marker_with_delimiter(s3, listing_bucket):
    resp = s3.list_objects(Bucket=listing_bucket, Delimiter="/", MaxKeys=2)
    assert resp["IsTruncated"] is True
    entries = [o["Key"] for o in resp.get("Contents", [])] + [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
    assert resp["NextMarker"] == max(entries, key=str.encode)


def test_max_keys_zero(s3, listing_bucket):
    resp = s3.list_objects_v2(Bucket=listing_bucket, MaxKeys=0)
    assert resp.get("Contents", []) == []
    assert resp["KeyCount"] == 0


def test_empty_bucket_listing(s3, bucket):
    resp = s3.list_objects_v2(Bucket=bucket)
    assert resp.get("Contents", []) == []
    assert resp["IsTruncated"] is False
    assert resp["KeyCount"] == 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_encoding_type_url(s3, listing_bucket, version):
    # Passing EncodingType explicitly stops botocore from decoding for us,
    # so we see exactly what the server sent.
    lister = s3.list_objects_v2 if version == "v2" else s3.list_objects
    resp = lister(Bucket=listing_bucket, EncodingType="url", Delimiter="/", Prefix="")
    assert resp["EncodingType"] == "url"
    raw_keys = [o["Key"] for o in resp.get("Contents", [])]
    raw_prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
    exp_keys, exp_prefixes = expected_listing(KEYS, "", "/")
    assert [urllib.parse.unquote_plus(k) for k in raw_keys] == exp_keys
    assert [urllib.parse.unquote_plus(p) for p in raw_prefixes] == exp_prefixes
    for raw in raw_keys + raw_prefixes:
        assert raw.isascii(), f"not url-encoded: {raw!r}"
        assert " " not in raw


def test_botocore_default_listing_roundtrips_tricky_keys(s3, bucket):
    # botocore asks for EncodingType=url and decodes with unquote_plus; a
    # server that ignores the parameter corrupts '+' and '%'.
    keys = ["plus+sign", "percent%20literal", "space here", "amp&lt;", "<xml>&'\""]
    for key in keys:
        put(s3, bucket, key)
    assert list_v2_all(s3, bucket)[0] == utf8_sorted(keys)
    assert list_v1_all(s3, bucket)[0] == utf8_sorted(keys)


def test_list_object_versions_unversioned(s3, listing_bucket):
    seen = []
    kwargs = {}
    while True:
        resp = s3.list_object_versions(Bucket=listing_bucket, MaxKeys=7, **kwargs)
        for version in resp.get("Versions", []):
            assert version["VersionId"] == "null"
            assert version["IsLatest"] is True
            seen.append(version["Key"])
        assert resp.get("DeleteMarkers", []) == []
        if not resp["IsTruncated"]:
            break
        kwargs = {"KeyMarker": resp["NextKeyMarker"]}
        if resp.get("NextVersionIdMarker"):
            kwargs["VersionIdMarker"] = resp["NextVersionIdMarker"]
    assert seen == utf8_sorted(KEYS)
