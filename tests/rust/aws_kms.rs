//! The AWS KMS backend against a real `moto_server` (pip `moto[server]`, see
//! tests/python/requirements.txt; run as `python3 -m moto.server`, `PYTHON` overrides the interpreter). Each
//! test runs its own server on a free loopback port.
//!
//! Where moto is laxer than AWS the tests say so: moto does not enforce key
//! state, so a key pending deletion still decrypts there, where AWS answers
//! KMSInvalidStateException (mapped to Refused, unit-tested in kms/aws.rs).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sealgate::kms::aws::{AwsKms, AwsKmsConfig};
use sealgate::kms::{KeyContext, Kms, KmsError};

const REGION: &str = "us-east-1";
const UNKNOWN_KEY: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";
/// Python start-up on a loaded 2-core machine can be slow.
const MOTO_START: Duration = Duration::from_secs(60);

/// A `moto_server` child, killed on drop.
struct Moto {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Moto {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `moto_server` arguments (TLS).
    fn start_with(args: &[&str]) -> Self {
        for _ in 0..5 {
            if let Some(moto) = Self::start_on(free_port(), args) {
                return moto;
            }
        }
        panic!("moto_server did not start on any of 5 free ports");
    }

    /// None when the server exits before listening (the port was taken).
    fn start_on(port: u16, args: &[&str]) -> Option<Self> {
        let log = tempfile::NamedTempFile::new().unwrap();
        // `python3 -m moto.server` is `moto_server` without relying on the
        // console script being on PATH (pyenv shims need a rehash).
        let program = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(&program)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (pip install -r tests/python/requirements.txt)"));
        let mut moto = Moto { child, port, log };
        let deadline = Instant::now() + MOTO_START;
        while Instant::now() < deadline {
            if moto.child.try_wait().unwrap().is_some() {
                eprintln!("moto_server exited on port {port}: {}", moto.log_text());
                return None;
            }
            if TcpStream::connect_timeout(&moto.addr(), Duration::from_millis(200)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server not listening on port {port} after {MOTO_START:?}: {}", moto.log_text());
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(endpoint: String) -> AwsKmsConfig {
    let mut config = AwsKmsConfig::new(REGION);
    config.endpoint = Some(endpoint);
    // moto takes any keys; explicit ones keep the host's AWS setup out of the test.
    config.access_key_id = Some("testing".into());
    config.secret_access_key = Some("testing".into());
    // Generous: moto imports its KMS backend on the first request.
    config.call_timeout = Duration::from_secs(30);
    config.attempt_timeout = Duration::from_secs(20);
    config
}

fn kms(moto: &Moto) -> AwsKms {
    AwsKms::new(config(moto.endpoint())).unwrap()
}

fn ctx(bucket: &str, key: &str) -> KeyContext {
    KeyContext { bucket: bucket.into(), key: key.into() }
}

#[track_caller]
fn assert_refused<T>(result: Result<T, KmsError>, what: &str) {
    match result {
        Err(KmsError::Refused(_)) => {}
        Err(e) => panic!("{what}: expected Refused, got {e}"),
        Ok(_) => panic!("{what}: expected Refused, got a key"),
    }
}

#[tokio::test]
async fn create_key_makes_a_tagged_listed_enabled_key() {
    let moto = Moto::start();
    let kms = kms(&moto);
    assert_eq!(kms.backend(), "aws");
    kms.health().await.unwrap();
    let key = kms.create_key("photos").await.unwrap();
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "a bare KeyId: {key}");
    let other = kms.create_key("videos").await.unwrap();
    assert_ne!(key, other);
    let listed = kms.list_key_ids().await.unwrap();
    assert!(listed.contains(&key) && listed.contains(&other), "{listed:?}");
    assert!(kms.key_tags(&key).await.unwrap().contains(&("sealgate:bucket".into(), "photos".into())));
    assert_eq!(kms.key_state(&key).await.unwrap(), "Enabled");
}

#[tokio::test]
async fn data_keys_unwrap_only_under_their_key_and_context() {
    let moto = Moto::start();
    let kms = kms(&moto);
    let key = kms.create_key("photos").await.unwrap();
    let other_key = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");

    let dk = kms.generate_data_key(&key, &here).await.unwrap();
    assert_eq!(dk.key_id, key);
    let back = kms.unwrap_data_key(&key, &dk.wrapped, &here).await.unwrap();
    assert_eq!(back.plaintext, dk.plaintext);
    assert_ne!(kms.generate_data_key(&key, &here).await.unwrap().plaintext, dk.plaintext);

    // Wrapping a key the gateway holds (rotation's generic path) round-trips too.
    let wrapped = kms.wrap_data_key(&key, &dk.plaintext, &here).await.unwrap();
    assert_eq!(kms.unwrap_data_key(&key, &wrapped, &here).await.unwrap().plaintext, dk.plaintext);

    assert_refused(kms.unwrap_data_key(&key, &dk.wrapped, &ctx("photos", "dog.jpg")).await, "another object");
    assert_refused(kms.unwrap_data_key(&key, &dk.wrapped, &ctx("videos", "cat.jpg")).await, "another bucket");
    assert_refused(kms.unwrap_data_key(&other_key, &dk.wrapped, &here).await, "another key");
    assert_refused(kms.unwrap_data_key(UNKNOWN_KEY, &dk.wrapped, &here).await, "unknown key");
    assert_refused(kms.generate_data_key(UNKNOWN_KEY, &here).await, "generate under an unknown key");

    // Errors never carry the key.
    let err = kms.unwrap_data_key(&other_key, &dk.wrapped, &here).await.unwrap_err().to_string();
    assert!(!err.contains(&hex::encode(*dk.plaintext)), "{err}");
    assert!(!err.contains(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, *dk.plaintext)));
}

#[tokio::test]
async fn tampered_wrapped_keys_are_refused() {
    let moto = Moto::start();
    let kms = kms(&moto);
    let key = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");
    let dk = kms.generate_data_key(&key, &here).await.unwrap();
    // Every single-bit flip, anywhere in the blob (moto's blob: key id, IV,
    // GCM tag, ciphertext; AWS's differs, but is authenticated the same way).
    for i in 0..dk.wrapped.len() {
        let mut tampered = dk.wrapped.clone();
        tampered[i] ^= 0x01;
        assert_refused(kms.unwrap_data_key(&key, &tampered, &here).await, &format!("bit flipped in byte {i}"));
    }
    let mut longer = dk.wrapped.clone();
    longer.push(0);
    assert_refused(kms.unwrap_data_key(&key, &longer, &here).await, "extended");
    assert_refused(kms.unwrap_data_key(&key, &dk.wrapped[..dk.wrapped.len() - 1], &here).await, "truncated");
    assert_refused(kms.unwrap_data_key(&key, &dk.wrapped[..10], &here).await, "header only");
    assert_refused(kms.unwrap_data_key(&key, &[], &here).await, "empty");
    assert_refused(kms.unwrap_data_key(&key, &[0; 7000], &here).await, "oversized");
}

#[tokio::test]
async fn rewrap_moves_a_data_key_to_the_new_key() {
    let moto = Moto::start();
    let kms = kms(&moto);
    let old = kms.create_key("photos").await.unwrap();
    let new = kms.create_key("photos").await.unwrap();
    let third = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");
    let dk = kms.generate_data_key(&old, &here).await.unwrap();

    let rewrapped = kms.rewrap_data_key(&old, &dk.wrapped, &new, &here).await.unwrap();
    assert_ne!(rewrapped, dk.wrapped);
    assert_eq!(kms.unwrap_data_key(&new, &rewrapped, &here).await.unwrap().plaintext, dk.plaintext);
    assert_refused(kms.unwrap_data_key(&old, &rewrapped, &here).await, "rewrapped key under the old key");
    // The old wrapped key still opens under the old key until that is destroyed.
    assert_eq!(kms.unwrap_data_key(&old, &dk.wrapped, &here).await.unwrap().plaintext, dk.plaintext);

    assert_refused(kms.rewrap_data_key(&old, &dk.wrapped, &new, &ctx("photos", "dog.jpg")).await, "other context");
    // moto ignores ReEncrypt's SourceKeyId; AwsKms refuses from the SourceKeyId moto reports.
    assert_refused(kms.rewrap_data_key(&third, &dk.wrapped, &new, &here).await, "wrong source key");
}

#[tokio::test]
async fn destroyed_keys_are_pending_deletion() {
    let moto = Moto::start();
    let kms = kms(&moto);
    let key = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");
    let dk = kms.generate_data_key(&key, &here).await.unwrap();

    kms.destroy_key(&key).await.unwrap();
    assert_eq!(kms.key_state(&key).await.unwrap(), "PendingDeletion");
    kms.destroy_key(&key).await.unwrap(); // idempotent
    kms.destroy_key(UNKNOWN_KEY).await.unwrap();

    // AWS refuses every cryptographic call with a key pending deletion
    // (KMSInvalidStateException → Refused); moto 5.2 does not check key state
    // and still decrypts. Either way, never a different key.
    match kms.unwrap_data_key(&key, &dk.wrapped, &here).await {
        Err(KmsError::Refused(_)) => {}
        Ok(back) => {
            assert_eq!(back.plaintext, dk.plaintext);
            eprintln!("note: moto decrypts with a key pending deletion (AWS would refuse)");
        }
        Err(e) => panic!("unwrap after destroy: {e}"),
    }
}

/// The same client across an outage: Unavailable within the call timeout
/// while nothing listens, working again once the KMS is back.
#[tokio::test]
async fn an_unreachable_kms_is_unavailable_within_the_timeout_and_recovers() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut short = config(endpoint.clone());
    short.connect_timeout = Duration::from_millis(500);
    short.attempt_timeout = Duration::from_millis(1500);
    short.call_timeout = Duration::from_secs(3);
    let budget = short.call_timeout + Duration::from_secs(2);
    // Built while nothing listens: construction never touches the KMS.
    let kms = AwsKms::new(short).unwrap();
    let patient = AwsKms::new(config(endpoint)).unwrap();

    assert_unavailable_within(&kms, budget).await;

    let mut moto = Moto::start_on(port, &[]).expect("moto_server on the chosen port");
    patient.health().await.unwrap(); // moto's first KMS request is slow
    kms.health().await.unwrap();
    let key = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");
    let dk = kms.generate_data_key(&key, &here).await.unwrap();

    moto.stop();
    assert_unavailable_within(&kms, budget).await;
    let started = Instant::now();
    match kms.unwrap_data_key(&key, &dk.wrapped, &here).await {
        Err(KmsError::Unavailable(_)) => assert!(started.elapsed() < budget, "took {:?}", started.elapsed()),
        other => panic!("unwrap while down: expected Unavailable, got {other:?}"),
    }

    // moto keeps its state in memory: the restarted one knows no key.
    let _moto = Moto::start_on(port, &[]).expect("moto_server back on the same port");
    patient.health().await.unwrap();
    kms.health().await.unwrap();
    let key = kms.create_key("photos").await.unwrap();
    let dk = kms.generate_data_key(&key, &here).await.unwrap();
    assert_eq!(kms.unwrap_data_key(&key, &dk.wrapped, &here).await.unwrap().plaintext, dk.plaintext);
}

/// A KMS that accepts connections and never answers: each attempt times out,
/// and the whole call gives up within `call_timeout`.
#[tokio::test]
async fn a_hung_kms_is_unavailable_within_the_timeout() {
    // Connections land in the backlog and are never read from.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = config(format!("http://{}", silent.local_addr().unwrap()));
    config.connect_timeout = Duration::from_millis(500);
    config.attempt_timeout = Duration::from_millis(1000);
    config.call_timeout = Duration::from_millis(2500);
    let budget = config.call_timeout + Duration::from_secs(2);
    let kms = AwsKms::new(config).unwrap();
    assert_unavailable_within(&kms, budget).await;
    let started = Instant::now();
    match kms.generate_data_key("ffffffff-ffff-ffff-ffff-ffffffffffff", &ctx("photos", "cat.jpg")).await {
        Err(KmsError::Unavailable(message)) => {
            assert!(started.elapsed() < budget, "{message} after {:?}", started.elapsed())
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

async fn assert_unavailable_within(kms: &AwsKms, budget: Duration) {
    let started = Instant::now();
    match kms.health().await {
        Err(KmsError::Unavailable(message)) => eprintln!("while down: {message}"),
        other => panic!("health while down: expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < budget, "took {:?}, budget {budget:?}", started.elapsed());
}

/// The standard AWS chain (no keys in the config) finds keys in the
/// environment, and without any says so.
#[test]
fn the_standard_chain_reads_the_environment() {
    let moto = Moto::start();
    let keys = [("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT"), ("AWS_SECRET_ACCESS_KEY", "from-environment")];
    run_child(&moto.endpoint(), &keys, "ok");
    run_child(&moto.endpoint(), &[], "credentials");
}

/// An https endpoint: the certificate is checked against the trusted roots
/// (SSL_CERT_FILE here, else the system's), through rustls on ring.
#[test]
fn https_endpoints_are_verified() {
    let Some(pki) = TestPki::create() else {
        eprintln!("SKIPPED: no `openssl` command to make a test CA");
        return;
    };
    let moto = Moto::start_with(&["-s", "-c", &pki.path("leaf.pem"), "-k", &pki.path("leaf.key")]);
    let endpoint = format!("https://127.0.0.1:{}", moto.port);
    let keys = [("AWS_ACCESS_KEY_ID", "AKIDFROMENVIRONMENT"), ("AWS_SECRET_ACCESS_KEY", "from-environment")];
    run_child(&endpoint, &[keys[0], keys[1], ("SSL_CERT_FILE", &pki.path("ca.pem"))], "ok");
    run_child(&endpoint, &[keys[0], keys[1], ("SSL_CERT_FILE", &pki.path("other-ca.pem"))], "certificate");
}

/// A CA, a `localhost` certificate it signed, and an unrelated CA.
struct TestPki(tempfile::TempDir);

impl TestPki {
    fn create() -> Option<Self> {
        let pki = TestPki(tempfile::tempdir().unwrap());
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        std::fs::write(
            pki.0.path().join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let steps: [&[&str]; 4] = [
            &["req", "-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sealgate test CA"],
            &["req", "-x509", "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=other"],
            &["req", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
            &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
        ];
        for (i, step) in steps.into_iter().enumerate() {
            let mut openssl = Command::new("openssl");
            openssl.current_dir(pki.0.path()).args(step).stdout(Stdio::null()).stderr(Stdio::null());
            if i < 3 {
                openssl.args(ec);
            } else {
                openssl.args(["-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"]);
            }
            match openssl.status() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
                status => assert!(status.unwrap().success(), "openssl {step:?}"),
            }
        }
        Some(pki)
    }

    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_str().unwrap().to_owned()
    }
}

/// Runs `standard_chain_child` in a child process of this test binary, so
/// the environment is its own: no AWS_* variables but `env`, no profile
/// files, no instance metadata. `expects`: "ok", or a word of the
/// Unavailable error.
fn run_child(endpoint: &str, env: &[(&str, &str)], expects: &str) {
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args(["--exact", "standard_chain_child", "--ignored", "--nocapture"]);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("AWS_") || name.starts_with("SSL_CERT")) {
        child.env_remove(name);
    }
    child.env("HOME", home.path()).env("AWS_EC2_METADATA_DISABLED", "true");
    child.env(CHILD_ENDPOINT, endpoint).env(CHILD_EXPECTS, expects).envs(env.iter().copied());
    let out = child.output().unwrap();
    let output = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && output.contains("1 passed"), "{endpoint} expecting {expects:?}: {output}");
}

const CHILD_ENDPOINT: &str = "SEALGATE_TEST_AWS_KMS_ENDPOINT";
const CHILD_EXPECTS: &str = "SEALGATE_TEST_AWS_KMS_EXPECTS";

#[tokio::test]
#[ignore = "run by run_child, in a child process"]
async fn standard_chain_child() {
    let (Ok(endpoint), Ok(expects)) = (std::env::var(CHILD_ENDPOINT), std::env::var(CHILD_EXPECTS)) else { return };
    let mut config = AwsKmsConfig::new(REGION);
    config.endpoint = Some(endpoint);
    config.call_timeout = Duration::from_secs(30);
    config.attempt_timeout = Duration::from_secs(20);
    match AwsKms::new(config).unwrap().health().await {
        Ok(()) if expects == "ok" => {}
        Err(KmsError::Unavailable(message)) if message.to_lowercase().contains(&expects) => {
            eprintln!("as expected: {message}");
        }
        got => panic!("expected {expects:?}, got {got:?}"),
    }
}

/// Even at TRACE, where the SDK logs every request it sends and the body of
/// non-sensitive answers, no data key reaches the log (the SDK redacts signed
/// bodies unless LOG_SIGNABLE_BODY=true, and never logs GenerateDataKey or
/// Decrypt answers).
#[tokio::test]
async fn trace_logs_never_show_a_data_key() {
    let moto = Moto::start();
    let kms = kms(&moto);
    let key = kms.create_key("photos").await.unwrap();
    let new_key = kms.create_key("photos").await.unwrap();
    let here = ctx("photos", "cat.jpg");

    let log = LogSink::default();
    let sink = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let dk = kms.generate_data_key(&key, &here).await.unwrap();
    kms.unwrap_data_key(&key, &dk.wrapped, &here).await.unwrap();
    let wrapped = kms.wrap_data_key(&key, &dk.plaintext, &here).await.unwrap();
    kms.rewrap_data_key(&key, &wrapped, &new_key, &here).await.unwrap();
    drop(guard);

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("transmitting request"), "the SDK's TRACE log was not captured");
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, *dk.plaintext);
    for shown in [b64.as_str(), &hex::encode(*dk.plaintext), &format!("{:?}", &dk.plaintext[..8])] {
        assert!(!text.contains(shown), "the data key ({shown}) is in the log");
    }
}

#[derive(Clone, Default)]
struct LogSink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
