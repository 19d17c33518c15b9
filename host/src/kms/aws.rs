//! The AWS KMS API backend: AWS KMS itself, or a service speaking its API at
//! `endpoint`. A bucket master key is a SYMMETRIC_DEFAULT KMS key that never
//! leaves KMS; data keys come from GenerateDataKey and are bound to the bucket
//! and the object key through the encryption context
//! `{"sealgate:bucket": bucket, "sealgate:key": object key}`, so a wrapped key
//! copied onto another object does not decrypt. Key ids are bare KeyIds
//! (every call accepts them; moto's ScheduleKeyDeletion does not take ARNs).
//!
//! The gateway's principal needs kms:CreateKey and kms:TagResource (the bucket
//! tag is set at creation), kms:GenerateDataKey, kms:Encrypt, kms:Decrypt,
//! kms:ReEncryptFrom and kms:ReEncryptTo (rotation), kms:ScheduleKeyDeletion,
//! kms:DescribeKey, kms:ListKeys (health) and kms:ListResourceTags.
//!
//! The encryption context is authenticated, not secret: bucket and object
//! names appear in CloudTrail.
//!
//! Logs: even at TRACE the SDK shows no data key (request bodies are redacted
//! unless the environment sets LOG_SIGNABLE_BODY=true; GenerateDataKey and
//! Decrypt answers are never logged); tests/rust/aws_kms.rs checks it.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType, Tag};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use zeroize::Zeroizing;

use super::{DataKey, KeyContext, Kms, KmsError};

const CONTEXT_BUCKET: &str = "sealgate:bucket";
const CONTEXT_KEY: &str = "sealgate:key";
const BUCKET_TAG: &str = "sealgate:bucket";
/// The shortest pending window AWS accepts; it never deletes a key at once.
const DELETION_WINDOW_DAYS: i32 = 7;
/// KMS's bounds on a CiphertextBlob; anything outside is not one of ours.
const MAX_CIPHERTEXT_LEN: usize = 6144;
/// KMS's bound on a KeyId (id, ARN or alias).
const MAX_KEY_ID_LEN: usize = 2048;
/// Names explicit keys in SDK diagnostics.
const CONFIG_PROVIDER: &str = "sealgate-config";

/// Where the KMS is and how long a call may take.
#[derive(Clone)]
pub struct AwsKmsConfig {
    /// `None`: the region's AWS endpoint. Set it for a VPC endpoint or a
    /// KMS-compatible service (`http://` or `https://`).
    pub endpoint: Option<String>,
    pub region: String,
    /// Explicit keys; both or neither. Without them the standard AWS chain
    /// applies (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and
    /// ~/.aws files, web identity, ECS, EC2 instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Only with explicit keys (temporary credentials).
    pub session_token: Option<String>,
    /// The whole budget of one KMS operation, retries included: an
    /// unreachable KMS fails a request within this.
    pub call_timeout: Duration,
    /// Budget for opening a connection (TCP + TLS).
    pub connect_timeout: Duration,
    /// Budget for one attempt; a hung attempt leaves time for a retry.
    pub attempt_timeout: Duration,
    /// Attempts per operation (standard retry mode: throttling, 5xx and
    /// connection errors, exponential backoff), always within `call_timeout`.
    pub max_attempts: u32,
}

impl AwsKmsConfig {
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(6);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// AWS KMS in `region` with the standard credential chain.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            region: region.into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: Self::DEFAULT_ATTEMPT_TIMEOUT,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }

