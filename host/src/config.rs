//! Gateway settings: command-line flags, `SEALGATE_*` environment variables
//! and an optional TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

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
    pub secret_key: Option<String>,

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
    pub admin_token: Option<String>,

    /// KMS backend holding the bucket master keys: `local`, `kmip` or `aws` [default: local]
    #[arg(long, env = "SEALGATE_KMS")]
    pub kms: Option<String>,

    /// Time limit of one KMS call, in milliseconds; a KMS slower than this is unavailable [default: 5000]
    #[arg(long, env = "SEALGATE_KMS_TIMEOUT_MS")]
    pub kms_timeout_ms: Option<u64>,

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
    pub aws_secret_access_key: Option<String>,

    /// Policy module (a sealgate:policy@1.0.0 component) to start with and to re-read on SIGHUP [default: the embedded default module]
    #[arg(long, env = "SEALGATE_POLICY")]
    pub policy: Option<PathBuf>,

    /// Key store of the local KMS; keep it off the data dir's disk or backups [default: ./data-kms]
    #[arg(long, env = "SEALGATE_KMS_LOCAL_DIR")]
    pub kms_local_dir: Option<PathBuf>,

    /// Hours after which an unfinished multipart upload is discarded [default: 168]
    #[arg(long, env = "SEALGATE_MULTIPART_EXPIRY_HOURS")]
    pub multipart_expiry_hours: Option<u64>,
}

/// Settings after merging flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub users_file: Option<PathBuf>,
    pub region: String,
    pub domain: Option<String>,
    pub admin_listen: SocketAddr,
    pub admin_token: Option<String>,
    pub kms: KmsSettings,
    pub kms_timeout: Duration,
    pub policy: Option<PathBuf>,
    pub multipart_expiry_hours: u64,
}

/// The KMS backend and what it needs to connect.
#[derive(Clone, PartialEq, Eq)]
pub enum KmsSettings {
    Local { dir: PathBuf },
    Kmip { endpoints: Vec<String>, ca: PathBuf, cert: PathBuf, key: PathBuf, server_name: Option<String> },
    Aws { endpoint: Option<String>, region: String, access_key_id: Option<String>, secret_access_key: Option<String> },
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
            policy: merged.policy,
            multipart_expiry_hours: merged.multipart_expiry_hours.unwrap_or(168),
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
            multipart_expiry_hours: self.multipart_expiry_hours.or(file.multipart_expiry_hours),
        }
    }
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
