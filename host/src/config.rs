//! Gateway settings: command-line flags, `SEALGATE_*` environment variables
//! and an optional TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::kms::bucket_keys::BucketKeySettings;
use crate::listener::ConnectionLimits;
use crate::tls::CertFiles;

/// Errors while assembling the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

/// A secret setting (a key, a token): `Debug` prints `<redacted>`, so that
/// logging the settings never logs it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `sealgate serve` flags. Every field is optional here so that the TOML
/// file can fill what neither a flag nor the environment gave.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys as the long flag names, e.g. `data-dir = "/srv/data"`).
    #[arg(long, env = "SEALGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address of the S3 listener [default: 127.0.0.1:9000]
    #[arg(long, env = "SEALGATE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Directory of the embedded object store [default: ./data]
    #[arg(long, env = "SEALGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Access key of the main user (generated and stored in the data dir when neither key is given)
    #[arg(long, env = "SEALGATE_ACCESS_KEY")]
    pub access_key: Option<String>,

    /// Secret key of the main user
    #[arg(long, env = "SEALGATE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<Secret>,

    /// TOML file of further users: `[[user]]` tables with `access_key` and `secret_key`
    #[arg(long, env = "SEALGATE_USERS")]
    pub users: Option<PathBuf>,

    /// Region the gateway answers for [default: us-east-1]
    #[arg(long, env = "SEALGATE_REGION")]
    pub region: Option<String>,

    /// Base domain for virtual-hosted-style requests (`bucket.DOMAIN`); path style always works
    #[arg(long, env = "SEALGATE_DOMAIN")]
    pub domain: Option<String>,

    /// Address of the admin listener (health, metrics) [default: 127.0.0.1:9001]
    #[arg(long, env = "SEALGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token for the admin listener (generated and stored in the data dir when not given)
    #[arg(long, env = "SEALGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// KMS backend holding the bucket master keys: `local`, `kmip` or `aws` [default: local]
    #[arg(long, env = "SEALGATE_KMS")]
    pub kms: Option<String>,

    /// Time limit of one KMS call, in milliseconds; a KMS slower than this is unavailable [default: 5000]
    #[arg(long, env = "SEALGATE_KMS_TIMEOUT_MS")]
    pub kms_timeout_ms: Option<u64>,

    /// How long an unwrapped bucket key is kept in memory and used without asking the KMS: `300`, `90s`, `5m`, `1h`; `0` asks the KMS on every operation [default: 5m]
    #[arg(long, env = "SEALGATE_KMS_CACHE_TTL")]
    pub kms_cache_ttl: Option<String>,

    /// While the KMS is unreachable, keep using a cached bucket key this long past its TTL [default: 0]
    #[arg(long, env = "SEALGATE_KMS_OFFLINE_GRACE")]
    pub kms_offline_grace: Option<String>,

    /// Most unwrapped bucket keys held at once [default: 10000]
    #[arg(long, env = "SEALGATE_KMS_CACHE_MAX_KEYS")]
    pub kms_cache_max_keys: Option<usize>,

    /// Age after which writes start a new bucket key (epoch) [default: 24h]
    #[arg(long, env = "SEALGATE_BUCKET_KEY_MAX_AGE")]
    pub bucket_key_max_age: Option<String>,

    /// KMIP servers as comma-separated host:port, tried in order (--kms kmip)
    #[arg(long, env = "SEALGATE_KMIP_ENDPOINTS")]
    pub kmip_endpoints: Option<String>,

    /// PEM bundle of the CA(s) that signed the KMIP server certificate
    #[arg(long, env = "SEALGATE_KMIP_CA")]
    pub kmip_ca: Option<PathBuf>,

    /// PEM client certificate presented to the KMIP server
    #[arg(long, env = "SEALGATE_KMIP_CERT")]
    pub kmip_cert: Option<PathBuf>,

    /// PEM private key of the client certificate
    #[arg(long, env = "SEALGATE_KMIP_KEY")]
    pub kmip_key: Option<PathBuf>,

    /// Name expected in the KMIP server certificate [default: the endpoint's host]
    #[arg(long, env = "SEALGATE_KMIP_SERVER_NAME")]
    pub kmip_server_name: Option<String>,

    /// AWS KMS endpoint URL, e.g. a VPC endpoint or a compatible KMS [default: the region's AWS endpoint] (--kms aws)
    #[arg(long, env = "SEALGATE_AWS_KMS_ENDPOINT")]
    pub aws_kms_endpoint: Option<String>,

    /// AWS region of the KMS [default: AWS_REGION, else us-east-1]
    #[arg(long, env = "SEALGATE_AWS_KMS_REGION")]
    pub aws_kms_region: Option<String>,

    /// Access key id for AWS KMS [default: the AWS SDK's credential chain]
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub aws_access_key_id: Option<String>,

    /// Secret access key for AWS KMS
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<Secret>,

    /// Policy module (a sealgate:policy@2.0.0 or 1.0.0 component) to start with and to re-read on SIGHUP [default: the embedded default module]
    #[arg(long, env = "SEALGATE_POLICY")]
    pub policy: Option<PathBuf>,

    /// Key store of the local KMS; keep it off the data dir's disk or backups [default: ./data-kms]
    #[arg(long, env = "SEALGATE_KMS_LOCAL_DIR")]
    pub kms_local_dir: Option<PathBuf>,

    /// PEM certificate chain for TLS on the S3 listener (with --tls-key); reloaded on SIGHUP
    #[arg(long, env = "SEALGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, env = "SEALGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate chain for TLS on the admin listener (required to bind it beyond loopback)
    #[arg(long, env = "SEALGATE_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,

    /// PEM private key for --admin-tls-cert
    #[arg(long, env = "SEALGATE_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,

    /// Time a client has to send a request's headers: `30s`, `1m` [default: 30s]
    #[arg(long, env = "SEALGATE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,

    /// A request body that delivers no byte for this long ends with 400 RequestTimeout; also a response the client stops reading [default: 60s]
    #[arg(long, env = "SEALGATE_BODY_STALL_TIMEOUT")]
    pub body_stall_timeout: Option<String>,

    /// A keep-alive connection with no request for this long is closed [default: 120s]
    #[arg(long, env = "SEALGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,

    /// Most open S3 connections; further ones wait in the listen backlog [default: 4096]
    #[arg(long, env = "SEALGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Accept AWS Signature Version 2 (header, presigned URLs, POST forms); off by default, since a captured SigV2 request replays forever
    #[arg(long, env = "SEALGATE_ALLOW_SIGV2", num_args = 0..=1, default_missing_value = "true")]
    pub allow_sigv2: Option<bool>,

    /// Hours after which an unfinished multipart upload is discarded [default: 168]
    #[arg(long, env = "SEALGATE_MULTIPART_EXPIRY_HOURS")]
    pub multipart_expiry_hours: Option<u64>,

    /// The same as a duration (`7d` is `168h`); wins over --multipart-expiry-hours
    #[arg(long, env = "SEALGATE_MULTIPART_EXPIRY")]
    pub multipart_expiry: Option<String>,

    /// Where objects live: `local` (the embedded store in --data-dir) or `s3` (an upstream S3 shared by many gateways) [default: local]
    #[arg(long, env = "SEALGATE_BACKEND")]
    pub backend: Option<String>,

    /// Upstream S3 endpoint for --backend s3, e.g. http://127.0.0.1:3900 (path-style requests)
    #[arg(long, env = "SEALGATE_UPSTREAM_ENDPOINT")]
    pub upstream_endpoint: Option<String>,

    /// Region to sign upstream requests for [default: us-east-1]
    #[arg(long, env = "SEALGATE_UPSTREAM_REGION")]
    pub upstream_region: Option<String>,

    /// Access key of the upstream account
    #[arg(long, env = "SEALGATE_UPSTREAM_ACCESS_KEY")]
    pub upstream_access_key: Option<String>,

    /// Secret key of the upstream account (also keys the MAC of multipart upload ids: give every gateway the same)
    #[arg(long, env = "SEALGATE_UPSTREAM_SECRET_KEY", hide_env_values = true)]
    pub upstream_secret_key: Option<Secret>,

    /// Prefix of upstream bucket names: client bucket B is upstream bucket PREFIX+B [default: empty]
    #[arg(long, env = "SEALGATE_UPSTREAM_BUCKET_PREFIX")]
    pub upstream_bucket_prefix: Option<String>,

    /// Upstream bucket holding what the gateways share (bucket records, upload index) [default: sealgate-state]
    #[arg(long, env = "SEALGATE_UPSTREAM_STATE_BUCKET")]
    pub upstream_state_bucket: Option<String>,

    /// Change bucket records under a lock in the state bucket even where the upstream honours conditional PutObject (where it does not, as Garage, the lock is always used; see docs/scale-out.md) [default: false]
    #[arg(long, env = "SEALGATE_UPSTREAM_RECORD_LOCK", num_args = 0..=1, default_missing_value = "true")]
    pub upstream_record_lock: Option<bool>,
}