    fn validate(&self) -> Result<(), KmsError> {
        let invalid = |msg: String| Err(KmsError::Invalid(msg));
        if self.region.is_empty() || self.region.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid(format!("AWS KMS region {:?} is not a region name", self.region));
        }
        if let Some(endpoint) = &self.endpoint {
            validate_endpoint(endpoint)?;
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid("AWS KMS: give both the access key id and the secret access key, or neither".into());
            }
            (None, None) if self.session_token.is_some() => {
                return invalid("AWS KMS: a session token needs the access key id and secret access key".into());
            }
            _ => {}
        }
        if [self.call_timeout, self.connect_timeout, self.attempt_timeout].contains(&Duration::ZERO) {
            return invalid("AWS KMS timeouts must be longer than zero".into());
        }
        if self.max_attempts == 0 {
            return invalid("AWS KMS: at least one attempt per call".into());
        }
        Ok(())
    }

    /// Explicit keys win over the standard chain.
    fn credentials(&self, http: &SharedHttpClient) -> SharedCredentialsProvider {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                self.session_token.clone(),
                None,
                CONFIG_PROVIDER,
            )),
            _ => SharedCredentialsProvider::new(StandardChain {
                region: Region::new(self.region.clone()),
                http: http.clone(),
                chain: tokio::sync::OnceCell::new(),
            }),
        }
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.call_timeout)
            .build()
    }
}

/// The secret and the session token never reach logs.
impl std::fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { Some("<redacted>") } else { None };
        f.debug_struct("AwsKmsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(self.secret_access_key.is_some()))
            .field("session_token", &redacted(self.session_token.is_some()))
            .field("call_timeout", &self.call_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Catches a typo at start-up rather than at the first request.
fn validate_endpoint(endpoint: &str) -> Result<(), KmsError> {
    let uri: hyper::Uri =
        endpoint.parse().map_err(|e| KmsError::Invalid(format!("AWS KMS endpoint {endpoint:?}: {e}")))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(KmsError::Invalid(format!("AWS KMS endpoint {endpoint:?} is not an http(s)://host[:port] URL")));
    }
    Ok(())
}

/// HTTPS with rustls on ring and the system's trusted roots, as the rest of
/// the gateway; the SDK's default client would bring aws-lc-rs (a C build).
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The standard AWS credential chain, built on first use: building it is
/// async and `AwsKms::new` must not wait for anything. The SDK caches what it
/// returns until the credentials expire. STS and instance metadata calls go
/// through the same HTTPS client as KMS calls.
#[derive(Debug)]
struct StandardChain {
    region: Region,
    http: SharedHttpClient,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl StandardChain {
    async fn build(&self) -> DefaultCredentialsChain {
        let providers =
            ProviderConfig::without_region().with_region(Some(self.region.clone())).with_http_client(self.http.clone());
        DefaultCredentialsChain::builder().configure(providers).region(self.region.clone()).build().await
    }
}

impl ProvideCredentials for StandardChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.chain.get_or_init(|| self.build()).await.provide_credentials().await
        })
    }
}

/// A client of the AWS KMS API. Cheap to share: the SDK client pools
/// connections and caches credentials.
#[derive(Debug)]
pub struct AwsKms {
    client: Client,
}

impl AwsKms {
    /// Builds the client without contacting KMS (nor resolving credentials):
    /// the gateway starts while KMS is down and reports it in `health`.
    pub fn new(config: AwsKmsConfig) -> Result<Self, KmsError> {
        config.validate()?;
        let http = https_client();
        let mut builder = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .http_client(http.clone())
            .credentials_provider(config.credentials(&http))
            .timeout_config(config.timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self { client: Client::from_conf(builder.build()) })
    }

    /// Every key the principal can list (their KeyIds), across pages.
    pub async fn list_key_ids(&self) -> Result<Vec<String>, KmsError> {
        let mut ids = Vec::new();
        let mut marker = None;
        loop {
            let out = self.client.list_keys().set_marker(marker).send().await.map_err(|e| sdk_error("ListKeys", e))?;
            ids.extend(out.keys().iter().filter_map(|k| k.key_id().map(str::to_owned)));
            marker = out.next_marker().filter(|_| out.truncated()).map(str::to_owned);
            if marker.is_none() {
                return Ok(ids);
            }
        }
    }

