//! Who may call: the main key pair, further users from `--users`, and the
//! admin token. s3s verifies SigV4 (headers, presigned URLs, streaming
//! chunks, POST policies) against the secrets looked up here.

use std::collections::HashMap;
use std::path::Path;

use rand::Rng;
use rand::distr::Alphanumeric;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read users file {path}: {source}")]
    UsersFile { path: String, source: std::io::Error },
    #[error("invalid users file {path}: {message}")]
    UsersFormat { path: String, message: String },
    #[error("credentials store in the data dir: {0}")]
    Store(#[from] std::io::Error),
    #[error("invalid credentials file in the data dir: {0}")]
    StoreFormat(String),
    #[error("the admin token is empty or blank; set a real one or leave it unset to have one generated")]
    EmptyToken,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct KeyPair {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<KeyPair>,
}

/// The main key pair and whether it was generated (then it is printed once at start-up).
pub struct MainCredentials {
    pub pair: KeyPair,
    pub generated: bool,
}

fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Writes a secret file readable by its owner only, atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The main pair from the settings, else the one stored in the data dir,
/// else a new one (stored there).
pub fn main_credentials(settings: &Settings) -> Result<MainCredentials, AuthError> {
    if let (Some(access_key), Some(secret_key)) = (&settings.access_key, &settings.secret_key) {
        let pair = KeyPair { access_key: access_key.clone(), secret_key: secret_key.expose().to_owned() };
        return Ok(MainCredentials { pair, generated: false });
    }
    let path = settings.data_dir.join("credentials.toml");
    if path.exists() {
        let text = read_secret_file(&path)?;
        let pair: KeyPair = toml::from_str(&text).map_err(|e| AuthError::StoreFormat(e.to_string()))?;
        return Ok(MainCredentials { pair, generated: true });
    }
    let pair = KeyPair { access_key: random_string(20).to_uppercase(), secret_key: random_string(40) };
    let text = toml::to_string(&pair).map_err(|e| AuthError::StoreFormat(e.to_string()))?;
    write_private_file(&path, text.as_bytes())?;
    Ok(MainCredentials { pair, generated: true })
}

/// The admin token from the settings, else the one stored in the data dir,
/// else a new one. An empty or blank token is refused: it would be easy to
/// guess and easy to set by mistake.
pub fn admin_token(settings: &Settings) -> Result<String, AuthError> {
    let path = settings.data_dir.join("admin-token");
    let token = match &settings.admin_token {
        Some(token) => token.expose().to_owned(),
        None if path.exists() => read_secret_file(&path)?.trim().to_owned(),
        None => {
            let token = random_string(40);
            write_private_file(&path, token.as_bytes())?;
            token
        }
    };
    if token.trim().is_empty() {
        return Err(AuthError::EmptyToken);
    }
    Ok(token)
}

/// Reads a file holding secrets; one readable by group or others is made
/// private (0600) first, with a warning.
pub fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "secret file was readable by others; made it 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::read_to_string(path)
}

/// Every known access key and its secret.
#[derive(Clone)]
pub struct Users {
    secrets: HashMap<String, SecretKey>,
}

impl Users {
    /// No users at all (tests).
    pub fn empty() -> Self {
        Self { secrets: HashMap::new() }
    }

    /// The secret of `access_key`, if it is a user's.
    pub fn secret(&self, access_key: &str) -> Option<&str> {
        self.secrets.get(access_key).map(SecretKey::expose)
    }

    pub fn load(main: &KeyPair, users_file: Option<&Path>) -> Result<Self, AuthError> {
        let mut secrets = HashMap::new();
        secrets.insert(main.access_key.clone(), SecretKey::from(main.secret_key.clone()));
        if let Some(path) = users_file {
            let display = path.display().to_string();
            let text =
                read_secret_file(path).map_err(|source| AuthError::UsersFile { path: display.clone(), source })?;
            let file: UsersFile = toml::from_str(&text)
                .map_err(|e| AuthError::UsersFormat { path: display.clone(), message: e.to_string() })?;
            for user in file.user {
                if user.access_key.is_empty() || user.secret_key.is_empty() {
                    return Err(AuthError::UsersFormat {
                        path: display,
                        message: "empty access_key or secret_key".into(),
                    });
                }
                secrets.insert(user.access_key, SecretKey::from(user.secret_key));
            }
        }
        Ok(Self { secrets })
    }
}

#[async_trait::async_trait]
impl S3Auth for Users {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.secrets.get(access_key).cloned().ok_or_else(|| {
            s3_error!(InvalidAccessKeyId, "The AWS Access Key Id you provided does not exist in our records.")
        })
    }
}

/// Slot in the request extensions where the access hook records the
/// operation s3s resolved, for the request log and metrics.
#[derive(Clone, Default)]
pub struct OperationSlot(pub std::sync::Arc<std::sync::OnceLock<String>>);

/// Refuses anonymous requests and records the operation name. Per-bucket
/// ownership is checked by the handlers, which load the bucket anyway.
pub struct SignedOnly;

#[async_trait::async_trait]
impl S3Access for SignedOnly {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            let _ = slot.0.set(operation);
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "Access Denied")),
        }
    }
}

/// Compares a bearer token in constant time.
pub fn token_matches(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}