/// Settings after merging flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    pub users_file: Option<PathBuf>,
    pub region: String,
    pub domain: Option<String>,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<Secret>,
    pub kms: KmsSettings,
    pub kms_timeout: Duration,
    pub bucket_keys: BucketKeySettings,
    pub connections: ConnectionLimits,
    pub allow_sigv2: bool,
    /// TLS on the S3 listener.
    pub tls: Option<CertFiles>,
    /// TLS on the admin listener.
    pub admin_tls: Option<CertFiles>,
    pub policy: Option<PathBuf>,
    /// Unfinished multipart uploads older than this are discarded (checked
    /// at start and periodically).
    pub multipart_expiry: Duration,
    /// None: the embedded store in `data_dir`.
    pub upstream: Option<crate::storage::upstream::UpstreamSettings>,
}

/// The KMS backend and what it needs to connect.
#[derive(Clone, PartialEq, Eq)]
pub enum KmsSettings {
    Local { dir: PathBuf },
    Kmip { endpoints: Vec<String>, ca: PathBuf, cert: PathBuf, key: PathBuf, server_name: Option<String> },
    Aws { endpoint: Option<String>, region: String, access_key_id: Option<String>, secret_access_key: Option<Secret> },
}

impl std::fmt::Debug for KmsSettings {
    /// Never shows the AWS secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmsSettings::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            KmsSettings::Kmip { endpoints, server_name, .. } => {
                f.debug_struct("Kmip").field("endpoints", endpoints).field("server_name", server_name).finish()
            }
            KmsSettings::Aws { endpoint, region, .. } => {
                f.debug_struct("Aws").field("endpoint", endpoint).field("region", region).finish_non_exhaustive()
            }
        }
    }
}

