//! Every rule, table-driven, against a fake KMS that records its calls.

use super::*;
use alloc::string::ToString;
use alloc::vec::Vec;

#[derive(Default)]
struct FakeKms {
    calls: Vec<String>,
    down: bool,
    next: u32,
}

impl KeyService for FakeKms {
    type Key = String;
    fn create_bucket_key(&mut self, bucket: &str) -> Result<String, KmsError> {
        self.calls.push(format!("create {bucket}"));
        self.check()?;
        Ok(format!("key-{bucket}"))
    }
    fn generate_data_key(&mut self, key_id: &str) -> Result<String, KmsError> {
        self.calls.push(format!("generate {key_id}"));
        self.check()?;
        self.next += 1;
        Ok(format!("dk-{key_id}-{}", self.next))
    }
    fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> Result<String, KmsError> {
        self.calls.push(format!("unwrap {key_id} {}", String::from_utf8_lossy(wrapped)));
        self.check()?;
        Ok(format!("open-{}", String::from_utf8_lossy(wrapped)))
    }
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), KmsError> {
        self.calls.push(format!("destroy {key_id}"));
        self.check()
    }
}

impl FakeKms {
    fn check(&self) -> Result<(), KmsError> {
        if self.down { Err(KmsError { kind: KmsErrorKind::Unavailable, message: "down".into() }) } else { Ok(()) }
    }
}