    /// The key's KeyState as KMS names it (`Enabled`, `PendingDeletion`, …).
    pub async fn key_state(&self, key_id: &str) -> Result<String, KmsError> {
        check_key_id(key_id)?;
        let out = self.client.describe_key().key_id(key_id).send().await.map_err(|e| sdk_error("DescribeKey", e))?;
        let state = out.key_metadata().and_then(|m| m.key_state());
        state.map(|s| s.as_str().to_owned()).ok_or_else(|| malformed("DescribeKey", "no key state"))
    }

    /// The key's tags as (key, value) pairs; `sealgate:bucket` names the bucket.
    pub async fn key_tags(&self, key_id: &str) -> Result<Vec<(String, String)>, KmsError> {
        check_key_id(key_id)?;
        let mut tags = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .client
                .list_resource_tags()
                .key_id(key_id)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| sdk_error("ListResourceTags", e))?;
            tags.extend(out.tags().iter().map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned())));
            marker = out.next_marker().filter(|_| out.truncated()).map(str::to_owned);
            if marker.is_none() {
                return Ok(tags);
            }
        }
    }

    /// ScheduleKeyDeletion refuses a key already pending deletion; that is
    /// the state destroy_key wants, so it counts as done.
    async fn confirm_pending_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        match self.key_state(key_id).await?.as_str() {
            "PendingDeletion" | "PendingReplicaDeletion" => Ok(()),
            state => Err(KmsError::Refused(format!("ScheduleKeyDeletion: key {key_id} is {state}"))),
        }
    }
}

#[async_trait::async_trait]
impl Kms for AwsKms {
    fn backend(&self) -> &'static str {
        "aws"
    }

    /// A retried CreateKey whose first attempt did reach KMS leaves an
    /// orphan key behind (tagged with the bucket, so it can be found).
    async fn create_key(&self, bucket: &str) -> Result<String, KmsError> {
        if bucket.is_empty() {
            return Err(KmsError::Invalid("a bucket key needs a bucket name".into()));
        }
        let tag = Tag::builder()
            .tag_key(BUCKET_TAG)
            .tag_value(bucket)
            .build()
            .map_err(|e| KmsError::Invalid(format!("CreateKey: {e}")))?;
        let out = self
            .client
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description(format!("sealgate: master key of bucket {bucket}"))
            .tags(tag)
            .send()
            .await
            .map_err(|e| sdk_error("CreateKey", e))?;
        let meta = out.key_metadata().ok_or_else(|| malformed("CreateKey", "no key metadata"))?;
        let key_id = meta.key_id().to_owned();
        tracing::info!(bucket, key_id, "created an AWS KMS bucket key");
        Ok(key_id)
    }

    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        check_key_id(key_id)?;
        // This copy, and the base64 request body the SDK makes of it, are
        // freed but not zeroized: the SDK owns them and offers no hook.
        let plaintext = Blob::new(plaintext.to_vec());
        let out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(plaintext)
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(|e| sdk_error("Encrypt", e))?;
        check_reported_key("Encrypt", key_id, out.key_id())?;
        ciphertext("Encrypt", out.ciphertext_blob)
    }

    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError> {
        check_key_id(key_id)?;
        check_wrapped(wrapped)?;
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(|e| sdk_error("Decrypt", e))?;
        // Taken first so the plaintext is zeroized whatever happens next.
        let plaintext = data_key("Decrypt", out.plaintext.take())?;
        check_reported_key("Decrypt", key_id, out.key_id())?;
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped: wrapped.to_vec() })
    }

    /// AWS never deletes at once: the key turns PendingDeletion, every
    /// cryptographic call with it is refused from then on (KMSInvalidState),
    /// and it is gone after the 7-day window unless an operator runs
    /// CancelKeyDeletion. Already pending or unknown: done.
    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        check_key_id(key_id)?;
        let scheduled = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await;
        let err = match scheduled {
            Ok(_) => {
                tracing::info!(key_id, days = DELETION_WINDOW_DAYS, "scheduled the AWS KMS key for deletion");
                return Ok(());
            }
            Err(err) => err,
        };
        match err.as_service_error().and_then(|e| e.code()) {
            Some("NotFoundException") => Ok(()),
            Some("KMSInvalidStateException") => self.confirm_pending_deletion(key_id).await,
            _ => Err(sdk_error("ScheduleKeyDeletion", err)),
        }
    }

    async fn health(&self) -> Result<(), KmsError> {
        self.client.list_keys().limit(1).send().await.map(drop).map_err(|e| sdk_error("ListKeys", e))
    }

    /// One round trip: KMS makes the key and wraps it.
    async fn generate_data_key(&self, key_id: &str, context: &KeyContext) -> Result<DataKey, KmsError> {
        check_key_id(key_id)?;
        let mut out = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(|e| sdk_error("GenerateDataKey", e))?;
        let plaintext = data_key("GenerateDataKey", out.plaintext.take())?;
        check_reported_key("GenerateDataKey", key_id, out.key_id())?;
        let wrapped = ciphertext("GenerateDataKey", out.ciphertext_blob.take())?;
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped })
    }

    /// ReEncrypt: one round trip, and the data key never leaves KMS.
    async fn rewrap_data_key(
        &self,
        old_key_id: &str,
        wrapped: &[u8],
        new_key_id: &str,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        check_key_id(old_key_id)?;
        check_key_id(new_key_id)?;
        check_wrapped(wrapped)?;
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(old_key_id)
            .set_source_encryption_context(Some(encryption_context(context)))
            .destination_key_id(new_key_id)
            .set_destination_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(|e| sdk_error("ReEncrypt", e))?;
        check_reported_key("ReEncrypt", old_key_id, out.source_key_id())?;
        check_reported_key("ReEncrypt", new_key_id, out.key_id())?;
        ciphertext("ReEncrypt", out.ciphertext_blob)
    }
}

