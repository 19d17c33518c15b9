//! In-process measurements: the bulk cipher, MD5, and the policy guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use sealgate::crypto::{Implementation, new_cipher};
use sealgate::kms::KeyContext;
use sealgate::kms::local::LocalKms;
use sealgate::metrics::Metrics;
use sealgate::policy::{BucketState, KeyContexts, Operation, PolicyRuntime, Request, Verdict};
use zeroize::Zeroizing;

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// GB/s of sealing 64 KiB chunks for about a second, on one core.
fn seal_rate(implementation: Implementation) -> f64 {
    let cipher = new_cipher(implementation, &Zeroizing::new([7u8; 32]));
    let chunk = vec![0x5Au8; 64 << 10];
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        let mut buf = chunk.clone();
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_be_bytes());
        cipher.seal(nonce, b"aad", &mut buf);
        bytes += chunk.len();
        i += 1;
    }
    bytes as f64 / 1e9 / started.elapsed().as_secs_f64()
}

/// GB/s of MD5 over 64 KiB updates for about a second, on one core (the
/// md-5 crate with its `asm` feature, as the gateway uses it).
pub fn md5_rate() -> f64 {
    use md5::Digest;
    let chunk = vec![0x5Au8; 64 << 10];
    let mut hasher = md5::Md5::new();
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed() < Duration::from_secs(1) {
        hasher.update(&chunk);
        bytes += chunk.len();
    }
    std::hint::black_box(hasher.finalize());
    bytes as f64 / 1e9 / started.elapsed().as_secs_f64()
}

pub fn bulk_cipher() {
    println!("## Bulk primitives, one core, 64 KiB chunks\n");
    println!("| primitive | GB/s |");
    println!("| --- | --- |");
    println!(
        "| AES-256-GCM seal, {} (default) | {:.2} |",
        Implementation::Ring.name(),
        seal_rate(Implementation::Ring)
    );
    println!(
        "| AES-256-GCM seal, {} | {:.2} |",
        Implementation::RustCrypto.name(),
        seal_rate(Implementation::RustCrypto)
    );
    println!("| MD5 (the ETag), md-5 crate with asm | {:.2} |", md5_rate());
}

fn request(encrypted: bool) -> Request {
    Request {
        operation: Operation::PutObject,
        bucket: "bench".into(),
        key: Some("object".into()),
        headers: vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("content-length".into(), "4096".into()),
        ],
        bucket_state: Some(BucketState { encrypted, key_id: None }),
        target: None,
        source: None,
        requested_algorithm: None,
    }
}

/// Minor page faults of this process so far (field 10 of /proc/self/stat):
/// a fresh guest instance touches pages the pooling allocator reset.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

pub async fn policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kms = Arc::new(LocalKms::open(&dir.path().join("kms"), &dir.path().join("data"))?);
    let key_id = {
        use sealgate::kms::Kms;
        kms.create_key("bench").await?
    };
    let runtime = PolicyRuntime::start(kms, Arc::new(Metrics::default()), None, None).await?;
    let contexts = KeyContexts { target: KeyContext { bucket: "bench".into(), key: "object".into() }, source: None };
    println!("\n## Policy guest (fresh store and instance per request, pooling allocator)\n");
    println!("| module | request | p50 | p99 | minor page faults per evaluation |");
    println!("| --- | --- | --- | --- | --- |");
    // The same rules built against both contracts: what the 1.0.0 adapter costs.
    let contract_1 = "guest/fixtures/contract-1.0.0/default.wasm";
    for (module, bytes) in [
        ("default (contract 2.0.0)", sealgate::policy::DEFAULT_MODULE.to_vec()),
        ("default (contract 1.0.0)", std::fs::read(contract_1).map_err(|e| anyhow::anyhow!("{contract_1}: {e}"))?),
    ] {
        runtime.load(bytes, module.into()).await?;
        evaluation_rows(&runtime, module, &key_id, &contexts).await?;
    }
    println!("\n| swap (compile + import check + self-test + swap) | median of 5 |");
    println!("| --- | --- |");
    for module in ["default", "encrypt-all", "aws"] {
        let path = format!("target/policies/{module}.wasm");
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{path}: {e} (run make policies)"))?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            runtime.load(bytes.clone(), path.clone()).await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        println!("| {module}.wasm ({} KB) | {:.0} ms |", bytes.len() / 1000, super::median(times));
    }
    Ok(())
}

async fn evaluation_rows(runtime: &PolicyRuntime, module: &str, key_id: &str, contexts: &KeyContexts) -> Result<()> {
    for (name, encrypted) in [
        ("PutObject, plaintext bucket (no KMS call)", false),
        ("PutObject, encrypted bucket (includes the local KMS data key)", true),
    ] {
        let mut r = request(encrypted);
        if encrypted {
            r.bucket_state = Some(BucketState { encrypted: true, key_id: Some(key_id.to_owned()) });
        }
        let mut samples = Vec::with_capacity(3000);
        let mut faults_before = 0;
        for i in 0..3200 {
            if i == 200 {
                faults_before = minor_faults();
            }
            let started = Instant::now();
            let verdict = runtime.evaluate(r.clone(), contexts.clone()).await?;
            let elapsed = started.elapsed();
            anyhow::ensure!(matches!(verdict, Verdict::Allow(_)), "unexpected denial");
            if i >= 200 {
                samples.push(elapsed);
            }
        }
        let faults = (minor_faults() - faults_before) as f64 / samples.len() as f64;
        samples.sort();
        println!(
            "| {module} | {name} | {:.1} µs | {:.1} µs | {faults:.1} |",
            percentile(&samples, 0.5).as_secs_f64() * 1e6,
            percentile(&samples, 0.99).as_secs_f64() * 1e6
        );
    }
    Ok(())
}
