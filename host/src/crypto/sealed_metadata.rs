//! An object's metadata sealed for an upstream store (format 2): the
//! upstream keeps one user-metadata value, `x-amz-meta-sg`, that names the
//! data key and holds the content headers and the client's `x-amz-meta-*`
//! encrypted under it. See `docs/scale-out.md`.
//!
//! ```text
//! blob = base64(2 ‖ key id length (u16 BE) ‖ key id ‖ wrapped data key length (u8) ‖
//!               wrapped data key ‖ salt (16) ‖ AES-256-GCM(metadata key, JSON) ‖ tag (16))
//! metadata key = HKDF-SHA256(data key, salt, "sealgate/2 metadata key" ‖ 0u32)
//! ```
//!
//! The metadata key is unique per blob (random salt), so the nonce is zero.

use base64::Engine as _;
use zeroize::Zeroizing;

use super::format::{SegmentId, derive_key};
use super::{Implementation, TAG_LEN, new_cipher};
use crate::storage::{ObjectMetadata, Sealing};

const VERSION: u8 = 2;
const KDF_LABEL: &[u8] = b"sealgate/2 metadata key";
const AAD: &[u8] = b"sealgate/2 metadata";

#[derive(Debug, thiserror::Error)]
pub enum SealedMetadataError {
    #[error("sealed metadata is malformed")]
    Malformed,
    #[error("sealed metadata failed authentication")]
    Authentication,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Seals `metadata` with the object's data key.
pub fn seal(sealing: &Sealing, data_key: &Zeroizing<[u8; 32]>, metadata: &ObjectMetadata) -> String {
    let id = SegmentId::random(0);
    let cipher = new_cipher(Implementation::DEFAULT, &derive_key(data_key, &id, KDF_LABEL));
    let mut body = serde_json::to_vec(metadata).expect("metadata serializes");
    let tag = cipher.seal([0u8; 12], AAD, &mut body);
    let mut blob = vec![VERSION];
    blob.extend_from_slice(&(sealing.key_id.len() as u16).to_be_bytes());
    blob.extend_from_slice(sealing.key_id.as_bytes());
    blob.push(sealing.wrapped_key.len() as u8);
    blob.extend_from_slice(&sealing.wrapped_key);
    blob.extend_from_slice(&id.salt);
    blob.extend_from_slice(&body);
    blob.extend_from_slice(&tag);
    b64().encode(blob)
}

/// The parts of a blob, undecoded.
struct Parts {
    sealing: Sealing,
    salt: [u8; 16],
    ciphertext: Vec<u8>,
    tag: [u8; TAG_LEN],
}

fn split(blob: &str) -> Result<Parts, SealedMetadataError> {
    let bytes = b64().decode(blob).map_err(|_| SealedMetadataError::Malformed)?;
    let mut reader = Reader(&bytes);
    if reader.take(1)? != [VERSION] {
        return Err(SealedMetadataError::Malformed);
    }
    let id_len = u16::from_be_bytes(reader.take(2)?.try_into().expect("2 bytes")) as usize;
    let key_id = String::from_utf8(reader.take(id_len)?.to_vec()).map_err(|_| SealedMetadataError::Malformed)?;
    let wrapped_len = reader.take(1)?[0] as usize;
    let wrapped_key = reader.take(wrapped_len)?.to_vec();
    let salt: [u8; 16] = reader.take(16)?.try_into().expect("16 bytes");
    let body_len = reader.0.len().checked_sub(TAG_LEN).ok_or(SealedMetadataError::Malformed)?;
    let ciphertext = reader.take(body_len)?.to_vec();
    let tag: [u8; TAG_LEN] = reader.take(TAG_LEN)?.try_into().expect("16 bytes");
    Ok(Parts {
        sealing: Sealing { key_id, wrapped_key, format: super::format_v2::FORMAT_VERSION },
        salt,
        ciphertext,
        tag,
    })
}

/// Takes fields off the front of a byte string.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SealedMetadataError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(SealedMetadataError::Malformed)?;
        self.0 = tail;
        Ok(head)
    }
}

/// The data key a blob names (to ask the policy and the KMS for it).
pub fn sealing_of(blob: &str) -> Result<Sealing, SealedMetadataError> {
    split(blob).map(|p| p.sealing)
}

/// Opens a blob with the data key it names.
pub fn open(blob: &str, data_key: &Zeroizing<[u8; 32]>) -> Result<ObjectMetadata, SealedMetadataError> {
    let mut parts = split(blob)?;
    let id = SegmentId { salt: parts.salt, part_number: 0 };
    let cipher = new_cipher(Implementation::DEFAULT, &derive_key(data_key, &id, KDF_LABEL));
    cipher.open([0u8; 12], AAD, &mut parts.ciphertext, &parts.tag).map_err(|_| SealedMetadataError::Authentication)?;
    serde_json::from_slice(&parts.ciphertext).map_err(|_| SealedMetadataError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_keys_and_edits() {
        let sealing = Sealing { key_id: "bucket-key".into(), wrapped_key: vec![3; 81], format: 2 };
        let key = Zeroizing::new([4u8; 32]);
        let mut metadata = ObjectMetadata::default();
        metadata.user.insert("secret".into(), "value".into());
        metadata.content.content_type = Some("text/plain".into());
        let blob = seal(&sealing, &key, &metadata);
        assert!(!String::from_utf8_lossy(&b64().decode(&blob).unwrap()).contains("secret"));
        assert_eq!(sealing_of(&blob).unwrap(), sealing);
        assert_eq!(open(&blob, &key).unwrap(), metadata);
        assert!(matches!(open(&blob, &Zeroizing::new([5u8; 32])), Err(SealedMetadataError::Authentication)));
        let mut bytes = b64().decode(&blob).unwrap();
        let last = bytes.len() - 20;
        bytes[last] ^= 1;
        assert!(open(&b64().encode(bytes), &key).is_err());
        assert!(open("not base64!", &key).is_err());
    }
}