fn request(operation: Operation, headers: &[(&str, &str)]) -> Request {
    Request {
        operation,
        bucket: "b".into(),
        key: Some("k".into()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        bucket_state: Some(BucketState::default()),
        target: None,
        source: None,
        requested_algorithm: None,
    }
}

fn encrypted(mut r: Request) -> Request {
    r.bucket_state = Some(BucketState { encrypted: true, key_id: Some("key-b".into()) });
    r
}

fn sealed(wrapped: &str) -> Option<Sealed> {
    Some(Sealed { key_id: "key-b".into(), wrapped_key: wrapped.as_bytes().to_vec() })
}

fn run(r: &Request) -> (Decision<String>, Vec<String>) {
    run_variant(r, Variant::default())
}

fn run_variant(r: &Request, variant: Variant) -> (Decision<String>, Vec<String>) {
    let mut kms = FakeKms::default();
    let d = evaluate(r, &mut kms, variant);
    (d, kms.calls)
}

fn denied(d: &Decision<String>) -> (u16, &str) {
    match d {
        Decision::Deny(e) => (e.status, e.code.as_str()),
        Decision::Allow(_) => panic!("expected a denial, got {d:?}"),
    }
}

fn allowed(d: Decision<String>) -> Effects<String> {
    match d {
        Decision::Allow(e) => e,
        Decision::Deny(e) => panic!("expected allow, got {e:?}"),
    }
}

const SEALED_HEADER: (&str, &str) = ("x-amz-server-side-encryption", "AES256");

fn sealed_headers() -> Vec<(String, String)> {
    vec![(SEALED_HEADER.0.into(), SEALED_HEADER.1.into())]
}

#[test]
fn rule1_create_bucket_with_the_scal_header() {
    let mut r = request(Operation::CreateBucket, &[("x-amz-scal-server-side-encryption", "AES256")]);
    r.bucket_state = None;
    let (d, calls) = run(&r);
    assert_eq!(allowed(d).bucket_state, Some(BucketState { encrypted: true, key_id: Some("key-b".into()) }));
    assert_eq!(calls, vec!["create b"]);

    for bad in ["aws:kms", "aes256", "", "AES128", " AES256"] {
        let mut r = request(Operation::CreateBucket, &[("x-amz-scal-server-side-encryption", bad)]);
        r.bucket_state = None;
        let (d, calls) = run(&r);
        assert_eq!(denied(&d), (400, "InvalidArgument"), "value {bad:?}");
        assert!(calls.is_empty(), "no key for {bad:?}");
    }

    let mut plain = request(Operation::CreateBucket, &[]);
    plain.bucket_state = None;
    let (d, calls) = run(&plain);
    assert_eq!(allowed(d).bucket_state, Some(BucketState::default()));
    assert!(calls.is_empty());
}

#[test]
fn encrypt_all_variant_encrypts_every_new_bucket() {
    let mut plain = request(Operation::CreateBucket, &[]);
    plain.bucket_state = None;
    let (d, calls) = run_variant(&plain, Variant::ENCRYPT_ALL);
    assert!(allowed(d).bucket_state.unwrap().encrypted);
    assert_eq!(calls, vec!["create b"]);
    // Everything else is the same rules.
    let mut bad = request(Operation::CreateBucket, &[("x-amz-scal-server-side-encryption", "aws:kms")]);
    bad.bucket_state = None;
    assert_eq!(denied(&run_variant(&bad, Variant::ENCRYPT_ALL).0), (400, "InvalidArgument"));
}

#[test]
fn rule2_every_create_path_into_an_encrypted_bucket_is_sealed() {
    for op in [Operation::PutObject, Operation::PostObject, Operation::CreateMultipartUpload, Operation::CopyObject] {
        let (d, calls) = run(&encrypted(request(op, &[])));
        let effects = allowed(d);
        assert_eq!(effects.seal_with.as_deref(), Some("dk-key-b-1"), "{op:?}");
        assert_eq!(effects.response_headers, sealed_headers(), "{op:?}");
        assert_eq!(calls, vec!["generate key-b"], "{op:?}");
    }
    // Parts follow their upload.
    let mut part = request(Operation::UploadPart, &[]);
    part.target = sealed("w1");
    let effects = allowed(run(&part).0);
    assert_eq!(effects.seal_with.as_deref(), Some("open-w1"));
    // GET opens, HEAD only reports.
    let mut get = request(Operation::GetObject, &[]);
    get.target = sealed("w2");
    let effects = allowed(run(&get).0);
    assert_eq!(effects.open_with.as_deref(), Some("open-w2"));
    assert_eq!(effects.response_headers, sealed_headers());
    let mut head = request(Operation::HeadObject, &[]);
    head.target = sealed("w3");
    let (d, calls) = run(&head);
    assert_eq!(allowed(d).response_headers, sealed_headers());
    assert!(calls.is_empty(), "HEAD needs no key");
}

#[test]
fn plaintext_buckets_write_plaintext() {
    for op in [
        Operation::PutObject,
        Operation::PostObject,
        Operation::CreateMultipartUpload,
        Operation::CopyObject,
        Operation::UploadPart,
    ] {
        let (d, calls) = run(&request(op, &[]));
        let effects = allowed(d);
        assert_eq!(effects.seal_with, None, "{op:?}");
        assert!(effects.response_headers.is_empty(), "{op:?}");
        assert!(calls.is_empty(), "{op:?}");
    }
}

#[test]
fn rule3_object_level_headers() {
    type Case<'a> = (&'a str, &'a str, bool, Option<(u16, &'a str)>);
    let cases: &[Case] = &[
        ("x-amz-server-side-encryption", "AES256", true, None),
        ("x-amz-scal-server-side-encryption", "AES256", true, None),
        ("x-amz-server-side-encryption", "AES256", false, Some((400, "InvalidArgument"))),
        ("x-amz-scal-server-side-encryption", "AES256", false, Some((400, "InvalidArgument"))),
        ("x-amz-server-side-encryption", "aws:kms", true, Some((400, "InvalidArgument"))),
        ("x-amz-server-side-encryption", "aws:kms", false, Some((400, "InvalidArgument"))),
        ("x-amz-server-side-encryption", "aes256", true, Some((400, "InvalidArgument"))),
        ("x-amz-scal-server-side-encryption", "", true, Some((400, "InvalidArgument"))),
    ];
    for op in [Operation::PutObject, Operation::PostObject, Operation::CreateMultipartUpload, Operation::CopyObject] {
        for (name, value, bucket_encrypted, expected) in cases {
            let mut r = request(op, &[(name, value)]);
            if *bucket_encrypted {
                r = encrypted(r);
            }
            let (d, _) = run(&r);
            match expected {
                None => assert!(allowed(d).seal_with.is_some(), "{op:?} {name}={value}"),
                Some(e) => assert_eq!(denied(&d), *e, "{op:?} {name}={value} encrypted={bucket_encrypted}"),
            }
        }
    }
}