fn required<T>(value: Option<T>, flag: &str, env: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::Invalid(format!("--kms kmip needs --{flag} (or {env})")))
}

fn kms_settings(args: &ServeArgs) -> Result<KmsSettings, ConfigError> {
    match args.kms.as_deref().unwrap_or("local") {
        "local" => Ok(KmsSettings::Local { dir: args.kms_local_dir.clone().unwrap_or_else(|| "./data-kms".into()) }),
        "kmip" => {
            let endpoints: Vec<String> =
                required(args.kmip_endpoints.as_deref(), "kmip-endpoints", "SEALGATE_KMIP_ENDPOINTS")?
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
            if endpoints.is_empty() {
                return Err(ConfigError::Invalid("--kmip-endpoints names no server".into()));
            }
            Ok(KmsSettings::Kmip {
                endpoints,
                ca: required(args.kmip_ca.clone(), "kmip-ca", "SEALGATE_KMIP_CA")?,
                cert: required(args.kmip_cert.clone(), "kmip-cert", "SEALGATE_KMIP_CERT")?,
                key: required(args.kmip_key.clone(), "kmip-key", "SEALGATE_KMIP_KEY")?,
                server_name: args.kmip_server_name.clone(),
            })
        }
        "aws" => {
            if args.aws_access_key_id.is_some() != args.aws_secret_access_key.is_some() {
                return Err(ConfigError::Invalid(
                    "give both --aws-access-key-id and --aws-secret-access-key, or neither".into(),
                ));
            }
            let region = args
                .aws_kms_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into());
            Ok(KmsSettings::Aws {
                endpoint: args.aws_kms_endpoint.clone(),
                region,
                access_key_id: args.aws_access_key_id.clone(),
                secret_access_key: args.aws_secret_access_key.clone(),
            })
        }
        other => Err(ConfigError::Invalid(format!("unknown --kms {other:?}; expected local, kmip or aws"))),
    }
}

