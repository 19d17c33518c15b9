//! The rules, one function per kind of request.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec;

use crate::*;

const SCAL_SSE: &str = "x-amz-scal-server-side-encryption";
const AWS_SSE: &str = "x-amz-server-side-encryption";
const SSE_C_PREFIXES: [&str; 2] =
    ["x-amz-server-side-encryption-customer-", "x-amz-copy-source-server-side-encryption-customer-"];
const SSE_KMS_HEADERS: [&str; 2] =
    ["x-amz-server-side-encryption-aws-kms-key-id", "x-amz-server-side-encryption-context"];

fn deny<K>(status: u16, code: &str, message: impl Into<String>) -> Decision<K> {
    Decision::Deny(S3Error { status, code: code.to_owned(), message: message.into() })
}

fn allow<K>(effects: Effects<K>) -> Decision<K> {
    Decision::Allow(effects)
}

fn sealed_response() -> vec::Vec<(String, String)> {
    vec![(AWS_SSE.to_owned(), AES256.to_owned())]
}

/// Turns a KMS failure into the S3 error the client should see: the KMS
/// being down is the service being unavailable, anything else is internal.
fn kms_failure<K>(e: KmsError) -> Decision<K> {
    match e.kind {
        KmsErrorKind::Unavailable => {
            deny(503, "ServiceUnavailable", "The key management service is unavailable. Please try again.")
        }
        kind => {
            deny(500, "InternalError", format!("The key management service refused the request ({}).", kind.code()))
        }
    }
}

/// Evaluates one request. Every path returns a decision; none panics.
pub fn evaluate<S: KeyService>(request: &Request, kms: &mut S, variant: Variant) -> Decision<S::Key> {
    if let Some(refusal) = unsupported_encryption(request) {
        return refusal;
    }
    match request.operation {
        Operation::CreateBucket => create_bucket(request, kms, variant),
        Operation::DeleteBucket => delete_bucket(request, kms),
        Operation::PutBucketEncryption => put_bucket_encryption(request, kms),
        Operation::GetBucketEncryption => get_bucket_encryption(request),
        Operation::DeleteBucketEncryption => delete_bucket_encryption(request),
        Operation::PutObject | Operation::PostObject | Operation::CreateMultipartUpload => {
            new_object(request, kms, None, variant)
        }
        Operation::CopyObject => copy_object(request, kms, variant),
        Operation::UploadPart => upload_part(request, kms),
        Operation::UploadPartCopy => upload_part_copy(request, kms),
        Operation::CompleteMultipartUpload => sealed_headers_only(request.target.is_some()),
        Operation::GetObject | Operation::HeadObject
            if variant.sse_s3_per_object && request.header(AWS_SSE).is_some() =>
        {
            deny(400, "InvalidArgument", "The x-amz-server-side-encryption header is not supported for this operation.")
        }
        Operation::GetObject => get_object(request, kms),
        Operation::HeadObject => sealed_headers_only(request.target.is_some()),
    }
}

/// Rule 4: SSE-C and SSE-KMS are refused, never ignored.
fn unsupported_encryption<K>(request: &Request) -> Option<Decision<K>> {
    if SSE_C_PREFIXES.iter().any(|p| request.has_header_prefix(p)) {
        return Some(deny(
            501,
            "NotImplemented",
            "Server-side encryption with customer-provided keys (SSE-C) is not supported.",
        ));
    }
    if SSE_KMS_HEADERS.iter().any(|h| request.header(h).is_some()) {
        return Some(deny(
            400,
            "InvalidArgument",
            "Server-side encryption with a client-chosen KMS key is not supported; use bucket encryption.",
        ));
    }
    None
}

/// Whether the request carries either encryption header (its values are
/// checked by [`unsupported_encryption_value`]).
fn encryption_header_given(request: &Request) -> bool {
    [AWS_SSE, SCAL_SSE].into_iter().any(|name| request.header(name).is_some())
}

/// The first value of the encryption headers that is not `AES256`, if any.
fn unsupported_encryption_value(request: &Request) -> Option<&str> {
    [AWS_SSE, SCAL_SSE].into_iter().flat_map(|name| request.header_values(name)).find(|v| *v != AES256)
}

