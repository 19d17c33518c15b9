//! The remote KMS servers the bench runs the gateway against, on loopback:
//! PyKMIP (tests/support/kmip_server.py, mutual TLS) and moto (AWS KMS API).
//! Both are stopped when dropped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::gateway::free_port;

pub struct KmsServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// The gateway flags that select and reach this server.
    pub gateway_args: Vec<String>,
}

fn wait_for(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(child.try_wait()?.is_none(), "{what} exited during start-up");
        anyhow::ensure!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl KmsServer {
    pub fn kmip() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let d = dir.path().to_str().context("temp dir path")?.to_owned();
        let mut child = Command::new("python3")
            .args(["tests/support/kmip_server.py", "--dir", &d, "--port", &port.to_string(), "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting PyKMIP (make test-deps installs it)")?;
        wait_for(port, &mut child, "PyKMIP")?;
        let pem = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let gateway_args = vec![
            "--kms".into(),
            "kmip".into(),
            "--kmip-endpoints".into(),
            format!("127.0.0.1:{port}"),
            "--kmip-ca".into(),
            pem("ca.pem"),
            "--kmip-cert".into(),
            pem("client.pem"),
            "--kmip-key".into(),
            pem("client.key"),
        ];
        Ok(Self { child, _dir: dir, gateway_args })
    }

    pub fn moto() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto_server (make test-deps installs it)")?;
        wait_for(port, &mut child, "moto_server")?;
        let gateway_args = [
            "--kms",
            "aws",
            "--aws-kms-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--aws-kms-region",
            "us-east-1",
            "--aws-access-key-id",
            "testing",
            "--aws-secret-access-key",
            "testing",
        ]
        .map(str::to_owned)
        .to_vec();
        Ok(Self { child, _dir: dir, gateway_args })
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        // Closing its stdin stops PyKMIP with the processes it forked
        // (`--exit-on-stdin-eof`); a kill would leave those behind.
        // moto has no stdin pipe and is killed at once.
        if self.child.stdin.take().is_some() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
