//! Multipart upload ids that carry their own state, so that any gateway can
//! serve any step of an upload with no shared store: the upstream keeps
//! the parts, and the id the client holds keeps what the gateway decided at
//! creation (sealed or not, the data key as the bucket key wrapped it, the
//! initiator, the checksum algorithm).
//!
//! ```text
//! client id = upstream id ‖ "~" ‖ base64url(payload ‖ MAC (16))
//! payload   = 1 ‖ checksum algorithm (u8) ‖ initiated ms (i64 BE) ‖ initiator length (u8) ‖
//!             initiator ‖ [key id length (u16 BE) ‖ key id ‖ wrapped length (u8) ‖ wrapped]
//! MAC       = HMAC-SHA256(key, bucket ‖ 0 ‖ object key ‖ 0 ‖ upstream id ‖ 0 ‖ payload)[..16]
//! ```
//!
//! The MAC key is derived from the upstream secret every gateway shares, so
//! a client cannot strip the sealing from an upload or move an id to
//! another key. The wrapped data key is useless without the bucket key.

use base64::Engine as _;
use ring::hmac;

use crate::storage::{Sealing, UploadRecord};

const VERSION: u8 = 1;
const SEPARATOR: char = '~';
const MAC_LEN: usize = 16;
const ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

pub struct UploadIds {
    key: hmac::Key,
    sealed_format: u8,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl UploadIds {
    pub fn new(shared_secret: &str, sealed_format: u8) -> Self {
        let derived = ring::digest::digest(
            &ring::digest::SHA256,
            [b"sealgate upload ids\0", shared_secret.as_bytes()].concat().as_slice(),
        );
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), sealed_format }
    }

    fn mac(&self, bucket: &str, key: &str, upstream_id: &str, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [bucket.as_bytes(), key.as_bytes(), upstream_id.as_bytes()] {
            ctx.update(part);
            ctx.update(&[0]);
        }
        ctx.update(payload);
        ctx.sign().as_ref()[..MAC_LEN].try_into().expect("16 bytes")
    }

    /// The id the client gets for `upload`, which the upstream knows as `upstream_id`.
    pub fn compose(&self, upload: &UploadRecord, upstream_id: &str) -> String {
        let mut payload = vec![VERSION];
        let algorithm = upload.checksum_algorithm.as_deref().and_then(|a| ALGORITHMS.iter().position(|x| *x == a));
        payload.push(algorithm.map_or(0, |i| i as u8 + 1));
        payload.extend_from_slice(&upload.initiated_unix_ms.to_be_bytes());
        let initiator = &upload.initiator.as_bytes()[..upload.initiator.len().min(255)];
        payload.push(initiator.len() as u8);
        payload.extend_from_slice(initiator);
        if let Some(sealing) = &upload.sealing {
            payload.extend_from_slice(&(sealing.key_id.len() as u16).to_be_bytes());
            payload.extend_from_slice(sealing.key_id.as_bytes());
            payload.push(sealing.wrapped_key.len() as u8);
            payload.extend_from_slice(&sealing.wrapped_key);
        }
        let mac = self.mac(&upload.bucket, &upload.key, upstream_id, &payload);
        payload.extend_from_slice(&mac);
        format!("{upstream_id}{SEPARATOR}{}", b64().encode(payload))
    }

    /// The upload a client id stands for, if it is one this deployment made
    /// for this bucket and key. `metadata` is not in the id (the upstream
    /// has it); `initiated_unix_ms` is.
    pub fn parse(&self, bucket: &str, key: &str, client_id: &str) -> Option<(UploadRecord, String)> {
        let (upstream_id, encoded) = client_id.rsplit_once(SEPARATOR)?;
        let bytes = b64().decode(encoded).ok()?;
        let (payload, mac) = bytes.split_at(bytes.len().checked_sub(MAC_LEN)?);
        let expected = self.mac(bucket, key, upstream_id, payload);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(mac, expected.as_slice())) {
            return None;
        }
        let mut rest = payload;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        if take(1)? != [VERSION] {
            return None;
        }
        let algorithm = match take(1)?[0] {
            0 => None,
            n => Some(ALGORITHMS.get(n as usize - 1)?.to_string()),
        };
        let initiated = i64::from_be_bytes(take(8)?.try_into().ok()?);
        let initiator_len = take(1)?[0] as usize;
        let initiator = String::from_utf8(take(initiator_len)?.to_vec()).ok()?;
        let sealing = match take(2) {
            None => None,
            Some(len) => {
                let key_id =
                    String::from_utf8(take(u16::from_be_bytes(len.try_into().ok()?) as usize)?.to_vec()).ok()?;
                let wrapped_len = take(1)?[0] as usize;
                let wrapped_key = take(wrapped_len)?.to_vec();
                Some(Sealing { key_id, wrapped_key, format: self.sealed_format })
            }
        };
        let upload = UploadRecord {
            upload_id: client_id.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            initiator,
            initiated_unix_ms: initiated,
            metadata: Default::default(),
            checksum_algorithm: algorithm,
            sealing,
            sealed_metadata: None,
        };
        Some((upload, upstream_id.to_owned()))
    }
}

/// The upstream's id inside a client id (unchecked; for joining listings).
pub fn upstream_part(client_id: &str) -> Option<&str> {
    client_id.rsplit_once(SEPARATOR).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(sealed: bool) -> UploadRecord {
        UploadRecord {
            upload_id: String::new(),
            bucket: "b".into(),
            key: "dir/k".into(),
            initiator: "alice".into(),
            initiated_unix_ms: 1_700_000_000_000,
            metadata: Default::default(),
            checksum_algorithm: Some("CRC32C".into()),
            sealing: sealed.then(|| Sealing { key_id: "kid".into(), wrapped_key: vec![9; 81], format: 2 }),
            sealed_metadata: None,
        }
    }

    #[test]
    fn ids_round_trip_only_for_their_bucket_key_and_secret() {
        let ids = UploadIds::new("secret", 2);
        for sealed in [false, true] {
            let id = ids.compose(&upload(sealed), "UP.1~x");
            let (parsed, upstream) = ids.parse("b", "dir/k", &id).unwrap();
            assert_eq!(upstream, "UP.1~x");
            assert_eq!(parsed.sealing, upload(sealed).sealing);
            assert_eq!(parsed.initiator, "alice");
            assert_eq!(parsed.checksum_algorithm.as_deref(), Some("CRC32C"));
            assert_eq!(parsed.initiated_unix_ms, 1_700_000_000_000);
            assert!(ids.parse("b", "dir/other", &id).is_none());
            assert!(ids.parse("c", "dir/k", &id).is_none());
            assert!(UploadIds::new("other", 2).parse("b", "dir/k", &id).is_none());
        }
        // A sealed id with its sealing cut off does not pass.
        let sealed = ids.compose(&upload(true), "UP");
        let plain = ids.compose(&upload(false), "UP");
        let (_, s_payload) = sealed.rsplit_once('~').unwrap();
        let (_, p_payload) = plain.rsplit_once('~').unwrap();
        assert_ne!(s_payload, p_payload);
        assert!(ids.parse("b", "dir/k", "UP~AAAA").is_none());
        assert!(ids.parse("b", "dir/k", "no-separator").is_none());
    }
}