#[test]
fn a_repeated_encryption_header_is_checked_in_every_occurrence() {
    for name in ["x-amz-server-side-encryption", "x-amz-scal-server-side-encryption"] {
        for op in [Operation::PutObject, Operation::CreateMultipartUpload, Operation::CopyObject] {
            let r = encrypted(request(op, &[(name, "AES256"), (name, "aws:kms")]));
            assert_eq!(denied(&run(&r).0), (400, "InvalidArgument"), "{op:?} {name}");
        }
        let mut create = request(Operation::CreateBucket, &[(name, "AES256"), (name, "")]);
        create.bucket_state = None;
        let (d, calls) = run(&create);
        assert_eq!(denied(&d), (400, "InvalidArgument"), "CreateBucket {name}");
        assert!(calls.is_empty());
    }
}

#[test]
fn rule4_unsupported_encryption_is_refused() {
    let cases: &[(&str, (u16, &str))] = &[
        ("x-amz-server-side-encryption-customer-algorithm", (501, "NotImplemented")),
        ("x-amz-server-side-encryption-customer-key", (501, "NotImplemented")),
        ("x-amz-server-side-encryption-customer-key-md5", (501, "NotImplemented")),
        ("x-amz-copy-source-server-side-encryption-customer-algorithm", (501, "NotImplemented")),
        ("x-amz-server-side-encryption-aws-kms-key-id", (400, "InvalidArgument")),
        ("x-amz-server-side-encryption-context", (400, "InvalidArgument")),
    ];
    for op in [
        Operation::PutObject,
        Operation::GetObject,
        Operation::HeadObject,
        Operation::CopyObject,
        Operation::UploadPart,
        Operation::CreateMultipartUpload,
    ] {
        for (header, expected) in cases {
            for bucket_encrypted in [false, true] {
                let mut r = request(op, &[(header, "x")]);
                if bucket_encrypted {
                    r = encrypted(r);
                }
                let (d, calls) = run(&r);
                assert_eq!(denied(&d), *expected, "{op:?} {header}");
                assert!(calls.is_empty(), "no KMS call before refusing {header}");
            }
        }
    }
}

#[test]
fn rule5_only_sealed_objects_say_so() {
    let (d, _) = run(&request(Operation::CompleteMultipartUpload, &[]));
    assert!(allowed(d).response_headers.is_empty());
    let mut sealed_upload = request(Operation::CompleteMultipartUpload, &[]);
    sealed_upload.target = sealed("w");
    assert_eq!(allowed(run(&sealed_upload).0).response_headers, sealed_headers());
    assert!(allowed(run(&request(Operation::GetObject, &[])).0).response_headers.is_empty());
    assert!(allowed(run(&request(Operation::HeadObject, &[])).0).response_headers.is_empty());
}

#[test]
fn rule6_bucket_encryption_configuration() {
    let mut put = request(Operation::PutBucketEncryption, &[]);
    put.requested_algorithm = Some("AES256".into());
    let (d, calls) = run(&put);
    assert_eq!(allowed(d).bucket_state, Some(BucketState { encrypted: true, key_id: Some("key-b".into()) }));
    assert_eq!(calls, vec!["create b"]);

    // A bucket that had a key keeps it.
    let mut again = put.clone();
    again.bucket_state = Some(BucketState { encrypted: false, key_id: Some("old-key".into()) });
    let (d, calls) = run(&again);
    assert_eq!(allowed(d).bucket_state.unwrap().key_id.as_deref(), Some("old-key"));
    assert!(calls.is_empty());

    for (algorithm, expected) in [
        (Some("aws:kms"), (400, "InvalidArgument")),
        (Some("aws:kms:dsse"), (400, "InvalidArgument")),
        (Some("AES-256"), (400, "MalformedXML")),
        (None, (400, "MalformedXML")),
    ] {
        let mut bad = put.clone();
        bad.requested_algorithm = algorithm.map(Into::into);
        assert_eq!(denied(&run(&bad).0), expected, "{algorithm:?}");
    }

    let get = request(Operation::GetBucketEncryption, &[]);
    assert_eq!(denied(&run(&get).0), (404, "ServerSideEncryptionConfigurationNotFoundError"));
    assert_eq!(allowed(run(&encrypted(get)).0).report_algorithm.as_deref(), Some("AES256"));

    let delete = encrypted(request(Operation::DeleteBucketEncryption, &[]));
    assert_eq!(
        allowed(run(&delete).0).bucket_state,
        Some(BucketState { encrypted: false, key_id: Some("key-b".into()) })
    );
}