impl ServeArgs {
    /// Merges the flags (already merged with the environment by clap) over
    /// the TOML file named by `--config`, then applies defaults.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let merged = self.over(file);
        if merged.access_key.is_some() != merged.secret_key.is_some() {
            return Err(ConfigError::Invalid("give both --access-key and --secret-key, or neither".into()));
        }
        let kms = kms_settings(&merged)?;
        let bucket_keys = bucket_key_settings(&merged)?;
        let multipart_expiry = match &merged.multipart_expiry {
            Some(text) => parse_duration("multipart-expiry", text)?,
            None => Duration::from_secs(merged.multipart_expiry_hours.unwrap_or(168).saturating_mul(3600)),
        };
        let connections = connection_limits(&merged)?;
        let upstream = upstream_settings(&merged)?;
        Ok(Settings {
            listen: merged.listen.unwrap_or(([127, 0, 0, 1], 9000).into()),
            data_dir: merged.data_dir.unwrap_or_else(|| "./data".into()),
            access_key: merged.access_key,
            secret_key: merged.secret_key,
            users_file: merged.users,
            region: merged.region.unwrap_or_else(|| "us-east-1".into()),
            domain: merged.domain,
            admin_listen: merged.admin_listen.unwrap_or(([127, 0, 0, 1], 9001).into()),
            admin_token: merged.admin_token,
            kms,
            kms_timeout: Duration::from_millis(merged.kms_timeout_ms.unwrap_or(5000).max(1)),
            bucket_keys,
            connections,
            allow_sigv2: merged.allow_sigv2.unwrap_or(false),
            tls: cert_files("tls", merged.tls_cert, merged.tls_key)?,
            admin_tls: cert_files("admin-tls", merged.admin_tls_cert, merged.admin_tls_key)?,
            policy: merged.policy,
            multipart_expiry,
            upstream,
        })
    }

    fn over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            access_key: self.access_key.or(file.access_key),
            secret_key: self.secret_key.or(file.secret_key),
            users: self.users.or(file.users),
            region: self.region.or(file.region),
            domain: self.domain.or(file.domain),
            admin_listen: self.admin_listen.or(file.admin_listen),
            admin_token: self.admin_token.or(file.admin_token),
            kms: self.kms.or(file.kms),
            kms_timeout_ms: self.kms_timeout_ms.or(file.kms_timeout_ms),
            kms_cache_ttl: self.kms_cache_ttl.or(file.kms_cache_ttl),
            kms_offline_grace: self.kms_offline_grace.or(file.kms_offline_grace),
            kms_cache_max_keys: self.kms_cache_max_keys.or(file.kms_cache_max_keys),
            bucket_key_max_age: self.bucket_key_max_age.or(file.bucket_key_max_age),
            kmip_endpoints: self.kmip_endpoints.or(file.kmip_endpoints),
            kmip_ca: self.kmip_ca.or(file.kmip_ca),
            kmip_cert: self.kmip_cert.or(file.kmip_cert),
            kmip_key: self.kmip_key.or(file.kmip_key),
            kmip_server_name: self.kmip_server_name.or(file.kmip_server_name),
            aws_kms_endpoint: self.aws_kms_endpoint.or(file.aws_kms_endpoint),
            aws_kms_region: self.aws_kms_region.or(file.aws_kms_region),
            aws_access_key_id: self.aws_access_key_id.or(file.aws_access_key_id),
            aws_secret_access_key: self.aws_secret_access_key.or(file.aws_secret_access_key),
            policy: self.policy.or(file.policy),
            kms_local_dir: self.kms_local_dir.or(file.kms_local_dir),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            body_stall_timeout: self.body_stall_timeout.or(file.body_stall_timeout),
            idle_timeout: self.idle_timeout.or(file.idle_timeout),
            max_connections: self.max_connections.or(file.max_connections),
            allow_sigv2: self.allow_sigv2.or(file.allow_sigv2),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            admin_tls_cert: self.admin_tls_cert.or(file.admin_tls_cert),
            admin_tls_key: self.admin_tls_key.or(file.admin_tls_key),
            multipart_expiry_hours: self.multipart_expiry_hours.or(file.multipart_expiry_hours),
            multipart_expiry: self.multipart_expiry.or(file.multipart_expiry),
            backend: self.backend.or(file.backend),
            upstream_endpoint: self.upstream_endpoint.or(file.upstream_endpoint),
            upstream_region: self.upstream_region.or(file.upstream_region),
            upstream_access_key: self.upstream_access_key.or(file.upstream_access_key),
            upstream_secret_key: self.upstream_secret_key.or(file.upstream_secret_key),
            upstream_bucket_prefix: self.upstream_bucket_prefix.or(file.upstream_bucket_prefix),
            upstream_state_bucket: self.upstream_state_bucket.or(file.upstream_state_bucket),
            upstream_record_lock: self.upstream_record_lock.or(file.upstream_record_lock),
        }
    }
}

