//! The upstream requests on the path of every object read and write —
//! PutObject, UploadPart, GetObject, HeadObject — sent with hyper and signed
//! with aws-sigv4.
//!
//! Why not aws-sdk-s3, as for the rest of the backend: a profile of small
//! GETs (BENCHMARKS.md, session 9) found 13 % of the gateway's CPU in the
//! SDK's per-request machinery (its orchestrator, endpoint resolution,
//! interceptors, and the allocations they make) for requests that are a
//! method, a path and a few headers. The control plane (buckets, listings,
//! multipart create/complete/abort, the record lock) stays on the SDK, where
//! requests are rare and the SDK's typed answers are worth their cost.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, ETAG, HeaderMap, HeaderName, HeaderValue, IF_MATCH, RANGE};
use hyper::{Method, Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::UpstreamSettings;
use super::client::{CONNECT_TIMEOUT, Failure, credentials, unquote};

/// A request body sent upstream.
pub type UpstreamBody = BoxBody<Bytes, io::Error>;

/// Attempts of a GET or HEAD that found the upstream unavailable (an upload
/// streams its body once and is not retried: its client retries it).
const READ_ATTEMPTS: u32 = 3;
/// An S3 error document is small; a longer one is not read further.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Idle pooled connections are closed after this, before an upstream that
/// closes them sooner would make a request meet a dead one.
const POOL_IDLE: Duration = Duration::from_secs(20);

/// What S3 leaves unescaped in a key on the wire (RFC 3986's unreserved
/// characters, and `/`); it is also the escaping SigV4's canonical path uses.
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
/// A query value: the unreserved characters only.
const QUERY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub struct DataPlane {
    http: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    /// The endpoint without a trailing `/`; path-style URLs follow it.
    endpoint: String,
    identity: Identity,
    region: String,
    settings: SigningSettings,
}

/// An object to GET: all of it, or a range of the version with one ETag.
#[derive(Default)]
pub struct Fetch<'a> {
    pub range: Option<Range<u64>>,
    /// The upstream ETag (unquoted) the object must still have.
    pub if_match: Option<&'a str>,
}

impl DataPlane {
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(https);
        let mut signing = SigningSettings::default();
        // S3's rules: the path is escaped once and never normalized, and
        // the payload's hash (here UNSIGNED-PAYLOAD) is a signed header.
        signing.percent_encoding_mode = PercentEncodingMode::Single;
        signing.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        signing.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        Self {
            http,
            endpoint: settings.endpoint.trim_end_matches('/').to_owned(),
            identity: credentials(settings).into(),
            region: settings.region.clone(),
            settings: signing,
        }
    }

    /// PutObject (no `part`) or UploadPart of `length` bytes from `body`,
    /// with `headers` (content headers and user metadata); the stored ETag.
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        part: Option<(&str, u32)>,
        mut headers: HeaderMap,
        length: u64,
        body: UpstreamBody,
    ) -> Result<String, Failure> {
        let mut url = self.object_url(bucket, key);
        if let Some((upload_id, number)) = part {
            url.push_str(&format!("?partNumber={number}&uploadId={}", utf8_percent_encode(upload_id, QUERY_ESCAPES)));
        }
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        let answer = self.send(Method::PUT, &url, headers, body).await?;
        Ok(unquote(answer.headers().get(ETAG).and_then(|v| v.to_str().ok())))
    }

    /// GetObject: the answer's headers and its body, still to be read.
    pub async fn get(&self, bucket: &str, key: &str, fetch: Fetch<'_>) -> Result<Response<Incoming>, Failure> {
        let mut headers = HeaderMap::new();
        if let Some(range) = &fetch.range {
            let value = format!("bytes={}-{}", range.start, range.end - 1);
            headers.insert(RANGE, HeaderValue::try_from(value).expect("digits"));
        }
        if let Some(etag) = fetch.if_match {
            let value = HeaderValue::try_from(format!("\"{etag}\"")).map_err(|_| Failure::local("an ETag"))?;
            headers.insert(IF_MATCH, value);
        }
        self.read(Method::GET, bucket, key, headers).await
    }

    /// HeadObject: the answer's headers.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<HeaderMap, Failure> {
        Ok(self.read(Method::HEAD, bucket, key, HeaderMap::new()).await?.into_parts().0.headers)
    }

    /// A GET or HEAD, tried again while the upstream is unavailable.
    async fn read(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, Failure> {
        let url = self.object_url(bucket, key);
        let mut attempt = 1;
        loop {
            let empty = Empty::new().map_err(|never| match never {}).boxed();
            match self.send(method.clone(), &url, headers.clone(), empty).await {
                Err(failure) if failure.unavailable() && attempt < READ_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{}/{}", self.endpoint, bucket, utf8_percent_encode(key, KEY_ESCAPES))
    }

    /// Signs and sends one request; an answer other than 2xx is a failure.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: UpstreamBody,
    ) -> Result<Response<Incoming>, Failure> {
        let mut request = Request::builder().method(method).uri(url).body(body).map_err(|_| Failure::local("a URL"))?;
        *request.headers_mut() = headers;
        self.sign(&mut request)?;
        let answer = self.http.request(request).await.map_err(|e| Failure::transport(&e))?;
        if answer.status().is_success() {
            return Ok(answer);
        }
        let status = answer.status().as_u16();
        let document = Limited::new(answer.into_body(), MAX_ERROR_BODY).collect().await;
        let document = document.map(|d| d.to_bytes()).unwrap_or_default();
        Err(Failure::from_error_document(status, &document))
    }

    /// Adds SigV4 headers for an unsigned payload, as aws-sdk-s3 does for
    /// streamed bodies: the gateway checks the client's digests itself.
    fn sign(&self, request: &mut Request<UpstreamBody>) -> Result<(), Failure> {
        let params: aws_sigv4::http_request::SigningParams = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(self.settings.clone())
            .build()
            .map_err(|_| Failure::local("signing parameters"))?
            .into();
        let uri = request.uri().to_string();
        // A header value that is not text (never one the gateway sets) is
        // sent unsigned rather than refused here.
        let headers = request.headers().iter().filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
        let signable = SignableRequest::new(request.method().as_str(), uri, headers, SignableBody::UnsignedPayload)
            .map_err(|_| Failure::local("a request to sign"))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|_| Failure::local("a signature"))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// Sets a header the gateway builds from a stored value; a value that is
/// not a valid header value is left out, as aws-sdk-s3 refused it before.
pub fn set_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        headers.insert(name, value);
    }
}

/// A header of an upstream answer as text.
pub fn header(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// rustls with ring, trusting the platform's CA certificates (as the SDK's
/// client did). A machine without any can still reach an `http://` upstream.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no CA certificates found on this machine: an https:// upstream will not be trusted");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_once_with_slashes_kept() {
        let escaped = utf8_percent_encode("a b/c+d/é~x._-", KEY_ESCAPES).to_string();
        assert_eq!(escaped, "a%20b/c%2Bd/%C3%A9~x._-");
    }

    #[test]
    fn upload_ids_are_escaped_whole() {
        assert_eq!(utf8_percent_encode("a/b+c=", QUERY_ESCAPES).to_string(), "a%2Fb%2Bc%3D");
    }
}
