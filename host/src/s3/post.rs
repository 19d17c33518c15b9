//! PostObject, the browser form upload. sealgate answers it itself instead
//! of through s3s 0.14, which collects the whole file part in memory
//! before it calls a handler. The request guard has verified the policy's
//! signature before the file was touched ([`SignedForm`]); here the
//! policy's conditions are checked, then the file streams into storage
//! through the PutObject path, bounded by the policy's
//! `content-length-range`.

use futures::TryStreamExt;
use hyper::{HeaderMap, Response};
use s3s::auth::{Credentials, SecretKey};
use s3s::dto::*;
use s3s::post_policy::{PostPolicy, PostPolicyCondition};
use s3s::{Body, S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use super::Gateway;
use super::body::MAX_PUT_SIZE;
use super::error::{error_response, xml_escape};
use crate::request_guard::{FormFile, SignedForm};

/// The file sizes a browser POST's policy allows; PutObject checks the
/// body against them (it is in the request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct FormLimits {
    pub min: u64,
    pub max: u64,
}

/// Form fields that need no condition in the policy (AWS's list, plus the
/// SigV2 signature fields).
fn exempt_from_policy(name: &str) -> bool {
    matches!(name, "x-amz-signature" | "signature" | "awsaccesskeyid" | "file" | "policy")
        || name.starts_with("x-ignore-")
}

/// Form fields that are what a PutObject would carry as headers.
fn is_header_field(name: &str) -> bool {
    matches!(name, "cache-control" | "content-type" | "content-disposition" | "content-encoding" | "expires")
        || (name.starts_with("x-amz-")
            && !matches!(name, "x-amz-signature" | "x-amz-credential" | "x-amz-algorithm" | "x-amz-date"))
}

fn policy_failed(detail: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, format!("Invalid according to Policy: {detail}"))
}

/// Checks every condition of `policy` against the form, and that every
/// field the form carries is covered by one (AWS's rule: a field the
/// policy does not name could change what the signer allowed). Returns the
/// allowed file sizes.
fn check_policy(policy: &PostPolicy, form: &SignedForm, bucket: &str) -> S3Result<FormLimits> {
    if time::OffsetDateTime::now_utc() >= time::OffsetDateTime::from(policy.expiration.clone()) {
        return Err(policy_failed("Policy expired."));
    }
    let value = |field: &str| if field == "bucket" { Some(bucket) } else { form.field(field) };
    let mut limits = FormLimits { min: 0, max: MAX_PUT_SIZE };
    for condition in &policy.conditions {
        match condition {
            PostPolicyCondition::Eq { field, value: expected } => {
                if value(field) != Some(expected.as_str()) {
                    return Err(policy_failed(format!(
                        "Policy Condition failed: [\"eq\", \"${field}\", \"{expected}\"]"
                    )));
                }
            }
            PostPolicyCondition::StartsWith { field, prefix } => {
                if !value(field).unwrap_or_default().starts_with(prefix.as_str()) {
                    return Err(policy_failed(format!(
                        "Policy Condition failed: [\"starts-with\", \"${field}\", \"{prefix}\"]"
                    )));
                }
            }
            PostPolicyCondition::ContentLengthRange { min, max } => {
                limits = FormLimits { min: *min, max: (*max).min(MAX_PUT_SIZE) };
            }
        }
    }
    let covered = |name: &str| {
        policy.conditions.iter().any(|c| match c {
            PostPolicyCondition::Eq { field, .. } | PostPolicyCondition::StartsWith { field, .. } => field == name,
            PostPolicyCondition::ContentLengthRange { .. } => false,
        })
    };
    if let Some((name, _)) = form.fields.iter().find(|(name, _)| !exempt_from_policy(name) && !covered(name)) {
        return Err(policy_failed(format!("Extra input fields: {name}")));
    }
    Ok(limits)
}

/// The headers a PutObject of this form would have carried.
fn form_headers(form: &SignedForm, request: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(host) = request.get(hyper::header::HOST) {
        headers.insert(hyper::header::HOST, host.clone());
    }
    for (name, value) in form.fields.iter().filter(|(name, _)| is_header_field(name)) {
        if let (Ok(name), Ok(value)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value))
        {
            headers.insert(name, value);
        }
    }
    headers
}

