//! Single-stream PUT against its ceiling: one core's MD5 (the ETag).
//! `M` is measured here, in this process, then 256 MiB PUTs go through the
//! gateway with two clients: curl with an unsigned payload (the body sent
//! as is), and the Rust aws-sdk-s3 with its defaults. The gateway's CPU time
//! per PUT shows what is the gateway's and what is the client's (both share
//! this machine's cores). Plaintext and encrypted buckets, same gateway, rounds
//! interleaved.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use aws_sdk_s3::primitives::ByteStream;

use crate::gateway::{self, Gateway};
use crate::{MIB, mb_per_s, median, micro, small_ops};

const SIZE_MIB: usize = 256;

pub async fn table(rounds: usize, seconds: u64) -> Result<()> {
    let md5 = micro::md5_rate() * 1000.0;
    let gw = Gateway::start(&[])?;
    let s3 = gw.client();
    gw.create_buckets(&s3).await?;
    let sdk_defaults = gateway::s3_client_sdk_defaults(&gw.endpoint(), "BENCH", "bench-secret-key");
    let file = gateway::pattern_file(SIZE_MIB)?;

    // MB/s and the gateway's CPU seconds, per PUT.
    let (mut rates, mut cpu): ([Vec<f64>; 4], [Vec<f64>; 4]) = Default::default();
    for _ in 0..rounds {
        for (i, bucket) in ["plain", "sealed"].into_iter().enumerate() {
            let before = gw.cpu_seconds()?;
            rates[i].push(curl_put(&gw, bucket, file.path())?);
            let between = gw.cpu_seconds()?;
            rates[2 + i].push(sdk_put(&sdk_defaults, bucket, file.path()).await?);
            cpu[i].push(between - before);
            cpu[2 + i].push(gw.cpu_seconds()? - between);
        }
    }
    let [curl_plain, curl_sealed, sdk_plain, sdk_sealed] = rates.map(median);
    let cpu = cpu.map(median);
    println!("\n## Single-stream PUT, {SIZE_MIB} MiB, against one core's MD5\n");
    println!("MD5 (asm md-5, one core, 64 KiB updates): M = {md5:.0} MB/s\n");
    println!("| client | plaintext bucket | ÷ M | gateway CPU | encrypted bucket | ÷ M | gateway CPU |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (client, plain, sealed, [plain_cpu, sealed_cpu]) in [
        ("curl, UNSIGNED-PAYLOAD", curl_plain, curl_sealed, [cpu[0], cpu[1]]),
        ("aws-sdk-s3 defaults", sdk_plain, sdk_sealed, [cpu[2], cpu[3]]),
    ] {
        println!(
            "| {client} | {plain:.0} MB/s | **{:.2}** | {plain_cpu:.2} s | {sealed:.0} MB/s | **{:.2}** | {sealed_cpu:.2} s |",
            plain / md5,
            sealed / md5
        );
    }
    let plain_small = small_ops(&s3, "plain", 16, seconds, false).await?;
    let sealed_small = small_ops(&s3, "sealed", 16, seconds, false).await?;
    println!("\n4 KiB PUT, 16 clients: plaintext {plain_small:.0} ops/s, encrypted {sealed_small:.0} ops/s");
    println!("gateway peak RSS after these runs: {} MiB", gw.peak_rss_mib()?);
    Ok(())
}

/// MB/s of one PUT of `path` by curl, signed with an unsigned payload.
fn curl_put(gw: &Gateway, bucket: &str, path: &Path) -> Result<f64> {
    let url = format!("{}/{bucket}/pipeline", gw.endpoint());
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(Gateway::curl_auth())
        .arg("-T")
        .arg(path)
        .arg(&url)
        .output()
        .context("running curl (apt-get install curl)")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(out.stdout == b"200", "curl PUT answered {}", String::from_utf8_lossy(&out.stdout));
    Ok(mb_per_s(SIZE_MIB * MIB, elapsed))
}

/// MB/s of one PUT of `path` by the SDK client, streamed from the file.
async fn sdk_put(s3: &aws_sdk_s3::Client, bucket: &str, path: &Path) -> Result<f64> {
    let body = ByteStream::from_path(path).await?;
    let started = Instant::now();
    s3.put_object().bucket(bucket).key("pipeline").body(body).send().await?;
    Ok(mb_per_s(SIZE_MIB * MIB, started.elapsed()))
}
