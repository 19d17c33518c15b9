//! The checks a candidate module must pass before it is swapped in:
//! requests the product documentation fixes the answer to, each on a
//! throw-away store with an in-memory KMS, run through the same evaluation
//! (and the same host-enforced invariants) as live traffic. Bucket names,
//! object keys and key ids are random and change every round, so a module
//! cannot recognise the self-test by a fixed name and behave only there.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rand::Rng;
use wasmtime::Engine;
use zeroize::Zeroizing;

use super::contract::{BucketState, Operation, PolicyPre, Request, Sealed};
use super::{KeyContexts, PolicyError, Verdict, evaluate_once};
use crate::kms::{DataKey, KeyContext, Kms, KmsError};

/// Rounds of the whole set of cases, each with new names.
const ROUNDS: usize = 3;

/// Hands out throw-away keys; never talks to the real KMS. Remembers which
/// master keys exist, so that a key left behind by a denied request shows.
#[derive(Default)]
struct SelfTestKms {
    live: Mutex<HashSet<String>>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// A key id shaped like the embedded KMS's.
fn random_key_id() -> String {
    format!("local-{}", random_hex(16))
}

#[async_trait::async_trait]
impl Kms for SelfTestKms {
    fn backend(&self) -> &'static str {
        "self-test"
    }
    async fn create_key(&self, _bucket: &str) -> Result<String, KmsError> {
        let key_id = random_key_id();
        self.live.lock().expect("self-test KMS lock").insert(key_id.clone());
        Ok(key_id)
    }
    async fn generate_data_key(&self, key_id: &str, _context: &KeyContext) -> Result<DataKey, KmsError> {
        Ok(DataKey { key_id: key_id.to_owned(), plaintext: Zeroizing::new([7; 32]), wrapped: vec![1, 2, 3] })
    }
    async fn wrap_data_key(&self, _key_id: &str, _key: &[u8; 32], _context: &KeyContext) -> Result<Vec<u8>, KmsError> {
        Ok(vec![1, 2, 3])
    }
    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], _context: &KeyContext) -> Result<DataKey, KmsError> {
        Ok(DataKey { key_id: key_id.to_owned(), plaintext: Zeroizing::new([7; 32]), wrapped: wrapped.to_vec() })
    }
    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.live.lock().expect("self-test KMS lock").remove(key_id);
        Ok(())
    }
    async fn health(&self) -> Result<(), KmsError> {
        Ok(())
    }
}

pub(super) fn kms() -> Arc<dyn Kms> {
    Arc::new(SelfTestKms::default())
}

/// One round's names: a bucket and object, a copy source elsewhere, and
/// the master keys of both buckets.
pub(super) struct Names {
    bucket: String,
    key: String,
    source_bucket: String,
    source_key: String,
    bucket_key_id: String,
    source_key_id: String,
}

impl Names {
    pub(super) fn random() -> Self {
        const WORDS: [&str; 6] = ["data", "logs", "backup", "media", "reports", "archive"];
        let word = || WORDS[rand::rng().random_range(0..WORDS.len())];
        Self {
            bucket: format!("{}-{}", word(), random_hex(4)),
            key: format!("{}/{}.bin", word(), random_hex(6)),
            source_bucket: format!("{}-{}", word(), random_hex(4)),
            source_key: format!("{}/{}", word(), random_hex(6)),
            bucket_key_id: random_key_id(),
            source_key_id: random_key_id(),
        }
    }

    pub(super) fn contexts(&self) -> KeyContexts {
        KeyContexts {
            target: KeyContext { bucket: self.bucket.clone(), key: self.key.clone() },
            source: Some(KeyContext { bucket: self.source_bucket.clone(), key: self.source_key.clone() }),
        }
    }

    pub(super) fn request(
        &self,
        operation: Operation,
        headers: &[(&str, &str)],
        bucket: Option<BucketState>,
    ) -> Request {
        Request {
            operation,
            bucket: self.bucket.clone(),
            key: Some(self.key.clone()),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            bucket_state: bucket,
            target: None,
            source: None,
            requested_algorithm: None,
        }
    }

    fn encrypted(&self) -> Option<BucketState> {
        Some(BucketState { encrypted: true, key_id: Some(self.bucket_key_id.clone()) })
    }

    fn sealed_here(&self) -> Option<Sealed> {
        Some(Sealed { key_id: self.bucket_key_id.clone(), wrapped_key: random_hex(8).into_bytes() })
    }

    fn sealed_source(&self) -> Option<Sealed> {
        Some(Sealed { key_id: self.source_key_id.clone(), wrapped_key: random_hex(8).into_bytes() })
    }
}

fn plain() -> Option<BucketState> {
    Some(BucketState { encrypted: false, key_id: None })
}

