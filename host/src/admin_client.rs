//! The operator's side of the admin listener, for `sealgate policy load` and
//! `sealgate kms rewrap`.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends `PUT /policy` with the module's bytes; returns the JSON answer.
pub async fn load_policy(admin: &str, token: &str, module: Vec<u8>) -> anyhow::Result<String> {
    call(admin, token, hyper::Method::PUT, "/policy", "application/wasm", module).await
}

/// Sends `POST /kms/rewrap` and waits for the rotation to finish; returns
/// the JSON report.
pub async fn rewrap(admin: &str, token: &str, bucket: &str, keep_old_key: bool, deep: bool) -> anyhow::Result<String> {
    if bucket.is_empty() || !bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        anyhow::bail!("{bucket:?} is not a bucket name");
    }
    let path = format!("/kms/rewrap?bucket={bucket}&keep_old_key={keep_old_key}&deep={deep}");
    call(admin, token, hyper::Method::POST, &path, "application/json", Vec::new()).await
}

async fn call(
    admin: &str,
    token: &str,
    method: hyper::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<String> {
    let uri: hyper::Uri = format!("{}{path}", admin.trim_end_matches('/')).parse().context("admin URL")?;
    let authority = uri.authority().context("admin URL needs host:port")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to the admin listener at {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        anyhow::bail!("the gateway refused ({status}): {text}");
    }
    Ok(text)
}
