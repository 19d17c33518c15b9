//! The admin listener: a separate port, bearer-token auth, JSON and
//! Prometheus text. Never reachable through the S3 port.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::token_matches;
use crate::metrics::Metrics;
use crate::storage::Storage;

pub struct Admin {
    pub token: String,
    pub metrics: Arc<Metrics>,
    pub storage: Arc<dyn Storage>,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, "application/json", serde_json::json!({ "error": message }).to_string())
}

impl Admin {
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| token_matches(t.trim(), &self.token))
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut res = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            res.headers_mut().insert("www-authenticate", "Bearer".parse().expect("valid header"));
            return res;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => self.health().await,
            (&Method::GET, "/metrics") => {
                reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render())
            }
            (_, "/health" | "/metrics") => json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    async fn health(&self) -> Response<Full<Bytes>> {
        let storage_ok = self.storage.list_buckets().await.is_ok();
        let status = if storage_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let body = serde_json::json!({
            "status": if storage_ok { "ok" } else { "degraded" },
            "storage": if storage_ok { "ok" } else { "unavailable" },
            "version": env!("CARGO_PKG_VERSION"),
        });
        reply(status, "application/json", body.to_string())
    }
}
