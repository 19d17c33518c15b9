"""Probe a real SeaweedFS S3 endpoint and print what it does.

    python3 tests/support/probe_seaweed.py [--keep DIR]

Starts a throw-away cluster (seaweed.py), runs boto3 (path-style, SigV4,
us-east-1) and a few raw signed requests against it, and prints one line per
observed fact: `ok ...` for a success, `ERR <Code> <HTTP status>` for an
error. It asserts nothing: it documents the upstream sealgate talks to.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit
from xml.dom import minidom

import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seaweed import SeaweedCluster  # noqa: E402

MiB = 1024 * 1024


def out(label: str, value) -> None:
    print(f"  {label:<58} {value}")


def call(fn, *a, **kw):
    """Run a boto3 call; return (True, result) or (False, 'ERR Code status: msg')."""
    try:
        return True, fn(*a, **kw)
    except ClientError as e:
        err = e.response.get("Error", {})
        st = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return False, f"ERR {err.get('Code')} {st}: {err.get('Message', '')[:90]}"
    except Exception as e:  # noqa: BLE001 - report anything
        return False, f"EXC {type(e).__name__}: {str(e)[:120]}"


def show(label, res, pick=None):
    ok, r = res
    if ok:
        out(label, "ok" + (f" {pick(r)}" if pick else ""))
    else:
        out(label, r)
    return r if ok else None


class Raw:
    """Signed requests with exact headers/query, seeing the raw response."""

    def __init__(self, sw: SeaweedCluster):
        self.sw = sw
        self.creds = Credentials(sw.access_key, sw.secret_key)

    def __call__(self, method, path, headers=None, data=b"", params=None):
        url = self.sw.s3_endpoint + path
        if params:
            url += "?" + "&".join(f"{k}={v}" if v is not None else k for k, v in params.items())
        req = AWSRequest(method=method, url=url, data=data, headers=dict(headers or {}))
        req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        S3SigV4Auth(self.creds, "s3", self.sw.region).add_auth(req)
        p = req.prepare()
        return requests.request(method, p.url, headers=dict(p.headers), data=data,
                                timeout=30)


def xml_code(resp) -> str:
    try:
        doc = minidom.parseString(resp.content)
        return doc.getElementsByTagName("Code")[0].firstChild.data
    except Exception:  # noqa: BLE001
        return "-"


def pretty_xml(body: bytes, limit: int = 1500) -> str:
    try:
        s = minidom.parseString(body).toprettyxml(indent=" ")
    except Exception:  # noqa: BLE001
        s = body.decode(errors="replace")
    lines = [l for l in s.splitlines() if l.strip()][1:]
    return ("\n" + "\n".join("      " + l for l in lines))[:limit]


def head_meta_len(c, bucket, key, name):
    """Length of x-amz-meta-<name> from a presigned HEAD over a raw socket.

    Python's http.client refuses header lines over 64 KiB, so read by hand.
    """
    url = urlsplit(c.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": key}))
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(f"HEAD {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.split(b"\r\n"):
        if line.lower().startswith(f"x-amz-meta-{name}:".encode()):
            return len(line.split(b":", 1)[1].strip())
    return "absent: " + data.split(b"\r\n", 1)[0].decode()


def mpu(c, bucket, key, sizes, **create_kw):
    """Multipart upload of parts of the given sizes; returns (etag, parts, body)."""
    up = c.create_multipart_upload(Bucket=bucket, Key=key, **create_kw)["UploadId"]
    parts, body = [], b""
    for i, n in enumerate(sizes, 1):
        data = bytes([65 + i % 26]) * n
        body += data
        e = c.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=data)["ETag"]
        parts.append({"PartNumber": i, "ETag": e})
    r = c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                    MultipartUpload={"Parts": parts})
    return r["ETag"], parts, body


class section:
    """Prints a heading; an unexpected exception ends only this section."""

    def __init__(self, title: str):
        print("\n" + title)

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is not None:
            out("!! section aborted", f"{typ.__name__}: {str(exc)[:200]}")
        return True


def probe(sw: SeaweedCluster) -> None:
    c, raw = sw.client(), Raw(sw)
    B = "probe"
    c.create_bucket(Bucket=B)

    with section("[a] conditional writes"):
        e1 = c.put_object(Bucket=B, Key="cond", Body=b"one")["ETag"]
        show("PutObject If-None-Match:* (key exists)",
             call(c.put_object, Bucket=B, Key="cond", Body=b"two", IfNoneMatch="*"), lambda r: r["ETag"])
        show("PutObject If-None-Match:* (new key)",
             call(c.put_object, Bucket=B, Key="cond-new", Body=b"x", IfNoneMatch="*"), lambda r: r["ETag"])
        show("PutObject If-Match right etag",
             call(c.put_object, Bucket=B, Key="cond", Body=b"three", IfMatch=e1), lambda r: r["ETag"])
        show("PutObject If-Match wrong etag",
             call(c.put_object, Bucket=B, Key="cond", Body=b"four", IfMatch='"0123456789abcdef0123456789abcdef"'))
        show("PutObject If-Match on missing key",
             call(c.put_object, Bucket=B, Key="cond-missing", Body=b"x", IfMatch=e1))
        out("body after the conditional puts", c.get_object(Bucket=B, Key="cond")["Body"].read())
        r = raw("PUT", f"/{B}/cond", {"If-None-Match": '"abc"'}, b"five")
        out("PutObject If-None-Match:<etag> (raw)", f"{r.status_code} {xml_code(r)}")
        for label, kw in (("CompleteMPU If-None-Match:* (key exists)", {"IfNoneMatch": "*"}),
                          ("CompleteMPU If-Match wrong etag", {"IfMatch": '"deadbeef"'})):
            up = c.create_multipart_upload(Bucket=B, Key="cond")["UploadId"]
            pe = c.upload_part(Bucket=B, Key="cond", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
            show(label, call(c.complete_multipart_upload, Bucket=B, Key="cond", UploadId=up,
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": pe}]}, **kw))
            call(c.abort_multipart_upload, Bucket=B, Key="cond", UploadId=up)
        up = c.create_multipart_upload(Bucket=B, Key="cond-mp-new")["UploadId"]
        pe = c.upload_part(Bucket=B, Key="cond-mp-new", UploadId=up, PartNumber=1, Body=b"mp")["ETag"]
        show("CompleteMPU If-None-Match:* (new key)",
             call(c.complete_multipart_upload, Bucket=B, Key="cond-mp-new", UploadId=up,
                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": pe}]}, IfNoneMatch="*"),
             lambda r: r["ETag"])

    with section("[b] user metadata"):
        for total in (1536, 2048, 2049, 4096, 8192, 16384, 65000, 262144, 1048576, 2 * 1048576):
            # one key "k" whose value fills the budget: AWS counts key+value bytes
            meta = {"k": "v" * (total - 1)}
            res = show(f"PutObject metadata total {total} B (one key)",
                       call(c.put_object, Bucket=B, Key=f"meta{total}", Body=b"m", Metadata=meta))
            if res is not None:
                got = head_meta_len(c, B, f"meta{total}", "k")
                out("  HEAD returns a value of length", f"{got} (sent {total - 1})")
        many = {f"k{i:03d}": "x" * 100 for i in range(40)}  # 40 keys, ~4 KB
        show("PutObject 40 keys x 100 B (~4.1 KB)",
             call(c.put_object, Bucket=B, Key="meta-many", Body=b"m", Metadata=many))
        b64 = base64.b64encode(os.urandom(900)).decode()  # has + / =
        odd = {"b64": b64, "MixedCase": "Value With  Two  Spaces", "eq": "a=b==",
               "pct": "100%25 %41", "trail": "ends-with-space "}
        show("PutObject base64/odd values", call(c.put_object, Bucket=B, Key="meta-b64", Body=b"m", Metadata=odd))
        h = c.head_object(Bucket=B, Key="meta-b64")
        got = h["Metadata"]
        out("base64 value round-trips exactly", got.get("b64") == b64)
        for k, v in odd.items():
            if k != "b64":
                out(f"  value {k!r}={v!r} returns", repr(got.get(k.lower(), got.get(k))))
        r = raw("HEAD", f"/{B}/meta-b64")
        out("raw HEAD header names", sorted(k for k in r.headers if k.lower().startswith("x-amz-meta")))
        out("raw HEAD other headers", {k: v for k, v in r.headers.items() if not k.lower().startswith("x-amz-meta")})
        sysmeta = dict(ContentType="application/x-probe", CacheControl="max-age=7",
                       ContentDisposition='attachment; filename="p.bin"', ContentEncoding="identity",
                       ContentLanguage="en", Expires="Wed, 21 Oct 2037 07:28:00 GMT")
        c.put_object(Bucket=B, Key="sysmeta", Body=b"s", **sysmeta)
        h = c.head_object(Bucket=B, Key="sysmeta")
        out("system headers round-trip", {k: h.get(k) for k in sysmeta})
        out("HEAD on a missing key", call(c.head_object, Bucket=B, Key="nope")[1])
        out("GET on a missing key", call(c.get_object, Bucket=B, Key="nope")[1])

    with section("[c] ListObjectsV2 entries"):
        _, _, mpbody = mpu(c, B, "list/mp", [5 * MiB, 5 * MiB, 123])
        c.put_object(Bucket=B, Key="list/plain", Body=b"hello world", Metadata={"a": "b"})
        c.put_object(Bucket=B, Key="list/empty", Body=b"")
        for fo in (False, True):
            r = c.list_objects_v2(Bucket=B, Prefix="list/", FetchOwner=fo)
            for o in r["Contents"]:
                out(f"FetchOwner={fo} {o['Key']}", {k: v for k, v in o.items() if k != "Key"})
        out("multipart object true size", len(mpbody))
        url = c.generate_presigned_url("list_objects_v2", Params={"Bucket": B, "Prefix": "list/p"})
        out("raw ListObjectsV2 XML (prefix list/p)", pretty_xml(requests.get(url).content))
        url = c.generate_presigned_url("list_objects", Params={"Bucket": B, "Prefix": "list/p"})
        out("raw ListObjects (v1) XML", pretty_xml(requests.get(url).content, 900))
        h = c.head_object(Bucket=B, Key="list/mp")
        out("HEAD multipart object", {k: h.get(k) for k in ("ContentLength", "ETag", "PartsCount")})
        show("ListObjectsV2 OptionalObjectAttributes=RestoreStatus",
             call(c.list_objects_v2, Bucket=B, Prefix="list/p", OptionalObjectAttributes=["RestoreStatus"]),
             lambda r: [sorted(o) for o in r["Contents"]])

    with section("[d] multipart"):
        up = c.create_multipart_upload(Bucket=B, Key="small")["UploadId"]
        ps = []
        for i in (1, 2):
            ok, r = call(c.upload_part, Bucket=B, Key="small", UploadId=up, PartNumber=i, Body=b"s" * MiB)
            out(f"UploadPart {i} of 1 MiB", "ok" if ok else r)
            ps.append({"PartNumber": i, "ETag": r["ETag"] if ok else ""})
        show("Complete with a 1 MiB non-last part",
             call(c.complete_multipart_upload, Bucket=B, Key="small", UploadId=up,
                  MultipartUpload={"Parts": ps}), lambda r: r["ETag"])
        up = c.create_multipart_upload(Bucket=B, Key="pn")["UploadId"]
        for n in (0, 1, 10000, 10001, 100000):
            show(f"UploadPart PartNumber={n}",
                 call(c.upload_part, Bucket=B, Key="pn", UploadId=up, PartNumber=n, Body=b"p"))
        lp = c.list_parts(Bucket=B, Key="pn", UploadId=up)
        out("ListParts top-level keys", sorted(k for k in lp if k != "ResponseMetadata"))
        out("ListParts part entry", lp.get("Parts", [{}])[0])
        show("ListParts MaxParts=1", call(c.list_parts, Bucket=B, Key="pn", UploadId=up, MaxParts=1),
             lambda r: {k: r.get(k) for k in ("IsTruncated", "NextPartNumberMarker", "MaxParts")})
        ok, pe = call(c.upload_part, Bucket=B, Key="pn", UploadId=up, PartNumber=2, Body=b"q")
        show("Complete parts out of order [2,1]",
             call(c.complete_multipart_upload, Bucket=B, Key="pn", UploadId=up,
                  MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": pe["ETag"]},
                                             {"PartNumber": 1, "ETag": lp["Parts"][0]["ETag"]}]}))
        show("Complete with a wrong part ETag",
             call(c.complete_multipart_upload, Bucket=B, Key="pn", UploadId=up,
                  MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]}))
        show("Complete with a part never uploaded (7)",
             call(c.complete_multipart_upload, Bucket=B, Key="pn", UploadId=up,
                  MultipartUpload={"Parts": [{"PartNumber": 7, "ETag": lp["Parts"][0]["ETag"]}]}))
        lmu = c.list_multipart_uploads(Bucket=B)
        out("ListMultipartUploads top-level keys", sorted(k for k in lmu if k != "ResponseMetadata"))
        out("ListMultipartUploads entry", (lmu.get("Uploads") or [{}])[0])
        out("ListMultipartUploads count", len(lmu.get("Uploads") or []))
        show("UploadPart to an unknown UploadId",
             call(c.upload_part, Bucket=B, Key="pn", UploadId="nope", PartNumber=1, Body=b"p"))
        show("AbortMultipartUpload", call(c.abort_multipart_upload, Bucket=B, Key="pn", UploadId=up))
        show("AbortMultipartUpload again", call(c.abort_multipart_upload, Bucket=B, Key="pn", UploadId=up))
        show("ListParts after abort", call(c.list_parts, Bucket=B, Key="pn", UploadId=up))
        for n in (1, 2, 3, 4):
            show(f"GET ?partNumber={n} of list/mp (5M,5M,123)",
                 call(c.get_object, Bucket=B, Key="list/mp", PartNumber=n),
                 lambda r: {k: r.get(k) for k in ("ContentLength", "ContentRange", "PartsCount", "ETag")})
        show("HEAD ?partNumber=2", call(c.head_object, Bucket=B, Key="list/mp", PartNumber=2),
             lambda r: {k: r.get(k) for k in ("ContentLength", "ContentRange", "PartsCount")})
        show("GET ?partNumber=1 of a simple object",
             call(c.get_object, Bucket=B, Key="list/plain", PartNumber=1),
             lambda r: {k: r.get(k) for k in ("ContentLength", "ContentRange", "PartsCount")})
        ok, r = call(c.get_object, Bucket=B, Key="list/mp", PartNumber=2)
        if ok:
            out("  partNumber=2 bytes are part 2", r["Body"].read() == mpbody[5 * MiB:10 * MiB])

    with section("[e] copy"):
        c.put_object(Bucket=B, Key="cp", Body=b"0123456789" * 10, Metadata={"old": "1"},
                     ContentType="text/old")
        h0 = c.head_object(Bucket=B, Key="cp")
        time.sleep(1.1)
        show("CopyObject onto itself, REPLACE",
             call(c.copy_object, Bucket=B, Key="cp", CopySource={"Bucket": B, "Key": "cp"},
                  MetadataDirective="REPLACE", Metadata={"new": "2"}, ContentType="text/new"),
             lambda r: r.get("CopyObjectResult"))
        h1 = c.head_object(Bucket=B, Key="cp")
        out("  ETag before/after", (h0["ETag"], h1["ETag"]))
        out("  LastModified before/after", (str(h0["LastModified"]), str(h1["LastModified"])))
        out("  metadata/content-type after", (h1["Metadata"], h1["ContentType"]))
        out("  body intact", c.get_object(Bucket=B, Key="cp")["Body"].read() == b"0123456789" * 10)
        show("CopyObject onto itself, COPY (no change)",
             call(c.copy_object, Bucket=B, Key="cp", CopySource={"Bucket": B, "Key": "cp"}))
        show("CopyObject multipart source to new key",
             call(c.copy_object, Bucket=B, Key="cp-mp", CopySource={"Bucket": B, "Key": "list/mp"}),
             lambda r: r["CopyObjectResult"]["ETag"])
        h = c.head_object(Bucket=B, Key="cp-mp")
        out("  copy of multipart: HEAD ETag/len", (h["ETag"], h["ContentLength"]))
        show("CopyObject default directive keeps metadata",
             call(c.copy_object, Bucket=B, Key="cp2", CopySource={"Bucket": B, "Key": "cp"}),
             lambda r: c.head_object(Bucket=B, Key="cp2")["Metadata"])
        show("CopyObject x-amz-copy-source-if-match wrong",
             call(c.copy_object, Bucket=B, Key="cp3", CopySource={"Bucket": B, "Key": "cp"},
                  CopySourceIfMatch='"bad"'))
        r = raw("PUT", f"/{B}/cp-range", {"x-amz-copy-source": f"/{B}/cp", "x-amz-copy-source-range": "bytes=0-4"})
        out("CopyObject with x-amz-copy-source-range (raw)", f"{r.status_code} {xml_code(r)}")
        if r.status_code == 200:
            out("  resulting body", c.get_object(Bucket=B, Key="cp-range")["Body"].read()[:20])
        up = c.create_multipart_upload(Bucket=B, Key="upc")["UploadId"]
        r1 = show("UploadPartCopy range bytes=0-5242879 of list/mp",
                  call(c.upload_part_copy, Bucket=B, Key="upc", UploadId=up, PartNumber=1,
                       CopySource={"Bucket": B, "Key": "list/mp"}, CopySourceRange="bytes=0-5242879"),
                  lambda r: r["CopyPartResult"])
        r2 = show("UploadPartCopy range bytes=2-6 of cp",
                  call(c.upload_part_copy, Bucket=B, Key="upc", UploadId=up, PartNumber=2,
                       CopySource={"Bucket": B, "Key": "cp"}, CopySourceRange="bytes=2-6"),
                  lambda r: r["CopyPartResult"])
        show("UploadPartCopy range past end bytes=0-999",
             call(c.upload_part_copy, Bucket=B, Key="upc", UploadId=up, PartNumber=3,
                  CopySource={"Bucket": B, "Key": "cp"}, CopySourceRange="bytes=0-999"))
        if r1 and r2:
            show("  Complete UploadPartCopy upload",
                 call(c.complete_multipart_upload, Bucket=B, Key="upc", UploadId=up,
                      MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
                                                 {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]}]}),
                 lambda r: r["ETag"])
            body = c.get_object(Bucket=B, Key="upc")["Body"].read()
            out("  body == mp[0:5MiB] + '23456'", body == mpbody[:5 * MiB] + b"23456")

    with section("[f] range GET (object of 100 bytes '0123456789'*10)"):
        for rg in ("bytes=0-9", "bytes=95-", "bytes=-5", "bytes=90-200", "bytes=100-",
                   "bytes=200-300", "bytes=-200", "bytes=5-2", "bytes=0-1,5-6", "bytes=abc"):
            r = raw("GET", f"/{B}/cp", {"Range": rg})
            out(rg, f"{r.status_code} CR={r.headers.get('Content-Range')} CL={r.headers.get('Content-Length')} "
                    f"body={r.content[:12]!r}{' ' + xml_code(r) if r.status_code >= 400 else ''}")
        r = raw("GET", f"/{B}/list/mp", {"Range": f"bytes={5 * MiB - 3}-{5 * MiB + 2}"})
        out("multipart range across the part boundary", f"{r.status_code} {r.headers.get('Content-Range')} "
            f"exact={r.content == mpbody[5 * MiB - 3:5 * MiB + 3]}")
        r = raw("GET", f"/{B}/list/empty", {"Range": "bytes=0-0"})
        out("range on an empty object bytes=0-0", f"{r.status_code} {xml_code(r) if r.status_code >= 400 else ''}")
        r = raw("GET", f"/{B}/cp")
        out("plain GET headers", {k: v for k, v in r.headers.items()})

    with section("[g] buckets"):
        for name in ("a", "ab", "abc", "x" * 63, "y" * 64, "UpperCase", "under_score",
                     "dot.ted", "192.168.5.4", "-dash", "dash-", "xn--abc", "ab-s3alias"):
            show(f"CreateBucket {name[:20]!r} (len {len(name)})", call(c.create_bucket, Bucket=name))
        show("CreateBucket existing (own)", call(c.create_bucket, Bucket=B))
        c.create_bucket(Bucket="nonempty")
        c.put_object(Bucket="nonempty", Key="x", Body=b"x")
        show("DeleteBucket non-empty", call(c.delete_bucket, Bucket="nonempty"))
        show("  bucket still there (HeadBucket)", call(c.head_bucket, Bucket="nonempty"))
        show("DeleteBucket missing", call(c.delete_bucket, Bucket="missing-bucket"))
        show("ListObjectsV2 missing bucket", call(c.list_objects_v2, Bucket="missing-bucket"))
        show("PutObject into missing bucket (autoCreate?)",
             call(c.put_object, Bucket="auto-created", Key="k", Body=b"x"))
        show("GetBucketVersioning", call(c.get_bucket_versioning, Bucket=B),
             lambda r: {k: v for k, v in r.items() if k != "ResponseMetadata"})
        show("ListObjectVersions (unversioned)", call(c.list_object_versions, Bucket=B, Prefix="cond"),
             lambda r: [(v["Key"], v.get("VersionId"), v.get("IsLatest")) for v in r.get("Versions", [])])
        show("GetBucketLocation", call(c.get_bucket_location, Bucket=B), lambda r: r.get("LocationConstraint"))
        show("ListBuckets", call(c.list_buckets), lambda r: [b["Name"] for b in r["Buckets"]][:8])

    with section("[h] keys"):
        keys = ["a//b", "/lead", "//double-lead", "a/../b", "../up", "./dot", "a/./b", "trail/",
                "sp ace+plus%pct?q#h", "uni/ü日本🚀", "x" * 1024, "dir/file", "dir", "tab\tkey",
                "a-c", "a0", "a/b", "ctl\x01char"]
        kb = "keys"
        c.create_bucket(Bucket=kb)
        for k in keys:
            ok, r = call(c.put_object, Bucket=kb, Key=k, Body=k.encode()[:50] or b"-")
            got = ""
            if ok:
                ok2, g = call(c.get_object, Bucket=kb, Key=k)
                got = "GET ok" if ok2 and g["Body"].read() == k.encode()[:50] else f"GET mismatch {g if not ok2 else ''}"
            out(f"PUT {k[:30]!r}{'…' if len(k) > 30 else ''}", ("ok " + got) if ok else r)
        for n in (255, 256, 512, 1000, 1024, 1025):
            show(f"PUT key of one {n}-byte segment", call(c.put_object, Bucket=kb, Key="L" * n, Body=b"z"))
        for n in (1016, 1024, 1025):
            k = "/".join(["s" * 100] * 11)[: n - 8] + "/tailseg"  # ~100-byte segments
            show(f"PUT key of {len(k.encode())} bytes in 100-byte segments",
                 call(c.put_object, Bucket=kb, Key=k, Body=b"z"))
        k = "p/" * 383 + "pp/" + "q" * 255
        show(f"PUT key of {len(k)} bytes, last segment 255 bytes",
             call(c.put_object, Bucket=kb, Key=k, Body=b"z"),
             lambda r: "listed: %s" % (k in [o["Key"] for o in c.list_objects_v2(Bucket=kb, Prefix="p/")["Contents"]]))
        c.create_bucket(Bucket="keys2")
        c.put_object(Bucket="keys2", Key="c//d", Body=b"double")
        c.put_object(Bucket="keys2", Key="c/d", Body=b"single")
        out("'c//d' then 'c/d': GET c//d returns", c.get_object(Bucket="keys2", Key="c//d")["Body"].read())
        c.put_object(Bucket="keys2", Key="/x", Body=b"slash-x")
        show("'/x' put: GET 'x'", call(c.get_object, Bucket="keys2", Key="x"), lambda r: r["Body"].read())
        out("keys2 listing", [o["Key"] for o in c.list_objects_v2(Bucket="keys2").get("Contents", [])])
        g = c.get_object(Bucket=kb, Key="trail/")
        out("GET 'trail/' (put with 6 bytes)", (g["ContentLength"], g["Body"].read(), g.get("ContentType")))
        listed = [o["Key"] for p in c.get_paginator("list_objects_v2").paginate(Bucket=kb) for o in p.get("Contents", [])]
        out("listed keys (order as returned)", [k if len(k) < 40 else k[:8] + f"…({len(k)})" for k in listed])
        out("missing from listing", [k[:30] for k in keys if k not in listed and k != "z" * 1025])
        out("unexpected in listing", [k[:30] for k in listed if k not in keys])
        out("listing is sorted by UTF-8 bytes", listed == sorted(listed, key=lambda s: s.encode()))
        pages = [[o["Key"][:12] for o in p.get("Contents", [])]
                 for p in c.get_paginator("list_objects_v2").paginate(Bucket=kb, PaginationConfig={"PageSize": 3})]
        out("MaxKeys=3 pages", pages)
        r = c.list_objects_v2(Bucket=kb, Delimiter="/")
        out("Delimiter=/ CommonPrefixes", [p["Prefix"] for p in r.get("CommonPrefixes", [])])
        out("Delimiter=/ Contents", [o["Key"][:12] for o in r.get("Contents", [])])
        r = c.list_objects_v2(Bucket=kb, StartAfter="a0")
        out("StartAfter=a0", [o["Key"][:12] for o in r.get("Contents", [])])
        show("PUT 'dir/' (key ending in / with data)", call(c.put_object, Bucket=kb, Key="dir/", Body=b"data"),
             lambda r: c.get_object(Bucket=kb, Key="dir/")["Body"].read())
        show("DELETE 'dir' (file) then GET dir/file",
             call(c.delete_object, Bucket=kb, Key="dir"),
             lambda r: c.get_object(Bucket=kb, Key="dir/file")["Body"].read())
        c.put_object(Bucket=kb, Key="solo/only", Body=b"1")
        c.delete_object(Bucket=kb, Key="solo/only")
        r = c.list_objects_v2(Bucket=kb, Prefix="solo")
        out("after deleting the only key under solo/: listing", [o["Key"] for o in r.get("Contents", [])])

    with section("[i] upstream down / restart"):
        t = time.monotonic()
        sw.stop_s3()
        ok, r = call(c.get_object, Bucket=B, Key="cp")
        out("GET while S3 is stopped", r if not ok else "ok?!")
        sw.start_s3()
        out("restart took (s)", round(time.monotonic() - t, 1))
        out("object survives the filer restart",
            c.get_object(Bucket=B, Key="list/mp")["Body"].read() == mpbody)

    with section("[j] with -s3.allowDeleteBucketNotEmpty=false -s3.autoCreateBucket=false"):
        sw.stop_s3()
        sw.filer_args = ["-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false"]
        sw.start_s3()
        c.create_bucket(Bucket="nonempty2")
        c.put_object(Bucket="nonempty2", Key="x", Body=b"x")
        show("DeleteBucket non-empty", call(c.delete_bucket, Bucket="nonempty2"))
        show("PutObject into missing bucket", call(c.put_object, Bucket="auto-created-2", Key="k", Body=b"x"))
        c.delete_object(Bucket="nonempty2", Key="x")
        show("DeleteBucket after emptying it", call(c.delete_bucket, Bucket="nonempty2"))


def main() -> None:
    keep = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--keep" else None
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="swprobe-"))
    sw = SeaweedCluster(base / "cluster")
    sw.start()
    print(f"SeaweedFS ({sw.weed}) ready at {sw.s3_endpoint} in {sw.started_in:.1f}s")
    try:
        probe(sw)
    finally:
        sw.stop()
        if not keep:
            import shutil
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
