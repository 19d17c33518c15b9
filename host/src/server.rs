//! Listeners and the per-request envelope: request ids, the request log
//! line, metrics, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::server::graceful::GracefulShutdown;
use s3s::Body;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::auth::{self, OperationSlot, SignedOnly, Users};
use crate::config::{KmsSettings, Settings};
use crate::crypto::{self, Implementation};
use crate::kms::Kms;
use crate::kms::aws::{AwsKms, AwsKmsConfig};
use crate::kms::bucket_keys::{BucketKeyKms, BucketKeySettings};
use crate::kms::kmip::{KmipConfig, KmipKms};
use crate::kms::local::LocalKms;
use crate::kms::metered::MeteredKms;
use crate::listener::{ConnectionLimits, StallGuard, accept_loop};
use crate::metrics::Metrics;
use crate::policy::{PersistedPolicy, PolicyRuntime};
use crate::request_guard::{Refusal, RequestGuard, SignedForm};
use crate::rotation::Rotation;
use crate::s3::Gateway;
use crate::s3::error::error_response;
use crate::storage::Storage;
use crate::storage::local::LocalStorage;
use crate::storage::upstream::UpstreamStorage;
use crate::tls::ReloadableTls;

/// The admin port serves an operator and a metrics scraper, not the public.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// How long in-flight requests may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Private from the start: it holds credentials and wrapped keys.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let expiry = settings.multipart_expiry;
    let metrics = Arc::new(Metrics::default());
    let storage: Arc<dyn Storage> = match &settings.upstream {
        None => Arc::new(LocalStorage::open(&settings.data_dir, expiry).context("opening the object store")?),
        Some(upstream) => Arc::new(
            UpstreamStorage::open(upstream, metrics.clone())
                .await
                .with_context(|| format!("opening the upstream S3 at {}", upstream.endpoint))?,
        ),
    };
    let main = auth::main_credentials(&settings)?;
    let users = Users::load(&main.pair, settings.users_file.as_deref())?;
    let admin_token = auth::admin_token(&settings)?;
    let master_kms = open_kms(&settings, metrics.clone())?;
    let bucket_keys =
        Arc::new(BucketKeyKms::new(master_kms, storage.clone(), settings.bucket_keys.clone(), metrics.clone()));
    spawn_bucket_key_purge(bucket_keys.clone(), &settings.bucket_keys);
    let kms: Arc<dyn Kms> = bucket_keys.clone();
    let module = match &settings.policy {
        Some(path) => Some((read_module(path)?, path.display().to_string())),
        None => None,
    };
    let persisted = PersistedPolicy::new(&settings.data_dir);
    let policy = PolicyRuntime::start(kms, metrics.clone(), module, Some(persisted)).await?;
    tracing::info!(cipher = Implementation::DEFAULT.name(), cpu_features = %crypto::cpu_features(), "bulk cipher");

    let gateway = Gateway::new(storage.clone(), policy.clone(), metrics.clone(), settings.region.clone());
    let front = Arc::new(S3Front {
        guard: RequestGuard { users: Arc::new(users.clone()), allow_sigv2: settings.allow_sigv2 },
        s3: build_s3_service(&settings, gateway.clone(), users)?,
        gateway,
        host: virtual_host(&settings)?,
        metrics: metrics.clone(),
        stall_timeout: settings.connections.body_stall_timeout,
    });
    spawn_upload_expiry(storage.clone(), expiry);
    let rotation = Rotation::new(storage.clone(), bucket_keys);
    let admin =
        Arc::new(Admin { token: admin_token, metrics: metrics.clone(), storage, policy: policy.clone(), rotation });
    spawn_sighup_reload(policy, settings.policy.clone());

    let s3_tls = settings.tls.clone().map(ReloadableTls::load).transpose()?;
    let admin_tls = settings.admin_tls.clone().map(ReloadableTls::load).transpose()?;
    if admin_tls.is_none() && !settings.admin_listen.ip().is_loopback() {
        anyhow::bail!(
            "the admin listener {} is not on loopback: give it TLS (--admin-tls-cert, --admin-tls-key) or bind it to 127.0.0.1",
            settings.admin_listen
        );
    }
    spawn_tls_reload([s3_tls.clone(), admin_tls.clone()]);
    let s3_listener =
        TcpListener::bind(settings.listen).await.with_context(|| format!("binding {}", settings.listen))?;
    let admin_listener =
        TcpListener::bind(settings.admin_listen).await.with_context(|| format!("binding {}", settings.admin_listen))?;
    announce(&settings, &main, s3_listener.local_addr()?, admin_listener.local_addr()?);

    let graceful = Arc::new(GracefulShutdown::new());
    let s3_handler = move |req: Request<Incoming>| {
        let front = front.clone();
        async move { Ok::<_, Infallible>(front.handle(req).await) }
    };
    let admin_handler = move |req: Request<Incoming>| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(req).await) }
    };
    let admin_limits = ConnectionLimits { max_connections: ADMIN_MAX_CONNECTIONS, ..settings.connections };
    // Not spawned: the accept loops end (and let go of `graceful`) when
    // the shutdown signal wins the select.
    tokio::select! {
        () = accept_loop(s3_listener, settings.connections, s3_tls, graceful.clone(), s3_handler) => {},
        () = accept_loop(admin_listener, admin_limits, admin_tls, graceful.clone(), admin_handler) => {},
        () = shutdown_signal() => {},
    }
    let graceful = Arc::try_unwrap(graceful).map_err(|_| anyhow::anyhow!("an accept loop outlived its abort"))?;
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight requests still running after the grace period; stopping anyway");
    }
    Ok(())
}