/// What a sane module must answer.
enum Expect {
    Deny(u16, &'static str),
    EncryptedBucket,
    Seal,
    NoSeal,
    Open,
    SealAndOpen,
    Allow,
}

fn cases(n: &Names) -> Vec<(&'static str, Request, Expect)> {
    let scal = "x-amz-scal-server-side-encryption";
    let sse = "x-amz-server-side-encryption";
    let with = |mut request: Request, target: Option<Sealed>, source: Option<Sealed>| {
        request.target = target;
        request.source = source;
        request
    };
    vec![
        (
            "encrypted bucket creation",
            n.request(Operation::CreateBucket, &[(scal, "AES256")], None),
            Expect::EncryptedBucket,
        ),
        (
            "unsupported bucket algorithm",
            n.request(Operation::CreateBucket, &[(scal, "aws:kms")], None),
            Expect::Deny(400, "InvalidArgument"),
        ),
        ("put into an encrypted bucket", n.request(Operation::PutObject, &[], n.encrypted()), Expect::Seal),
        ("put into a plaintext bucket", n.request(Operation::PutObject, &[], plain()), Expect::NoSeal),
        (
            "object header on a plaintext bucket",
            n.request(Operation::PutObject, &[(sse, "AES256")], plain()),
            Expect::Deny(400, "InvalidArgument"),
        ),
        (
            "non-AES256 object header",
            n.request(Operation::PutObject, &[(sse, "aws:kms")], n.encrypted()),
            Expect::Deny(400, "InvalidArgument"),
        ),
        (
            "SSE-C",
            n.request(
                Operation::PutObject,
                &[("x-amz-server-side-encryption-customer-algorithm", "AES256")],
                n.encrypted(),
            ),
            Expect::Deny(501, "NotImplemented"),
        ),
        (
            "get of a sealed object",
            with(n.request(Operation::GetObject, &[], n.encrypted()), n.sealed_here(), None),
            Expect::Open,
        ),
        (
            "head of a sealed object",
            with(n.request(Operation::HeadObject, &[], n.encrypted()), n.sealed_here(), None),
            Expect::Allow,
        ),
        (
            "copy of a sealed object into an encrypted bucket",
            with(n.request(Operation::CopyObject, &[], n.encrypted()), None, n.sealed_source()),
            Expect::SealAndOpen,
        ),
        (
            "part of a sealed upload",
            with(n.request(Operation::UploadPart, &[], n.encrypted()), n.sealed_here(), None),
            Expect::Seal,
        ),
        ("deletion of an encrypted bucket", n.request(Operation::DeleteBucket, &[], n.encrypted()), Expect::Allow),
    ]
}

fn as_expected(expect: &Expect, verdict: &Verdict) -> bool {
    match (expect, verdict) {
        (Expect::Deny(status, code), Verdict::Deny { status: s, code: c, .. }) => s == status && c == code,
        (Expect::EncryptedBucket, Verdict::Allow(a)) => {
            a.bucket_state.as_ref().is_some_and(|b| b.encrypted && b.key_id.is_some())
        }
        (Expect::Seal, Verdict::Allow(a)) => a.seal_with.is_some(),
        (Expect::NoSeal, Verdict::Allow(a)) => a.seal_with.is_none(),
        (Expect::Open, Verdict::Allow(a)) => a.open_with.is_some(),
        (Expect::SealAndOpen, Verdict::Allow(a)) => a.seal_with.is_some() && a.open_with.is_some(),
        (Expect::Allow, Verdict::Allow(_)) => true,
        _ => false,
    }
}

pub(super) async fn run(engine: &Engine, pre: &PolicyPre, sha256: &str) -> Result<(), PolicyError> {
    for _ in 0..ROUNDS {
        let names = Names::random();
        for (name, request, expect) in cases(&names) {
            let kms = Arc::new(SelfTestKms::default());
            let verdict = evaluate_once(engine, pre, sha256, kms.clone(), &request, names.contexts())
                .await
                .map_err(|e| PolicyError::SelfTest(format!("{name}: {e}")))?;
            if !as_expected(&expect, &verdict) {
                return Err(PolicyError::SelfTest(format!("{name}: unexpected decision")));
            }
            if let Verdict::Allow(allowed) = verdict {
                // What a handler does when storing fails: the request's keys go.
                allowed.after.failed().await;
            }
            if !kms.live.lock().expect("self-test KMS lock").is_empty() {
                return Err(PolicyError::SelfTest(format!("{name}: a master key was left behind")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DEFAULT_MODULE, contract, engine, prepare};

    const CONTRACT_1_DEFAULT: &[u8] = include_bytes!("../../../guest/fixtures/contract-1.0.0/default.wasm");

    /// What a verdict decides, without the key handles.
    fn outline(verdict: &Verdict) -> String {
        match verdict {
            Verdict::Deny { status, code, .. } => format!("deny {status} {code}"),
            Verdict::Allow(a) => format!(
                "allow bucket={:?} seal={} open={} report={:?} headers={:?}",
                a.bucket_state.as_ref().map(|b| (b.encrypted, b.key_id.is_some())),
                a.seal_with.is_some(),
                a.open_with.is_some(),
                a.report_algorithm,
                a.response_headers,
            ),
        }
    }

    /// The 1.0.0 default module, run through its adapter, decides every
    /// self-test case as the 2.0.0 one does.
    #[tokio::test]
    async fn the_contract_1_default_module_decides_as_the_contract_2_one() {
        let engine = engine().unwrap();
        let mut linker = wasmtime::component::Linker::new(&engine);
        contract::add_to_linker(&mut linker).unwrap();
        let old = prepare(&engine, &linker, CONTRACT_1_DEFAULT.to_vec(), "fixture".into()).await.unwrap();
        let new = prepare(&engine, &linker, DEFAULT_MODULE.to_vec(), "embedded".into()).await.unwrap();
        assert_eq!((old.info.contract.as_str(), new.info.contract.as_str()), ("1.0.0", "2.0.0"));
        let names = Names::random();
        for (name, request, _) in cases(&names) {
            let mut outlines = Vec::new();
            for loaded in [&old, &new] {
                let kms = Arc::new(SelfTestKms::default());
                let verdict =
                    evaluate_once(&engine, &loaded.pre, &loaded.info.sha256, kms, &request, names.contexts()).await;
                outlines.push(verdict.map(|v| outline(&v)).unwrap_or_else(|e| format!("error {e}")));
            }
            assert_eq!(outlines[0], outlines[1], "{name}");
        }
    }
}
