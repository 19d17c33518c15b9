//! Contract `sealgate:policy@1.0.0`, which the host still runs: its raw
//! bindings and the conversions to the rules' types, for modules that must
//! be built against it (the hostile test fixtures name key ids, which only
//! 1.0.0 can express). New modules use the crate root (2.0.0).
//!
//! A 1.0.0 module implements [`wit::Guest`] and exports itself with
//! `sealgate_policy_sdk::export_v1!(MyPolicy with_types_in sealgate_policy_sdk::v1::wit);`.

use alloc::string::String;

use sealgate_policy as rules;

/// The generated bindings of `wit/v1.0.0`.
pub mod wit {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit/v1.0.0",
        pub_export_macro: true,
        export_macro_name: "export_v1",
        default_bindings_module: "sealgate_policy_sdk::v1::wit",
    });
}

use wit::sealgate::policy::kms;
use wit::sealgate::policy::types::{self, BucketState, Effects, Operation, S3Error, Sealed};

/// A data key held by the host; the module only ever has the handle.
pub use wit::sealgate::policy::kms::DataKey;

/// A decision whose keys are 1.0.0 host handles.
pub type Decision = rules::Decision<DataKey>;

/// The host's KMS imports as the rules' [`rules::KeyService`].
pub struct HostKms;

fn kms_error(e: kms::KmsError) -> rules::KmsError {
    rules::KmsError { kind: rules::KmsErrorKind::from_code(&e.code), message: e.message }
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

fn request(r: types::Request) -> rules::Request {
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

/// Runs rules written against the plain types on a 1.0.0 request: what a
/// 1.0.0 module calls for the requests it leaves to the rules.
pub fn evaluate_with(
    r: types::Request,
    evaluate: impl FnOnce(&rules::Request, &mut HostKms) -> Decision,
) -> types::Decision {
    decision(evaluate(&request(r), &mut HostKms))
}