/// SIGHUP re-reads the TLS certificates (new connections get them; open
/// ones keep theirs). A failed reload keeps the certificates in use.
fn spawn_tls_reload(listeners: [Option<Arc<ReloadableTls>>; 2]) {
    if listeners.iter().all(Option::is_none) {
        return;
    }
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            for tls in listeners.iter().flatten() {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; the current one stays"),
                }
            }
        }
    });
}

/// Discards abandoned multipart uploads while the gateway runs, not only at
/// start: every quarter of the expiry, between once a second and once an hour.
fn spawn_upload_expiry(storage: Arc<dyn Storage>, expiry: Duration) {
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await; // the start-up sweep just ran
        loop {
            tick.tick().await;
            if let Err(e) = storage.expire_uploads(expiry).await {
                tracing::warn!(error = %e, "expiring abandoned multipart uploads failed");
            }
        }
    });
}

/// Evicts (and zeroizes) cached bucket keys once past their TTL and grace,
/// also those nobody asks for again.
fn spawn_bucket_key_purge(keys: Arc<BucketKeyKms>, settings: &BucketKeySettings) {
    let every = (settings.cache_ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            keys.purge_expired();
        }
    });
}

/// Opens the configured backend. A remote KMS need not be up yet: the
/// gateway starts, reports it in /health and fails encrypted requests closed.
fn open_kms(settings: &Settings, metrics: Arc<Metrics>) -> anyhow::Result<Arc<dyn Kms>> {
    let backend: Arc<dyn Kms> = match &settings.kms {
        KmsSettings::Local { dir } => Arc::new(LocalKms::open(dir, &settings.data_dir)?),
        KmsSettings::Kmip { endpoints, ca, cert, key, server_name } => {
            let mut config = KmipConfig::new(endpoints.clone(), ca.clone(), cert.clone(), key.clone());
            config.server_name = server_name.clone();
            config.call_timeout = settings.kms_timeout;
            config.connect_timeout = config.connect_timeout.min(settings.kms_timeout);
            Arc::new(KmipKms::new(config)?)
        }
        KmsSettings::Aws { endpoint, region, access_key_id, secret_access_key } => {
            let mut config = AwsKmsConfig::new(region.clone());
            config.endpoint = endpoint.clone();
            config.access_key_id = access_key_id.clone();
            config.secret_access_key = secret_access_key.as_ref().map(|s| s.expose().to_owned());
            config.call_timeout = settings.kms_timeout;
            config.attempt_timeout = config.attempt_timeout.min(settings.kms_timeout);
            config.connect_timeout = config.connect_timeout.min(settings.kms_timeout);
            Arc::new(AwsKms::new(config)?)
        }
    };
    tracing::info!(backend = backend.backend(), settings = ?settings.kms, "KMS");
    Ok(Arc::new(MeteredKms::new(backend, metrics, settings.kms_timeout)))
}

fn read_module(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading policy module {}", path.display()))
}

/// SIGHUP re-reads `--policy` and swaps it in; with no `--policy`, the
/// active module stays (a module loaded through `PUT /policy` is not undone).
fn spawn_sighup_reload(policy: Arc<PolicyRuntime>, path: Option<std::path::PathBuf>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::info!("SIGHUP: no --policy configured; the active module stays");
                continue;
            };
            let bytes = match read_module(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: cannot read the policy module; the current one stays");
                    continue;
                }
            };
            // Errors are logged and counted by the runtime.
            let _ = policy.load(bytes, path.display().to_string()).await;
        }
    });
}

fn build_s3_service(settings: &Settings, gateway: Gateway, users: Users) -> anyhow::Result<S3Service> {
    let mut builder = S3ServiceBuilder::new(gateway);
    builder.set_auth(users);
    builder.set_access(SignedOnly);
    if let Some(host) = virtual_host(settings)? {
        builder.set_host(host);
    }
    Ok(builder.build())
}