fn encryption_context(context: &KeyContext) -> HashMap<String, String> {
    HashMap::from([(CONTEXT_BUCKET.to_owned(), context.bucket.clone()), (CONTEXT_KEY.to_owned(), context.key.clone())])
}

/// Our ids come from CreateKey; anything else is a caller's bug, caught
/// before it costs a round trip.
fn check_key_id(key_id: &str) -> Result<(), KmsError> {
    let bad = key_id.is_empty()
        || key_id.len() > MAX_KEY_ID_LEN
        || key_id.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(KmsError::Invalid(format!("{key_id:?} is not an AWS KMS key id")));
    }
    Ok(())
}

/// Same answer as the local backend for something that cannot be a wrapped key.
fn check_wrapped(wrapped: &[u8]) -> Result<(), KmsError> {
    if wrapped.is_empty() || wrapped.len() > MAX_CIPHERTEXT_LEN {
        return Err(KmsError::Refused("malformed wrapped key".into()));
    }
    Ok(())
}

/// Moves the SDK's plaintext into a zeroized array. The Vec inside the Blob
/// is zeroized here; the HTTP response body and base64 buffers the SDK
/// decoded it from are freed unzeroized (the SDK owns them).
fn data_key(op: &str, plaintext: Option<Blob>) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    let bytes = Zeroizing::new(plaintext.map(Blob::into_inner).unwrap_or_default());
    if bytes.len() != 32 {
        return Err(malformed(op, &format!("a {}-byte data key instead of 32", bytes.len())));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn ciphertext(op: &str, blob: Option<Blob>) -> Result<Vec<u8>, KmsError> {
    match blob.map(Blob::into_inner) {
        Some(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(malformed(op, "no ciphertext")),
    }
}

/// KMS already refuses a ciphertext of another key when given a KeyId; the
/// key it reports using is checked anyway, as cheap insurance against a
/// KMS-compatible service that is laxer (moto ignores ReEncrypt's
/// SourceKeyId). Aliases are not compared: KMS reports the key, not the alias.
fn check_reported_key(op: &str, requested: &str, reported: Option<&str>) -> Result<(), KmsError> {
    let Some(reported) = reported else { return Ok(()) };
    let is_alias = requested.starts_with("alias/") || requested.contains(":alias/");
    let same = reported == requested || reported.rsplit_once('/').is_some_and(|(_, id)| id == requested);
    if is_alias || same {
        return Ok(());
    }
    Err(KmsError::Refused(format!("{op}: KMS used key {reported}, not {requested}")))
}

fn malformed(op: &str, what: &str) -> KmsError {
    KmsError::Refused(format!("{op}: malformed answer from KMS ({what})"))
}

/// Maps an SDK failure onto the trait's three kinds. Messages name the
/// operation and carry KMS's error code and message, never a request or
/// response body (GenerateDataKey and Decrypt bodies hold key bytes).
fn sdk_error<E>(op: &str, err: SdkError<E>) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            service_error(op, ctx.err().code(), ctx.err().message(), status)
        }
        SdkError::TimeoutError(_) => KmsError::Unavailable(format!("{op}: no answer within the call timeout")),
        SdkError::DispatchFailure(_) => KmsError::Unavailable(format!("{op}: {}", error_chain(&err))),
        // The parse error could quote the body, so only the status is kept.
        SdkError::ResponseError(ctx) => {
            KmsError::Unavailable(format!("{op}: unreadable answer (HTTP {})", ctx.raw().status().as_u16()))
        }
        SdkError::ConstructionFailure(_) => KmsError::Invalid(format!("{op}: {}", error_chain(&err))),
        _ => KmsError::Unavailable(format!("{op}: {}", error_chain(&err))),
    }
}

