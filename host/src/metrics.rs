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
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sealgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        registry.register(
            "s3_requests",
            "S3 requests by operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "s3_request_duration_seconds",
            "S3 request latency until the response head",
            latency.clone(),
        );
        registry.register(
            "s3_received_bytes",
            "Request body bytes announced by Content-Length",
            bytes_in.clone(),
        );
        registry.register(
            "s3_sent_bytes",
            "Response body bytes announced by Content-Length",
            bytes_out.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
        }
    }
}

impl Metrics {
    pub fn record_request(
        &self,
        operation: &str,
        status: u16,
        seconds: f64,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                operation: operation.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels {
                operation: operation.to_owned(),
            })
            .observe(seconds);
        self.bytes_in.inc_by(bytes_in);
        self.bytes_out.inc_by(bytes_out);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
