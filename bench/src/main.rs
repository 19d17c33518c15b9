//! `make bench`: measures the gateway on this machine and prints ratios
//! measured side by side in one run (plaintext bucket vs encrypted bucket,
//! same gateway). Numbers, never pass/fail: the machine is noisy.

mod gateway;
mod kms_servers;
mod micro;
mod put_pipeline;
mod scale_out;

use std::time::{Duration, Instant};

use anyhow::Result;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use gateway::Gateway;

pub(crate) const MIB: usize = 1 << 20;

fn pattern(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub(crate) fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn put_once(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Bytes) -> Result<Duration> {
    let started = Instant::now();
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from(body)).send().await?;
    Ok(started.elapsed())
}

async fn get_once(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let mut body = s3.get_object().bucket(bucket).key(key).send().await?.body;
    let mut n = 0;
    while let Some(chunk) = body.try_next().await? {
        n += chunk.len();
    }
    Ok((started.elapsed(), n))
}

/// Median MB/s of `rounds` single-stream PUTs and GETs of `size` bytes.
async fn throughput(s3: &aws_sdk_s3::Client, bucket: &str, size: usize, rounds: usize) -> Result<(f64, f64)> {
    let body = pattern(size);
    let key = format!("tp-{size}");
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        puts.push(mb_per_s(size, put_once(s3, bucket, &key, body.clone()).await?));
        let (elapsed, n) = get_once(s3, bucket, &key).await?;
        anyhow::ensure!(n == size, "short read");
        gets.push(mb_per_s(size, elapsed));
    }
    Ok((median(puts), median(gets)))
}

