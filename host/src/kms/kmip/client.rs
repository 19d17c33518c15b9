//! The KMIP transport: TTLV messages over TLS 1.2+ with mutual
//! authentication (rustls, ring provider), a small pool of connections,
//! several endpoints tried in order, a connect timeout and a per-call
//! timeout, and retries with backoff for idempotent operations only.

use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

use super::messages::{Request, tag};
use super::ttlv::{HEADER_LEN, ItemType, MAX_MESSAGE_LEN};

/// Tries of an idempotent call (the first one included).
const MAX_ATTEMPTS: u32 = 3;
/// Pause before the second try; doubled before each further one.
const BACKOFF: Duration = Duration::from_millis(100);
/// Idle connections older than this are closed rather than reused: servers
/// and middleboxes drop idle sessions, and a dropped one costs a failed try.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// After a connection failure an endpoint goes to the back of the order for
/// this long, so a dead first node does not cost each new connection a
/// connect timeout (it is still tried when the others fail too).
const HOLD_DOWN: Duration = Duration::from_secs(5);
/// The IANA port for KMIP over TLS, when an endpoint names none.
pub const DEFAULT_PORT: u16 = 5696;

/// One `host:port` of the KMIP cluster.
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

impl Endpoint {
    /// `host:port`, `host` (port 5696), `[v6]:port` or `[v6]`. The TLS server
    /// name is `server_name` if given, else the host.
    pub fn parse(text: &str, server_name: Option<&str>) -> Result<Self, String> {
        let (host, port) = split_host_port(text).ok_or_else(|| format!("KMIP endpoint {text:?} is not host:port"))?;
        let name = server_name.unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| format!("{name:?} is not a valid TLS server name (KMIP endpoint {text:?})"))?;
        Ok(Self { host: host.to_owned(), port, server_name })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
    };
    (!host.is_empty() && !host.contains(['/', ' '])).then_some((host, port))
}

