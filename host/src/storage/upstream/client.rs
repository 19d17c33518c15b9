//! The S3 client to the upstream, and what its failures mean to the store.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::UpstreamSettings;
use crate::storage::StorageError;

/// An upstream that does not accept a connection within this is down.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// aws-sdk-s3, path-style, with payload checksums only where S3 requires
/// them: the gateway checks the client's digests itself, and the upstream
/// must not be asked to hash twice.
pub fn build(settings: &UpstreamSettings) -> aws_sdk_s3::Client {
    let credentials = credentials(settings);
    let http =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .endpoint_url(settings.endpoint.clone())
        .force_path_style(true)
        .credentials_provider(credentials)
        .http_client(http)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        // An upload goes at the client's pace (and waits for the gateway's
        // checks before its last bytes): only a stalled download is the
        // upstream's fault.
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled().upload_enabled(false).download_enabled(true).build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The upstream account's keys, for the SDK and the data plane alike.
pub(super) fn credentials(settings: &UpstreamSettings) -> Credentials {
    Credentials::new(
        settings.access_key.clone(),
        settings.secret_key.expose().to_owned(),
        None,
        None,
        "sealgate-upstream",
    )
}

/// One failed upstream request, reduced to what the store decides on.
#[derive(Debug)]
pub struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl Failure {
    pub fn from_sdk<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        let message = match &e {
            SdkError::ServiceError(s) => format!("{}: {}", code.as_deref().unwrap_or("error"), s.err()),
            other => aws_sdk_s3::error::DisplayErrorContext(other).to_string(),
        };
        Self { status, code, message }
    }

    /// A request the gateway could not build (never one from a client's input).
    pub fn local(what: &str) -> Self {
        Self { status: None, code: Some("InternalError".into()), message: format!("could not build {what}") }
    }

    /// No answer: the upstream could not be reached, or the connection broke.
    pub fn transport(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Self { status: None, code: None, message }
    }

    /// An error answer and its S3 error document, if it has one (HEAD's has none).
    pub fn from_error_document(status: u16, document: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Error {
            #[serde(rename = "Code")]
            code: Option<String>,
            #[serde(rename = "Message")]
            message: Option<String>,
        }
        let parsed = std::str::from_utf8(document).ok().and_then(|d| quick_xml::de::from_str::<Error>(d).ok());
        let (code, message) = parsed.map(|e| (e.code, e.message)).unwrap_or_default();
        let message =
            format!("{}: {}", code.as_deref().unwrap_or("error"), message.as_deref().unwrap_or("(no message)"));
        Self { status: Some(status), code, message: format!("{message} (HTTP {status})") }
    }

    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn not_found(&self) -> bool {
        self.status == Some(404)
    }

    pub fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.is("PreconditionFailed")
    }

    /// No answer, or a server error: the upstream is (for now) unavailable.
    pub fn unavailable(&self) -> bool {
        match self.status {
            None => self.code.is_none(),
            Some(status) => status >= 500,
        }
    }
}

impl From<Failure> for StorageError {
    fn from(f: Failure) -> Self {
        if f.is("NoSuchBucket") {
            StorageError::NoSuchBucket
        } else if f.is("NoSuchUpload") {
            StorageError::NoSuchUpload
        } else if f.is("BucketNotEmpty") {
            StorageError::BucketNotEmpty
        } else if f.unavailable() {
            StorageError::Unavailable(f.message)
        } else if let (Some(status @ 400..=499), Some(code)) = (f.status, f.code.clone())
            && ![401, 403, 404, 409, 412].contains(&status)
        {
            // Not the gateway's fault nor the upstream's: the request itself
            // (typically a key this upstream cannot store).
            StorageError::Refused {
                status,
                code,
                message: format!("The storage behind this gateway refused the request: {}", f.message),
            }
        } else {
            StorageError::Io(std::io::Error::other(format!("upstream: {}", f.message)))
        }
    }
}

/// An upstream ETag without its quotes.
pub fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

/// Milliseconds since the epoch of an upstream timestamp.
pub fn millis(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or_default()
}
