//! The KMIP KMS against a real PyKMIP server (tests/support/kmip_server.py,
//! needs `pip install -r tests/python/requirements.txt`): each test starts
//! its own on a free loopback port with its own temporary directory
//! (certificates, database, log), and stops it when done.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealgate::kms::kmip::{KmipConfig, KmipKms};
use sealgate::kms::{KeyContext, Kms, KmsError};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/support/kmip_server.py");

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ctx(key: &str) -> KeyContext {
    KeyContext { bucket: "photos".into(), key: key.into() }
}

/// A PyKMIP server in its own directory. It also stops by itself when this
/// process dies (its stdin closes).
struct KmipServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl KmipServer {
    fn start() -> Self {
        let mut server = KmipServer { dir: tempfile::tempdir().unwrap(), port: free_port(), child: None, stdin: None };
        server.spawn();
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(self.path("stdout.log")).unwrap();
        let mut child = Command::new(python())
            .arg(SCRIPT)
            .args(["--dir", self.dir.path().to_str().unwrap(), "--port", &self.port.to_string()])
            .arg("--exit-on-stdin-eof")
            // Its own process group: the fallback kill reaches the processes
            // PyKMIP forks too.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("running tests/support/kmip_server.py with python3");
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the PyKMIP server exited with {status}:\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the PyKMIP server did not listen within 60 s:\n{}", self.log());
    }

    /// SIGINT (the script closes its socket and exits at once), SIGKILL to
    /// the whole group if it has not after 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                self.stdin = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        let _ = child.wait();
        self.stdin = None;
    }

    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.path(name)).unwrap_or_default();
        format!("{}\n{}", read("stdout.log"), read("server.log"))
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> KmipConfig {
        KmipConfig {
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(20),
            pool_size: 4,
            ..KmipConfig::new(
                vec![self.endpoint()],
                self.path("ca.pem"),
                self.path("client.pem"),
                self.path("client.key"),
            )
        }
    }

    fn kms(&self) -> KmipKms {
        KmipKms::new(self.config()).unwrap()
    }

    /// Connections the server accepted so far.
    fn connections(&self) -> usize {
        std::fs::read_to_string(self.path("server.log"))
            .unwrap_or_default()
            .matches("Receiving incoming connection")
            .count()
    }
}

