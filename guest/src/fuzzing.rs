//! Fuzzing support (feature `fuzzing`), shared by the cargo-fuzz targets in
//! `../fuzz` and by the corpus replay test (`tests/fuzz_corpus.rs`):
//!
//! * [`Input::build`] turns fuzzer bytes into a [`Request`] and a KMS
//!   behaviour (which calls fail, and how), biased toward the encryption
//!   headers and values the rules look at;
//! * [`KmsLog`] is an in-memory KMS that follows that behaviour and records
//!   every key it hands out, each with a unique serial;
//! * [`check`] holds the invariants every decision must keep, whatever the
//!   request: it sees the decision as an [`Observed`], so the native rules
//!   and the built component are held to exactly the same checks;
//! * [`same_decision`] compares two decisions (native vs component).
//!
//! A corpus file is only meaningful together with [`Input::build`]: changing
//! how bytes are read invalidates the stored corpora (they still replay, but
//! mean other requests).

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use arbitrary::{Result as ArbResult, Unstructured};

use crate::*;

pub const AWS_SSE: &str = "x-amz-server-side-encryption";
pub const SCAL_SSE: &str = "x-amz-scal-server-side-encryption";
pub const SSE_C_PREFIXES: [&str; 2] =
    ["x-amz-server-side-encryption-customer-", "x-amz-copy-source-server-side-encryption-customer-"];
pub const SSE_KMS_HEADERS: [&str; 2] =
    ["x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-context"];

pub const ALL_OPERATIONS: [Operation; 14] = [
    Operation::CreateBucket,
    Operation::DeleteBucket,
    Operation::PutBucketEncryption,
    Operation::GetBucketEncryption,
    Operation::DeleteBucketEncryption,
    Operation::PutObject,
    Operation::CopyObject,
    Operation::PostObject,
    Operation::CreateMultipartUpload,
    Operation::UploadPart,
    Operation::UploadPartCopy,
    Operation::CompleteMultipartUpload,
    Operation::GetObject,
    Operation::HeadObject,
];

/// Operations whose rules check `x-amz-server-side-encryption` and
/// `x-amz-scal-server-side-encryption` (rules.rs: `create_bucket` checks
/// both; `object_header_check` runs for new objects, copies and parts).
pub const HEADER_CHECKED: [Operation; 7] = [
    Operation::CreateBucket,
    Operation::PutObject,
    Operation::PostObject,
    Operation::CreateMultipartUpload,
    Operation::CopyObject,
    Operation::UploadPart,
    Operation::UploadPartCopy,
];

/// Operations that create an object (and so seal under the bucket's key).
pub const OBJECT_WRITES: [Operation; 4] =
    [Operation::PutObject, Operation::PostObject, Operation::CreateMultipartUpload, Operation::CopyObject];

const HEADER_NAMES: [&str; 16] = [
    AWS_SSE,
    SCAL_SSE,
    AWS_SSE,
    SCAL_SSE,
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-algorithm",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-server-side-encryption-customer-",
    "content-type",
    "x-amz-meta-note",
    "x-amz-copy-source",
];

const HEADER_VALUES: [&str; 12] = [
    "AES256",
    "AES256",
    "aes256",
    "aws:kms",
    "aws:kms:dsse",
    "",
    "AES256 ",
    " AES256",
    "AES-256",
    "AES256,aws:kms",
    "AES256\u{0}",
    "Aes256",
];

const BUCKETS: [&str; 4] = ["bucket", "sealed-bucket", "a.b", ""];
const KEY_IDS: [&str; 4] = ["bucket-key", "fuzz-master-1", "other-key", ""];

/// How one KMS call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Ok,
    Fail(FailKind),
}

/// How a scripted KMS call fails.
pub type FailKind = KmsErrorKind;

/// One fuzz case: a request and how the KMS behaves, call by call (calls
/// past the end of `kms` succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub request: Request,
    pub kms: Vec<Step>,
}

fn pick_str(u: &mut Unstructured<'_>, choices: &[&str], random_one_in: u32) -> ArbResult<String> {
    if u.ratio(1, random_one_in)? { u.arbitrary::<String>() } else { Ok(u.choose(choices)?.to_string()) }
}

fn header_name(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let name = pick_str(u, &HEADER_NAMES, 12)?;
    // The host sends lower-case names; the rules must not depend on it.
    Ok(match u.int_in_range(0u8..=15)? {
        0 => name.to_ascii_uppercase(),
        1 => name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-"),
        _ => name,
    })
}

