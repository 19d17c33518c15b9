//! The `sealgate:policy@2.0.0` bindings, the host's KMS as the rules' key
//! service, the conversions between WIT types and the rules' plain types,
//! and [`export_policy!`].
//!
//! Contract 2.0.0 names no key id: each KMS import acts on a key the host
//! put in this request's scope. The rules crate speaks of key ids, so the
//! SDK hands it fixed names for those keys ([`key_names`]) and maps each
//! name back to its import; a name outside the scope is a `not-found`
//! failure, never a call.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

pub use sealgate_policy as rules;

/// The generated bindings of `wit/v2.0.0`, for a module that needs the raw types.
// The canonical ABI flattens the request record into one argument per field.
#[allow(clippy::too_many_arguments)]
pub mod wit {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit/v2.0.0",
        pub_export_macro: true,
        default_bindings_module: "sealgate_policy_sdk::wit",
    });
}

use wit::sealgate::policy::kms;
use wit::sealgate::policy::types::{self, BucketSetting, Effects, Header, Operation, S3Error};

/// A data key held by the host; the module only ever has the handle.
pub use wit::sealgate::policy::kms::DataKey;

/// A request, in the rules crate's types.
pub type Request = rules::Request;
/// A decision whose keys are host handles.
pub type Decision = rules::Decision<DataKey>;

/// The key ids the rules see: names for the keys in the request's scope.
pub mod key_names {
    /// The bucket's master key (`bucket-state.has-key`).
    pub const BUCKET: &str = "bucket-key";
    /// The master key created in this request.
    pub const CREATED: &str = "created-key";
    /// The key the request's target is sealed under (`target-sealed`).
    pub const TARGET: &str = "target-key";
    /// The key the copy source is sealed under (`source-sealed`).
    pub const SOURCE: &str = "source-key";
}

/// The host's KMS imports as the rules' [`rules::KeyService`].
pub struct HostKms;

fn kms_error(e: kms::KmsError) -> rules::KmsError {
    let kind = match e.kind {
        kms::KmsErrorKind::Unavailable => rules::KmsErrorKind::Unavailable,
        kms::KmsErrorKind::Refused => rules::KmsErrorKind::Refused,
        kms::KmsErrorKind::NotFound => rules::KmsErrorKind::NotFound,
        kms::KmsErrorKind::Invalid => rules::KmsErrorKind::Invalid,
    };
    rules::KmsError { kind, message: e.message }
}

fn out_of_scope(key_id: &str) -> rules::KmsError {
    rules::KmsError {
        kind: rules::KmsErrorKind::NotFound,
        message: alloc::format!("no key {key_id:?} in this request"),
    }
}

impl rules::KeyService for HostKms {
    type Key = DataKey;
    fn create_bucket_key(&mut self, _bucket: &str) -> Result<String, rules::KmsError> {
        kms::create_bucket_key().map(|()| key_names::CREATED.to_string()).map_err(kms_error)
    }
    fn generate_data_key(&mut self, key_id: &str) -> Result<DataKey, rules::KmsError> {
        match key_id {
            key_names::BUCKET => kms::generate_data_key().map_err(kms_error),
            _ => Err(out_of_scope(key_id)),
        }
    }
    fn unwrap_data_key(&mut self, key_id: &str, _wrapped: &[u8]) -> Result<DataKey, rules::KmsError> {
        match key_id {
            key_names::TARGET => kms::open_target().map_err(kms_error),
            key_names::SOURCE => kms::open_source().map_err(kms_error),
            _ => Err(out_of_scope(key_id)),
        }
    }
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), rules::KmsError> {
        match key_id {
            key_names::BUCKET => kms::destroy_bucket_key().map_err(kms_error),
            _ => Err(out_of_scope(key_id)),
        }
    }
}