impl Drop for KmipServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, KmsError>) {
    match result {
        Err(KmsError::Refused(_)) => {}
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[track_caller]
fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, KmsError>) {
    match result {
        Err(KmsError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn keys_are_created_found_and_wrap_only_for_their_context() {
    let server = KmipServer::start();
    let kms = server.kms();
    assert_eq!(kms.backend(), "kmip");
    kms.health().await.unwrap();
    let info = kms.server_info().await.unwrap();
    assert!(info.vendor.as_deref().unwrap_or_default().contains("PyKMIP"), "{info:?}");
    assert!(info.operations.contains(&31) && info.operations.contains(&32), "Encrypt and Decrypt: {info:?}");

    let master = kms.create_key("photos").await.unwrap();
    assert!(kms.locate_by_name("sealgate:photos").await.unwrap().contains(&master));
    let other = kms.create_key("other").await.unwrap();
    assert_ne!(master, other);
    assert!(!kms.locate_by_name("sealgate:photos").await.unwrap().contains(&other));

    let dk = kms.generate_data_key(&master, &ctx("cat.jpg")).await.unwrap();
    assert_eq!(dk.wrapped.len(), 81);
    assert_eq!(dk.wrapped[0], 1);
    let back = kms.unwrap_data_key(&master, &dk.wrapped, &ctx("cat.jpg")).await.unwrap();
    assert_eq!(back.plaintext, dk.plaintext);
    // Random IVs: the same key wraps differently each time.
    let again = kms.wrap_data_key(&master, &dk.plaintext, &ctx("cat.jpg")).await.unwrap();
    assert_ne!(again, dk.wrapped);

    assert_refused(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("dog.jpg")).await);
    let other_bucket = KeyContext { bucket: "other".into(), key: "cat.jpg".into() };
    assert_refused(kms.unwrap_data_key(&master, &dk.wrapped, &other_bucket).await);
    assert_refused(kms.unwrap_data_key(&other, &dk.wrapped, &ctx("cat.jpg")).await);
    assert_refused(kms.unwrap_data_key("no-such-key", &dk.wrapped, &ctx("cat.jpg")).await);

    // Key rotation: the generic rewrap (unwrap, then wrap under the new key).
    let rewrapped = kms.rewrap_data_key(&master, &dk.wrapped, &other, &ctx("cat.jpg")).await.unwrap();
    let rotated = kms.unwrap_data_key(&other, &rewrapped, &ctx("cat.jpg")).await.unwrap();
    assert_eq!(rotated.plaintext, dk.plaintext);
}

#[tokio::test]
async fn every_edit_of_a_wrapped_key_is_refused() {
    let server = KmipServer::start();
    let kms = server.kms();
    let master = kms.create_key("photos").await.unwrap();
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
    // Each byte (version, IV, every ciphertext block), a low and a high bit:
    // CBC would let an IV edit through as a different key if the check did
    // not cover the key itself.
    for position in 0..dk.wrapped.len() {
        for bit in [0x01, 0x80] {
            let mut edited = dk.wrapped.clone();
            edited[position] ^= bit;
            match kms.unwrap_data_key(&master, &edited, &ctx("o")).await {
                Err(KmsError::Refused(_)) => {}
                other => panic!("byte {position} ^ {bit:#x}: expected Refused, got {other:?}"),
            }
        }
    }
    assert_refused(kms.unwrap_data_key(&master, &dk.wrapped[..80], &ctx("o")).await);
    assert_refused(kms.unwrap_data_key(&master, &[dk.wrapped.as_slice(), &[0; 16]].concat(), &ctx("o")).await);
    assert_refused(kms.unwrap_data_key(&master, &[], &ctx("o")).await);
    kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await.unwrap();
}

#[tokio::test]
async fn destroyed_keys_are_gone_for_good() {
    let server = KmipServer::start();
    let kms = server.kms();
    let master = kms.create_key("doomed").await.unwrap();
    let keep = kms.create_key("kept").await.unwrap();
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
    let kept = kms.generate_data_key(&keep, &ctx("o")).await.unwrap();

    kms.destroy_key(&master).await.unwrap();
    assert_refused(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await);
    assert_refused(kms.wrap_data_key(&master, &dk.plaintext, &ctx("o")).await);
    assert!(!kms.locate_by_name("sealgate:doomed").await.unwrap().contains(&master));
    // Idempotent: destroying it again, or a key that never existed, is fine.
    kms.destroy_key(&master).await.unwrap();
    kms.destroy_key("999999").await.unwrap();
    // The other key is untouched.
    assert_eq!(kms.unwrap_data_key(&keep, &kept.wrapped, &ctx("o")).await.unwrap().plaintext, kept.plaintext);
}

#[tokio::test]
async fn another_client_identity_cannot_use_our_keys() {
    let server = KmipServer::start();
    let kms = server.kms();
    let master = kms.create_key("photos").await.unwrap();
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
    let intruder = KmipKms::new(KmipConfig {
        cert: server.path("other-client.pem"),
        key: server.path("other-client.key"),
        ..server.config()
    })
    .unwrap();
    intruder.health().await.unwrap();
    assert_refused(intruder.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await);
    assert!(!intruder.locate_by_name("sealgate:photos").await.unwrap().contains(&master));
}

/// A port nothing listens on (connection refused at once).
fn dead_endpoint() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn dead_endpoints_are_skipped_in_order() {
    let server = KmipServer::start();
    // Accepts TCP connections (the kernel does) but never speaks TLS.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr: SocketAddr = silent.local_addr().unwrap();
    let config = KmipConfig {
        endpoints: vec![dead_endpoint(), silent_addr.to_string(), server.endpoint()],
        connect_timeout: Duration::from_secs(1),
        ..server.config()
    };
    let kms = KmipKms::new(config).unwrap();
    let started = Instant::now();
    let master = kms.create_key("photos").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
    assert_eq!(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await.unwrap().plaintext, dk.plaintext);
    drop(silent);
}

#[tokio::test]
async fn a_down_server_is_unavailable_and_its_return_needs_no_new_client() {
    let mut server = KmipServer::start();
    let call_timeout = Duration::from_secs(3);
    let kms =
        KmipKms::new(KmipConfig { connect_timeout: Duration::from_secs(1), call_timeout, ..server.config() }).unwrap();
    let master = kms.create_key("photos").await.unwrap();
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();

    server.stop();
    // Each call gives up within the call timeout (retries included).
    let within = call_timeout + Duration::from_millis(500);
    let started = Instant::now();
    assert_unavailable(kms.health().await);
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    let started = Instant::now();
    assert_unavailable(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await);
    assert!(started.elapsed() < within, "{:?}", started.elapsed());
    let started = Instant::now();
    assert_unavailable(kms.create_key("later").await);
    assert_unavailable(kms.destroy_key(&master).await);
    assert!(started.elapsed() < 2 * within, "{:?}", started.elapsed());

    // Same port, same database: the pooled connections are dead, the client
    // reconnects by itself.
    server.spawn();
    kms.health().await.unwrap();
    assert_eq!(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await.unwrap().plaintext, dk.plaintext);
}

/// Certificates only (no server), in a new temporary directory.
fn certificates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status =
        Command::new(python()).arg(SCRIPT).args(["--dir", dir.path().to_str().unwrap(), "--certs-only"]).status();
    assert!(status.unwrap().success());
    dir
}

fn config_in(dir: &Path, endpoints: Vec<String>) -> KmipConfig {
    KmipConfig::new(endpoints, dir.join("ca.pem"), dir.join("client.pem"), dir.join("client.key"))
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_unavailable() {
    let certs = certificates();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let call_timeout = Duration::from_secs(2);
    let kms = KmipKms::new(KmipConfig {
        connect_timeout: Duration::from_secs(10),
        call_timeout,
        ..config_in(certs.path(), vec![silent.local_addr().unwrap().to_string()])
    })
    .unwrap();
    let started = Instant::now();
    assert_unavailable(kms.health().await);
    let elapsed = started.elapsed();
    assert!(elapsed >= call_timeout && elapsed < call_timeout + Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn the_gateway_starts_while_the_kms_is_down() {
    let dir = certificates();
    let config = KmipConfig {
        connect_timeout: Duration::from_secs(1),
        call_timeout: Duration::from_secs(2),
        ..config_in(dir.path(), vec![dead_endpoint()])
    };
    let kms = KmipKms::new(config.clone()).expect("no KMS contact at start-up");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert_unavailable(runtime.block_on(kms.health()));
    // But a wrong file is a clear start-up error naming it.
    let wrong = KmipConfig { key: dir.path().join("ca.pem"), ..config };
    match KmipKms::new(wrong) {
        Err(KmsError::Invalid(message)) => assert!(message.contains("ca.pem"), "{message}"),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("a certificate accepted as a private key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_a_bounded_pool() {
    let server = KmipServer::start();
    let kms = Arc::new(KmipKms::new(KmipConfig { pool_size: 2, ..server.config() }).unwrap());
    let master = kms.create_key("photos").await.unwrap();
    let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
    let before = server.connections();
    assert!(before > 0, "the server log counts connections");
    let calls = (0..24).map(|i| {
        let (kms, master, wrapped) = (kms.clone(), master.clone(), dk.wrapped.clone());
        tokio::spawn(async move {
            if i % 2 == 0 {
                kms.unwrap_data_key(&master, &wrapped, &ctx("o")).await.map(|k| k.plaintext)
            } else {
                let key = sealgate::kms::random_data_key();
                let wrapped = kms.wrap_data_key(&master, &key, &ctx("o")).await?;
                kms.unwrap_data_key(&master, &wrapped, &ctx("o")).await.map(|k| k.plaintext)
            }
        })
    });
    for call in futures::future::join_all(calls.collect::<Vec<_>>()).await {
        call.unwrap().unwrap();
    }
    // Create and generate left one or two idle connections; 24 calls in
    // flight opened at most two in all.
    let opened = server.connections() - before;
    assert!(opened <= 2, "{opened} new connections for a pool of 2");
}
