//! The embedded KMS: 256-bit master keys in files (mode 0600) under a key
//! directory that must not be inside the data dir, and data keys wrapped
//! with AES-256-GCM under them.
//!
//! Wrapped key layout (version 1):
//! `0x01 ‖ nonce (12) ‖ AES-256-GCM(master, nonce, data key (32), aad) ‖ tag (16)`
//! where `aad = "sealgate-local-kms/1" ‖ key id ‖ 0 ‖ bucket ‖ 0 ‖ object key`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::{DataKey, KeyContext, Kms, KmsError};
use crate::auth::write_private_file;

const WRAP_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const WRAPPED_LEN: usize = 1 + NONCE_LEN + 32 + 16;
const KEY_ID_PREFIX: &str = "local-";

pub struct LocalKms {
    dir: PathBuf,
    /// Master keys already read, so a request costs no file read.
    cache: Mutex<HashMap<String, Zeroizing<[u8; 32]>>>,
}

/// Key ids are `local-` and 32 hex digits; nothing else reaches a path.
fn is_key_id(id: &str) -> bool {
    id.strip_prefix(KEY_ID_PREFIX)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
}

fn aad(key_id: &str, context: &KeyContext) -> Vec<u8> {
    let mut aad = b"sealgate-local-kms/1".to_vec();
    for part in [key_id, &context.bucket, &context.key] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

impl LocalKms {
    /// Opens the key store. Refuses a key dir inside the data dir: the data
    /// dir alone must never be enough to read an object.
    pub fn open(dir: &Path, data_dir: &Path) -> Result<Self, KmsError> {
        std::fs::create_dir_all(dir).map_err(|e| KmsError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| KmsError::Unavailable(format!("securing {}: {e}", dir.display())))?;
        let (keys, data) = (canonical(dir)?, canonical(data_dir)?);
        if keys.starts_with(&data) || data.starts_with(&keys) {
            return Err(KmsError::Invalid(format!(
                "the local KMS key dir ({}) must not be inside the data dir ({}) or contain it",
                keys.display(),
                data.display()
            )));
        }
        Ok(Self { dir: keys, cache: Mutex::new(HashMap::new()) })
    }

    fn key_path(&self, key_id: &str) -> Result<PathBuf, KmsError> {
        if !is_key_id(key_id) {
            return Err(KmsError::Refused(format!("unknown key id {key_id:?}")));
        }
        Ok(self.dir.join(format!("{key_id}.key")))
    }

    fn master_key(&self, key_id: &str) -> Result<LessSafeKey, KmsError> {
        let path = self.key_path(key_id)?;
        let mut cache = self.cache.lock().expect("key cache lock");
        if !cache.contains_key(key_id) {
            let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => KmsError::Refused(format!("key {key_id} does not exist")),
                _ => KmsError::Unavailable(format!("reading key {key_id}: {e}")),
            })?);
            let key: [u8; 32] =
                bytes.as_slice().try_into().map_err(|_| KmsError::Refused(format!("key {key_id} is corrupt")))?;
            cache.insert(key_id.to_owned(), Zeroizing::new(key));
        }
        let key = cache.get(key_id).expect("just inserted");
        Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_slice()).expect("32-byte key")))
    }
}

