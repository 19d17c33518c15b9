//! Starts the real `sealgate` binary on free loopback ports with temporary
//! directories, and builds an `aws-sdk-s3` client for it.

#![allow(dead_code)]

pub mod seaweed;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "TESTACCESSKEY";
pub const SECRET_KEY: &str = "testsecretkey0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Gateway {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub s3_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    kms_dir: PathBuf,
    extra_args: Vec<String>,
}

impl Gateway {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kms_dir = dir.path().join("kms");
        Self::start_in(dir, kms_dir, extra_args)
    }

    /// A gateway of a fleet: its local key store is `kms_dir`, shared with
    /// the others, as N gateways with one configuration share one KMS.
    pub fn start_sharing_kms(kms_dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), kms_dir.to_owned(), extra_args)
    }

    fn start_in(dir: tempfile::TempDir, kms_dir: PathBuf, extra_args: &[&str]) -> Self {
        let mut gw = Gateway {
            child: None,
            dir,
            s3_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            kms_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        gw.spawn();
        gw
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kms_dir(&self) -> PathBuf {
        self.kms_dir.clone()
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .arg("serve")
            .args(["--listen", &self.s3_addr.to_string()])
            .args(["--admin-listen", &self.admin_addr.to_string()])
            .args(["--data-dir", self.data_dir().to_str().unwrap()])
            .args(["--kms-local-dir", self.kms_dir().to_str().unwrap()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--admin-token", ADMIN_TOKEN])
            .args(&self.extra_args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting sealgate");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sealgate exited early with {status}: {}", self.log());
            }
            if TcpStream::connect(self.s3_addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sealgate did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// SIGTERM and wait, then start again on the same directories and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc_kill(child.id() as i32, 15) };
            child.wait().unwrap();
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3_addr)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_as(ACCESS_KEY, SECRET_KEY)
    }

    pub fn client_as(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let creds = aws_credential_types::Credentials::from_keys(access_key, secret_key, None);
        let config = aws_sdk_s3::Config::builder()
            .endpoint_url(self.endpoint())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .force_path_style(true)
            // Every failure is seen as it happened, not after retries.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Creates `bucket` as an encrypted bucket (the spec's creation header).
pub async fn create_encrypted_bucket(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .customize()
        .mutate_request(|req| {
            req.headers_mut().insert("x-amz-scal-server-side-encryption", "AES256");
        })
        .send()
        .await
        .unwrap();
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Deterministic, incompressible-looking test content.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}
