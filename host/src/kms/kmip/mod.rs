//! The KMIP KMS (KeySecure, or any KMIP 1.2 server): bucket master keys are
//! AES-256 symmetric keys created, used and destroyed inside the KMS; the
//! gateway only ever asks it to Encrypt or Decrypt a data key. It never
//! sends Get: the master key never leaves the KMS.
//!
//! Wrapped key layout (version 1), 81 bytes:
//! `0x01 ‖ IV (16) ‖ AES-256-CBC-PKCS5(master, IV, data key (32) ‖ check (16))`
//! where `check = SHA-256("sealgate-kmip/1" ‖ data key ‖ key id ‖ 0 ‖ bucket ‖ 0 ‖ object key)[..16]`
//! and the IV is random, chosen by the gateway.

mod client;
pub mod messages;
pub mod ttlv;

use std::path::PathBuf;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use self::client::{Client, Endpoint, TransportError};
use self::messages::{Failure, Payload, Request, ResponseError, RevocationReason, ServerInfo};
use super::{DataKey, KeyContext, Kms, KmsError};

const WRAP_VERSION: u8 = 1;
const IV_LEN: usize = 16;
const CHECK_LEN: usize = 16;
/// Data key and check: three AES blocks, so PKCS#5 adds a whole fourth one.
const PLAINTEXT_LEN: usize = 32 + CHECK_LEN;
const CIPHERTEXT_LEN: usize = PLAINTEXT_LEN + 16;
const WRAPPED_LEN: usize = 1 + IV_LEN + CIPHERTEXT_LEN;
const CHECK_DOMAIN: &[u8] = b"sealgate-kmip/1";
/// Master keys are named `sealgate:<bucket>` in the KMS.
const NAME_PREFIX: &str = "sealgate:";
/// Longest key id we send: KMIP Unique Identifiers are short text.
const MAX_KEY_ID_LEN: usize = 512;

/// Where the KMIP cluster is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipConfig {
    /// `host:port` (port 5696 if left out) of each node, tried in order.
    pub endpoints: Vec<String>,
    /// PEM bundle of the CA(s) that sign the KMS server certificates.
    pub ca: PathBuf,
    /// PEM client certificate (chain) presented to the KMS.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// Name to verify in the server certificates instead of each endpoint's host.
    pub server_name: Option<String>,
    /// TCP connect plus TLS handshake, per endpoint.
    pub connect_timeout: Duration,
    /// A whole KMS call, retries included.
    pub call_timeout: Duration,
    /// Connections open at once, at most.
    pub pool_size: usize,
}

impl KmipConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
    pub const DEFAULT_POOL_SIZE: usize = 8;

    /// The given cluster and credentials, defaults for the rest.
    pub fn new(endpoints: Vec<String>, ca: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            endpoints,
            ca,
            cert,
            key,
            server_name: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            pool_size: Self::DEFAULT_POOL_SIZE,
        }
    }

    fn endpoints(&self) -> Result<Vec<Endpoint>, KmsError> {
        if self.endpoints.is_empty() {
            return Err(KmsError::Invalid("no KMIP endpoint configured".into()));
        }
        self.endpoints
            .iter()
            .map(|e| Endpoint::parse(e, self.server_name.as_deref()).map_err(KmsError::Invalid))
            .collect()
    }

    fn check_limits(&self) -> Result<(), KmsError> {
        if self.pool_size == 0 {
            return Err(KmsError::Invalid("the KMIP pool size must be at least 1".into()));
        }
        if self.connect_timeout.is_zero() || self.call_timeout.is_zero() {
            return Err(KmsError::Invalid("KMIP timeouts must be longer than zero".into()));
        }
        Ok(())
    }
}

pub struct KmipKms {
    client: Client,
}

