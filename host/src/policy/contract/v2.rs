//! Contract `sealgate:policy@2.0.0` (`wit/v2.0.0`), the current one. Its
//! KMS imports name no key: each acts on the key of the request's scope it
//! stands for (the bucket's, the target's, the copy source's), and still
//! goes through the same scope checks as a 1.0.0 call naming that key.

use wasmtime::component::Resource;

use super as host;
use crate::kms::KmsError;
use crate::policy::guest::{GuestState, HeldKey};
use crate::policy::invariants::NamedKey;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit/v2.0.0",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "sealgate:policy/kms.data-key": crate::policy::guest::HeldKey,
    },
});

use sealgate::policy::kms::{KmsError as WitKmsError, KmsErrorKind};
use sealgate::policy::types as wit;

fn kms_error(e: KmsError) -> WitKmsError {
    let kind = match e {
        KmsError::Unavailable(_) => KmsErrorKind::Unavailable,
        KmsError::Refused(_) => KmsErrorKind::Refused,
        KmsError::Invalid(_) => KmsErrorKind::Invalid,
    };
    WitKmsError { kind, message: e.to_string() }
}

fn answer<T>(call: wasmtime::Result<Result<T, KmsError>>) -> wasmtime::Result<Result<T, WitKmsError>> {
    Ok(call?.map_err(kms_error))
}

impl GuestState {
    fn named(&mut self, which: NamedKey) -> wasmtime::Result<host::Sealed> {
        let found = self.scope.named_key(which);
        self.allowed(found)
    }
}

impl sealgate::policy::kms::HostDataKey for GuestState {
    async fn drop(&mut self, key: Resource<HeldKey>) -> wasmtime::Result<()> {
        self.drop_key(key)
    }
}

impl sealgate::policy::kms::Host for GuestState {
    async fn create_bucket_key(&mut self) -> wasmtime::Result<Result<(), WitKmsError>> {
        let bucket = self.scope.bucket().to_owned();
        answer(GuestState::create_bucket_key(self, &bucket).await.map(|created| created.map(drop)))
    }

    async fn generate_data_key(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let bucket_key = self.named(NamedKey::Bucket)?;
        answer(GuestState::generate_data_key(self, &bucket_key.key_id).await)
    }

    async fn open_target(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let target = self.named(NamedKey::Target)?;
        answer(GuestState::unwrap_data_key(self, &target.key_id, &target.wrapped_key).await)
    }

    async fn open_source(&mut self) -> wasmtime::Result<Result<Resource<HeldKey>, WitKmsError>> {
        let source = self.named(NamedKey::Source)?;
        answer(GuestState::unwrap_data_key(self, &source.key_id, &source.wrapped_key).await)
    }

    async fn destroy_bucket_key(&mut self) -> wasmtime::Result<Result<(), WitKmsError>> {
        let bucket_key = self.named(NamedKey::Bucket)?;
        GuestState::destroy_bucket_key(self, &bucket_key.key_id)?;
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

fn header((name, value): &(String, String)) -> wit::Header {
    wit::Header { name: name.clone(), value: value.clone() }
}

pub fn request(r: &host::Request) -> wit::Request {
    wit::Request {
        operation: operation(r.operation),
        bucket: r.bucket.clone(),
        key: r.key.clone(),
        headers: r.headers.iter().map(header).collect(),
        bucket_state: r
            .bucket_state
            .as_ref()
            .map(|b| wit::BucketState { encrypted: b.encrypted, has_key: b.key_id.is_some() }),
        target_sealed: r.target.is_some(),
        source_sealed: r.source.is_some(),
        requested_algorithm: r.requested_algorithm.clone(),
    }
}

/// The key a 2.0.0 bucket setting stands for: the bucket keeps its own,
/// else it gets the one created in this request, encrypted or not (the aws
/// module gives every bucket its key at creation). A bucket being created
/// has no key of its own yet.
fn attached_key(state: &GuestState) -> Option<String> {
    let creating = state.scope.operation() == host::Operation::CreateBucket;
    let own = state.scope.bucket_key().filter(|_| !creating).map(str::to_owned);
    own.or_else(|| state.created_keys.first().cloned())
}

pub fn decision(d: wit::Decision, state: &GuestState) -> host::Decision {
    match d {
        wit::Decision::Deny(e) => host::Decision::Deny { status: e.status, code: e.code, message: e.message },
        wit::Decision::Allow(e) => host::Decision::Allow(host::Effects {
            bucket_state: e
                .bucket_setting
                .map(|s| host::BucketState { encrypted: s.encrypted, key_id: attached_key(state) }),
            seal_with: e.seal_with,
            open_with: e.open_with,
            report_algorithm: e.report_algorithm,
            response_headers: e.response_headers.into_iter().map(|h| (h.name, h.value)).collect(),
        }),
    }
}