fn virtual_host(settings: &Settings) -> anyhow::Result<Option<AnyPort>> {
    let Some(domain) = &settings.domain else { return Ok(None) };
    let host = s3s::host::SingleDomain::new(domain).map_err(|e| anyhow::anyhow!("invalid --domain {domain}: {e}"))?;
    Ok(Some(AnyPort(host)))
}

/// Virtual-hosted style under `--domain`, whatever port the client put in
/// `Host` (s3s's `SingleDomain` matches the port as part of the domain).
struct AnyPort(s3s::host::SingleDomain);

impl s3s::host::S3Host for AnyPort {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let without_port = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        self.0.parse_host_header(without_port)
    }
}

fn announce(settings: &Settings, main: &auth::MainCredentials, s3: SocketAddr, admin: SocketAddr) {
    let scheme = |tls: bool| if tls { "https" } else { "http" };
    let (s3, admin) = (
        format!("{}://{s3}", scheme(settings.tls.is_some())),
        format!("{}://{admin}", scheme(settings.admin_tls.is_some())),
    );
    tracing::info!(endpoint = %s3, admin = %admin, data_dir = %settings.data_dir.display(), region = %settings.region, "sealgate listening");
    // Printed, not logged: the secret belongs on the operator's terminal, not in log storage.
    println!("sealgate S3 endpoint: {s3}  (region {})", settings.region);
    println!("admin endpoint:       {admin}");
    if main.generated {
        println!("access key: {}", main.pair.access_key);
        println!("secret key: {}", main.pair.secret_key);
        println!("(generated; stored in {})", settings.data_dir.join("credentials.toml").display());
    } else {
        println!("access key: {} (secret key as configured)", main.pair.access_key);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

fn header_u64(headers: &hyper::HeaderMap, name: hyper::header::HeaderName) -> u64 {
    headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The bucket a path-style request names (for the log line only).
fn bucket_of(path: &str) -> String {
    path.trim_start_matches('/').split('/').next().unwrap_or_default().to_owned()
}

/// What answers the S3 port: s3s, but for a signed browser POST, which
/// the gateway streams itself (see `s3::post`).
struct S3Front {
    s3: S3Service,
    gateway: Gateway,
    guard: RequestGuard,
    host: Option<AnyPort>,
    metrics: Arc<Metrics>,
    stall_timeout: Duration,
}

/// Where a request goes once [`RequestGuard`] let it through.
enum Guarded {
    S3s(Request<Body>),
    BrowserPost { parts: hyper::http::request::Parts, boundary: String, form: Box<SignedForm> },
}

impl S3Front {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_uppercase();
        let slot = OperationSlot::default();
        req.extensions_mut().insert(slot.clone());
        let method = req.method().clone();
        let bucket = bucket_of(req.uri().path());
        let bytes_in = header_u64(req.headers(), hyper::header::CONTENT_LENGTH);
        let expects_continue = req
            .headers()
            .get(hyper::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));

        let (parts, body) = req.into_parts();
        let (body, stalled) = StallGuard::new(body, self.stall_timeout);
        let guarded = guarded(&self.guard, parts, body).await;
        let mut res = match guarded {
            Ok(Guarded::S3s(req)) => match self.s3.call(req).await {
                Ok(res) => res,
                Err(e) => {
                    tracing::error!(error = ?e, "s3 service failed");
                    error_response(
                        hyper::StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        "We encountered an internal error. Please try again.",
                    )
                }
            },
            Ok(Guarded::BrowserPost { parts, boundary, form }) => {
                let _ = slot.0.set("PostObject".to_owned());
                match self.post_bucket(&parts) {
                    Ok(name) => self.gateway.browser_post(parts, name, &boundary, *form).await,
                    Err(refusal) => refusal_response(refusal, &request_id),
                }
            }
            Err(refusal) => {
                // Refused before s3s read anything: the body (if any) is unread.
                let mut res = refusal_response(refusal, &request_id);
                res.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                self.metrics.record_request(
                    "Refused",
                    res.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                    bytes_in,
                    0,
                );
                tracing::info!(request_id = %request_id, %method, operation = "Refused", bucket = %bucket, status = res.status().as_u16(), "request");
                return res;
            }
        };
        if stalled.load(std::sync::atomic::Ordering::SeqCst) {
            // Whatever the handler made of the broken body, the client hears
            // what AWS says, and the connection (its body half read) closes.
            res = error_response(
                hyper::StatusCode::BAD_REQUEST,
                "RequestTimeout",
                "Your socket connection to the server was not read from or written to within the timeout period. Idle connections will be closed.",
            );
            res.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        }
        stamp_request_id(&mut res, &request_id);

        let status = res.status().as_u16();
        let operation = slot.0.get().map_or("Unresolved", String::as_str);
        // Refused before routing (e.g. a bad signature): the body was never
        // read, so the connection cannot carry another request; say so.
        //
        // An empty body with `Expect: 100-continue` gets its final response
        // without a 100 (hyper's choice, and valid HTTP), but botocore then
        // keeps that response's status line for the connection's next Expect
        // request and hangs on it: close such connections so boto3 reconnects.
        if (status >= 400 && operation == "Unresolved" && bytes_in > 0) || (expects_continue && bytes_in == 0) {
            res.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
        }
        let bytes_out = header_u64(res.headers(), hyper::header::CONTENT_LENGTH);
        let elapsed = started.elapsed();
        self.metrics.record_request(operation, status, elapsed.as_secs_f64(), bytes_in, bytes_out);
        tracing::info!(request_id = %request_id, %method, operation, bucket = %bucket, status, duration_ms = elapsed.as_secs_f64() * 1000.0, "request");
        res
    }

    /// The bucket a browser POST names: the path (path style) or the host
    /// (virtual-hosted style); a POST to an object path is not S3's.
    fn post_bucket(&self, parts: &hyper::http::request::Parts) -> Result<String, Refusal> {
        use s3s::host::S3Host;
        let path = parts.uri.path().trim_start_matches('/');
        let host = parts.headers.get(hyper::header::HOST).and_then(|h| h.to_str().ok());
        // An address names no bucket (s3s's rule too).
        let is_address = |host: &str| host.parse::<SocketAddr>().is_ok() || host.parse::<std::net::IpAddr>().is_ok();
        let from_host = match (&self.host, host) {
            (Some(parser), Some(host)) if !is_address(host) => {
                parser.parse_host_header(host).ok().and_then(|v| v.bucket().map(str::to_owned))
            }
            _ => None,
        };
        let (bucket, key) = match from_host {
            Some(bucket) => (bucket, path),
            None => {
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                (bucket.to_owned(), key)
            }
        };
        if bucket.is_empty() || !key.is_empty() {
            return Err(Refusal {
                status: 405,
                code: "MethodNotAllowed",
                message: "The specified method is not allowed against this resource.".into(),
            });
        }
        Ok(bucket)
    }
}

/// The checks s3s has no hook for (see [`RequestGuard`]). A browser POST's
/// form fields are read and its signature verified here; a signed one is
/// answered by the gateway, with its file still unread.
async fn guarded(
    guard: &RequestGuard,
    parts: hyper::http::request::Parts,
    body: StallGuard<Incoming>,
) -> Result<Guarded, Refusal> {
    use futures::StreamExt;
    use http_body_util::BodyStream;
    guard.check_head(&parts.uri, &parts.headers)?;
    let Some(boundary) = RequestGuard::post_form_boundary(&parts.method, &parts.headers) else {
        return Ok(Guarded::S3s(Request::from_parts(parts, Body::http_body(body))));
    };
    // Data frames only: a form has no trailers.
    let data = BodyStream::new(body)
        .filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(e)),
            }
        })
        .boxed();
    let form = guard.check_post_form(data, &boundary).await?;
    Ok(Guarded::BrowserPost { parts, boundary, form: Box::new(form) })
}

fn refusal_response(refusal: Refusal, request_id: &str) -> Response<Body> {
    let status = hyper::StatusCode::from_u16(refusal.status).unwrap_or(hyper::StatusCode::FORBIDDEN);
    let mut res = error_response(status, refusal.code, &refusal.message);
    stamp_request_id(&mut res, request_id);
    res
}

/// Every response carries the request id in `x-amz-request-id`; error
/// bodies also carry it as `<RequestId>`, as AWS's do.
fn stamp_request_id(res: &mut Response<Body>, request_id: &str) {
    let value = hyper::header::HeaderValue::from_str(request_id).expect("hex is a valid header");
    res.headers_mut().insert("x-amz-request-id", value.clone());
    res.headers_mut().insert("x-amz-id-2", value);
    if res.status().as_u16() < 400 {
        return;
    }
    let Some(body) = res.body().bytes() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return;
    };
    if text.contains("<RequestId>") {
        return;
    }
    let Some(end) = text.rfind("</Error>") else {
        return;
    };
    let patched = format!("{}<RequestId>{request_id}</RequestId>{}", &text[..end], &text[end..]);
    res.headers_mut().insert(hyper::header::CONTENT_LENGTH, patched.len().into());
    *res.body_mut() = Body::from(patched);
}