/// TLS 1.2 or 1.3 with the ring provider, the CA bundle as the only roots,
/// and our client certificate. Errors name the file at fault.
pub fn tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in read_certs(ca, "CA bundle")? {
        roots.add(der).map_err(|e| format!("KMIP CA bundle {}: {e}", ca.display()))?;
    }
    let chain = read_certs(cert, "client certificate")?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("KMIP client key {}: no usable PEM private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| format!("KMIP client certificate {} with key {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("KMIP {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("KMIP {what} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no KMIP endpoint reachable ({0})")]
    Connect(String),
    #[error("KMIP connection to {endpoint} failed: {source}")]
    Io { endpoint: String, source: std::io::Error },
    #[error("KMIP server {endpoint} sent a bad frame: {what}")]
    Frame { endpoint: String, what: String },
    #[error("KMIP call timed out after {0:?}")]
    Timeout(Duration),
}

/// A response, and whether it answers a repeat of a request an earlier try
/// may already have delivered (so "already done" may mean "done by us").
pub struct Response {
    pub bytes: Zeroizing<Vec<u8>>,
    pub repeated: bool,
}

struct Conn {
    stream: TlsStream<TcpStream>,
    endpoint: usize,
    idle_since: Instant,
}

pub struct Client {
    endpoints: Vec<Endpoint>,
    connector: TlsConnector,
    /// Idle connections, the most recently used last.
    idle: Mutex<Vec<Conn>>,
    pool_size: usize,
    /// One permit per connection in use: bounds the connections to the pool
    /// size (new ones are only opened when no idle one is left).
    permits: Semaphore,
    /// Per endpoint: tried after the others until then.
    down_until: Mutex<Vec<Option<Instant>>>,
    connect_timeout: Duration,
    call_timeout: Duration,
}

impl Client {
    pub fn new(
        endpoints: Vec<Endpoint>,
        tls: Arc<ClientConfig>,
        pool_size: usize,
        connect_timeout: Duration,
        call_timeout: Duration,
    ) -> Self {
        let count = endpoints.len();
        let pool_size = pool_size.max(1);
        Self {
            endpoints,
            connector: TlsConnector::from(tls),
            idle: Mutex::new(Vec::with_capacity(pool_size)),
            pool_size,
            permits: Semaphore::new(pool_size),
            down_until: Mutex::new(vec![None; count]),
            connect_timeout,
            call_timeout,
        }
    }

    /// Sends `request` and returns the raw response. The whole call, retries
    /// included, takes at most the call timeout. Only idempotent operations
    /// are retried, and only they ride on reused connections: a
    /// non-idempotent one is sent once, on a fresh connection, so its failure
    /// can never be a stale connection the server had already dropped.
    pub async fn call(&self, request: &Request) -> Result<Response, TransportError> {
        let deadline = Instant::now() + self.call_timeout;
        let attempts = if request.operation.is_idempotent() { MAX_ATTEMPTS } else { 1 };
        let mut pause = BACKOFF;
        let mut attempt = 0;
        loop {
            let result = match tokio::time::timeout_at(deadline, self.attempt(request)).await {
                Ok(result) => result,
                Err(_) => return Err(TransportError::Timeout(self.call_timeout)),
            };
            let error = match result {
                Ok((bytes, resent)) => return Ok(Response { bytes, repeated: attempt > 0 || resent }),
                Err(error) => error,
            };
            attempt += 1;
            if attempt >= attempts || Instant::now() + pause >= deadline {
                return Err(error);
            }
            tracing::debug!(operation = %request.operation, attempt, %error, "KMIP call failed; retrying");
            tokio::time::sleep(jittered(pause)).await;
            pause *= 2;
        }
    }

    /// One try: an idle connection if there is a live one (idempotent
    /// operations only), else a new one. Also says whether the request was
    /// sent twice (a reused connection failed, then a new one answered).
    async fn attempt(&self, request: &Request) -> Result<(Zeroizing<Vec<u8>>, bool), TransportError> {
        let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
        if request.operation.is_idempotent()
            && let Some(mut conn) = self.take_idle()
        {
            match self.exchange(&mut conn, &request.bytes).await {
                Ok(response) => {
                    self.put_idle(conn);
                    return Ok((response, false));
                }
                Err(error) => {
                    // Likely the server dropped its sessions (restart,
                    // failover): the other idle ones are as stale.
                    tracing::debug!(%error, "reused KMIP connection failed; reconnecting");
                    self.idle.lock().expect("pool lock").clear();
                    let mut conn = self.connect().await?;
                    let response = self.exchange(&mut conn, &request.bytes).await?;
                    self.put_idle(conn);
                    return Ok((response, true));
                }
            }
        }
        self.make_room();
        let mut conn = self.connect().await?;
        let response = self.exchange(&mut conn, &request.bytes).await?;
        self.put_idle(conn);
        Ok((response, false))
    }

    /// Closes the oldest idle connection if a new one would exceed the pool
    /// size (a non-idempotent call opens one even when idle ones exist).
    fn make_room(&self) {
        let in_use = self.pool_size - self.permits.available_permits();
        let mut idle = self.idle.lock().expect("pool lock");
        if !idle.is_empty() && idle.len() + in_use > self.pool_size {
            idle.remove(0);
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < MAX_IDLE && is_open(&conn.stream) {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.pool_size {
            idle.push(conn);
        }
    }

    /// The endpoints in order, those held down after a recent failure last.
    fn connect_order(&self) -> Vec<usize> {
        let now = Instant::now();
        let down = self.down_until.lock().expect("endpoint lock");
        let (mut up, held): (Vec<usize>, Vec<usize>) =
            (0..self.endpoints.len()).partition(|&i| down[i].is_none_or(|until| until <= now));
        up.extend(held);
        up
    }

    /// Records a connection failure (or success); logs only the changes, so
    /// an outage is one warning per endpoint, not one per call.
    fn mark(&self, index: usize, failure: Option<&str>) {
        let mut down = self.down_until.lock().expect("endpoint lock");
        let was_down = down[index].is_some();
        down[index] = failure.map(|_| Instant::now() + HOLD_DOWN);
        let endpoint = &self.endpoints[index];
        match failure {
            Some(failure) if !was_down => tracing::warn!(%endpoint, %failure, "KMIP endpoint unavailable"),
            Some(failure) => tracing::debug!(%endpoint, %failure, "KMIP endpoint still unavailable"),
            None if was_down => tracing::info!(%endpoint, "KMIP endpoint available again"),
            None => {}
        }
    }

    /// A new connection to the first endpoint that takes one.
    async fn connect(&self) -> Result<Conn, TransportError> {
        let mut failures = Vec::new();
        for index in self.connect_order() {
            let endpoint = &self.endpoints[index];
            let failure = match tokio::time::timeout(self.connect_timeout, self.connect_to(endpoint)).await {
                Ok(Ok(stream)) => {
                    self.mark(index, None);
                    return Ok(Conn { stream, endpoint: index, idle_since: Instant::now() });
                }
                Ok(Err(error)) => format!("{endpoint}: {error}"),
                Err(_) => format!("{endpoint}: no TLS session within {:?}", self.connect_timeout),
            };
            self.mark(index, Some(&failure));
            failures.push(failure);
        }
        Err(TransportError::Connect(failures.join("; ")))
    }

    async fn connect_to(&self, endpoint: &Endpoint) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        tcp.set_nodelay(true)?;
        self.connector.connect(endpoint.server_name.clone(), tcp).await
    }

    /// Writes the request, reads one whole response message.
    async fn exchange(&self, conn: &mut Conn, request: &[u8]) -> Result<Zeroizing<Vec<u8>>, TransportError> {
        let endpoint = &self.endpoints[conn.endpoint];
        let io = |source| TransportError::Io { endpoint: endpoint.to_string(), source };
        conn.stream.write_all(request).await.map_err(io)?;
        conn.stream.flush().await.map_err(io)?;
        let mut header = [0u8; HEADER_LEN];
        conn.stream.read_exact(&mut header).await.map_err(io)?;
        let len = frame_len(&header)
            .map_err(|what| TransportError::Frame { endpoint: endpoint.to_string(), what: what.to_owned() })?;
        // Allocated once at its final size: a Decrypt response holds a data key.
        let mut message = Zeroizing::new(vec![0u8; HEADER_LEN + len]);
        message[..HEADER_LEN].copy_from_slice(&header);
        conn.stream.read_exact(&mut message[HEADER_LEN..]).await.map_err(io)?;
        Ok(message)
    }
}

/// The length of the Response Message whose header is `header`, if it is one
/// we accept.
fn frame_len(header: &[u8; HEADER_LEN]) -> Result<usize, &'static str> {
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    if tag != tag::RESPONSE_MESSAGE || header[3] != ItemType::Structure as u8 {
        return Err("not a Response Message");
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !len.is_multiple_of(8) || HEADER_LEN + len > MAX_MESSAGE_LEN {
        return Err("impossible message length");
    }
    Ok(len)
}

/// Whether an idle connection still looks usable: nothing to read (a closed
/// or reset one reads EOF or an error; a TLS alert is data we never asked
/// for). A non-blocking peek on the socket, so no async machinery is needed.
fn is_open(stream: &TlsStream<TcpStream>) -> bool {
    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(stream.get_ref().0).peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// `pause` ± 25 %, so clients that failed together do not retry together.
fn jittered(pause: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    pause.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let ep = Endpoint::parse("kms.example.com:5697", None).unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("kms.example.com", 5697));
        assert_eq!(ep.server_name, ServerName::try_from("kms.example.com").unwrap());
        assert_eq!(Endpoint::parse("kms", None).unwrap().port, DEFAULT_PORT);
        let ip = Endpoint::parse("127.0.0.1:1", None).unwrap();
        assert!(matches!(ip.server_name, ServerName::IpAddress(_)));
        let v6 = Endpoint::parse("[::1]:5696", None).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 5696));
        assert_eq!(v6.to_string(), "[::1]:5696");
        assert_eq!(Endpoint::parse("[::1]", None).unwrap().port, DEFAULT_PORT);
        let named = Endpoint::parse("10.0.0.5:5696", Some("kms.internal")).unwrap();
        assert_eq!(named.server_name, ServerName::try_from("kms.internal").unwrap());
        for bad in ["", ":5696", "host:", "host:0", "host:70000", "host:port", "[::1", "[::1]x", "a b:1", "h:1:2"] {
            assert!(Endpoint::parse(bad, None).is_err(), "{bad:?}");
        }
        assert!(Endpoint::parse("h:1", Some("not a name!")).is_err());
    }

    #[test]
    fn only_response_messages_of_sane_length_are_read() {
        let header = |bytes: [u8; 8]| frame_len(&bytes);
        assert_eq!(header([0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x10]), Ok(16));
        assert!(header([0x42, 0x00, 0x78, 0x01, 0, 0, 0, 0x10]).is_err(), "a request");
        assert!(header([0x42, 0x00, 0x7B, 0x02, 0, 0, 0, 0x10]).is_err(), "not a structure");
        assert!(header([0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x11]).is_err(), "not 8-aligned");
        assert!(header([0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8]).is_err(), "4 GiB");
        assert!(header([0x16, 0x03, 0x01, 0x02, 0, 0, 0, 0]).is_err(), "TLS bytes");
    }

    #[test]
    fn backoff_jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(75) && d <= Duration::from_millis(125), "{d:?}");
        }
    }

    #[test]
    fn pem_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not PEM\n").unwrap();
        let err = tls_config(&missing, &missing, &missing).unwrap_err();
        assert!(err.contains("CA bundle") && err.contains("missing.pem"), "{err}");
        let err = tls_config(&empty, &empty, &empty).unwrap_err();
        assert!(err.contains("CA bundle") && err.contains("empty.pem") && err.contains("no PEM certificate"), "{err}");
    }
}