fn key_id(u: &mut Unstructured<'_>) -> ArbResult<String> {
    pick_str(u, &KEY_IDS, 8)
}

fn sealed(u: &mut Unstructured<'_>) -> ArbResult<Option<Sealed>> {
    if !u.arbitrary::<bool>()? {
        return Ok(None);
    }
    let key_id = key_id(u)?;
    let len = u.int_in_range(0usize..=8)?;
    let wrapped_key = u.bytes(len)?.to_vec();
    Ok(Some(Sealed { key_id, wrapped_key }))
}

impl Input {
    /// Reads a fuzz case from raw bytes. Never fails: missing bytes read as
    /// zeroes (arbitrary's convention).
    pub fn build(data: &[u8]) -> Input {
        let mut u = Unstructured::new(data);
        Self::read(&mut u).unwrap_or_else(|_| Input {
            request: Request {
                operation: Operation::CreateBucket,
                bucket: String::new(),
                key: None,
                headers: Vec::new(),
                bucket_state: None,
                target: None,
                source: None,
                requested_algorithm: None,
            },
            kms: Vec::new(),
        })
    }

    fn read(u: &mut Unstructured<'_>) -> ArbResult<Input> {
        let operation = *u.choose(&ALL_OPERATIONS)?;
        let bucket = pick_str(u, &BUCKETS, 8)?;
        let key = if u.arbitrary::<bool>()? { Some(pick_str(u, &["object", "a/b", ""], 4)?) } else { None };
        let n_headers = u.int_in_range(0usize..=6)?;
        let mut headers = Vec::with_capacity(n_headers);
        for _ in 0..n_headers {
            let name = header_name(u)?;
            let value = pick_str(u, &HEADER_VALUES, 10)?;
            headers.push((name, value));
        }
        let bucket_state = if u.ratio(3, 4)? {
            let encrypted = u.arbitrary::<bool>()?;
            let key_id = if u.ratio(3, 4)? { Some(key_id(u)?) } else { None };
            Some(BucketState { encrypted, key_id })
        } else {
            None
        };
        let target = sealed(u)?;
        let source = sealed(u)?;
        let requested_algorithm = if u.arbitrary::<bool>()? { Some(pick_str(u, &HEADER_VALUES, 10)?) } else { None };
        let n_steps = u.int_in_range(0usize..=4)?;
        let mut kms = Vec::with_capacity(n_steps);
        for _ in 0..n_steps {
            kms.push(match u.int_in_range(0u8..=5)? {
                0 => Step::Fail(FailKind::Unavailable),
                1 => Step::Fail(FailKind::Refused),
                2 => Step::Fail(FailKind::Invalid),
                3 => Step::Fail(FailKind::NotFound),
                _ => Step::Ok,
            });
        }
        let request = Request { operation, bucket, key, headers, bucket_state, target, source, requested_algorithm };
        Ok(Input { request, kms })
    }
}

/// How a data key was handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    Generate { key_id: String },
    Unwrap { key_id: String, wrapped: Vec<u8> },
}

/// Serials start here so that a zero or small number is never a valid key.
pub const SERIAL_BASE: u64 = 0x5ea1_0000_0000;

/// An in-memory KMS following a script, for one evaluation.
#[derive(Debug, Clone, Default)]
pub struct KmsLog {
    steps: Vec<Step>,
    next_step: usize,
    /// Bucket master keys created, in order.
    pub created: Vec<String>,
    /// Data keys handed out; the serial of `issued[i]` is `SERIAL_BASE + i`.
    pub issued: Vec<Issue>,
    /// Destroy requests (deferred or carried out).
    pub destroyed: Vec<String>,
}

impl KmsLog {
    pub fn new(steps: &[Step]) -> Self {
        Self { steps: steps.to_vec(), ..Self::default() }
    }

    /// Consumes the next scripted outcome.
    pub fn step(&mut self) -> Result<(), FailKind> {
        let step = self.steps.get(self.next_step).copied().unwrap_or(Step::Ok);
        self.next_step += 1;
        match step {
            Step::Ok => Ok(()),
            Step::Fail(kind) => Err(kind),
        }
    }

