//! The KMS as the rest of the gateway sees it: every call of the configured
//! backend gets a time limit (a KMS that hangs is an unavailable KMS, so the
//! request fails closed instead of waiting) and is counted and timed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{DataKey, KeyContext, Kms, KmsError};
use crate::metrics::Metrics;

pub struct MeteredKms {
    inner: Arc<dyn Kms>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl MeteredKms {
    pub fn new(inner: Arc<dyn Kms>, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        Self { inner, metrics, timeout }
    }

    async fn call<T>(&self, operation: &str, call: impl Future<Output = Result<T, KmsError>>) -> Result<T, KmsError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(KmsError::Unavailable(format!("no answer within {} ms", self.timeout.as_millis()))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.metrics.kms_called(self.inner.backend(), operation, outcome, started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            // KmsError messages carry no key material (a rule of every backend).
            tracing::warn!(backend = self.inner.backend(), operation, error = %e, "KMS call failed");
        }
        result
    }
}

#[async_trait::async_trait]
impl Kms for MeteredKms {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn create_key(&self, bucket: &str) -> Result<String, KmsError> {
        self.call("create_key", self.inner.create_key(bucket)).await
    }

    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.call("wrap_data_key", self.inner.wrap_data_key(key_id, plaintext, context)).await
    }

    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError> {
        self.call("unwrap_data_key", self.inner.unwrap_data_key(key_id, wrapped, context)).await
    }

    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        self.call("destroy_key", self.inner.destroy_key(key_id)).await
    }

    async fn health(&self) -> Result<(), KmsError> {
        self.call("health", self.inner.health()).await
    }

    async fn generate_data_key(&self, key_id: &str, context: &KeyContext) -> Result<DataKey, KmsError> {
        self.call("generate_data_key", self.inner.generate_data_key(key_id, context)).await
    }

    async fn rewrap_data_key(
        &self,
        old_key_id: &str,
        wrapped: &[u8],
        new_key_id: &str,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.call("rewrap_data_key", self.inner.rewrap_data_key(old_key_id, wrapped, new_key_id, context)).await
    }
}
