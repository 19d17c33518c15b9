//! Contract `sealgate:policy@1.0.0` (`wit/v1.0.0`): modules built against
//! it keep running. Its KMS imports take key ids as strings; each is
//! checked against the request's scope like any 2.0.0 call.

use wasmtime::component::Resource;

use super as host;
use crate::kms::KmsError;
use crate::policy::guest::{GuestState, HeldKey};

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit/v1.0.0",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "sealgate:policy/kms.data-key": crate::policy::guest::HeldKey,
    },
});

use sealgate::policy::kms::KmsError as WitKmsError;
use sealgate::policy::types as wit;

fn kms_error(e: KmsError) -> WitKmsError {
    WitKmsError { code: e.code().to_owned(), message: e.to_string() }
}

fn answer<T>(call: wasmtime::Result<Result<T, KmsError>>) -> wasmtime::Result<Result<T, WitKmsError>> {
    Ok(call?.map_err(kms_error))
}

impl sealgate::policy::kms::HostDataKey for GuestState {
    async fn key_id(&mut self, key: Resource<HeldKey>) -> wasmtime::Result<String> {
        GuestState::key_id(self, &key)
    }

    async fn drop(&mut self, key: Resource<HeldKey>) -> wasmtime::Result<()> {
        self.drop_key(key)
    }
}

impl sealgate::policy::kms::Host for GuestState {
    async fn create_bucket_key(&mut self, bucket: String) -> wasmtime::Result<Result<String, WitKmsError>> {
        answer(GuestState::create_bucket_key(self, &bucket).await)
    }

    async fn generate_data_key(&mut self, key_id: String) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        answer(GuestState::generate_data_key(self, &key_id).await)
    }

    async fn unwrap_data_key(
        &mut self,
        key_id: String,
        wrapped: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        answer(GuestState::unwrap_data_key(self, &key_id, &wrapped).await)
    }

    async fn destroy_bucket_key(&mut self, key_id: String) -> wasmtime::Result<Result<(), WitKmsError>> {
        GuestState::destroy_bucket_key(self, &key_id)?;
        Ok(Ok(()))
    }
}

impl sealgate::policy::log::Host for GuestState {
    async fn log(&mut self, level: sealgate::policy::log::Level, message: String) -> wasmtime::Result<()> {
        use sealgate::policy::log::Level;
        let level = match level {
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        GuestState::log(self, level, &message);
        Ok(())
    }
}

impl wit::Host for GuestState {}

fn operation(op: host::Operation) -> wit::Operation {
    match op {
        host::Operation::CreateBucket => wit::Operation::CreateBucket,
        host::Operation::DeleteBucket => wit::Operation::DeleteBucket,
        host::Operation::PutBucketEncryption => wit::Operation::PutBucketEncryption,
        host::Operation::GetBucketEncryption => wit::Operation::GetBucketEncryption,
        host::Operation::DeleteBucketEncryption => wit::Operation::DeleteBucketEncryption,
        host::Operation::PutObject => wit::Operation::PutObject,
        host::Operation::CopyObject => wit::Operation::CopyObject,
        host::Operation::PostObject => wit::Operation::PostObject,
        host::Operation::CreateMultipartUpload => wit::Operation::CreateMultipartUpload,
        host::Operation::UploadPart => wit::Operation::UploadPart,
        host::Operation::UploadPartCopy => wit::Operation::UploadPartCopy,
        host::Operation::CompleteMultipartUpload => wit::Operation::CompleteMultipartUpload,
        host::Operation::GetObject => wit::Operation::GetObject,
        host::Operation::HeadObject => wit::Operation::HeadObject,
    }
}

fn sealed(s: &host::Sealed) -> wit::Sealed {
    wit::Sealed { key_id: s.key_id.clone(), wrapped_key: s.wrapped_key.clone() }
}

pub fn request(r: &host::Request) -> wit::Request {
    wit::Request {
        operation: operation(r.operation),
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        headers: r.headers.clone(),
        bucket_state: r
            .bucket_state
            .as_ref()
            .map(|b| wit::BucketState { encrypted: b.encrypted, key_id: b.key_id.clone() }),
        target: r.target.as_ref().map(sealed),
        source: r.source.as_ref().map(sealed),
        requested_algorithm: r.requested_algorithm.clone(),
    }
}

pub fn decision(d: wit::Decision) -> host::Decision {
    match d {
        wit::Decision::Deny(e) => host::Decision::Deny { status: e.status, code: e.code, message: e.message },
        wit::Decision::Allow(e) => host::Decision::Allow(host::Effects {
            bucket_state: e.bucket_state.map(|b| host::BucketState { encrypted: b.encrypted, key_id: b.key_id }),
            seal_with: e.seal_with,
            open_with: e.open_with,
            report_algorithm: e.report_algorithm,
            response_headers: e.response_headers,
        }),
    }
}