fn unsupported_method<K>(value: &str) -> Decision<K> {
    deny(
        400,
        "InvalidArgument",
        format!("The encryption method specified ({value:?}) is not supported; only AES256 is."),
    )
}

/// Rule 3: an object-level encryption header must be `AES256` (every
/// occurrence of it), and only on an encrypted bucket.
fn object_header_check<K>(request: &Request, bucket_encrypted: bool) -> Result<(), Decision<K>> {
    if let Some(value) = unsupported_encryption_value(request) {
        return Err(unsupported_method(value));
    }
    if encryption_header_given(request) && !bucket_encrypted {
        return Err(deny(
            400,
            "InvalidArgument",
            "Object encryption headers are accepted only in a bucket with bucket encryption.",
        ));
    }
    Ok(())
}

/// Rule 1 (and the `encrypt-all` variant). Under SSE-S3 semantics every
/// bucket gets its master key now, encrypted or not: any object written
/// into it may ask to be sealed, and only the request that creates a
/// bucket may create its key (a host-enforced invariant).
fn create_bucket<S: KeyService>(request: &Request, kms: &mut S, variant: Variant) -> Decision<S::Key> {
    if let Some(value) = unsupported_encryption_value(request) {
        return unsupported_method(value);
    }
    let wanted = variant.encrypt_all || encryption_header_given(request);
    if !wanted && !variant.sse_s3_per_object {
        return allow(Effects { bucket_state: Some(BucketState::default()), ..Effects::default() });
    }
    match kms.create_bucket_key(&request.bucket) {
        Ok(key_id) => allow(Effects {
            bucket_state: Some(BucketState { encrypted: wanted, key_id: Some(key_id) }),
            ..Effects::default()
        }),
        Err(e) => kms_failure(e),
    }
}

/// Rule 7: the master key goes with the (empty) bucket.
fn delete_bucket<S: KeyService>(request: &Request, kms: &mut S) -> Decision<S::Key> {
    if let Some(key_id) = request.bucket_state.as_ref().and_then(|b| b.key_id.as_deref())
        && let Err(e) = kms.destroy_bucket_key(key_id)
    {
        return kms_failure(e);
    }
    allow(Effects::default())
}

/// Rule 6.
fn put_bucket_encryption<S: KeyService>(request: &Request, kms: &mut S) -> Decision<S::Key> {
    match request.requested_algorithm.as_deref() {
        Some(AES256) => {}
        Some("aws:kms" | "aws:kms:dsse") => {
            return deny(400, "InvalidArgument", "Only AES256 bucket encryption is supported.");
        }
        _ => {
            return deny(
                400,
                "MalformedXML",
                "The XML you provided was not well-formed or did not validate against our published schema",
            );
        }
    }
    let existing = request.bucket_state.as_ref().and_then(|b| b.key_id.clone());
    let key_id = match existing {
        Some(key_id) => key_id,
        None => match kms.create_bucket_key(&request.bucket) {
            Ok(key_id) => key_id,
            Err(e) => return kms_failure(e),
        },
    };
    allow(Effects { bucket_state: Some(BucketState { encrypted: true, key_id: Some(key_id) }), ..Effects::default() })
}

fn get_bucket_encryption<K>(request: &Request) -> Decision<K> {
    if request.bucket_state.as_ref().is_some_and(|b| b.encrypted) {
        allow(Effects { report_algorithm: Some(AES256.to_owned()), ..Effects::default() })
    } else {
        deny(
            404,
            "ServerSideEncryptionConfigurationNotFoundError",
            "The server side encryption configuration was not found",
        )
    }
}

/// New objects are plaintext again; the key stays for the sealed ones.
fn delete_bucket_encryption<K>(request: &Request) -> Decision<K> {
    let key_id = request.bucket_state.as_ref().and_then(|b| b.key_id.clone());
    allow(Effects { bucket_state: Some(BucketState { encrypted: false, key_id }), ..Effects::default() })
}

fn encrypted_bucket_key(request: &Request) -> Option<&str> {
    request.bucket_state.as_ref().filter(|b| b.encrypted).and_then(|b| b.key_id.as_deref())
}

