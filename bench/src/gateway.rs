//! The gateway under test: the release binary on loopback, temp dirs.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;

const TOKEN: &str = "bench-admin-token";

pub struct Gateway {
    child: Child,
    _dir: tempfile::TempDir,
    s3: SocketAddr,
    admin: SocketAddr,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The benchmark's S3 client for `endpoint`: path style, and no
/// client-side checksums (measure the server, not the client's own CRC32
/// of every body).
pub fn s3_client(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    client_with_checksums(endpoint, access_key, secret_key, RequestChecksumCalculation::WhenRequired)
}

/// An S3 client as an application gets it by default: path style, and the
/// SDK's own CRC32 of every body sent as an aws-chunked trailer.
pub fn s3_client_sdk_defaults(endpoint: &str, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
    client_with_checksums(endpoint, access_key, secret_key, RequestChecksumCalculation::WhenSupported)
}

fn client_with_checksums(
    endpoint: &str,
    access_key: &str,
    secret_key: &str,
    checksums: RequestChecksumCalculation,
) -> aws_sdk_s3::Client {
    let creds = aws_credential_types::Credentials::from_keys(access_key, secret_key, None);
    let config = aws_sdk_s3::Config::builder()
        .endpoint_url(endpoint)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(checksums)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Prometheus text, for reading a few sums.
pub struct Metrics(String);

impl Metrics {
    pub fn sum(&self, name: &str) -> f64 {
        self.0.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    pub fn labelled(&self, name: &str, operation: &str) -> f64 {
        let label = format!("operation=\"{operation}\"");
        self.0
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Gateway {
    pub fn start(extra: &[&str]) -> Result<Self> {
        Self::start_binary(Path::new("target/release/sealgate"), extra)
    }

    /// Starts the gateway binary at `binary` (e.g. an earlier build, to
    /// compare against).
    pub fn start_binary(binary: &Path, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let (s3, admin) =
            (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
        let child = Command::new(binary)
            .arg("serve")
            .args(["--listen", &s3.to_string(), "--admin-listen", &admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--kms-local-dir")
            .arg(dir.path().join("kms"))
            .args(["--access-key", "BENCH", "--secret-key", "bench-secret-key", "--admin-token", TOKEN])
            .args(extra)
            .env("SEALGATE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (run make build)", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(s3).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, _dir: dir, s3, admin })
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint(), "BENCH", "bench-secret-key")
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3)
    }

    /// `--user` and `--aws-sigv4` arguments that let curl sign for this gateway.
    pub fn curl_auth() -> [&'static str; 4] {
        ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "BENCH:bench-secret-key"]
    }

    pub async fn create_buckets(&self, s3: &aws_sdk_s3::Client) -> Result<()> {
        s3.create_bucket().bucket("plain").send().await?;
        s3.create_bucket()
            .bucket("sealed")
            .customize()
            .mutate_request(|r| {
                r.headers_mut().insert("x-amz-scal-server-side-encryption", "AES256");
            })
            .send()
            .await?;
        Ok(())
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        use std::io::{Read, Write};
        let mut conn = TcpStream::connect(self.admin)?;
        write!(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(Metrics(text))
    }

    /// CPU seconds (user + system) the gateway process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    pub fn peak_rss_mib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("VmHWM")?;
        Ok(kb / 1024)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary file of `mib` MiB of the benchmark's pattern.
pub fn pattern_file(mib: usize) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let file = tempfile::NamedTempFile::new()?;
    let mut w = std::io::BufWriter::new(file.reopen()?);
    let block = super::pattern(super::MIB);
    for _ in 0..mib {
        w.write_all(&block)?;
    }
    w.flush()?;
    Ok(file)
}

/// Peak RSS of a fresh gateway while a `mib` MiB object is uploaded to and
/// downloaded from an encrypted bucket, streamed from and to disk.
pub async fn peak_rss_of_a_large_sealed_object(mib: usize) -> Result<()> {
    let gw = Gateway::start(&[])?;
    let s3 = gw.client();
    gw.create_buckets(&s3).await?;
    let file = pattern_file(mib)?;
    let started = Instant::now();
    s3.put_object().bucket("sealed").key("large").body(ByteStream::from_path(file.path()).await?).send().await?;
    let put = started.elapsed();
    let started = Instant::now();
    let (_, n) = super::get_once(&s3, "sealed", "large").await?;
    let get = started.elapsed();
    anyhow::ensure!(n == mib * super::MIB, "short read");
    println!(
        "\n{mib} MiB sealed object, streamed: PUT {:.0} MB/s, GET {:.0} MB/s; gateway peak RSS (VmHWM) {} MiB",
        super::mb_per_s(n, put),
        super::mb_per_s(n, get),
        gw.peak_rss_mib()?
    );
    Ok(())
}
