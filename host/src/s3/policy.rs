//! Consulting the policy guest: describe the request, turn its decision
//! into an S3 error or into effects the handlers carry out.

use hyper::HeaderMap;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use super::Gateway;
use crate::kms::KeyContext;
use crate::policy::{Allowed, BucketState, KeyContexts, Operation, Request, Sealed, Verdict};
use crate::storage::{BucketEncryption, BucketRecord, Sealing};

/// Headers the guest never needs to see.
const WITHHELD_HEADERS: [&str; 2] = ["authorization", "x-amz-security-token"];

/// One request, as the guest is told about it.
#[derive(Clone)]
pub(super) struct Ask<'a> {
    pub operation: Operation,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// None while the bucket does not exist yet (CreateBucket).
    pub bucket_state: Option<&'a BucketEncryption>,
    /// The object or upload this request reads or extends.
    pub target: Option<&'a Sealing>,
    /// A copy source: its bucket, key and sealing.
    pub source: Option<(&'a str, &'a str, Option<&'a Sealing>)>,
    pub requested_algorithm: Option<String>,
}

impl<'a> Ask<'a> {
    pub fn new(operation: Operation, bucket: &'a str, key: Option<&'a str>, headers: &'a HeaderMap) -> Self {
        Self {
            operation,
            bucket,
            key,
            headers,
            bucket_state: None,
            target: None,
            source: None,
            requested_algorithm: None,
        }
    }

    /// The ask about a write into `bucket`, whose encryption the policy sees.
    pub fn in_bucket(mut self, bucket: &'a BucketRecord) -> Self {
        self.bucket_state = Some(&bucket.encryption);
        self
    }
}

fn sealed(s: &Sealing) -> Sealed {
    Sealed { key_id: s.key_id.clone(), wrapped_key: s.wrapped_key.clone() }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !WITHHELD_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// The guest's denial as the S3 error it names.
fn denial(status: u16, code: String, message: String) -> S3Error {
    let code = S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::Custom(code.into()));
    let mut e = S3Error::with_message(code, message);
    if let Ok(status) = hyper::StatusCode::from_u16(status) {
        e.set_status_code(status);
    }
    e
}

impl Gateway {
    /// The policy's answer to a write into `bucket`, a record that may be a
    /// cached one. When it refuses (the policy, or the KMS behind it) and
    /// the record as it is now differs in what the policy saw (a rotation or
    /// a new master key through another gateway made the cached one name a
    /// key no longer the bucket's), it asks again with that record, which
    /// replaces `bucket`; otherwise the refusal stands.
    pub(super) async fn consult_for_write<T>(
        &self,
        req: &S3Request<T>,
        ask: Ask<'_>,
        bucket: &mut BucketRecord,
    ) -> S3Result<Allowed> {
        let refusal = match self.consult(ask.clone().in_bucket(bucket)).await {
            Ok(allowed) => return Ok(allowed),
            Err(refusal) => refusal,
        };
        let now = self.owned_bucket(req, &bucket.name).await?;
        if now.encryption == bucket.encryption && now.generation == bucket.generation {
            return Err(refusal);
        }
        *bucket = now;
        self.consult(ask.in_bucket(bucket)).await
    }

    pub(super) async fn consult(&self, ask: Ask<'_>) -> S3Result<Allowed> {
        let request = Request {
            operation: ask.operation,
            bucket: ask.bucket.to_owned(),
            key: ask.key.map(str::to_owned),
            headers: header_list(ask.headers),
            bucket_state: ask.bucket_state.map(|b| BucketState { encrypted: b.encrypted, key_id: b.key_id.clone() }),
            target: ask.target.map(sealed),
            source: ask.source.and_then(|(_, _, s)| s.map(sealed)),
            requested_algorithm: ask.requested_algorithm,
        };
        let contexts = KeyContexts {
            target: KeyContext { bucket: ask.bucket.to_owned(), key: ask.key.unwrap_or_default().to_owned() },
            source: ask.source.map(|(bucket, key, _)| KeyContext { bucket: bucket.to_owned(), key: key.to_owned() }),
        };
        match self.policy.evaluate(request, contexts).await {
            Ok(Verdict::Allow(allowed)) => Ok(*allowed),
            Ok(Verdict::Deny { status, code, message }) => Err(denial(status, code, message)),
            Err(_) => Err(s3_error!(InternalError, "We encountered an internal error. Please try again.")),
        }
    }
}

impl Gateway {
    /// What a sealed write stores about its data key, in the format the
    /// storage keeps.
    pub(super) fn sealing_of(&self, key: &crate::kms::DataKey) -> Sealing {
        Sealing { key_id: key.key_id.clone(), wrapped_key: key.wrapped.clone(), format: self.storage.sealed_format() }
    }

    /// How a new object's metadata is stored: sealed with its data key
    /// when the object is sealed.
    pub(super) fn stored_metadata(
        &self,
        key: Option<&crate::kms::DataKey>,
        metadata: &crate::storage::ObjectMetadata,
    ) -> crate::storage::StoredMetadata {
        use crate::storage::StoredMetadata;
        match key {
            None => StoredMetadata::Plain(metadata.clone()),
            Some(key) => StoredMetadata::Sealed {
                blob: crate::crypto::sealed_metadata::seal(&self.sealing_of(key), &key.plaintext, metadata),
                clear: metadata.clone(),
            },
        }
    }
}

/// Opens the sealed metadata of an object stored upstream (format 2) with
/// the data key the policy released for it; other objects carry theirs in
/// the clear already.
pub(super) fn open_metadata(
    object: &mut crate::storage::ObjectRecord,
    key: Option<&crate::kms::DataKey>,
) -> S3Result<()> {
    let Some(blob) = object.sealed_metadata.take() else { return Ok(()) };
    let Some(key) = key else {
        tracing::error!("the policy released no key for an object with sealed metadata");
        return Err(s3_error!(InternalError, "We encountered an internal error. Please try again."));
    };
    object.metadata = crate::crypto::sealed_metadata::open(&blob, &key.plaintext).map_err(|e| {
        tracing::error!(error = %e, "sealed object metadata did not open");
        s3_error!(InternalError, "We encountered an internal error. Please try again.")
    })?;
    Ok(())
}
