//! The operator's side of the admin listener, for `sealgate policy load`.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Sends `PUT /policy` with the module's bytes; returns the JSON answer.
pub async fn load_policy(admin: &str, token: &str, module: Vec<u8>) -> anyhow::Result<String> {
    let uri: hyper::Uri = format!("{}/policy", admin.trim_end_matches('/')).parse().context("admin URL")?;
    let authority = uri.authority().context("admin URL needs host:port")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to the admin listener at {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::put(uri)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/wasm")
        .body(Full::new(Bytes::from(module)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        anyhow::bail!("the gateway refused the module ({status}): {text}");
    }
    Ok(text)
}