fn canonical(path: &Path) -> Result<PathBuf, KmsError> {
    std::fs::create_dir_all(path).map_err(|e| KmsError::Unavailable(format!("creating {}: {e}", path.display())))?;
    path.canonicalize().map_err(|e| KmsError::Unavailable(format!("resolving {}: {e}", path.display())))
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn create_key(&self, _bucket: &str) -> Result<String, KmsError> {
        let key_id = format!("{KEY_ID_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let key = super::random_data_key();
        let path = self.key_path(&key_id)?;
        write_private_file(&path, key.as_slice()).map_err(|e| KmsError::Unavailable(format!("writing key: {e}")))?;
        self.cache.lock().expect("key cache lock").insert(key_id.clone(), key);
        Ok(key_id)
    }

    async fn wrap_data_key(
        &self,
        key_id: &str,
        plaintext: &[u8; 32],
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let master = self.master_key(key_id)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = plaintext.to_vec();
        master
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(key_id, context)), &mut sealed)
            .map_err(|_| KmsError::Invalid("wrapping failed".into()))?;
        let mut wrapped = Vec::with_capacity(WRAPPED_LEN);
        wrapped.push(WRAP_VERSION);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    async fn unwrap_data_key(&self, key_id: &str, wrapped: &[u8], context: &KeyContext) -> Result<DataKey, KmsError> {
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != WRAP_VERSION {
            return Err(KmsError::Refused("malformed wrapped key".into()));
        }
        let master = self.master_key(key_id)?;
        let nonce: [u8; NONCE_LEN] = wrapped[1..1 + NONCE_LEN].try_into().expect("length checked");
        let mut buf = Zeroizing::new(wrapped[1 + NONCE_LEN..].to_vec());
        let opened = master
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(key_id, context)), &mut buf)
            .map_err(|_| KmsError::Refused("wrapped key does not authenticate under this key and context".into()))?;
        let mut plaintext = Zeroizing::new([0u8; 32]);
        plaintext.copy_from_slice(opened);
        Ok(DataKey { key_id: key_id.to_owned(), plaintext, wrapped: wrapped.to_vec() })
    }

    async fn destroy_key(&self, key_id: &str) -> Result<(), KmsError> {
        let path = self.key_path(key_id)?;
        self.cache.lock().expect("key cache lock").remove(key_id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KmsError::Unavailable(format!("removing key: {e}"))),
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| KmsError::Unavailable(format!("syncing key dir: {e}")))
    }

    async fn health(&self) -> Result<(), KmsError> {
        std::fs::read_dir(&self.dir).map(drop).map_err(|e| KmsError::Unavailable(format!("key dir unreadable: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms() -> (tempfile::TempDir, LocalKms) {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(&dir.path().join("keys"), &dir.path().join("data")).unwrap();
        (dir, kms)
    }

    fn ctx(key: &str) -> KeyContext {
        KeyContext { bucket: "b".into(), key: key.into() }
    }

    #[tokio::test]
    async fn data_keys_unwrap_only_under_their_key_and_context() {
        let (_dir, kms) = kms();
        let master = kms.create_key("b").await.unwrap();
        let other = kms.create_key("b").await.unwrap();
        let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
        let back = kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await.unwrap();
        assert_eq!(back.plaintext, dk.plaintext);
        assert!(matches!(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("other")).await, Err(KmsError::Refused(_))));
        assert!(matches!(kms.unwrap_data_key(&other, &dk.wrapped, &ctx("o")).await, Err(KmsError::Refused(_))));
        let mut tampered = dk.wrapped.clone();
        tampered[20] ^= 1;
        assert!(kms.unwrap_data_key(&master, &tampered, &ctx("o")).await.is_err());
    }

    #[tokio::test]
    async fn keys_are_private_files_and_destroy_removes_them() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, kms) = kms();
        let master = kms.create_key("b").await.unwrap();
        let path = dir.path().join("keys").join(format!("{master}.key"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let dk = kms.generate_data_key(&master, &ctx("o")).await.unwrap();
        kms.destroy_key(&master).await.unwrap();
        assert!(!path.exists());
        assert!(kms.unwrap_data_key(&master, &dk.wrapped, &ctx("o")).await.is_err());
    }

    #[test]
    fn key_dir_inside_the_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalKms::open(&dir.path().join("data/keys"), &dir.path().join("data")).is_err());
        assert!(LocalKms::open(&dir.path().join("d"), &dir.path().join("d/data")).is_err());
    }

    #[test]
    fn key_ids_never_escape_the_key_dir() {
        assert!(is_key_id("local-0123456789abcdef0123456789abcdef"));
        for bad in ["../x", "local-../../etc/passwd", "local-0123456789ABCDEF0123456789abcdef", "local-", ""] {
            assert!(!is_key_id(bad), "{bad}");
        }
    }
}
