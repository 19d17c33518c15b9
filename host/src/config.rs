//! Gateway settings: command-line flags, `SEALGATE_*` environment variables
//! and an optional TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

    /// KMS backend holding the bucket master keys: `local` [default: local]
    #[arg(long, env = "SEALGATE_KMS")]
    pub kms: Option<String>,

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
    pub kms: KmsBackend,
    pub policy: Option<PathBuf>,
    pub kms_local_dir: PathBuf,
    pub multipart_expiry_hours: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsBackend {
    Local,
}

fn kms_backend(name: Option<&str>) -> Result<KmsBackend, ConfigError> {
    match name.unwrap_or("local") {
        "local" => Ok(KmsBackend::Local),
        other @ ("kmip" | "aws") => {
            Err(ConfigError::Invalid(format!("--kms {other} is not implemented in this build yet; use local")))
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
            kms: kms_backend(merged.kms.as_deref())?,
            policy: merged.policy,
            kms_local_dir: merged.kms_local_dir.unwrap_or_else(|| "./data-kms".into()),
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
    fn half_a_key_pair_is_refused() {
        let args = ServeArgs { access_key: Some("a".into()), ..Default::default() };
        assert!(matches!(args.resolve(), Err(ConfigError::Invalid(_))));
    }
}
