//! Checks sealgate makes before s3s sees a request, where s3s 0.14 has no
//! hook for them:
//!
//! - **SigV2 is refused** (header, presigned URL, POST form) unless
//!   `--allow-sigv2`: s3s checks no date on it, so a captured request
//!   replays forever.
//! - **Presigned SigV4 URLs** valid for more than 7 days are refused, as AWS
//!   does.
//! - **Encryption headers must be signed**: `x-amz-server-side-encryption*`
//!   and `x-amz-scal-server-side-encryption` decide confidentiality, so a
//!   request carrying one that its SigV4 `SignedHeaders` do not cover is
//!   refused (someone on the path could have added or stripped it).
//! - **Browser POST is authenticated before its file is read**: s3s reads
//!   the whole file part into memory before it checks the signature. Here
//!   the form fields (which come first, at most [`MAX_FORM_FIELDS`] bytes)
//!   are read and the policy signature verified with the user's secret; a
//!   POST without a valid one is refused with nothing more read. A signed
//!   one never reaches s3s: `s3::post` streams its file into storage.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::{HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;

use crate::auth::Users;

/// AWS's longest presigned URL validity.
const MAX_PRESIGNED_EXPIRES_SECS: u64 = 7 * 24 * 3600;
/// Form fields before the file part; AWS allows 20 KB, with margin.
pub const MAX_FORM_FIELDS: usize = 64 << 10;

/// Header name prefixes that decide confidentiality.
const SSE_HEADERS: [&str; 2] = ["x-amz-server-side-encryption", "x-amz-scal-server-side-encryption"];

/// A refusal: the HTTP status, the S3 error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: 403, code, message: message.into() }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self { status: 400, code, message: message.into() }
    }
}

pub struct RequestGuard {
    pub users: Arc<Users>,
    pub allow_sigv2: bool,
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    let Some(query) = uri.query() else { return Vec::new() };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| urlencoding_decode(s);
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component ('+' stays '+', as S3 signs it).
fn urlencoding_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The `SignedHeaders` of a SigV4 `Authorization` header.
fn signed_headers_of(authorization: &str) -> Option<Vec<String>> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    rest.split(',').map(str::trim).find_map(|part| {
        part.strip_prefix("SignedHeaders=").map(|list| list.split(';').map(|h| h.trim().to_ascii_lowercase()).collect())
    })
}