#[test]
fn rule7_deleting_an_encrypted_bucket_destroys_its_key() {
    let (d, calls) = run(&encrypted(request(Operation::DeleteBucket, &[])));
    allowed(d);
    assert_eq!(calls, vec!["destroy key-b"]);
    let (_, calls) = run(&request(Operation::DeleteBucket, &[]));
    assert!(calls.is_empty());
}

#[test]
fn copies_open_the_source_and_follow_the_destination() {
    // sealed → plaintext bucket: opened, not sealed
    let mut r = request(Operation::CopyObject, &[]);
    r.source = sealed("src");
    let effects = allowed(run(&r).0);
    assert_eq!(effects.open_with.as_deref(), Some("open-src"));
    assert_eq!(effects.seal_with, None);
    // sealed → encrypted bucket: opened and sealed with a new key
    let effects = allowed(run(&encrypted(r)).0);
    assert_eq!(effects.open_with.as_deref(), Some("open-src"));
    assert!(effects.seal_with.is_some());
    // part copy: source opened, sealed with the upload's key
    let mut pc = request(Operation::UploadPartCopy, &[]);
    pc.source = sealed("src");
    pc.target = sealed("upl");
    let effects = allowed(run(&pc).0);
    assert_eq!(effects.open_with.as_deref(), Some("open-src"));
    assert_eq!(effects.seal_with.as_deref(), Some("open-upl"));
}

#[test]
fn kms_failures_fail_closed() {
    let cases = [
        encrypted(request(Operation::PutObject, &[])),
        {
            let mut g = request(Operation::GetObject, &[]);
            g.target = sealed("w");
            g
        },
        {
            let mut c = request(Operation::CreateBucket, &[("x-amz-scal-server-side-encryption", "AES256")]);
            c.bucket_state = None;
            c
        },
    ];
    for r in cases {
        let mut kms = FakeKms { down: true, ..FakeKms::default() };
        let d = evaluate(&r, &mut kms, Variant::default());
        assert_eq!(denied(&d), (503, "ServiceUnavailable"), "{:?}", r.operation);
    }
}