/// The length of the file part, when the storage needs it before the
/// body: the request's length less what precedes the file and the closing
/// delimiter (`CRLF --boundary-- CRLF`) that follows it. A form with fields
/// after its file part then fails its length check (nothing is stored).
fn file_length(file: &FormFile, request: &HeaderMap, boundary: &str) -> Option<u64> {
    let total: u64 = request.get(hyper::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?;
    total.checked_sub(file.offset? + boundary.len() as u64 + 8)
}

fn put_input(form: &SignedForm, bucket: &str, key: String, body: StreamingBlob) -> S3Result<PutObjectInput> {
    let text = |name: &str| form.field(name).map(str::to_owned);
    let expires = match form.field("expires") {
        Some(v) => Some(
            Timestamp::parse(TimestampFormat::HttpDate, v)
                .map_err(|_| s3_error!(InvalidArgument, "The expires field is not a valid HTTP date."))?,
        ),
        None => None,
    };
    let metadata: Metadata = form
        .fields
        .iter()
        .filter_map(|(name, value)| name.strip_prefix("x-amz-meta-").map(|k| (k.to_owned(), value.clone())))
        .collect();
    Ok(PutObjectInput {
        bucket: bucket.to_owned(),
        key,
        body: Some(body),
        cache_control: text("cache-control"),
        content_type: text("content-type"),
        content_disposition: text("content-disposition"),
        content_encoding: text("content-encoding"),
        expires,
        metadata: (!metadata.is_empty()).then_some(metadata),
        ..Default::default()
    })
}

/// What AWS answers to a successful POST: a redirect, 200, 201 with XML,
/// or (by default) 204.
fn success_response(
    form: &SignedForm,
    bucket: &str,
    key: &str,
    put: s3s::S3Response<PutObjectOutput>,
) -> S3Result<Response<Body>> {
    let etag = put.output.e_tag.as_ref().map(|e| e.value().to_owned()).unwrap_or_default();
    let quoted = format!("\"{etag}\"");
    let redirect = form.field("success_action_redirect").or_else(|| form.field("redirect"));
    let mut res = if let Some(target) = redirect {
        let mut url = url::Url::parse(target)
            .map_err(|_| s3_error!(InvalidArgument, "success_action_redirect is not a valid URL."))?;
        url.query_pairs_mut().append_pair("bucket", bucket).append_pair("key", key).append_pair("etag", &quoted);
        let mut res = Response::new(Body::empty());
        *res.status_mut() = hyper::StatusCode::SEE_OTHER;
        let location = hyper::header::HeaderValue::from_str(url.as_str())
            .map_err(|_| s3_error!(InvalidArgument, "success_action_redirect is not a valid URL."))?;
        res.headers_mut().insert(hyper::header::LOCATION, location);
        res
    } else {
        match form.field("success_action_status") {
            Some("200") => Response::new(Body::empty()),
            Some("201") => {
                let xml = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><PostResponse><Location>/{b}/{k}</Location><Bucket>{b}</Bucket><Key>{k}</Key><ETag>{e}</ETag></PostResponse>",
                    b = xml_escape(bucket),
                    k = xml_escape(key),
                    e = xml_escape(&quoted)
                );
                let mut res = Response::new(Body::from(xml));
                *res.status_mut() = hyper::StatusCode::CREATED;
                res.headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
                res
            }
            _ => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = hyper::StatusCode::NO_CONTENT;
                res
            }
        }
    };
    if let Ok(value) = hyper::header::HeaderValue::from_str(&quoted) {
        res.headers_mut().insert(hyper::header::ETAG, value);
    }
    res.headers_mut().extend(put.headers);
    Ok(res)
}

impl Gateway {
    /// Answers a browser POST to `bucket` whose signature the request
    /// guard verified.
    pub async fn browser_post(
        &self,
        parts: hyper::http::request::Parts,
        bucket: String,
        boundary: &str,
        form: SignedForm,
    ) -> Response<Body> {
        match self.post_object(parts, &bucket, boundary, form).await {
            Ok(res) => res,
            Err(e) => {
                let status = e.status_code().unwrap_or(hyper::StatusCode::BAD_REQUEST);
                error_response(status, e.code().as_str(), e.message().unwrap_or_default())
            }
        }
    }

    async fn post_object(
        &self,
        parts: hyper::http::request::Parts,
        bucket: &str,
        boundary: &str,
        mut form: SignedForm,
    ) -> S3Result<Response<Body>> {
        let Some(file) = form.file.take() else {
            return Err(s3_error!(InvalidArgument, "POST requires exactly one file upload per request."));
        };
        let policy = PostPolicy::from_base64(form.field("policy").unwrap_or_default())
            .map_err(|_| s3_error!(InvalidPolicyDocument, "Invalid Policy: Invalid JSON."))?;
        let limits = check_policy(&policy, &form, bucket)?;
        let key = form.field("key").ok_or_else(|| {
            s3_error!(InvalidArgument, "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.")
        })?;
        let key = key.replace("${filename}", file.name.as_deref().unwrap_or_default());
        let length =
            if self.storage.needs_content_length() { file_length(&file, &parts.headers, boundary) } else { None };
        let body = StreamingBlob::wrap(file.data.map_err(std::io::Error::other));
        let mut input = put_input(&form, bucket, key.clone(), body)?;
        input.content_length = length.and_then(|n| i64::try_from(n).ok());
        let mut extensions = parts.extensions;
        extensions.insert(limits);
        let req = S3Request {
            input,
            method: hyper::Method::POST,
            uri: parts.uri,
            headers: form_headers(&form, &parts.headers),
            extensions,
            credentials: Some(Credentials {
                access_key: form.access_key.clone(),
                secret_key: SecretKey::from(form.secret_key.clone()),
            }),
            region: None,
            service: None,
            trailing_headers: None,
        };
        let put = self.do_put_object(req).await?;
        success_response(&form, bucket, &key, put)
    }
}
