//! Single-stream PUT against its ceiling: one core's MD5 (the ETag).
//! `M` is measured here, in this process, then 256 MiB PUTs go through the
//! gateway with two clients: curl with an unsigned payload (the body sent
//! as is), and the Rust aws-sdk-s3 with its defaults. The gateway's CPU time
//! per PUT shows what is the gateway's and what is the client's (both share
//! this machine's cores). With `SEALGATE_BENCH_BASELINE=<binary>` an
//! earlier build of the gateway is measured beside this one, rounds
//! alternating. Plaintext and encrypted buckets, same gateway, rounds
//! interleaved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use aws_sdk_s3::primitives::ByteStream;

use crate::gateway::{self, Gateway};
use crate::{MIB, mb_per_s, median, micro, small_ops};

const SIZE_MIB: usize = 256;

pub async fn table(rounds: usize, seconds: u64) -> Result<()> {
    let md5 = micro::md5_rate() * 1000.0;
    let builds = start_builds().await?;
    let file = gateway::pattern_file(SIZE_MIB)?;

    // Per build and client: MB/s and the gateway's CPU seconds per PUT,
    // for the plaintext and the encrypted bucket. Rounds alternate.
    let mut rates = vec![[[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]]; builds.len()];
    let mut cpu = rates.clone();
    for _ in 0..rounds {
        for (b, (_, gw)) in builds.iter().enumerate() {
            let sdk_defaults = gateway::s3_client_sdk_defaults(&gw.endpoint(), "BENCH", "bench-secret-key");
            for (k, bucket) in ["plain", "sealed"].into_iter().enumerate() {
                let before = gw.cpu_seconds()?;
                rates[b][0][k].push(curl_put(gw, bucket, file.path())?);
                let between = gw.cpu_seconds()?;
                rates[b][1][k].push(sdk_put(&sdk_defaults, bucket, file.path()).await?);
                cpu[b][0][k].push(between - before);
                cpu[b][1][k].push(gw.cpu_seconds()? - between);
            }
        }
    }
    println!("\n## Single-stream PUT, {SIZE_MIB} MiB, against one core's MD5\n");
    println!("MD5 (asm md-5, one core, 64 KiB updates): M = {md5:.0} MB/s\n");
    println!("| build | client | plaintext bucket | ÷ M | gateway CPU | encrypted bucket | ÷ M | gateway CPU |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (b, (build, _)) in builds.iter().enumerate() {
        for (c, client) in ["curl, UNSIGNED-PAYLOAD", "aws-sdk-s3 defaults"].into_iter().enumerate() {
            let [plain, sealed] = rates[b][c].clone().map(median);
            let [plain_cpu, sealed_cpu] = cpu[b][c].clone().map(median);
            println!(
                "| {build} | {client} | {plain:.0} MB/s | **{:.2}** | {plain_cpu:.2} s | {sealed:.0} MB/s | **{:.2}** | \
                 {sealed_cpu:.2} s |",
                plain / md5,
                sealed / md5
            );
        }
    }
    println!("\ngateway peak RSS after these runs: {} MiB", builds[0].1.peak_rss_mib()?);
    small_puts(&builds, rounds, seconds).await
}

/// This build's gateway, and an earlier build's beside it when
/// `SEALGATE_BENCH_BASELINE` names its binary; each with its buckets.
async fn start_builds() -> Result<Vec<(String, Gateway)>> {
    let mut builds = vec![("this build".to_owned(), Gateway::start(&[])?)];
    if let Some(path) = std::env::var_os("SEALGATE_BENCH_BASELINE") {
        let path = PathBuf::from(path);
        builds.push((format!("baseline `{}`", path.display()), Gateway::start_binary(&path, &[])?));
    }
    for (_, gw) in &builds {
        gw.create_buckets(&gw.client()).await?;
    }
    Ok(builds)
}

/// 4 KiB PUTs with 16 clients, plaintext and encrypted, on each build
/// (rounds alternate between them).
async fn small_puts(builds: &[(String, Gateway)], rounds: usize, seconds: u64) -> Result<()> {
    let mut ops = vec![[Vec::new(), Vec::new()]; builds.len()];
    for _ in 0..rounds.min(3) {
        for (b, (_, gw)) in builds.iter().enumerate() {
            let s3 = gw.client();
            for (k, bucket) in ["plain", "sealed"].into_iter().enumerate() {
                ops[b][k].push(small_ops(&s3, bucket, 16, seconds, false).await?);
            }
        }
    }
    let ops: Vec<[f64; 2]> = ops.into_iter().map(|per_bucket| per_bucket.map(median)).collect();
    println!("\n| 4 KiB PUT, 16 clients | plaintext bucket | encrypted bucket |");
    println!("| --- | --- | --- |");
    for ((build, _), [plain, sealed]) in builds.iter().zip(&ops) {
        println!("| {build} | {plain:.0} ops/s | {sealed:.0} ops/s |");
    }
    if ops.len() == 2 {
        println!("| this build ÷ baseline | **{:.2}** | **{:.2}** |", ops[0][0] / ops[1][0], ops[0][1] / ops[1][1]);
    }
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