/// What an SSE-S3 (`aws.wasm`) decision must be.
#[derive(Debug)]
enum Aws {
    Deny(u16, &'static str),
    /// Allowed; the bucket setting it stores.
    Bucket {
        encrypted: bool,
    },
    /// Allowed, sealed with a new data key of the bucket's key.
    Sealed,
    /// Allowed, stored in plaintext.
    Plain,
}

/// A bucket that is not encrypted but has its master key (every bucket
/// made under SSE-S3 semantics).
fn keyed(mut r: Request) -> Request {
    r.bucket_state = Some(BucketState { encrypted: false, key_id: Some("key-b".into()) });
    r
}

fn new_bucket(mut r: Request) -> Request {
    r.bucket_state = None;
    r
}

fn with_source(mut r: Request) -> Request {
    r.source = Some(Sealed { key_id: "key-src".into(), wrapped_key: b"src".to_vec() });
    r
}

#[test]
fn aws_variant_follows_sse_s3() {
    use Operation::*;
    const SSE: (&str, &str) = ("x-amz-server-side-encryption", "AES256");
    const SCAL: (&str, &str) = ("x-amz-scal-server-side-encryption", "AES256");
    let cases: Vec<(&str, Request, Aws)> = vec![
        ("every new bucket gets a key", new_bucket(request(CreateBucket, &[])), Aws::Bucket { encrypted: false }),
        (
            "the scal header still encrypts a bucket",
            new_bucket(request(CreateBucket, &[SCAL])),
            Aws::Bucket { encrypted: true },
        ),
        (
            "unsupported bucket algorithm",
            new_bucket(request(CreateBucket, &[("x-amz-scal-server-side-encryption", "aws:kms")])),
            Aws::Deny(400, "InvalidArgument"),
        ),
        ("plain write without the header", keyed(request(PutObject, &[])), Aws::Plain),
        ("the header seals one object", keyed(request(PutObject, &[SSE])), Aws::Sealed),
        ("in a POST", keyed(request(PostObject, &[SSE])), Aws::Sealed),
        ("in a multipart upload", keyed(request(CreateMultipartUpload, &[SSE])), Aws::Sealed),
        ("in a copy of a sealed source", with_source(keyed(request(CopyObject, &[SSE]))), Aws::Sealed),
        ("a copy without it is plaintext", with_source(keyed(request(CopyObject, &[]))), Aws::Plain),
        ("a bucket default seals without the header", encrypted(request(PutObject, &[])), Aws::Sealed),
        ("and with it", encrypted(request(PutObject, &[SSE])), Aws::Sealed),
        ("a bucket from before has no key to seal with", request(PutObject, &[SSE]), Aws::Deny(400, "InvalidArgument")),
        (
            "only AES256",
            keyed(request(PutObject, &[("x-amz-server-side-encryption", "aws:kms")])),
            Aws::Deny(400, "InvalidArgument"),
        ),
        (
            "SSE-C still refused",
            keyed(request(PutObject, &[("x-amz-server-side-encryption-customer-algorithm", "AES256")])),
            Aws::Deny(501, "NotImplemented"),
        ),
        (
            "a client KMS key still refused",
            keyed(request(PutObject, &[SSE, ("x-amz-server-side-encryption-aws-kms-key-id", "k")])),
            Aws::Deny(400, "InvalidArgument"),
        ),
        ("the header on GET", keyed(request(GetObject, &[SSE])), Aws::Deny(400, "InvalidArgument")),
        ("the header on HEAD", keyed(request(HeadObject, &[SSE])), Aws::Deny(400, "InvalidArgument")),
        ("GET without it", keyed(request(GetObject, &[])), Aws::Plain),
        ("a part of a plaintext upload", keyed(request(UploadPart, &[SSE])), Aws::Deny(400, "InvalidArgument")),
        (
            "DeleteBucketEncryption keeps the key",
            keyed(request(DeleteBucketEncryption, &[])),
            Aws::Bucket { encrypted: false },
        ),
        (
            "no default configured",
            keyed(request(GetBucketEncryption, &[])),
            Aws::Deny(404, "ServerSideEncryptionConfigurationNotFoundError"),
        ),
    ];
    for (name, r, expected) in cases {
        let (d, calls) = run_variant(&r, Variant::AWS);
        match (&expected, d) {
            (Aws::Deny(status, code), d) => {
                assert_eq!(denied(&d), (*status, *code), "{name}");
                assert!(calls.is_empty(), "{name}: a refusal costs no KMS call: {calls:?}");
            }
            (Aws::Bucket { encrypted }, d) => {
                let state = allowed(d).bucket_state.unwrap_or_else(|| panic!("{name}: no bucket setting"));
                assert_eq!(state, BucketState { encrypted: *encrypted, key_id: Some("key-b".into()) }, "{name}");
            }
            (Aws::Sealed, d) => {
                let effects = allowed(d);
                assert_eq!(effects.seal_with.as_deref(), Some("dk-key-b-1"), "{name}");
                assert_eq!(effects.response_headers, sealed_headers(), "{name}");
                assert!(calls.contains(&"generate key-b".to_string()), "{name}: {calls:?}");
            }
            (Aws::Plain, d) => {
                let effects = allowed(d);
                assert_eq!(effects.seal_with, None, "{name}");
                assert!(effects.response_headers.is_empty(), "{name}");
                assert!(!calls.iter().any(|c| c.starts_with("generate")), "{name}: {calls:?}");
            }
        }
    }
    // PutBucketEncryption makes the bucket's existing key its default, and gives one to a keyless bucket.
    let mut turn_on = keyed(request(PutBucketEncryption, &[]));
    turn_on.requested_algorithm = Some(AES256.into());
    let (d, calls) = run_variant(&turn_on, Variant::AWS);
    assert_eq!(allowed(d).bucket_state, Some(BucketState { encrypted: true, key_id: Some("key-b".into()) }));
    assert!(calls.is_empty());
}