/// How a KMIP call failed, before it becomes a [`KmsError`].
enum CallError {
    /// We could not even encode the request.
    Invalid(String),
    /// No answer: unreachable, TLS, timeout, or not KMIP.
    Transport(String),
    /// The server answered no. `repeated`: after an earlier try that may
    /// have been carried out.
    Failed { failure: Failure, repeated: bool },
}

impl From<CallError> for KmsError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Invalid(message) => KmsError::Invalid(message),
            CallError::Transport(message) => KmsError::Unavailable(message),
            CallError::Failed { failure, .. } if failure.is_bad_request() => KmsError::Invalid(failure.to_string()),
            CallError::Failed { failure, .. } => KmsError::Refused(failure.to_string()),
        }
    }
}

impl KmipKms {
    /// Checks the settings and loads the PEM files; does not contact the KMS
    /// (the gateway starts while the KMS is down, and says so in health).
    pub fn new(config: KmipConfig) -> Result<Self, KmsError> {
        config.check_limits()?;
        let endpoints = config.endpoints()?;
        let tls = client::tls_config(&config.ca, &config.cert, &config.key).map_err(KmsError::Invalid)?;
        let client = Client::new(endpoints, tls, config.pool_size, config.connect_timeout, config.call_timeout);
        Ok(Self { client })
    }

    async fn call(&self, request: Result<Request, ttlv::TtlvError>, what: &str) -> Result<Payload, CallError> {
        let request = request.map_err(|e| CallError::Invalid(format!("encoding the KMIP {what} request: {e}")))?;
        let response =
            self.client.call(&request).await.map_err(|e: TransportError| CallError::Transport(e.to_string()))?;
        messages::parse_response(&response.bytes, request.operation).map_err(|e| match e {
            ResponseError::Failed(failure) => CallError::Failed { failure, repeated: response.repeated },
            malformed @ ResponseError::Malformed(_) => CallError::Transport(malformed.to_string()),
        })
    }

    /// The ids of the keys named `name` (e.g. `sealgate:photos`) that this
    /// client may see.
    pub async fn locate_by_name(&self, name: &str) -> Result<Vec<String>, KmsError> {
        let payload = self.call(messages::locate_by_name(name), "Locate").await?;
        Ok(messages::located_ids(&payload))
    }

    /// The server's operations and vendor (KMIP Query).
    pub async fn server_info(&self) -> Result<ServerInfo, KmsError> {
        use messages::QueryFunction::{Operations, ServerInformation};
        let payload = self.call(messages::query(&[Operations, ServerInformation]), "Query").await?;
        Ok(messages::server_info_of(&payload))
    }

