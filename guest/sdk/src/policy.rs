//! The `sealgate:policy@1.0.0` bindings, the host's KMS as the rules' key
//! service, the conversions between WIT types and the rules' plain types,
//! and [`export_policy!`].

use alloc::string::String;

pub use sealgate_policy as rules;

/// The generated bindings of `wit/`, for a module that needs the raw types.
pub mod wit {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "sealgate_policy_sdk::wit",
    });
}

use wit::sealgate::policy::kms;
use wit::sealgate::policy::types::{self, BucketState, Effects, Operation, S3Error, Sealed};

/// A data key held by the host; the module only ever has the handle.
pub use wit::sealgate::policy::kms::DataKey;

/// A request, in the rules crate's types.
pub type Request = rules::Request;
/// A decision whose keys are host handles.
pub type Decision = rules::Decision<DataKey>;

/// The host's KMS imports as the rules' [`rules::KeyService`].
pub struct HostKms;

fn kms_error(e: kms::KmsError) -> rules::KmsError {
    rules::KmsError { code: e.code, message: e.message }
}

impl rules::KeyService for HostKms {
    type Key = DataKey;
    fn create_bucket_key(&mut self, bucket: &str) -> Result<String, rules::KmsError> {
        kms::create_bucket_key(bucket).map_err(kms_error)
    }
    fn generate_data_key(&mut self, key_id: &str) -> Result<DataKey, rules::KmsError> {
        kms::generate_data_key(key_id).map_err(kms_error)
    }
    fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, rules::KmsError> {
        kms::unwrap_data_key(key_id, wrapped).map_err(kms_error)
    }
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), rules::KmsError> {
        kms::destroy_bucket_key(key_id).map_err(kms_error)
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

fn sealed(s: Sealed) -> rules::Sealed {
    rules::Sealed { key_id: s.key_id, wrapped_key: s.wrapped_key }
}

fn request(r: types::Request) -> Request {
    rules::Request {
        operation: operation(r.operation),
        bucket: r.bucket,
        key: r.key,
        headers: r.headers,
        bucket_state: r.bucket_state.map(|b| rules::BucketState { encrypted: b.encrypted, key_id: b.key_id }),
        target: r.target.map(sealed),
        source: r.source.map(sealed),
        requested_algorithm: r.requested_algorithm,
    }
}

fn decision(d: Decision) -> types::Decision {
    match d {
        rules::Decision::Deny(e) => {
            types::Decision::Deny(S3Error { status: e.status, code: e.code, message: e.message })
        }
        rules::Decision::Allow(e) => types::Decision::Allow(Effects {
            bucket_state: e.bucket_state.map(|b| BucketState { encrypted: b.encrypted, key_id: b.key_id }),
            seal_with: e.seal_with,
            open_with: e.open_with,
            report_algorithm: e.report_algorithm,
            response_headers: e.response_headers,
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
            fn describe() -> ($crate::__private::String, $crate::__private::String) {
                ($crate::__private::ToString::to_string($name), $crate::__private::ToString::to_string($version))
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