/// `--backend s3` and its upstream, or None for the embedded store.
fn upstream_settings(args: &ServeArgs) -> Result<Option<crate::storage::upstream::UpstreamSettings>, ConfigError> {
    match args.backend.as_deref().unwrap_or("local") {
        "local" => Ok(None),
        "s3" => {
            let missing = |flag: &str| ConfigError::Invalid(format!("--backend s3 needs --{flag}"));
            let secret_key = args.upstream_secret_key.clone().ok_or_else(|| missing("upstream-secret-key"))?;
            if secret_key.expose().is_empty() {
                return Err(missing("upstream-secret-key"));
            }
            Ok(Some(crate::storage::upstream::UpstreamSettings {
                endpoint: args.upstream_endpoint.clone().ok_or_else(|| missing("upstream-endpoint"))?,
                region: args.upstream_region.clone().unwrap_or_else(|| "us-east-1".into()),
                access_key: args.upstream_access_key.clone().ok_or_else(|| missing("upstream-access-key"))?,
                secret_key,
                bucket_prefix: args.upstream_bucket_prefix.clone().unwrap_or_default(),
                state_bucket: args.upstream_state_bucket.clone().unwrap_or_else(|| "sealgate-state".into()),
                record_lock: args.upstream_record_lock.unwrap_or(false),
            }))
        }
        other => Err(ConfigError::Invalid(format!("unknown --backend {other:?}; expected local or s3"))),
    }
}

/// `300`, `300s`, `5m`, `24h`, `7d` or `1500ms`. Hand-written: five
/// suffixes do not warrant a dependency.
fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| ConfigError::Invalid(format!("--{flag} {text:?}: expected a number with s, m, h, d or ms")))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(ConfigError::Invalid(format!("--{flag} {text:?}: unknown unit {unit:?}"))),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

fn cert_files(flag: &str, cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<CertFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid(format!("give both --{flag}-cert and --{flag}-key, or neither"))),
    }
}

fn connection_limits(args: &ServeArgs) -> Result<ConnectionLimits, ConfigError> {
    let defaults = ConnectionLimits::default();
    let duration = |flag: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => parse_duration(flag, text).and_then(|d| {
            if d.is_zero() { Err(ConfigError::Invalid(format!("--{flag} must be above 0"))) } else { Ok(d) }
        }),
        None => Ok(default),
    };
    let limits = ConnectionLimits {
        header_read_timeout: duration("header-read-timeout", &args.header_read_timeout, defaults.header_read_timeout)?,
        body_stall_timeout: duration("body-stall-timeout", &args.body_stall_timeout, defaults.body_stall_timeout)?,
        idle_timeout: duration("idle-timeout", &args.idle_timeout, defaults.idle_timeout)?,
        max_connections: args.max_connections.unwrap_or(defaults.max_connections),
    };
    if limits.max_connections == 0 {
        return Err(ConfigError::Invalid("--max-connections must be above 0".into()));
    }
    Ok(limits)
}

