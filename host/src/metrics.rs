//! Prometheus metrics served on the admin listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub operation: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsCallLabels {
    pub backend: String,
    pub operation: String,
    /// `ok`, or the error's code (`unavailable`, `refused`, `invalid`).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BucketKeyCacheLabels {
    /// `hit`, `miss`, or `stale` (an expired key used within the offline grace).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KmsOperationLabels {
    pub backend: String,
    pub operation: String,
}

fn kms_latency_histogram() -> Histogram {
    // 0.1 ms … ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    bytes_in: Counter,
    bytes_out: Counter,
    policy_swaps: Counter,
    policy_refusals: Counter,
    policy_guest_failures: Counter,
    policy_violations: Counter,
    policy_evaluation: Histogram,
    policy_swap: Histogram,
    decrypt_failures: Counter,
    kms_calls: Family<KmsCallLabels, Counter>,
    kms_latency: Family<KmsOperationLabels, Histogram, fn() -> Histogram>,
    bucket_key_cache: Family<BucketKeyCacheLabels, Counter>,
    bucket_keys_created: Counter,
    upstream_requests: Family<OperationLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sealgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        registry.register("s3_requests", "S3 requests by operation and HTTP status", requests.clone());
        registry.register("s3_request_duration_seconds", "S3 request latency until the response head", latency.clone());
        registry.register("s3_received_bytes", "Request body bytes announced by Content-Length", bytes_in.clone());
        registry.register("s3_sent_bytes", "Response body bytes announced by Content-Length", bytes_out.clone());
        let policy_swaps = Counter::default();
        let policy_refusals = Counter::default();
        let policy_guest_failures = Counter::default();
        let policy_violations = Counter::default();
        // 1 µs … ~33 ms
        let policy_evaluation = Histogram::new(exponential_buckets(0.000_001, 2.0, 16));
        let policy_swap = Histogram::new(exponential_buckets(0.005, 2.0, 10));
        registry.register("policy_swaps", "Policy modules swapped in", policy_swaps.clone());
        registry.register("policy_refusals", "Candidate policy modules refused", policy_refusals.clone());
        registry.register(
            "policy_guest_failures",
            "Guest traps, timeouts, memory-limit hits and malformed decisions",
            policy_guest_failures.clone(),
        );
        registry.register(
            "policy_violations",
            "Decisions refused because they broke an invariant the host enforces (plaintext into an encrypted \
             bucket, a key outside the request's scope)",
            policy_violations.clone(),
        );
        registry.register(
            "policy_evaluation_seconds",
            "Time to evaluate one request, instantiation included",
            policy_evaluation.clone(),
        );
        registry.register(
            "policy_swap_seconds",
            "Time to compile, check, self-test and swap a module",
            policy_swap.clone(),
        );
        let decrypt_failures = Counter::default();
        registry.register(
            "decrypt_failures",
            "Sealed chunks that failed authentication on read",
            decrypt_failures.clone(),
        );
        let kms_calls = Family::<KmsCallLabels, Counter>::default();
        let kms_latency =
            Family::<KmsOperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(kms_latency_histogram);
        registry.register("kms_calls", "KMS calls by backend, operation and outcome", kms_calls.clone());
        registry.register(
            "kms_call_duration_seconds",
            "KMS call latency by backend and operation",
            kms_latency.clone(),
        );
        let bucket_key_cache = Family::<BucketKeyCacheLabels, Counter>::default();
        registry.register(
            "bucket_key_cache_lookups",
            "Lookups of an unwrapped bucket key in the gateway's cache, by outcome",
            bucket_key_cache.clone(),
        );
        let bucket_keys_created = Counter::default();
        registry.register("bucket_keys_created", "New bucket-key epochs started", bucket_keys_created.clone());
        let upstream_requests = Family::<OperationLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent to the upstream S3 (backend s3), by upstream operation",
            upstream_requests.clone(),
        );
        Self {
            upstream_requests,
            bucket_key_cache,
            bucket_keys_created,
            kms_calls,
            kms_latency,
            decrypt_failures,
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            policy_swaps,
            policy_refusals,
            policy_guest_failures,
            policy_violations,
            policy_evaluation,
            policy_swap,
        }
    }
}

impl Metrics {
    pub fn record_request(&self, operation: &str, status: u16, seconds: f64, bytes_in: u64, bytes_out: u64) {
        self.requests.get_or_create(&RequestLabels { operation: operation.to_owned(), status }).inc();
        self.latency.get_or_create(&OperationLabels { operation: operation.to_owned() }).observe(seconds);
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    pub fn decrypt_failed(&self) {
        self.decrypt_failures.inc();
    }

    pub fn policy_swapped(&self, seconds: f64) {
        self.policy_swaps.inc();
        self.policy_swap.observe(seconds);
    }

    pub fn policy_refused(&self) {
        self.policy_refusals.inc();
    }

    pub fn policy_trapped(&self) {
        self.policy_guest_failures.inc();
    }

    pub fn policy_violated(&self) {
        self.policy_violations.inc();
    }

    pub fn policy_evaluated(&self, seconds: f64) {
        self.policy_evaluation.observe(seconds);
    }

    pub fn kms_called(&self, backend: &str, operation: &str, outcome: &str, seconds: f64) {
        let (backend, operation) = (backend.to_owned(), operation.to_owned());
        self.kms_calls
            .get_or_create(&KmsCallLabels {
                backend: backend.clone(),
                operation: operation.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.kms_latency.get_or_create(&KmsOperationLabels { backend, operation }).observe(seconds);
    }

    pub fn bucket_key_lookup(&self, outcome: &str) {
        self.bucket_key_cache.get_or_create(&BucketKeyCacheLabels { outcome: outcome.to_owned() }).inc();
    }

    pub fn bucket_key_created(&self) {
        self.bucket_keys_created.inc();
    }

    pub fn upstream_request(&self, operation: &'static str) {
        self.upstream_requests.get_or_create(&OperationLabels { operation: operation.to_owned() }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