    pub fn create(&mut self, _bucket: &str) -> Result<String, FailKind> {
        self.step()?;
        let key_id = format!("fuzz-master-{}", self.created.len() + 1);
        self.created.push(key_id.clone());
        Ok(key_id)
    }

    fn issue(&mut self, issue: Issue) -> u64 {
        self.issued.push(issue);
        SERIAL_BASE + (self.issued.len() as u64 - 1)
    }

    pub fn generate(&mut self, key_id: &str) -> Result<u64, FailKind> {
        self.step()?;
        Ok(self.issue(Issue::Generate { key_id: key_id.to_string() }))
    }

    pub fn unwrap(&mut self, key_id: &str, wrapped: &[u8]) -> Result<u64, FailKind> {
        self.step()?;
        Ok(self.issue(Issue::Unwrap { key_id: key_id.to_string(), wrapped: wrapped.to_vec() }))
    }

    /// The issue a serial stands for, if this KMS handed it out.
    pub fn lookup(&self, serial: u64) -> Option<&Issue> {
        serial.checked_sub(SERIAL_BASE).and_then(|i| usize::try_from(i).ok()).and_then(|i| self.issued.get(i))
    }

    pub fn key_ref(&self, serial: u64) -> KeyRef {
        match self.lookup(serial) {
            Some(issue) => KeyRef::Issued(issue.clone()),
            None => KeyRef::Foreign(format!("serial {serial:#x}")),
        }
    }
}

/// A data key as the rules hold it natively: just its serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeKey(pub u64);

/// The native [`KeyService`] over a [`KmsLog`].
pub struct NativeKms {
    pub log: KmsLog,
    /// Whether `destroy_bucket_key` consults the script. The host defers the
    /// destruction and answers Ok at once, so a native run mirroring the
    /// component sets this to false.
    pub destroy_consults: bool,
}

fn kms_error(kind: FailKind) -> KmsError {
    KmsError { kind, message: format!("scripted failure ({})", kind.code()) }
}

impl KeyService for NativeKms {
    type Key = FakeKey;
    fn create_bucket_key(&mut self, bucket: &str) -> Result<String, KmsError> {
        self.log.create(bucket).map_err(kms_error)
    }
    fn generate_data_key(&mut self, key_id: &str) -> Result<FakeKey, KmsError> {
        self.log.generate(key_id).map(FakeKey).map_err(kms_error)
    }
    fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> Result<FakeKey, KmsError> {
        self.log.unwrap(key_id, wrapped).map(FakeKey).map_err(kms_error)
    }
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), KmsError> {
        if self.destroy_consults {
            self.log.step().map_err(kms_error)?;
        }
        self.log.destroyed.push(key_id.to_string());
        Ok(())
    }
}

/// A data key in a decision, resolved against the KMS that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Issued(Issue),
    /// Not handed out by the KMS during this evaluation.
    Foreign(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedEffects {
    pub bucket_state: Option<BucketState>,
    pub seal_with: Option<KeyRef>,
    pub open_with: Option<KeyRef>,
    pub report_algorithm: Option<String>,
    pub response_headers: Vec<(String, String)>,
}

/// A decision, whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Deny { status: u16, code: String, message: String },
    Allow(ObservedEffects),
}

impl Observed {
    pub fn from_native(decision: Decision<FakeKey>, log: &KmsLog) -> Observed {
        match decision {
            Decision::Deny(e) => Observed::Deny { status: e.status, code: e.code, message: e.message },
            Decision::Allow(e) => Observed::Allow(ObservedEffects {
                bucket_state: e.bucket_state,
                seal_with: e.seal_with.map(|k| log.key_ref(k.0)),
                open_with: e.open_with.map(|k| log.key_ref(k.0)),
                report_algorithm: e.report_algorithm,
                response_headers: e.response_headers,
            }),
        }
    }
}

/// Runs the rules natively on one input.
pub fn run_native(input: &Input, variant: Variant, destroy_consults: bool) -> (Observed, KmsLog) {
    let mut kms = NativeKms { log: KmsLog::new(&input.kms), destroy_consults };
    let decision = crate::evaluate(&input.request, &mut kms, variant);
    let observed = Observed::from_native(decision, &kms.log);
    (observed, kms.log)
}

/// Runs the rules natively with both variants and checks every invariant.
pub fn check_native(input: &Input) -> Result<(), String> {
    for variant in Variant::ALL {
        let (observed, log) = run_native(input, variant, true);
        check(input, variant, &observed, &log).map_err(|e| format!("{variant:?}: {e}"))?;
    }
    Ok(())
}

