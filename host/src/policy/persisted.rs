//! The active module survives restarts. Before a module is swapped in, its
//! bytes go to `<data-dir>/policy/<sha256>.wasm` and its name to
//! `<data-dir>/policy/active` (written to a temp file and renamed, so the
//! pointer is never half-written). At start the module named there is used,
//! once its bytes still hash to its name.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::auth::write_private_file;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("policy store {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the persisted policy module {0} does not match its sha256 (damaged); remove it or load a module again")]
    Damaged(String),
    #[error("malformed policy pointer {0}")]
    Malformed(String),
}

pub struct PersistedPolicy {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io { path: path.display().to_string(), source }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl PersistedPolicy {
    pub fn new(data_dir: &Path) -> Self {
        Self { dir: data_dir.join("policy") }
    }

    fn pointer(&self) -> PathBuf {
        self.dir.join("active")
    }

    fn module_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.wasm"))
    }

    /// Makes `bytes` the module used at the next start; `source` says where
    /// it came from. Earlier modules are removed.
    pub fn save(&self, bytes: &[u8], sha256: &str, source: &str) -> Result<(), PersistError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let module = self.module_path(sha256);
        write_private_file(&module, bytes).map_err(io(&module))?;
        let pointer = self.pointer();
        write_private_file(&pointer, format!("{sha256}\n{source}\n").as_bytes()).map_err(io(&pointer))?;
        self.remove_others(sha256);
        Ok(())
    }

    /// The persisted module and its source, if there is one.
    pub fn load(&self) -> Result<Option<(Vec<u8>, String)>, PersistError> {
        let pointer = self.pointer();
        let text = match std::fs::read_to_string(&pointer) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&pointer)(e)),
        };
        let mut lines = text.lines();
        let sha256 = lines.next().unwrap_or_default().trim();
        if !is_sha256_hex(sha256) {
            return Err(PersistError::Malformed(pointer.display().to_string()));
        }
        let source = lines.next().unwrap_or("unknown").to_owned();
        let module = self.module_path(sha256);
        let bytes = std::fs::read(&module).map_err(io(&module))?;
        if hex::encode(sha2::Sha256::digest(&bytes)) != sha256 {
            return Err(PersistError::Damaged(module.display().to_string()));
        }
        Ok(Some((bytes, source)))
    }

    fn remove_others(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".wasm") && name != format!("{keep}.wasm") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_module_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = PersistedPolicy::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let (first, second) = (b"first module".to_vec(), b"second module".to_vec());
        let sha = |b: &[u8]| hex::encode(sha2::Sha256::digest(b));
        store.save(&first, &sha(&first), "PUT /policy").unwrap();
        store.save(&second, &sha(&second), "/etc/p.wasm").unwrap();
        assert_eq!(store.load().unwrap(), Some((second.clone(), "/etc/p.wasm".to_owned())));
        assert!(!store.module_path(&sha(&first)).exists(), "the replaced module is removed");
        std::fs::write(store.module_path(&sha(&second)), b"tampered").unwrap();
        assert!(matches!(store.load(), Err(PersistError::Damaged(_))));
    }
}
