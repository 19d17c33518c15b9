//! The customer's KMS, behind one trait. Bucket master keys live in the KMS
//! and never leave it; the gateway only ever holds data keys, in memory,
//! zeroized when dropped.

pub mod local;

use zeroize::Zeroizing;

/// Why a KMS call failed. The policy guest sees [`KmsError::code`].
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// Unreachable, timed out, overloaded: retrying later may work.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    /// The KMS answered and said no (unknown key, wrong key, not permitted).
    #[error("KMS refused: {0}")]
    Refused(String),
    #[error("invalid KMS request: {0}")]
    Invalid(String),
}

impl KmsError {
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::Unavailable(_) => "unavailable",
            KmsError::Refused(_) => "refused",
            KmsError::Invalid(_) => "invalid",
        }
    }
}

/// What a data key is bound to: the KMS authenticates it with the wrapped
/// key, so a wrapped key copied onto another object does not unwrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyContext {
    pub bucket: String,
    pub key: String,
}

/// A plaintext data key and its wrapped form. `Debug` never shows the key.
pub struct DataKey {
    pub key_id: String,
    pub plaintext: Zeroizing<[u8; 32]>,
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
pub trait Kms: Send + Sync + 'static {
    /// `local`, `kmip` or `aws`.
    fn backend(&self) -> &'static str;
    /// Creates a bucket master key; returns its id.
    async fn create_key(&self, bucket: &str) -> Result<String, KmsError>;
    async fn generate_data_key(&self, key_id: &str, context: &KeyContext) -> Result<DataKey, KmsError>;
    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError>;
    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError>;
    async fn health(&self) -> Result<(), KmsError>;
}