fn headers_named<'a>(request: &'a Request, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    request.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn sealed_issue(s: &Sealed) -> Issue {
    Issue::Unwrap { key_id: s.key_id.clone(), wrapped: s.wrapped_key.clone() }
}

/// Checks a key in a decision: handed out now, and the expected one.
fn check_key(what: &str, key: Option<&KeyRef>, expected: Option<Issue>, required: bool) -> Result<(), String> {
    match (key, expected) {
        (None, _) if required => Err(format!("(c) {what} missing: the data must be sealed/opened")),
        (None, _) => Ok(()),
        (Some(KeyRef::Foreign(d)), _) => {
            Err(format!("(c) {what} is a data key the KMS did not hand out during this evaluation ({d})"))
        }
        (Some(KeyRef::Issued(_)), None) => Err(format!("(c) {what} given for an operation that takes none")),
        (Some(KeyRef::Issued(got)), Some(want)) if *got != want => {
            Err(format!("(c) {what} is the wrong data key: got {got:?}, expected {want:?}"))
        }
        _ => Ok(()),
    }
}

/// The invariants. `log` is the KMS of the evaluation that produced
/// `observed`. Returns the first violation, lettered as in the fuzz brief:
///
/// * (a) no Allow while an `x-amz-server-side-encryption` or
///   `x-amz-scal-server-side-encryption` header (any occurrence, any case)
///   is not exactly `AES256`, for the operations that check them; no Allow
///   of PutBucketEncryption for anything but `AES256`;
/// * (b) object writes never seal into, and never accept an object-level
///   encryption header for, a bucket that is not encrypted; and into an
///   encrypted bucket they always seal, under that bucket's key. Under
///   SSE-S3 semantics ([`Variant::AWS`]) the header also seals into a plain
///   bucket, under that bucket's key, and is refused on GET and HEAD;
/// * (c) every data key in a decision was handed out by the KMS during this
///   evaluation, and is the right one (generated under the bucket key for
///   writes, unwrapped from the stored object/upload/source for reads);
/// * (d) SSE-C (and SSE-KMS) headers are never allowed;
/// * (e) a Deny has a status in 400..=599 and a non-empty S3-style code;
/// * (f) response headers are `x-amz-*`; a bucket setting never names a key
///   that is neither the bucket's nor created now, and is never "encrypted"
///   without a key; CreateBucket's setting follows the header / variant.
pub fn check(input: &Input, variant: Variant, observed: &Observed, log: &KmsLog) -> Result<(), String> {
    let request = &input.request;
    let op = request.operation;
    let effects = match observed {
        Observed::Deny { status, code, .. } => {
            if !(400..=599).contains(status) {
                return Err(format!("(e) Deny with status {status}"));
            }
            if code.is_empty() || code.len() > 64 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("(e) Deny with code {code:?}"));
            }
            return Ok(());
        }
        Observed::Allow(effects) => effects,
    };

    // (d)
    for (name, _) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if SSE_C_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            return Err(format!("(d) Allow with the SSE-C header {name:?}"));
        }
        if SSE_KMS_HEADERS.iter().any(|h| lower == *h) {
            return Err(format!("(d) Allow with the SSE-KMS header {name:?}"));
        }
    }

    // (a)
    let object_header_given = headers_named(request, AWS_SSE).chain(headers_named(request, SCAL_SSE)).next().is_some();
    if HEADER_CHECKED.contains(&op) {
        for name in [AWS_SSE, SCAL_SSE] {
            if let Some(bad) = headers_named(request, name).find(|v| *v != AES256) {
                return Err(format!("(a) {op:?} allowed with {name}: {bad:?} (only \"AES256\" may pass)"));
            }
        }
    }
    if op == Operation::PutBucketEncryption && request.requested_algorithm.as_deref() != Some(AES256) {
        return Err(format!("(a) PutBucketEncryption allowed for algorithm {:?}", request.requested_algorithm));
    }

    // (b)
    let encrypted_key = request.bucket_state.as_ref().filter(|b| b.encrypted).and_then(|b| b.key_id.clone());
    let any_key = request.bucket_state.as_ref().and_then(|b| b.key_id.clone());
    let bucket_key = match variant.sse_s3_per_object {
        true if object_header_given => any_key,
        _ => encrypted_key,
    };
    if variant.sse_s3_per_object
        && matches!(op, Operation::GetObject | Operation::HeadObject)
        && headers_named(request, AWS_SSE).next().is_some()
    {
        return Err(format!("(b) {op:?} allowed with {AWS_SSE} (SSE-S3 semantics refuse it)"));
    }
    if OBJECT_WRITES.contains(&op) {
        match &bucket_key {
            None if effects.seal_with.is_some() => {
                return Err(format!("(b) {op:?} seals into a bucket that is not encrypted"));
            }
            None if object_header_given => {
                return Err(format!(
                    "(b) {op:?} accepted an object encryption header on a bucket that is not encrypted"
                ));
            }
            _ => {}
        }
    }

    // (c)
    let target = request.target.as_ref().map(sealed_issue);
    let source = request.source.as_ref().map(sealed_issue);
    let (seal_expected, seal_required) = match op {
        o if OBJECT_WRITES.contains(&o) => {
            (bucket_key.clone().map(|key_id| Issue::Generate { key_id }), bucket_key.is_some())
        }
        Operation::UploadPart | Operation::UploadPartCopy => (target.clone(), target.is_some()),
        _ => (None, false),
    };
    check_key("seal_with", effects.seal_with.as_ref(), seal_expected, seal_required)
        .map_err(|e| format!("{e} [{op:?}]"))?;
    let open_expected = match op {
        Operation::GetObject => target,
        Operation::CopyObject | Operation::UploadPartCopy => source,
        _ => None,
    };
    let open_required = open_expected.is_some();
    check_key("open_with", effects.open_with.as_ref(), open_expected, open_required)
        .map_err(|e| format!("{e} [{op:?}]"))?;

    // (f)
    if let Some((name, _)) =
        effects.response_headers.iter().find(|(n, _)| !n.to_ascii_lowercase().starts_with("x-amz-"))
    {
        return Err(format!("(f) response header {name:?} is not x-amz-*"));
    }
    if let Some(state) = &effects.bucket_state {
        let existing = request.bucket_state.as_ref().and_then(|b| b.key_id.as_deref());
        match state.key_id.as_deref() {
            None if state.encrypted => return Err("(f) bucket setting: encrypted without a key".to_string()),
            Some(k) if Some(k) != existing && !log.created.iter().any(|c| c == k) => {
                return Err(format!("(f) bucket setting names key {k:?}, neither the bucket's nor created now"));
            }
            _ => {}
        }
    }
    match op {
        Operation::CreateBucket => {
            let wanted = variant.encrypt_all || object_header_given;
            match &effects.bucket_state {
                Some(state) if variant.sse_s3_per_object && state.key_id.is_none() => {
                    return Err("(f) CreateBucket under SSE-S3 semantics left the bucket without a key".to_string());
                }
                Some(state) if state.encrypted == wanted => {}
                other => {
                    return Err(format!(
                        "(f) CreateBucket (encryption wanted: {wanted}) allowed with setting {other:?}"
                    ));
                }
            }
        }
        Operation::PutBucketEncryption if !effects.bucket_state.as_ref().is_some_and(|s| s.encrypted) => {
            return Err("(f) PutBucketEncryption allowed without making the bucket encrypted".to_string());
        }
        Operation::DeleteBucketEncryption => {
            let kept = request.bucket_state.as_ref().and_then(|b| b.key_id.clone());
            if effects.bucket_state != Some(BucketState { encrypted: false, key_id: kept }) {
                return Err(format!(
                    "(f) DeleteBucketEncryption must keep the key and stop encrypting, got {:?}",
                    effects.bucket_state
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether two decisions on the same input agree (statuses and codes for a
/// Deny; every effect, keys compared by how they were handed out, for an
/// Allow). Messages may differ.
pub fn same_decision(a: &Observed, b: &Observed) -> Result<(), String> {
    match (a, b) {
        (Observed::Deny { status: s1, code: c1, .. }, Observed::Deny { status: s2, code: c2, .. })
            if s1 == s2 && c1 == c2 =>
        {
            Ok(())
        }
        (Observed::Allow(e1), Observed::Allow(e2)) if e1 == e2 => Ok(()),
        _ => Err(format!("decisions differ:\n  {a:?}\n  {b:?}")),
    }
}