/// The bucket key a new object is sealed under, None for plaintext: rule 2
/// (every create path into an encrypted bucket is sealed) and rule 3 (the
/// object header only on an encrypted bucket), or, under SSE-S3 semantics,
/// the object header seals that object in any bucket.
fn new_object_key<K>(request: &Request, variant: Variant) -> Result<Option<&str>, Decision<K>> {
    if !variant.sse_s3_per_object {
        let key_id = encrypted_bucket_key(request);
        return object_header_check(request, key_id.is_some()).map(|()| key_id);
    }
    if let Some(value) = unsupported_encryption_value(request) {
        return Err(unsupported_method(value));
    }
    if !(encryption_header_given(request) || encrypted_bucket_key(request).is_some()) {
        return Ok(None);
    }
    match request.bucket_state.as_ref().and_then(|b| b.key_id.as_deref()) {
        Some(key_id) => Ok(Some(key_id)),
        None => Err(deny(
            400,
            "InvalidArgument",
            "This bucket has no master key for SSE-S3 (it was created under another policy module); \
             turn bucket encryption on once (PutBucketEncryption) to give it one.",
        )),
    }
}

fn new_object<S: KeyService>(
    request: &Request,
    kms: &mut S,
    open_with: Option<S::Key>,
    variant: Variant,
) -> Decision<S::Key> {
    let key_id = match new_object_key(request, variant) {
        Ok(key_id) => key_id,
        Err(refusal) => return refusal,
    };
    let Some(key_id) = key_id else {
        return allow(Effects { open_with, ..Effects::default() });
    };
    match kms.generate_data_key(key_id) {
        Ok(key) => allow(Effects {
            seal_with: Some(key),
            open_with,
            response_headers: sealed_response(),
            ..Effects::default()
        }),
        Err(e) => kms_failure(e),
    }
}

fn unwrap<S: KeyService>(kms: &mut S, sealed: Option<&Sealed>) -> Result<Option<S::Key>, Decision<S::Key>> {
    match sealed {
        None => Ok(None),
        Some(s) => kms.unwrap_data_key(&s.key_id, &s.wrapped_key).map(Some).map_err(kms_failure),
    }
}

/// The destination decides (its bucket, and the request's header under
/// SSE-S3 semantics); a sealed source is opened for the copy.
fn copy_object<S: KeyService>(request: &Request, kms: &mut S, variant: Variant) -> Decision<S::Key> {
    // Refused before the source's key is unwrapped, so that a refusal costs no KMS call.
    if let Err(refusal) = new_object_key::<S::Key>(request, variant) {
        return refusal;
    }
    match unwrap(kms, request.source.as_ref()) {
        Ok(source_key) => new_object(request, kms, source_key, variant),
        Err(refusal) => refusal,
    }
}

/// Parts follow the upload: sealed with the upload's key if it was sealed
/// at creation, whatever the bucket says now.
fn upload_part<S: KeyService>(request: &Request, kms: &mut S) -> Decision<S::Key> {
    if let Err(refusal) = object_header_check::<S::Key>(request, request.target.is_some()) {
        return refusal;
    }
    match unwrap(kms, request.target.as_ref()) {
        Ok(Some(key)) => {
            allow(Effects { seal_with: Some(key), response_headers: sealed_response(), ..Effects::default() })
        }
        Ok(None) => allow(Effects::default()),
        Err(refusal) => refusal,
    }
}

fn upload_part_copy<S: KeyService>(request: &Request, kms: &mut S) -> Decision<S::Key> {
    let source_key = match unwrap(kms, request.source.as_ref()) {
        Ok(k) => k,
        Err(refusal) => return refusal,
    };
    match upload_part(request, kms) {
        Decision::Allow(effects) => allow(Effects { open_with: source_key, ..effects }),
        deny => deny,
    }
}

fn get_object<S: KeyService>(request: &Request, kms: &mut S) -> Decision<S::Key> {
    match unwrap(kms, request.target.as_ref()) {
        Ok(Some(key)) => {
            allow(Effects { open_with: Some(key), response_headers: sealed_response(), ..Effects::default() })
        }
        Ok(None) => allow(Effects::default()),
        Err(refusal) => refusal,
    }
}

/// Rule 5 for requests that read no data: say whether the object is sealed.
fn sealed_headers_only<K>(sealed: bool) -> Decision<K> {
    let response_headers = if sealed { sealed_response() } else { vec::Vec::new() };
    allow(Effects { response_headers, ..Effects::default() })
}

#[cfg(test)]
mod tests;