/// Operations per second of 4 KiB PUTs (or GETs) with `clients` concurrent clients.
pub(crate) async fn small_ops(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    clients: usize,
    seconds: u64,
    get: bool,
) -> Result<f64> {
    let body = pattern(4096);
    if get {
        for c in 0..clients {
            s3.put_object()
                .bucket(bucket)
                .key(format!("small-{c}"))
                .body(ByteStream::from(body.clone()))
                .send()
                .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (s3, bucket, body) = (s3.clone(), bucket.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut ops = 0u64;
            let key = format!("small-{c}");
            while Instant::now() < deadline {
                if get {
                    get_once(&s3, &bucket, &key).await?;
                } else {
                    s3.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body.clone())).send().await?;
                }
                ops += 1;
            }
            anyhow::Ok(ops)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

fn row(name: &str, plain: f64, sealed: f64, unit: &str) {
    println!("| {name} | {plain:.0} {unit} | {sealed:.0} {unit} | **{:.2}** |", sealed / plain);
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::var("SEALGATE_BENCH_QUICK").is_ok();
    let rounds = if quick { 1 } else { 3 };
    let seconds = if quick { 2 } else { 5 };
    println!("# sealgate benchmark\n");
    println!("machine: {} cores, {}\n", std::thread::available_parallelism()?.get(), micro::cpu_model());
    // SEALGATE_BENCH_ONLY=kms: just the KMS backends table.
    if std::env::var("SEALGATE_BENCH_ONLY").is_ok_and(|only| only == "kms") {
        return kms_backends(seconds, rounds).await;
    }
    // SEALGATE_BENCH_ONLY=put: single-stream PUT against the MD5 ceiling.
    if std::env::var("SEALGATE_BENCH_ONLY").is_ok_and(|only| only == "put") {
        put_pipeline::table(rounds + 2, seconds).await?;
        return gateway::peak_rss_of_a_large_sealed_object(if quick { 512 } else { 2048 }).await;
    }
    // SEALGATE_BENCH_ONLY=scale-out: just the upstream (SeaweedFS) table.
    if std::env::var("SEALGATE_BENCH_ONLY").is_ok_and(|only| only == "scale-out") {
        return scale_out::table(rounds, seconds, quick).await;
    }

    // SEALGATE_BENCH_ONLY=policy: just the policy guest's evaluation and swap times.
    if std::env::var("SEALGATE_BENCH_ONLY").is_ok_and(|only| only == "policy") {
        return micro::policy().await;
    }

    micro::bulk_cipher();
    micro::policy().await?;

    let gw = Gateway::start(&[])?;
    let s3 = gw.client();
    gw.create_buckets(&s3).await?;
    println!("\n## Through the gateway (aws-sdk-s3 client on the same machine)\n");
    println!("| measurement | plaintext bucket | encrypted bucket | encrypted ÷ plaintext |");
    println!("| --- | --- | --- | --- |");
    for size in [MIB, 64 * MIB, 256 * MIB] {
        let rounds = if size > 64 * MIB { rounds } else { rounds + 2 };
        let (plain_put, plain_get) = throughput(&s3, "plain", size, rounds).await?;
        let (sealed_put, sealed_get) = throughput(&s3, "sealed", size, rounds).await?;
        row(&format!("PUT {} MiB, single stream", size / MIB), plain_put, sealed_put, "MB/s");
        row(&format!("GET {} MiB, single stream", size / MIB), plain_get, sealed_get, "MB/s");
    }
    let metrics_before = gw.metrics().await?;
    let plain_put = small_ops(&s3, "plain", 16, seconds, false).await?;
    let sealed_put = small_ops(&s3, "sealed", 16, seconds, false).await?;
    let metrics_after = gw.metrics().await?;
    let plain_get = small_ops(&s3, "plain", 16, seconds, true).await?;
    let sealed_get = small_ops(&s3, "sealed", 16, seconds, true).await?;
    row("4 KiB PUT, 16 clients", plain_put, sealed_put, "ops/s");
    row("4 KiB GET, 16 clients", plain_get, sealed_get, "ops/s");
    let guest = metrics_after.sum("sealgate_policy_evaluation_seconds_sum")
        - metrics_before.sum("sealgate_policy_evaluation_seconds_sum");
    let puts = metrics_after.labelled("sealgate_s3_request_duration_seconds_sum", "PutObject")
        - metrics_before.labelled("sealgate_s3_request_duration_seconds_sum", "PutObject");
    println!(
        "\nshare of 4 KiB PUT time spent evaluating the policy guest (instantiation included): {:.1} %",
        100.0 * guest / puts
    );
    println!("gateway peak RSS after these runs: {} MiB", gw.peak_rss_mib()?);
    drop(gw);

    put_pipeline::table(rounds + 2, seconds).await?;
    kms_backends(seconds, rounds).await?;
    gateway::peak_rss_of_a_large_sealed_object(if quick { 512 } else { 2048 }).await?;
    scale_out::table(rounds, seconds, quick).await
}

/// 4 KiB ops on an encrypted bucket with each KMS backend (bucket keys
/// cached, the default), the KMS calls they made per 1000 operations, and
/// each backend's round trip from the gateway's own metrics: one client's
/// sequential GETs on a gateway with no key cache (`--kms-cache-ttl 0`: one
/// KMS call per GET). The three gateways run side by side and are measured
/// in turn, `rounds` times; the medians are shown.
async fn kms_backends(seconds: u64, rounds: usize) -> Result<()> {
    println!("\n## KMS backends (encrypted bucket, 4 KiB objects, 16 clients, bucket keys cached)\n");
    println!(
        "| KMS | PUT ops/s | GET ops/s | PUT ÷ local | GET ÷ local | KMS calls per 1000 ops | \
         unwrap, one client, no cache |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let backends = ["local", "kmip", "aws"];
    let mut servers = Vec::new();
    let mut gateways = Vec::new();
    for backend in backends {
        let server = match backend {
            "kmip" => Some(kms_servers::KmsServer::kmip()?),
            "aws" => Some(kms_servers::KmsServer::moto()?),
            _ => None,
        };
        let args: Vec<String> = server.iter().flat_map(|s| s.gateway_args.clone()).collect();
        let gw = Gateway::start(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        gw.create_buckets(&gw.client()).await?;
        servers.push((server, args));
        gateways.push(gw);
    }
    let before: Vec<gateway::Metrics> = futures::future::try_join_all(gateways.iter().map(|gw| gw.metrics())).await?;
    let (mut puts, mut gets) = (vec![Vec::new(); backends.len()], vec![Vec::new(); backends.len()]);
    for _ in 0..rounds {
        for (i, gw) in gateways.iter().enumerate() {
            let s3 = gw.client();
            puts[i].push(small_ops(&s3, "sealed", 16, seconds, false).await?);
            gets[i].push(small_ops(&s3, "sealed", 16, seconds, true).await?);
        }
    }
    let (local_put, local_get) = (median(puts[0].clone()), median(gets[0].clone()));
    for (i, backend) in backends.iter().enumerate() {
        let after = gateways[i].metrics().await?;
        let delta = |name: &str, ops: &[&str]| -> f64 {
            ops.iter().map(|op| after.labelled(name, op) - before[i].labelled(name, op)).sum()
        };
        let kms_calls = delta("sealgate_kms_calls_total", &["wrap_data_key", "unwrap_data_key", "generate_data_key"]);
        let s3_ops = delta("sealgate_s3_requests_total", &["PutObject", "GetObject"]);
        let round_trip_ms = uncached_round_trip_ms(&servers[i].1).await?;
        let (put, get) = (median(puts[i].clone()), median(gets[i].clone()));
        println!(
            "| {backend} | {put:.0} | {get:.0} | {:.2} | {:.2} | {:.2} | {round_trip_ms:.2} ms |",
            put / local_put,
            get / local_get,
            1000.0 * kms_calls / s3_ops.max(1.0),
        );
    }
    Ok(())
}

/// Mean KMS unwrap time of 50 sequential GETs on a gateway that caches no
/// bucket key (so each GET makes one KMS call), from its metrics.
async fn uncached_round_trip_ms(kms_args: &[String]) -> Result<f64> {
    let mut args: Vec<&str> = kms_args.iter().map(String::as_str).collect();
    args.extend(["--kms-cache-ttl", "0"]);
    let gw = Gateway::start(&args)?;
    let s3 = gw.client();
    gw.create_buckets(&s3).await?;
    put_once(&s3, "sealed", "one", pattern(4096)).await?;
    let loaded = gw.metrics().await?;
    for _ in 0..50 {
        get_once(&s3, "sealed", "one").await?;
    }
    let done = gw.metrics().await?;
    let unwrap = |m: &gateway::Metrics, name: &str| m.labelled(name, "unwrap_data_key");
    let sum = unwrap(&done, "sealgate_kms_call_duration_seconds_sum")
        - unwrap(&loaded, "sealgate_kms_call_duration_seconds_sum");
    let count = unwrap(&done, "sealgate_kms_call_duration_seconds_count")
        - unwrap(&loaded, "sealgate_kms_call_duration_seconds_count");
    Ok(1000.0 * sum / count.max(1.0))
}
