//! What one evaluation's store holds (the per-request state), and the KMS
//! and log imports every contract version offers, in their host-side form:
//! each checks the request's [`Scope`] before it touches the KMS.

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};

use super::invariants::{KeyOrigin, Scope, Violation};
use crate::kms::{DataKey, KeyContext, Kms, KmsError};

/// A data key the guest holds a handle to; the bytes stay here, with where
/// the key came from.
pub struct HeldKey {
    pub key: DataKey,
    pub origin: KeyOrigin,
}

/// Which object a KMS call is about, so that wrapped keys are bound to it.
#[derive(Clone)]
pub struct KeyContexts {
    /// The request's own bucket and key (what is written or read).
    pub target: KeyContext,
    /// A copy source's context.
    pub source: Option<KeyContext>,
}

/// Everything one evaluation may touch. A fresh one per request.
pub struct GuestState {
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub kms: std::sync::Arc<dyn Kms>,
    pub contexts: KeyContexts,
    /// The keys this request may create, use or destroy.
    pub scope: Scope,
    /// The first out-of-scope KMS call, if the guest made one (it was
    /// stopped there).
    pub violation: Option<Violation>,
    /// Keys created during this evaluation (destroyed again if the request fails).
    pub created_keys: Vec<String>,
    /// Keys to destroy once the request has committed.
    pub destroy_after_commit: Vec<String>,
    /// Epoch ticks seen while the guest was executing (its deadline).
    pub ticks_running: u32,
    pub module_sha256: String,
    /// Set when the memory limit refused a growth.
    pub memory_refused: bool,
}

impl ResourceLimiter for GuestState {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// A KMS import's outcome: the outer error stops the guest (a violation or
/// a host failure), the inner one is the KMS's answer the guest sees.
pub type KmsCall<T> = wasmtime::Result<Result<T, KmsError>>;

impl GuestState {
    fn hold(&mut self, key: DataKey, origin: KeyOrigin) -> wasmtime::Result<Resource<HeldKey>> {
        Ok(self.table.push(HeldKey { key, origin })?)
    }

    /// Stops the guest at an out-of-scope KMS call: a trap, so nothing it
    /// does afterwards can matter, and the reason kept for the log.
    pub fn allowed<T>(&mut self, check: Result<T, Violation>) -> wasmtime::Result<T> {
        check.map_err(|v| {
            let message = v.to_string();
            self.violation.get_or_insert(v);
            wasmtime::Error::msg(format!("policy violation: {message}"))
        })
    }

    pub async fn create_bucket_key(&mut self, bucket: &str) -> KmsCall<String> {
        let check = self.scope.may_create_key(bucket, self.created_keys.len());
        self.allowed(check)?;
        let kms = self.kms.clone();
        let created = kms.create_key(bucket).await;
        if let Ok(key_id) = &created {
            self.created_keys.push(key_id.clone());
        }
        Ok(created)
    }

    pub async fn generate_data_key(&mut self, key_id: &str) -> KmsCall<Resource<HeldKey>> {
        let check = self.scope.may_generate(key_id);
        self.allowed(check)?;
        let (kms, context) = (self.kms.clone(), self.contexts.target.clone());
        match kms.generate_data_key(key_id, &context).await {
            Ok(key) => Ok(Ok(self.hold(key, KeyOrigin::Generated)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    pub async fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> KmsCall<Resource<HeldKey>> {
        let check = self.scope.may_unwrap(key_id, wrapped);
        let origin = self.allowed(check)?;
        let context = match (&self.contexts.source, origin) {
            (Some(source), KeyOrigin::Source) => source.clone(),
            _ => self.contexts.target.clone(),
        };
        let kms = self.kms.clone();
        match kms.unwrap_data_key(key_id, wrapped, &context).await {
            Ok(key) => Ok(Ok(self.hold(key, origin)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    pub fn destroy_bucket_key(&mut self, key_id: &str) -> wasmtime::Result<()> {
        let check = self.scope.may_destroy(key_id);
        self.allowed(check)?;
        // Deferred: the bucket deletion may still fail (not empty), and a
        // key destroyed too early would make its objects unreadable.
        self.destroy_after_commit.push(key_id.to_owned());
        Ok(())
    }

    pub fn key_id(&self, key: &Resource<HeldKey>) -> wasmtime::Result<String> {
        Ok(self.table.get(key)?.key.key_id.clone())
    }

    pub fn drop_key(&mut self, key: Resource<HeldKey>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }

    pub fn log(&self, level: tracing::Level, message: &str) {
        let message: String = message.chars().take(512).collect();
        let sha = &self.module_sha256[..12];
        match level {
            tracing::Level::DEBUG | tracing::Level::TRACE => tracing::debug!(module = sha, "{message}"),
            tracing::Level::INFO => tracing::info!(module = sha, "{message}"),
            tracing::Level::WARN => tracing::warn!(module = sha, "{message}"),
            tracing::Level::ERROR => tracing::error!(module = sha, "{message}"),
        }
    }
}
