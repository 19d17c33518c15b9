//! The checks a candidate module must pass before it is swapped in: fixed
//! requests, each on a throw-away store with an in-memory KMS, whose
//! decisions must be the ones the product documentation requires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use wasmtime::Engine;
use zeroize::Zeroizing;

use super::guest::{BucketState, Operation, PolicyPre, Request, Sealed};
use super::{KeyContexts, PolicyError, Verdict, new_store};
use crate::kms::{DataKey, KeyContext, Kms, KmsError};

/// Hands out throw-away keys; never talks to the real KMS.
struct SelfTestKms {
    next: AtomicU32,
}

#[async_trait::async_trait]
impl Kms for SelfTestKms {
    fn backend(&self) -> &'static str {
        "self-test"
    }
    async fn create_key(&self, _bucket: &str) -> Result<String, KmsError> {
        Ok(format!("selftest-{}", self.next.fetch_add(1, Ordering::Relaxed)))
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
    async fn destroy_key(&self, _key_id: &str) -> Result<(), KmsError> {
        Ok(())
    }
    async fn health(&self) -> Result<(), KmsError> {
        Ok(())
    }
}

pub(super) fn kms() -> Arc<dyn Kms> {
    Arc::new(SelfTestKms { next: AtomicU32::new(1) })
}

pub(super) fn contexts() -> KeyContexts {
    KeyContexts { target: KeyContext { bucket: "selftest".into(), key: "object".into() }, source: None }
}

fn request(operation: Operation, headers: &[(&str, &str)], bucket: Option<BucketState>) -> Request {
    Request {
        operation,
        bucket: "selftest".into(),
        key: Some("object".into()),
        headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        bucket_state: bucket,
        target: None,
        source: None,
        requested_algorithm: None,
    }
}

fn encrypted() -> Option<BucketState> {
    Some(BucketState { encrypted: true, key_id: Some("selftest-bucket".into()) })
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
}

fn cases() -> Vec<(&'static str, Request, Expect)> {
    let scal = "x-amz-scal-server-side-encryption";
    let mut get = request(Operation::GetObject, &[], encrypted());
    get.target = Some(Sealed { key_id: "selftest-bucket".into(), wrapped_key: vec![9; 8] });
    vec![
        (
            "encrypted bucket creation",
            request(Operation::CreateBucket, &[(scal, "AES256")], None),
            Expect::EncryptedBucket,
        ),
        (
            "unsupported bucket algorithm",
            request(Operation::CreateBucket, &[(scal, "aws:kms")], None),
            Expect::Deny(400, "InvalidArgument"),
        ),
        ("put into an encrypted bucket", request(Operation::PutObject, &[], encrypted()), Expect::Seal),
        ("put into a plaintext bucket", request(Operation::PutObject, &[], plain()), Expect::NoSeal),
        (
            "object header on a plaintext bucket",
            request(Operation::PutObject, &[("x-amz-server-side-encryption", "AES256")], plain()),
            Expect::Deny(400, "InvalidArgument"),
        ),
        (
            "non-AES256 object header",
            request(Operation::PutObject, &[("x-amz-server-side-encryption", "aws:kms")], encrypted()),
            Expect::Deny(400, "InvalidArgument"),
        ),
        (
            "SSE-C",
            request(
                Operation::PutObject,
                &[("x-amz-server-side-encryption-customer-algorithm", "AES256")],
                encrypted(),
            ),
            Expect::Deny(501, "NotImplemented"),
        ),
        ("get of a sealed object", get, Expect::Open),
    ]
}

pub(super) async fn run(
    engine: &Engine,
    pre: &PolicyPre<super::GuestState>,
    sha256: &str,
    _real_kms: Arc<dyn Kms>,
) -> Result<(), PolicyError> {
    for (name, request, expect) in cases() {
        let mut store = new_store(engine, kms(), contexts(), sha256);
        let bucket_key = request.bucket_state.as_ref().and_then(|b| b.key_id.clone());
        let decision = super::call_evaluate(pre, &mut store, &request)
            .await
            .map_err(|e| PolicyError::SelfTest(format!("{name}: {e}")))?;
        let verdict = super::resolve(decision, &mut store, bucket_key.as_deref(), kms())
            .map_err(|e| PolicyError::SelfTest(format!("{name}: {e}")))?;
        let ok = match (&expect, &verdict) {
            (Expect::Deny(status, code), Verdict::Deny { status: s, code: c, .. }) => s == status && c == code,
            (Expect::EncryptedBucket, Verdict::Allow(a)) => {
                a.bucket_state.as_ref().is_some_and(|b| b.encrypted && b.key_id.is_some())
            }
            (Expect::Seal, Verdict::Allow(a)) => a.seal_with.is_some(),
            (Expect::NoSeal, Verdict::Allow(a)) => a.seal_with.is_none(),
            (Expect::Open, Verdict::Allow(a)) => a.open_with.is_some(),
            _ => false,
        };
        if !ok {
            return Err(PolicyError::SelfTest(format!("{name}: unexpected decision")));
        }
    }
    Ok(())
}
