//! Accepting connections and keeping them honest: a cap on open
//! connections (excess ones wait in the kernel's backlog), back-off when the
//! process runs out of file descriptors, and the timeouts that stop a client
//! who sends nothing (or reads nothing) from holding a connection forever.
//!
//! - headers must arrive within `header_read_timeout` (hyper's own timer);
//! - a request body that delivers no byte for `body_stall_timeout` ends the
//!   request with 400 RequestTimeout ([`StallGuard`]), as does a response
//!   the client stops reading (the write side of [`TimedIo`]);
//! - a connection with no request in flight and no byte moved for
//!   `idle_timeout` is closed ([`TimedIo`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::tls::ReloadableTls;

/// Timeouts and the connection cap of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_stall_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            body_stall_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

/// Longest pause after a failed accept (e.g. EMFILE), so the loop never spins.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What a connection reads and writes: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Accepts connections until the future is dropped, each served by
/// `handler`, over TLS when `tls` is given.
pub async fn accept_loop<S, F, B>(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<ReloadableTls>>,
    graceful: Arc<GracefulShutdown>,
    handler: S,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = Duration::from_millis(10);
    loop {
        // At the cap, stop accepting: new connections queue in the backlog.
        let permit = slots.clone().acquire_owned().await.expect("semaphore never closes");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let timed = TimedIo::new(stream, activity.clone(), limits);
        let service = in_flight_service(handler.clone(), activity);
        // Watched from here: the graceful shutdown waits for it.
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(timed),
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(timed)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let mut builder = ConnBuilder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// `handler`, marking the connection busy while a request is served.
fn in_flight_service<S, F, B>(
    handler: S,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send> + Clone
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body,
{
    service_fn(move |req| {
        let in_flight = activity.begin();
        let response = handler(req);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    })
}

/// Whether a connection has a request in flight, and when it last moved a byte.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self { in_flight: AtomicUsize::new(0), last: std::sync::Mutex::new(Instant::now()) }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }
}

/// A TCP stream whose reads fail once the connection has been idle too long
/// and whose writes fail when the peer stops reading.
struct TimedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    read_deadline: Option<Pin<Box<Sleep>>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl TimedIo {
    fn new(inner: TcpStream, activity: Arc<Activity>, limits: ConnectionLimits) -> Self {
        Self { inner, activity, limits, read_deadline: None, write_deadline: None }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl AsyncRead for TimedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.activity.touch();
                }
                this.read_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending if !this.activity.idle() => {
                // A request is being served: its body has its own stall
                // timeout, and a slow handler is not the client's fault.
                this.read_deadline = None;
                Poll::Pending
            }
            Poll::Pending => {
                let deadline = this.activity.last() + this.limits.idle_timeout;
                let sleep =
                    this.read_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                if sleep.deadline() != deadline.into() {
                    sleep.as_mut().reset(deadline.into());
                }
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("idle connection closed")))
            }
        }
    }
}

impl TimedIo {
    /// Notes a write's progress; a write that stays pending past the stall
    /// timeout fails (the peer stopped reading).
    fn written(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.activity.touch();
                }
                self.write_deadline = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let stall = self.limits.body_stall_timeout;
                let sleep = self.write_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("the client stopped reading the response")))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails with `TimedOut` when no byte arrives for the
/// stall timeout; `fired` tells the handler afterwards.
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl<B> StallGuard<B> {
    pub fn new(inner: B, timeout: Duration) -> (Self, Arc<std::sync::atomic::AtomicBool>) {
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (Self { inner, timeout, deadline: None, fired: fired.clone() }, fired)
    }
}

impl<B> hyper::body::Body for StallGuard<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let sleep = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                this.fired.store(true, Ordering::SeqCst);
                Poll::Ready(Some(Err(Box::new(timed_out("request body stalled")))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
