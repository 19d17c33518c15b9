//! Bulk crypto: AES-256-GCM behind a small trait, with ring (AES-NI,
//! PCLMULQDQ, VAES) as the default and RustCrypto's pure-Rust `aes-gcm` as
//! the alternative (`--features pure-rust-aes`). Both produce identical
//! bytes; `format` lays objects out in authenticated chunks.

pub mod format;
pub mod format_v2;
pub mod sealed_metadata;

use zeroize::Zeroizing;

/// AES-256-GCM tag length.
pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
#[error("chunk failed authentication")]
pub struct AuthenticationFailed;

/// One AES-256-GCM key, ready to seal and open chunks in place. Tags travel
/// separately so that chunks are never copied to make room for them.
pub trait ChunkCipher: Send + Sync {
    /// Encrypts `buf` in place; returns the tag.
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];
    /// Checks `tag` and decrypts `buf` in place. On failure `buf` is zeroed:
    /// unauthenticated plaintext never escapes.
    fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthenticationFailed>;

    /// As `open`, for ciphertext that starts `shift` bytes into `buf`: the
    /// plaintext is written from the start of `buf`. This packs consecutive
    /// chunks together without their tags; ring does it in the same pass.
    fn open_shifted(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        shift: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthenticationFailed> {
        if let Err(e) = self.open(nonce, aad, &mut buf[shift..], tag) {
            buf.fill(0);
            return Err(e);
        }
        buf.copy_within(shift.., 0);
        Ok(())
    }
}

/// Which implementation `new_cipher` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    Ring,
    RustCrypto,
}

impl Implementation {
    pub const DEFAULT: Implementation =
        if cfg!(feature = "pure-rust-aes") { Implementation::RustCrypto } else { Implementation::Ring };

    pub fn name(self) -> &'static str {
        match self {
            Implementation::Ring => "ring AES-256-GCM",
            Implementation::RustCrypto => "RustCrypto aes-gcm (pure Rust)",
        }
    }
}

pub fn new_cipher(implementation: Implementation, key: &Zeroizing<[u8; 32]>) -> Box<dyn ChunkCipher> {
    match implementation {
        Implementation::Ring => Box::new(RingCipher(ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key.as_slice()).expect("32-byte key"),
        ))),
        Implementation::RustCrypto => {
            use aes_gcm::KeyInit;
            Box::new(RustCryptoCipher(aes_gcm::Aes256Gcm::new_from_slice(key.as_slice()).expect("32-byte key")))
        }
    }
}

fn failed(buf: &mut [u8]) -> AuthenticationFailed {
    buf.fill(0);
    AuthenticationFailed
}

struct RingCipher(ring::aead::LessSafeKey);

impl ChunkCipher for RingCipher {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use ring::aead::{Aad, Nonce};
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .expect("AES-GCM sealing only fails beyond 64 GiB per chunk");
        tag.as_ref().try_into().expect("16-byte tag")
    }

    fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthenticationFailed> {
        self.open_shifted(nonce, aad, buf, 0, tag)
    }

    fn open_shifted(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        shift: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthenticationFailed> {
        use ring::aead::{Aad, Nonce, Tag};
        let tag = Tag::from(*tag);
        let nonce = Nonce::assume_unique_for_key(nonce);
        match self.0.open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, shift..) {
            Ok(_) => Ok(()),
            Err(_) => Err(failed(buf)),
        }
    }
}

struct RustCryptoCipher(aes_gcm::Aes256Gcm);

impl ChunkCipher for RustCryptoCipher {
    fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        use aes_gcm::AeadInOut;
        let tag = self
            .0
            .encrypt_inout_detached(&nonce.into(), aad, buf.into())
            .expect("AES-GCM sealing only fails beyond 64 GiB per chunk");
        tag.into()
    }

    fn open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthenticationFailed> {
        use aes_gcm::AeadInOut;
        self.0.decrypt_inout_detached(&nonce.into(), aad, (&mut *buf).into(), &(*tag).into()).map_err(|_| failed(buf))
    }
}

/// The CPU features the bulk cipher can use, for the start-up log.
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let features = [
            ("aes-ni", std::arch::is_x86_feature_detected!("aes")),
            ("pclmulqdq", std::arch::is_x86_feature_detected!("pclmulqdq")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("vaes", std::arch::is_x86_feature_detected!("vaes")),
            ("vpclmulqdq", std::arch::is_x86_feature_detected!("vpclmulqdq")),
        ];
        let present: Vec<&str> = features.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        if present.is_empty() { "none".into() } else { present.join(",") }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "not detected on this architecture".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_and_rustcrypto_produce_identical_bytes_and_open_each_other() {
        let key = Zeroizing::new([0x42u8; 32]);
        let ring = new_cipher(Implementation::Ring, &key);
        let pure = new_cipher(Implementation::RustCrypto, &key);
        for len in [0usize, 1, 15, 16, 17, 4096, 65_536] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let nonce = [len as u8; 12];
            let aad = format!("aad-{len}");
            let (mut a, mut b) = (plain.clone(), plain.clone());
            let tag_a = ring.seal(nonce, aad.as_bytes(), &mut a);
            let tag_b = pure.seal(nonce, aad.as_bytes(), &mut b);
            assert_eq!((&a, tag_a), (&b, tag_b), "ciphertext of {len} bytes");
            pure.open(nonce, aad.as_bytes(), &mut a, &tag_a).unwrap();
            assert_eq!(a, plain);
            ring.open(nonce, aad.as_bytes(), &mut b, &tag_b).unwrap();
            assert_eq!(b, plain);
        }
    }

    #[test]
    fn a_flipped_bit_or_wrong_aad_fails_and_leaks_nothing() {
        let key = Zeroizing::new([1u8; 32]);
        for implementation in [Implementation::Ring, Implementation::RustCrypto] {
            let c = new_cipher(implementation, &key);
            let mut buf = b"secret".to_vec();
            let tag = c.seal([0; 12], b"a", &mut buf);
            let mut flipped = buf.clone();
            flipped[0] ^= 1;
            assert!(c.open([0; 12], b"a", &mut flipped, &tag).is_err());
            assert!(flipped.iter().all(|&b| b == 0));
            let mut other_aad = buf.clone();
            assert!(c.open([0; 12], b"b", &mut other_aad, &tag).is_err());
            assert!(other_aad.iter().all(|&b| b == 0));
        }
    }
}