impl RequestGuard {
    /// The checks that need only the request head.
    pub fn check_head(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let query = query_pairs(uri);
        let authorization = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let sigv2 = authorization.is_some_and(|a| a.starts_with("AWS "))
            || (query_value(&query, "AWSAccessKeyId").is_some() && query_value(&query, "Signature").is_some());
        if sigv2 && !self.allow_sigv2 {
            return Err(Refusal::bad_request(
                "InvalidRequest",
                "Signature Version 2 is not accepted here; please use AWS4-HMAC-SHA256.",
            ));
        }
        if let Some(expires) = query_value(&query, "X-Amz-Expires") {
            match expires.parse::<u64>() {
                Ok(secs) if secs <= MAX_PRESIGNED_EXPIRES_SECS => {}
                _ => {
                    return Err(Refusal::bad_request(
                        "AuthorizationQueryParametersError",
                        "X-Amz-Expires must be less than a week (in seconds) that is; 604800",
                    ));
                }
            }
        }
        let signed = match (authorization.and_then(signed_headers_of), query_value(&query, "X-Amz-SignedHeaders")) {
            (Some(list), _) => Some(list),
            (None, Some(list)) => Some(list.split(';').map(|h| h.trim().to_ascii_lowercase()).collect()),
            (None, None) => None,
        };
        if let Some(signed) = signed {
            for name in headers.keys().map(|n| n.as_str()) {
                let decides_encryption = SSE_HEADERS.iter().any(|p| name.starts_with(p));
                if decides_encryption && !signed.iter().any(|s| s == name) {
                    return Err(Refusal::forbidden(
                        "AccessDenied",
                        format!("The {name} header must be signed (listed in SignedHeaders)."),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether this request is a browser POST (form upload), with its boundary.
    pub fn post_form_boundary(method: &Method, headers: &HeaderMap) -> Option<String> {
        if method != Method::POST {
            return None;
        }
        let content_type = headers.get(hyper::header::CONTENT_TYPE)?.to_str().ok()?;
        let mime: mime::Mime = content_type.parse().ok()?;
        if mime.type_() != mime::MULTIPART || mime.subtype() != mime::FORM_DATA {
            return None;
        }
        mime.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned())
    }

    /// Reads the form fields of a browser POST (not its file) and checks
    /// their signature. The file part is handed back unread, to be
    /// streamed into storage (s3s 0.14 would collect it in memory first).
    pub async fn check_post_form<S, E>(&self, body: S, boundary: &str) -> Result<SignedForm, Refusal>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display,
    {
        let recording = Arc::new(std::sync::Mutex::new(Recording::default()));
        let recorder = Recorder { inner: body, recording: recording.clone() };
        let (fields, file) = read_fields(recorder, boundary).await?;
        let prefix = recording.lock().expect("recording lock").finish();
        let access_key = self.verify_post_signature(&fields)?;
        let secret_key = self.users.secret(&access_key).unwrap_or_default().to_owned();
        let file = file.map(|data| FormFile {
            name: data.file_name().map(str::to_owned),
            offset: file_data_offset(&prefix, boundary),
            data,
        });
        Ok(SignedForm { access_key, secret_key, fields, file })
    }

    /// The access key whose secret signed the form's policy.
    fn verify_post_signature(&self, fields: &[(String, String)]) -> Result<String, Refusal> {
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let denied = || Refusal::forbidden("AccessDenied", "Access Denied");
        let policy = field("policy").ok_or_else(denied)?;
        if let (Some(credential), Some(signature)) = (field("x-amz-credential"), field("x-amz-signature")) {
            if field("x-amz-algorithm") != Some("AWS4-HMAC-SHA256") {
                return Err(denied());
            }
            let mut scope = credential.split('/');
            let (Some(access_key), Some(date), Some(region), Some(service)) =
                (scope.next(), scope.next(), scope.next(), scope.next())
            else {
                return Err(denied());
            };
            let secret = self.users.secret(access_key).ok_or_else(|| {
                Refusal::forbidden(
                    "InvalidAccessKeyId",
                    "The AWS Access Key Id you provided does not exist in our records.",
                )
            })?;
            let expected = sigv4_post_signature(secret, date, region, service, policy);
            return match bool::from(expected.as_bytes().ct_eq(signature.to_ascii_lowercase().as_bytes())) {
                true => Ok(access_key.to_owned()),
                false => Err(Refusal::forbidden(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided.",
                )),
            };
        }
        if let (Some(access_key), Some(signature)) = (field("awsaccesskeyid"), field("signature")) {
            if !self.allow_sigv2 {
                return Err(Refusal::bad_request(
                    "InvalidRequest",
                    "Signature Version 2 is not accepted here; please use AWS4-HMAC-SHA256.",
                ));
            }
            let secret = self.users.secret(access_key).ok_or_else(denied)?;
            let expected = sigv2_post_signature(secret, policy);
            return match bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
                true => Ok(access_key.to_owned()),
                false => Err(Refusal::forbidden(
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided.",
                )),
            };
        }
        Err(denied())
    }
}

/// A browser POST whose policy signature checked out.
pub struct SignedForm {
    pub access_key: String,
    pub secret_key: String,
    /// The text fields before the file, names lower-cased, in order.
    pub fields: Vec<(String, String)>,
    /// `None` when the form has no file part.
    pub file: Option<FormFile>,
}

impl SignedForm {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The form's file part, not read yet.
pub struct FormFile {
    /// The file name the client gave (`filename=` of its part).
    pub name: Option<String>,
    /// Where its first byte is in the request body, when that could be
    /// told from the bytes read so far.
    pub offset: Option<u64>,
    pub data: multer::Field<'static>,
}

/// What the form parser has read: the fields, and the start of the file.
#[derive(Default)]
struct Recording {
    read: Vec<Bytes>,
    total: usize,
    finished: bool,
}

impl Recording {
    /// Stops recording (the file streams through from here) and returns
    /// what was read.
    fn finish(&mut self) -> Vec<u8> {
        self.finished = true;
        std::mem::take(&mut self.read).concat()
    }
}

/// A body stream that keeps a copy of what it hands out until the form
/// fields are read, and refuses to go on if they never end.
struct Recorder<S> {
    inner: S,
    recording: Arc<std::sync::Mutex<Recording>>,
}

impl<S, E> Stream for Recorder<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let polled = self.inner.poll_next_unpin(cx);
        let mut recording = self.recording.lock().expect("recording lock");
        if recording.finished {
            return polled.map(|item| item.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
        }
        if recording.total > MAX_FORM_FIELDS + (64 << 10) {
            // The fields never ended; the parser is told so.
            return Poll::Ready(Some(Err(std::io::Error::other("form fields too large"))));
        }
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                recording.total += chunk.len();
                recording.read.push(chunk.clone());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e.to_string())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Where the data of the part named `file` starts in `prefix` (the first
/// bytes of the body): after its part headers' blank line.
fn file_data_offset(prefix: &[u8], boundary: &str) -> Option<u64> {
    let delimiter = format!("--{boundary}");
    let mut at = 0;
    while let Some(found) = find(&prefix[at..], delimiter.as_bytes()) {
        let headers_start = at + found + delimiter.len();
        let headers_end = headers_start + find(&prefix[headers_start..], b"\r\n\r\n")?;
        let headers = String::from_utf8_lossy(&prefix[headers_start..headers_end]);
        let is_file = headers.lines().any(|line| {
            let Some((name, value)) = line.split_once(':') else { return false };
            name.trim().eq_ignore_ascii_case("content-disposition")
                && value.split(';').any(|p| {
                    p.trim().split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("name") && v.trim().trim_matches('"').eq_ignore_ascii_case("file")
                    })
                })
        });
        if is_file {
            return Some((headers_end + 4) as u64);
        }
        at = headers_end;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The text fields before the `file` part, names lower-cased, and the file
/// part itself, unread.
async fn read_fields<S, E>(
    body: Recorder<S>,
    boundary: &str,
) -> Result<(Vec<(String, String)>, Option<multer::Field<'static>>), Refusal>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    let malformed = || {
        Refusal::bad_request(
            "MalformedPOSTRequest",
            "The body of your POST request is not well-formed multipart/form-data.",
        )
    };
    let too_large = || {
        Refusal::bad_request(
            "MaxPostPreDataLengthExceeded",
            "Your POST request fields preceding the upload file were too large.",
        )
    };
    // The file's size is checked by whoever reads it (the policy's range).
    let limits = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().per_field(MAX_FORM_FIELDS as u64).for_field("file", u64::MAX));
    let mut form = multer::Multipart::with_constraints(body, boundary.to_owned(), limits);
    let mut fields = Vec::new();
    let mut size = 0usize;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Ok((fields, None)),
            Err(multer::Error::StreamReadFailed(_)) => return Err(too_large()),
            Err(_) => return Err(malformed()),
        };
        let name = field.name().unwrap_or_default().to_ascii_lowercase();
        if name == "file" {
            return Ok((fields, Some(field)));
        }
        let value = field.text().await.map_err(|_| too_large())?;
        size += name.len() + value.len();
        if size > MAX_FORM_FIELDS {
            return Err(too_large());
        }
        fields.push((name, value));
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// hex(HMAC(signing key, policy)), the SigV4 POST signature.
fn sigv4_post_signature(secret: &str, date: &str, region: &str, service: &str, policy: &str) -> String {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    hex::encode(hmac_sha256(&k_signing, policy.as_bytes()))
}

/// base64(HMAC-SHA1(secret, policy)), the SigV2 POST signature.
fn sigv2_post_signature(secret: &str, policy: &str) -> String {
    use base64::Engine;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, policy.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_headers_are_read_from_the_authorization_header() {
        let auth = "AWS4-HMAC-SHA256 Credential=AK/20261129/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date;X-Amz-Server-Side-Encryption, Signature=abc";
        assert_eq!(
            signed_headers_of(auth).unwrap(),
            ["host", "x-amz-date", "x-amz-server-side-encryption"].map(String::from)
        );
        assert!(signed_headers_of("AWS AK:sig").is_none());
    }

    #[test]
    fn the_sigv4_post_signature_matches_the_aws_documentation_example() {
        // AWS's worked example ("Example: Browser-Based Upload using HTTP
        // POST (Using AWS Signature Version 4)"): its secret, date and policy
        // give this signature.
        let policy = "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFjbCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tldC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZlci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoNCiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVxdWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAxNTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9";
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            sigv4_post_signature(secret, "20151229", "us-east-1", "s3", policy),
            "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"
        );
    }

    #[test]
    fn presigned_urls_valid_for_more_than_a_week_and_unsigned_sse_headers_are_refused() {
        let guard = RequestGuard { users: Arc::new(Users::empty()), allow_sigv2: false };
        let week: Uri = "/b/k?X-Amz-Expires=604800&X-Amz-SignedHeaders=host".parse().unwrap();
        assert!(guard.check_head(&week, &HeaderMap::new()).is_ok());
        let longer: Uri = "/b/k?X-Amz-Expires=604801&X-Amz-SignedHeaders=host".parse().unwrap();
        assert_eq!(guard.check_head(&longer, &HeaderMap::new()).unwrap_err().code, "AuthorizationQueryParametersError");
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-scal-server-side-encryption", "AES256".parse().unwrap());
        headers.insert(
            hyper::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=a/b/c/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=x"
                .parse()
                .unwrap(),
        );
        assert_eq!(guard.check_head(&"/b".parse().unwrap(), &headers).unwrap_err().status, 403);
        let v2: Uri = "/b/k?AWSAccessKeyId=a&Signature=s&Expires=1".parse().unwrap();
        assert_eq!(guard.check_head(&v2, &HeaderMap::new()).unwrap_err().code, "InvalidRequest");
    }
}
