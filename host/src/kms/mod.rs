//! The customer's KMS, behind one trait. Bucket master keys live in the KMS
//! and never leave it; the gateway only ever holds data keys, in memory,
//! zeroized when dropped.

pub mod aws;
pub mod bucket_keys;
pub mod kmip;
pub mod local;
pub mod metered;

use zeroize::Zeroizing;

/// Why a KMS call failed. The policy guest sees [`KmsError::code`].
#[derive(Debug, Clone, thiserror::Error)]
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

/// A fresh random 256-bit data key.
pub fn random_data_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rng(), key.as_mut_slice());
    key
}

/// Every backend implements the four primitives; `generate_data_key` and
/// `rewrap_data_key` have generic forms built on them that a backend with a
/// native call (AWS GenerateDataKey, ReEncrypt) may replace. Each method is
/// one KMS round trip unless its doc says otherwise.
#[async_trait::async_trait]
pub trait Kms: Send + Sync + 'static {
    /// `local`, `kmip` or `aws`.
    fn backend(&self) -> &'static str;
    /// Creates (and activates) a bucket master key named after `bucket`;
    /// returns its id.
    async fn create_key(&self, bucket: &str) -> Result<String, KmsError>;
    /// Wraps `plaintext` under master key `key_id`, bound to `context`.
    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError>;
    /// Unwraps a key made by `wrap_data_key`/`generate_data_key` under the
    /// same master key and context; anything else is `Refused`.
    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError>;
    /// Makes the master key unusable for good (KMIP Revoke + Destroy, AWS
    /// ScheduleKeyDeletion).
    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError>;
    async fn health(&self) -> Result<(), KmsError>;

    /// A fresh data key, random from the gateway, wrapped by the KMS.
    async fn generate_data_key(&self, key_id: &str, context: &KeyContext) -> Result<DataKey, KmsError> {
        let plaintext = random_data_key();
        let wrapped = self.wrap_data_key(key_id, &plaintext, context).await?;
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped })
    }

    /// Re-wraps a data key under another master key of the same KMS (key
    /// rotation). Two round trips in this generic form.
    async fn rewrap_data_key(
        &self,
        old_key_id: &str,
        wrapped: &[u8],
        new_key_id: &str,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let key = self.unwrap_data_key(old_key_id, wrapped, context).await?;
        self.wrap_data_key(new_key_id, &key.plaintext, context).await
    }
}