fn bucket_key_settings(args: &ServeArgs) -> Result<BucketKeySettings, ConfigError> {
    let defaults = BucketKeySettings::default();
    let duration = |flag: &str, value: &Option<String>, default: Duration| match value {
        Some(text) => parse_duration(flag, text),
        None => Ok(default),
    };
    let settings = BucketKeySettings {
        cache_ttl: duration("kms-cache-ttl", &args.kms_cache_ttl, defaults.cache_ttl)?,
        offline_grace: duration("kms-offline-grace", &args.kms_offline_grace, defaults.offline_grace)?,
        max_age: duration("bucket-key-max-age", &args.bucket_key_max_age, defaults.max_age)?,
        max_cached: args.kms_cache_max_keys.unwrap_or(defaults.max_cached),
    };
    if settings.max_age.is_zero() || settings.max_cached == 0 {
        return Err(ConfigError::Invalid("--bucket-key-max-age and --kms-cache-max-keys must be above 0".into()));
    }
    Ok(settings)
}

fn read_file(path: &Path) -> Result<ServeArgs, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealgate.toml");
        std::fs::write(&path, "region = \"eu-west-1\"\ndata-dir = \"/srv/d\"\n").unwrap();
        let args = ServeArgs { config: Some(path), data_dir: Some("/flag".into()), ..Default::default() };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.data_dir, PathBuf::from("/flag"));
        assert_eq!(settings.listen.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn durations_take_a_unit_and_bucket_key_settings_have_defaults() {
        assert_eq!(parse_duration("x", "300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("x", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("x", "24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("x", "1500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x", "5 days").is_err());
        assert!(parse_duration("x", "m").is_err());
        let settings = ServeArgs::default().resolve().unwrap().bucket_keys;
        assert_eq!(settings.cache_ttl, Duration::from_secs(300));
        assert_eq!(settings.max_age, Duration::from_secs(86_400));
        assert!(settings.offline_grace.is_zero());
        let zero_ttl = ServeArgs { kms_cache_ttl: Some("0".into()), ..Default::default() };
        assert!(zero_ttl.resolve().unwrap().bucket_keys.cache_ttl.is_zero());
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let args = ServeArgs {
            access_key: Some("AKIDVISIBLE".into()),
            secret_key: Some("very-secret-key".into()),
            admin_token: Some("very-secret-token".into()),
            aws_secret_access_key: Some("very-secret-aws".into()),
            kms: Some("aws".into()),
            aws_access_key_id: Some("AKIDAWS".into()),
            ..Default::default()
        };
        let settings = args.clone().resolve().unwrap();
        for shown in [format!("{args:?}"), format!("{settings:?}")] {
            assert!(!shown.contains("very-secret"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lsiten = \"x\"\n").unwrap();
        let args = ServeArgs { config: Some(path), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn kmip_settings_come_from_the_file_and_need_all_three_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealgate.toml");
        let text = "kms = \"kmip\"\nkmip-endpoints = \"kms1:5696, kms2:5696\"\nkmip-ca = \"/ca.pem\"\n\
                    kmip-cert = \"/c.pem\"\nkmip-key = \"/k.pem\"\n";
        std::fs::write(&path, text).unwrap();
        let settings = ServeArgs { config: Some(path.clone()), ..Default::default() }.resolve().unwrap();
        match settings.kms {
            KmsSettings::Kmip { endpoints, key, .. } => {
                assert_eq!(endpoints, ["kms1:5696", "kms2:5696"]);
                assert_eq!(key, PathBuf::from("/k.pem"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "kms = \"kmip\"\nkmip-endpoints = \"kms1:5696\"\n").unwrap();
        let err = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("--kmip-ca"), "{err}");
    }

    #[test]
    fn aws_settings_take_explicit_region_and_endpoint() {
        let args = ServeArgs {
            kms: Some("aws".into()),
            aws_kms_endpoint: Some("http://127.0.0.1:5000".into()),
            aws_kms_region: Some("eu-central-1".into()),
            ..Default::default()
        };
        match args.resolve().unwrap().kms {
            KmsSettings::Aws { endpoint, region, access_key_id, .. } => {
                assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:5000"));
                assert_eq!(region, "eu-central-1");
                assert_eq!(access_key_id, None);
            }
            other => panic!("{other:?}"),
        }
        let half = ServeArgs { kms: Some("aws".into()), aws_access_key_id: Some("a".into()), ..Default::default() };
        assert!(half.resolve().is_err());
    }

    #[test]
    fn half_a_key_pair_is_refused() {
        let args = ServeArgs { access_key: Some("a".into()), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid(_))));
    }
}