    async fn activate(&self, key_id: &str) -> Result<(), KmsError> {
        match self.call(messages::activate(key_id), "Activate").await {
            Ok(_) => Ok(()),
            // Our first try may have activated it and lost the answer: then
            // the retry finds it Active. It is, if it encrypts.
            Err(CallError::Failed { failure, repeated: true }) if failure.is_wrong_state() => {
                let probe = self.encrypt(key_id, &[0u8; PLAINTEXT_LEN]).await;
                probe.map(drop).map_err(|_| KmsError::Refused(failure.to_string()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Encrypts one wrap block; returns `IV ‖ ciphertext`.
    async fn encrypt(&self, key_id: &str, block: &[u8; PLAINTEXT_LEN]) -> Result<Vec<u8>, KmsError> {
        let mut iv = [0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        let payload = self.call(messages::encrypt(key_id, &iv, block), "Encrypt").await?;
        let ciphertext = messages::data_of(&payload, &iv).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        if ciphertext.len() != CIPHERTEXT_LEN {
            return Err(KmsError::Refused(format!(
                "the KMS returned {} bytes of ciphertext for {PLAINTEXT_LEN} bytes, not {CIPHERTEXT_LEN}: \
                 is it AES-CBC with PKCS#5 padding?",
                ciphertext.len()
            )));
        }
        Ok([iv.as_slice(), &ciphertext].concat())
    }

    /// Revoke, then Destroy. Revoke may fail because an earlier destroy_key
    /// got that far (the key is no longer Active): Destroy decides.
    async fn revoke_and_destroy(&self, key_id: &str) -> Result<(), KmsError> {
        // Cessation of Operation, not Key Compromise: the bucket is gone, the
        // key was not exposed. Compromise would put it in the Compromised
        // state, which KMS operators treat as a security incident.
        let revoked = self.call(messages::revoke(key_id, RevocationReason::CessationOfOperation), "Revoke").await;
        let revoke_failure = match revoked {
            Ok(_) => None,
            Err(CallError::Failed { failure, .. }) if failure.is_not_found() => return Ok(()),
            Err(CallError::Failed { failure, .. }) => Some(failure),
            Err(transport) => return Err(transport.into()),
        };
        match self.call(messages::destroy(key_id), "Destroy").await {
            Ok(_) => Ok(()),
            Err(CallError::Failed { failure, .. }) if failure.is_not_found() => Ok(()),
            Err(CallError::Failed { failure, .. }) => Err(KmsError::Refused(match revoke_failure {
                Some(revoke) => format!("{failure} (after {revoke})"),
                None => failure.to_string(),
            })),
            Err(transport) => Err(transport.into()),
        }
    }
}

/// Key ids go into requests and into the context check; ours come from the
/// KMS. A NUL would make the check's fields ambiguous.
fn check_key_id(key_id: &str) -> Result<(), KmsError> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN || key_id.contains('\0') {
        return Err(KmsError::Refused(format!(
            "invalid KMIP key id {:?}",
            key_id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// The 16 bytes encrypted after the data key, binding it to the master key
/// id and the object, and to the data key itself.
///
/// Why after the key, and why the key is hashed in: CBC is malleable. Bits
/// flipped in a ciphertext block garble the plaintext block it decrypts to
/// and flip the same bits in the next one. To move a wrapped key to another
/// object, the check block must be changed, which garbles the key block
/// before it: the original key never comes out under another context. And
/// since the check also hashes the data key, the changes that do not touch
/// the check block (the IV, the first ciphertext block) change the key
/// without fixing up the check: any edit is a mismatch, never a wrong key.
fn context_check(key_id: &str, data_key: &[u8], context: &KeyContext) -> [u8; CHECK_LEN] {
    let mut hash = Sha256::new();
    hash.update(CHECK_DOMAIN);
    hash.update(data_key);
    hash.update(key_id.as_bytes());
    hash.update([0]);
    hash.update(context.bucket.as_bytes());
    hash.update([0]);
    hash.update(context.key.as_bytes());
    let digest = hash.finalize();
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    check
}

/// The IV and ciphertext of a version 1 wrapped key.
fn split_wrapped(wrapped: &[u8]) -> Result<([u8; IV_LEN], &[u8]), KmsError> {
    if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
        return Err(KmsError::Refused("malformed wrapped key".into()));
    }
    let (iv, ciphertext) = wrapped[1..].split_at(IV_LEN);
    Ok((iv.try_into().expect("split at IV_LEN"), ciphertext))
}

/// The data key of a decrypted wrap block, if its check holds.
fn open_block(key_id: &str, block: &[u8], context: &KeyContext) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    if block.len() != PLAINTEXT_LEN {
        return Err(KmsError::Refused("wrapped key does not decrypt under this key".into()));
    }
    let (key, check) = block.split_at(32);
    if !bool::from(check.ct_eq(&context_check(key_id, key, context))) {
        return Err(KmsError::Refused("wrapped key does not authenticate under this key and context".into()));
    }
    let mut plaintext = Zeroizing::new([0u8; 32]);
    plaintext.copy_from_slice(key);
    Ok(plaintext)
}

#[async_trait::async_trait]
impl Kms for KmipKms {
    fn backend(&self) -> &'static str {
        "kmip"
    }

    /// Create, then Activate. If Activate fails the new key is destroyed
    /// again (best effort) and the error returned.
    async fn create_key(&self, bucket: &str) -> Result<String, KmsError> {
        let name = format!("{NAME_PREFIX}{bucket}");
        let payload = self.call(messages::create_symmetric_key(&name), "Create").await?;
        let key_id = messages::unique_identifier_of(&payload).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        if let Err(error) = self.activate(&key_id).await {
            if let Err(cleanup) = self.revoke_and_destroy(&key_id).await {
                tracing::warn!(%key_id, %cleanup, "could not destroy a KMIP key that failed to activate");
            }
            return Err(error);
        }
        Ok(key_id)
    }

    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        check_key_id(key_id)?;
        let mut block = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        block[..32].copy_from_slice(plaintext);
        block[32..].copy_from_slice(&context_check(key_id, plaintext, context));
        let iv_and_ciphertext = self.encrypt(key_id, &block).await?;
        Ok([&[WRAP_VERSION][..], &iv_and_ciphertext].concat())
    }

    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError> {
        check_key_id(key_id)?;
        let (iv, ciphertext) = split_wrapped(wrapped)?;
        let payload = match self.call(messages::decrypt(key_id, &iv, ciphertext), "Decrypt").await {
            Ok(payload) => payload,
            // Bad padding (a wrong key or an edited blob), unknown key, not
            // permitted: all a refusal, whatever the reason code says.
            Err(CallError::Failed { failure, .. }) => return Err(KmsError::Refused(failure.to_string())),
            Err(transport) => return Err(transport.into()),
        };
        let block = messages::data_of(&payload, &iv).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        let plaintext = open_block(key_id, &block, context)?;
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped: wrapped.to_vec() })
    }

    /// Revoke + Destroy; a key already gone is destroyed.
    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        check_key_id(key_id)?;
        self.revoke_and_destroy(key_id).await
    }

    /// A DiscoverVersions round trip that must include KMIP 1.2.
    async fn health(&self) -> Result<(), KmsError> {
        let payload = self.call(messages::discover_versions(&[messages::PROTOCOL_VERSION]), "DiscoverVersions").await?;
        let (major, minor) = messages::PROTOCOL_VERSION;
        if !messages::versions_of(&payload).contains(&(major, minor)) {
            return Err(KmsError::Refused(format!("the KMIP server does not speak protocol version {major}.{minor}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::messages::Operation;
    use super::*;

    fn ctx(bucket: &str, key: &str) -> KeyContext {
        KeyContext { bucket: bucket.into(), key: key.into() }
    }

    fn config() -> KmipConfig {
        let dir = std::env::temp_dir().join("sealgate-kmip-no-such-dir");
        KmipConfig::new(vec!["127.0.0.1:5696".into()], dir.join("ca.pem"), dir.join("c.pem"), dir.join("k.pem"))
    }

    #[test]
    fn wrapped_keys_are_81_bytes() {
        assert_eq!(WRAPPED_LEN, 81);
        assert_eq!(PLAINTEXT_LEN % 16, 0, "PKCS#5 then adds exactly one block");
    }

    #[test]
    fn the_check_binds_every_field() {
        let key = [7u8; 32];
        let base = context_check("1", &key, &ctx("b", "o"));
        assert_eq!(base, context_check("1", &key, &ctx("b", "o")));
        let others = [
            context_check("2", &key, &ctx("b", "o")),
            context_check("1", &[8u8; 32], &ctx("b", "o")),
            context_check("1", &key, &ctx("c", "o")),
            context_check("1", &key, &ctx("b", "p")),
            // The separators keep field boundaries apart.
            context_check("1", &key, &ctx("bo", "")),
            context_check("1", &key, &ctx("", "bo")),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn open_block_refuses_a_wrong_check_or_length() {
        let key = [9u8; 32];
        let mut block = [0u8; PLAINTEXT_LEN];
        block[..32].copy_from_slice(&key);
        block[32..].copy_from_slice(&context_check("1", &key, &ctx("b", "o")));
        assert_eq!(*open_block("1", &block, &ctx("b", "o")).unwrap(), key);
        assert!(matches!(open_block("1", &block, &ctx("b", "x")), Err(KmsError::Refused(_))));
        assert!(matches!(open_block("2", &block, &ctx("b", "o")), Err(KmsError::Refused(_))));
        assert!(matches!(open_block("1", &block[..47], &ctx("b", "o")), Err(KmsError::Refused(_))));
        let mut flipped = block;
        flipped[0] ^= 1;
        assert!(matches!(open_block("1", &flipped, &ctx("b", "o")), Err(KmsError::Refused(_))), "an edited key");
    }

    #[test]
    fn malformed_wrapped_keys_are_refused() {
        let mut good = vec![WRAP_VERSION];
        good.extend_from_slice(&[0u8; WRAPPED_LEN - 1]);
        let (iv, ciphertext) = split_wrapped(&good).unwrap();
        assert_eq!((iv.len(), ciphertext.len()), (IV_LEN, CIPHERTEXT_LEN));
        let mut other_version = good.clone();
        other_version[0] = 2;
        for bad in [&good[..80], &[good.as_slice(), &[0]].concat(), &other_version, &[]] {
            assert!(matches!(split_wrapped(bad), Err(KmsError::Refused(_))));
        }
    }

    #[test]
    fn key_ids_are_checked() {
        assert!(check_key_id("1").is_ok());
        assert!(check_key_id("6b8a1c2e-0000-4000-8000-000000000000").is_ok());
        for bad in ["", "a\0b", &"x".repeat(MAX_KEY_ID_LEN + 1)] {
            assert!(matches!(check_key_id(bad), Err(KmsError::Refused(_))));
        }
    }

    #[test]
    fn configuration_errors_are_invalid_and_clear() {
        let err = |c: KmipConfig| match KmipKms::new(c) {
            Err(KmsError::Invalid(message)) => message,
            Err(other) => panic!("not Invalid: {other}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(err(KmipConfig { endpoints: vec![], ..config() }).contains("no KMIP endpoint"));
        assert!(err(KmipConfig { endpoints: vec!["host:port".into()], ..config() }).contains("host:port"));
        assert!(err(KmipConfig { pool_size: 0, ..config() }).contains("pool size"));
        assert!(err(KmipConfig { call_timeout: Duration::ZERO, ..config() }).contains("timeouts"));
        let message = err(config());
        assert!(message.contains("CA bundle") && message.contains("ca.pem"), "{message}");
    }

    #[test]
    fn defaults_are_sensible() {
        let c = config();
        assert_eq!(c.pool_size, KmipConfig::DEFAULT_POOL_SIZE);
        assert!(c.connect_timeout < c.call_timeout);
        assert_eq!(c.server_name, None);
    }

    fn failure(reason: u32) -> CallError {
        CallError::Failed {
            failure: Failure { operation: Operation::Encrypt, status: 1, reason: Some(reason), message: "m".into() },
            repeated: false,
        }
    }

    #[test]
    fn call_errors_map_to_kms_errors() {
        assert!(matches!(KmsError::from(CallError::Transport("x".into())), KmsError::Unavailable(_)));
        assert!(matches!(KmsError::from(failure(messages::reason::ITEM_NOT_FOUND)), KmsError::Refused(_)));
        assert!(matches!(KmsError::from(failure(messages::reason::PERMISSION_DENIED)), KmsError::Refused(_)));
        assert!(matches!(KmsError::from(failure(messages::reason::INVALID_FIELD)), KmsError::Invalid(_)));
        let KmsError::Refused(message) = KmsError::from(failure(messages::reason::ITEM_NOT_FOUND)) else { panic!() };
        assert_eq!(message, "KMIP Encrypt answered Operation Failed, Item Not Found: m");
    }
}