/// "dispatch failure: io error: …: Connection refused": each cause's
/// message, without the SDK's Debug dump.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Errors for which retrying later may work (AWS's throttling and transient
/// codes, KMS's own internal and dependency failures).
const UNAVAILABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

/// A KMS answer: transient → Unavailable, a malformed request of ours →
/// Invalid, every other refusal (NotFound, InvalidCiphertext, IncorrectKey,
/// KMSInvalidState, Disabled, AccessDenied, …) → Refused.
fn service_error(op: &str, code: Option<&str>, message: Option<&str>, status: u16) -> KmsError {
    let code_text = code.unwrap_or("unknown error");
    let mut text = match message.filter(|m| !m.is_empty()) {
        Some(message) => format!("{op}: {code_text}: {message}"),
        None => format!("{op}: {code_text}"),
    };
    match code {
        Some(c) if UNAVAILABLE_CODES.contains(&c) => return KmsError::Unavailable(text),
        _ if status >= 500 || status == 429 => return KmsError::Unavailable(text),
        Some("ValidationException" | "SerializationException") => return KmsError::Invalid(text),
        Some("InvalidCiphertextException") => {
            text.push_str(" (the wrapped key was altered, or belongs to another object or key)")
        }
        Some("IncorrectKeyException") => text.push_str(" (the wrapped key belongs to another key)"),
        _ => {}
    }
    KmsError::Refused(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::config::http::HttpResponse;
    use aws_sdk_kms::operation::decrypt::DecryptError;

    fn config() -> AwsKmsConfig {
        let mut config = AwsKmsConfig::new("eu-west-3");
        config.endpoint = Some("http://127.0.0.1:1".into());
        config
    }

    #[test]
    fn new_needs_no_kms_and_no_runtime() {
        assert_eq!(AwsKms::new(config()).unwrap().backend(), "aws");
        let mut keyed = config();
        keyed.access_key_id = Some("AKIDEXAMPLE".into());
        keyed.secret_access_key = Some("secret".into());
        assert!(AwsKms::new(keyed).is_ok());
    }

    #[test]
    fn bad_configs_are_invalid() {
        let cases: [fn(&mut AwsKmsConfig); 7] = [
            |c| c.region = String::new(),
            |c| c.endpoint = Some("127.0.0.1:4566".into()),
            |c| c.endpoint = Some("ftp://kms.example".into()),
            |c| c.access_key_id = Some("AKID".into()),
            |c| c.secret_access_key = Some("secret".into()),
            |c| c.session_token = Some("token".into()),
            |c| c.call_timeout = Duration::ZERO,
        ];
        for (i, spoil) in cases.into_iter().enumerate() {
            let mut config = config();
            spoil(&mut config);
            assert!(matches!(AwsKms::new(config), Err(KmsError::Invalid(_))), "case {i}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let mut config = config();
        config.secret_access_key = Some("wJalrXUtnFEMI".into());
        config.session_token = Some("FwoGZXIvYXdz".into());
        config.access_key_id = Some("AKIDEXAMPLE".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdz"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let client = format!("{:?}", AwsKms::new(config).unwrap());
        assert!(!client.contains("wJalrXUtnFEMI") && !client.contains("FwoGZXIvYXdz"));
    }

    #[test]
    fn service_errors_map_to_the_three_kinds() {
        let kind = |code: &str, status| service_error("Decrypt", Some(code), Some("msg"), status).code();
        for code in
            ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException"]
        {
            assert_eq!(kind(code, 400), "unavailable", "{code}");
        }
        assert_eq!(kind("SomethingNew", 503), "unavailable");
        assert_eq!(kind("SomethingNew", 429), "unavailable");
        for code in [
            "KMSInvalidStateException",
            "InvalidCiphertextException",
            "IncorrectKeyException",
            "NotFoundException",
            "DisabledException",
            "AccessDeniedException",
            "InvalidKeyUsageException",
        ] {
            assert_eq!(kind(code, 400), "refused", "{code}");
        }
        assert_eq!(kind("ValidationException", 400), "invalid");
        assert_eq!(service_error("Decrypt", None, None, 400).code(), "refused");
    }

    #[test]
    fn sdk_failures_map_to_the_three_kinds() {
        let response = || HttpResponse::new(400u16.try_into().unwrap(), "".into());
        let invalid_state = DecryptError::generic(
            aws_sdk_kms::error::ErrorMetadata::builder()
                .code("KMSInvalidStateException")
                .message("arn:aws:kms:eu-west-3:111122223333:key/k is pending deletion.")
                .build(),
        );
        let refused = sdk_error("Decrypt", SdkError::service_error(invalid_state, response()));
        assert!(matches!(&refused, KmsError::Refused(m) if m.contains("pending deletion")), "{refused}");
        let timeout = sdk_error("Decrypt", SdkError::<DecryptError>::timeout_error("deadline"));
        assert_eq!(timeout.code(), "unavailable");
        let garbled = sdk_error("Decrypt", SdkError::<DecryptError>::response_error("bad body", response()));
        assert_eq!(garbled.code(), "unavailable");
        assert!(!garbled.to_string().contains("bad body"));
    }

    #[test]
    fn reported_keys_must_be_the_requested_ones() {
        let arn = "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(check_reported_key("Decrypt", arn, Some(arn)).is_ok());
        assert!(check_reported_key("Decrypt", "1234abcd-12ab-34cd-56ef-1234567890ab", Some(arn)).is_ok());
        assert!(check_reported_key("Decrypt", "alias/photos", Some(arn)).is_ok());
        assert!(check_reported_key("Decrypt", arn, None).is_ok());
        let other = "arn:aws:kms:eu-west-3:111122223333:key/ffffffff-12ab-34cd-56ef-1234567890ab";
        assert!(matches!(check_reported_key("Decrypt", other, Some(arn)), Err(KmsError::Refused(_))));
    }

    #[test]
    fn data_keys_must_be_32_bytes() {
        assert_eq!(*data_key("Decrypt", Some(Blob::new(vec![7u8; 32]))).unwrap(), [7u8; 32]);
        for bad in [None, Some(Blob::new(vec![7u8; 16])), Some(Blob::new(vec![7u8; 33]))] {
            assert!(matches!(data_key("Decrypt", bad), Err(KmsError::Refused(_))));
        }
        assert!(check_wrapped(&[]).is_err() && check_wrapped(&[0; MAX_CIPHERTEXT_LEN + 1]).is_err());
        assert!(check_key_id("").is_err() && check_key_id("a b").is_err() && check_key_id("alias/x").is_ok());
    }
}
