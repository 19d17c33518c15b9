//! The admin listener: a separate port, bearer-token auth, JSON and
//! Prometheus text. Never reachable through the S3 port.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use crate::auth::token_matches;
use crate::kms::KmsError;
use crate::metrics::Metrics;
use crate::policy::PolicyRuntime;
use crate::rotation::{Rotation, RotationError};
use crate::storage::{Storage, StorageError};

pub struct Admin {
    pub token: String,
    pub metrics: Arc<Metrics>,
    pub storage: Arc<dyn Storage>,
    pub policy: Arc<PolicyRuntime>,
    pub rotation: Rotation,
}

/// Largest policy module `PUT /policy` accepts.
const MAX_MODULE_SIZE: usize = 16 << 20;

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

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
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
            (&Method::GET, "/policy") => reply(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&self.policy.info()).unwrap_or_default(),
            ),
            (&Method::PUT, "/policy") => self.load_policy(req).await,
            (&Method::POST, "/kms/rewrap") => self.rewrap(req.uri().query().unwrap_or("")).await,
            (_, "/health" | "/metrics" | "/policy" | "/kms/rewrap") => {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    /// Body = the component's bytes. Compiled, checked and self-tested
    /// before the swap; a refused module leaves the current one in place.
    async fn load_policy<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let body = match http_body_util::Limited::new(req.into_body(), MAX_MODULE_SIZE).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("reading the module: {e}")),
        };
        match self.policy.load(body.to_vec(), "PUT /policy".into()).await {
            Ok(info) => reply(StatusCode::OK, "application/json", serde_json::to_string(&info).unwrap_or_default()),
            Err(e) => json_error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
        }
    }

    /// `POST /kms/rewrap?bucket=B[&keep_old_key=true][&deep=true]`: key rotation, see
    /// [`crate::rotation`]. Answers when the run is over.
    async fn rewrap(&self, query: &str) -> Response<Full<Bytes>> {
        let mut bucket = None;
        let mut keep_old_key = false;
        let mut deep = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("bucket", name) => bucket = Some(name.to_owned()),
                ("keep_old_key", value) => keep_old_key = matches!(value, "true" | "1" | ""),
                ("deep", value) => deep = matches!(value, "true" | "1" | ""),
                (other, _) => return json_error(StatusCode::BAD_REQUEST, &format!("unknown parameter {other:?}")),
            }
        }
        let Some(bucket) = bucket.filter(|b| !b.is_empty()) else {
            return json_error(StatusCode::BAD_REQUEST, "the bucket parameter is required");
        };
        match self.rotation.rewrap_bucket(&bucket, keep_old_key, deep).await {
            Ok(report) => reply(StatusCode::OK, "application/json", serde_json::to_string(&report).unwrap_or_default()),
            Err(e) => {
                let status = match &e {
                    RotationError::NoSuchBucket => StatusCode::NOT_FOUND,
                    RotationError::NoMasterKey | RotationError::InProgress => StatusCode::CONFLICT,
                    RotationError::Kms(KmsError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                    RotationError::Storage(StorageError::Unsupported(_)) => StatusCode::NOT_IMPLEMENTED,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                json_error(status, &format!("rewrap of {bucket}: {e}"))
            }
        }
    }

    async fn health(&self) -> Response<Full<Bytes>> {
        let storage_ok = self.storage.ping().await.is_ok();
        let kms = self.policy.kms();
        let kms_state = kms.health().await;
        let healthy = storage_ok && kms_state.is_ok();
        let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let policy = self.policy.info();
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "degraded" },
            "storage": if storage_ok { "ok" } else { "unavailable" },
            "backend": self.storage.backend(),
            "kms": {
                "backend": kms.backend(),
                "state": if kms_state.is_ok() { "ok" } else { "unavailable" },
                "error": kms_state.err().map(|e| e.to_string()),
            },
            "policy": { "name": policy.name, "sha256": policy.sha256 },
            "version": env!("CARGO_PKG_VERSION"),
        });
        let mut body = body;
        if self.storage.backend() == "s3" {
            body["upstream"] = (if storage_ok { "ok" } else { "unavailable" }).into();
        }
        reply(status, "application/json", body.to_string())
    }
}