fn operation(op: Operation) -> rules::Operation {
    match op {
        Operation::CreateBucket => rules::Operation::CreateBucket,
        Operation::DeleteBucket => rules::Operation::DeleteBucket,
        Operation::PutBucketEncryption => rules::Operation::PutBucketEncryption,
        Operation::GetBucketEncryption => rules::Operation::GetBucketEncryption,
        Operation::DeleteBucketEncryption => rules::Operation::DeleteBucketEncryption,
        Operation::PutObject => rules::Operation::PutObject,
        Operation::CopyObject => rules::Operation::CopyObject,
        Operation::PostObject => rules::Operation::PostObject,
        Operation::CreateMultipartUpload => rules::Operation::CreateMultipartUpload,
        Operation::UploadPart => rules::Operation::UploadPart,
        Operation::UploadPartCopy => rules::Operation::UploadPartCopy,
        Operation::CompleteMultipartUpload => rules::Operation::CompleteMultipartUpload,
        Operation::GetObject => rules::Operation::GetObject,
        Operation::HeadObject => rules::Operation::HeadObject,
    }
}

fn sealed_under(sealed: bool, name: &str) -> Option<rules::Sealed> {
    sealed.then(|| rules::Sealed { key_id: name.to_string(), wrapped_key: Vec::new() })
}

fn request(r: types::Request) -> Request {
    rules::Request {
        operation: operation(r.operation),
        bucket: r.bucket,
        key: r.key,
        headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        bucket_state: r.bucket_state.map(|b| rules::BucketState {
            encrypted: b.encrypted,
            key_id: b.has_key.then(|| key_names::BUCKET.to_string()),
        }),
        target: sealed_under(r.target_sealed, key_names::TARGET),
        source: sealed_under(r.source_sealed, key_names::SOURCE),
        requested_algorithm: r.requested_algorithm,
    }
}

fn decision(d: Decision) -> types::Decision {
    match d {
        rules::Decision::Deny(e) => {
            types::Decision::Deny(S3Error { status: e.status, code: e.code, message: e.message })
        }
        rules::Decision::Allow(e) => types::Decision::Allow(Effects {
            // The host attaches the bucket's key (its own, or the one
            // created now); the rules' key id says nothing more.
            bucket_setting: e.bucket_state.map(|b| BucketSetting { encrypted: b.encrypted }),
            seal_with: e.seal_with,
            open_with: e.open_with,
            report_algorithm: e.report_algorithm,
            response_headers: e.response_headers.into_iter().map(|(name, value)| Header { name, value }).collect(),
        }),
    }
}

/// Runs rules written against the plain types on a request in WIT types:
/// what [`export_policy!`] calls for each request, and what a module that
/// implements [`wit::Guest`] itself calls for the requests it leaves to the
/// rules.
pub fn evaluate_with(r: types::Request, evaluate: impl FnOnce(&Request, &mut HostKms) -> Decision) -> types::Decision {
    decision(evaluate(&request(r), &mut HostKms))
}

#[doc(hidden)]
pub mod __private {
    pub use alloc::string::{String, ToString};
}

/// Exports a policy module: its name and version (shown by `GET /policy`;
/// printable ASCII, at most 64 characters each) and its rules, a
/// `fn(&Request, &mut HostKms) -> Decision`.
#[macro_export]
macro_rules! export_policy {
    (name: $name:expr, version: $version:expr, evaluate: $evaluate:expr $(,)?) => {
        struct __SealgatePolicy;

        impl $crate::wit::Guest for __SealgatePolicy {
            fn describe() -> $crate::wit::sealgate::policy::types::ModuleInfo {
                $crate::wit::sealgate::policy::types::ModuleInfo {
                    name: $crate::__private::ToString::to_string($name),
                    version: $crate::__private::ToString::to_string($version),
                }
            }

            fn evaluate(
                request: $crate::wit::sealgate::policy::types::Request,
            ) -> $crate::wit::sealgate::policy::types::Decision {
                $crate::evaluate_with(request, $evaluate)
            }
        }

        $crate::wit::export!(__SealgatePolicy with_types_in $crate::wit);
    };
}
