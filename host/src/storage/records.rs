//! What the store keeps about buckets, objects and uploads. These records are
//! serialized into the metadata store: add fields with `#[serde(default)]`,
//! never rename or remove one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketRecord {
    pub name: String,
    /// Access key of the user who created the bucket.
    pub owner: String,
    pub created_unix_ms: i64,
    #[serde(default)]
    pub encryption: BucketEncryption,
    /// Random per creation: a bucket deleted and created again under the
    /// same name is another bucket, and a write that began in the old one
    /// must not land in the new one. Empty for buckets made before it existed.
    #[serde(default)]
    pub generation: String,
    /// Upstream backend only: which kinds of object the bucket has ever
    /// held, set before the first write of each kind, so that a listing
    /// knows without a request per entry whether sizes need unsealing.
    #[serde(default)]
    pub stored_forms: StoredForms,
}

/// See [`BucketRecord::stored_forms`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredForms {
    #[serde(default)]
    pub sealed: bool,
    #[serde(default)]
    pub plain: bool,
    /// The second kind was added less than a read-cache lifetime ago, as far
    /// as the writers know: a listing on another gateway may still hold a
    /// record with one kind, so writes wait that lifetime and then clear it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsettled: bool,
}

/// A bucket's encryption setting, as the policy decided it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketEncryption {
    /// New objects are sealed.
    pub encrypted: bool,
    /// The bucket master key's id in the KMS. Kept after encryption is
    /// turned off: objects sealed before still need it.
    pub key_id: Option<String>,
    /// The key a rotation in progress moves data keys away from; `key_id`
    /// is already the new one. Cleared when every data key is re-wrapped.
    #[serde(default)]
    pub rotating_from: Option<String>,
    /// The bucket keys (one per epoch), each stored only wrapped by the
    /// KMS. Objects' data keys are wrapped by one of them; see
    /// `kms::bucket_keys`. Oldest first.
    #[serde(default)]
    pub bucket_keys: Vec<BucketKeyRecord>,
}

/// One bucket-key epoch: a random 256-bit key that wraps data keys locally,
/// itself wrapped by the bucket's master key in the KMS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketKeyRecord {
    /// 16 random bytes, hex; named in every data key it wraps.
    pub id: String,
    /// The master key that wraps it now (changed by rotation).
    pub master_key_id: String,
    #[serde(with = "hex_bytes")]
    pub wrapped: Vec<u8>,
    pub created_unix_ms: i64,
    /// Set by a rotation: still opens the data keys it wrapped, never
    /// wraps new ones.
    #[serde(default)]
    pub retired: bool,
}

/// How an object's (or upload's) data is sealed: the data key, wrapped by
/// the KMS, and the format version. The plaintext key is never stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealing {
    pub key_id: String,
    #[serde(with = "hex_bytes")]
    pub wrapped_key: Vec<u8>,
    pub format: u8,
}

impl Sealing {
    /// The bucket key (epoch) its data key is wrapped by; None for a data
    /// key wrapped directly by the KMS (written before the key hierarchy).
    pub fn bucket_key_id(&self) -> Option<String> {
        crate::kms::bucket_keys::bucket_key_of(&self.wrapped_key)
    }
}

impl BucketRecord {
    /// Whether data sealed as `sealing` can still be opened through this
    /// bucket's keys: its bucket key is one of the bucket's.
    pub fn can_open(&self, sealing: &Sealing) -> bool {
        match sealing.bucket_key_id() {
            Some(id) => self.encryption.bucket_keys.iter().any(|k| k.id == id),
            None => true,
        }
    }

    /// Whether a data key made for a new write may be committed: its bucket
    /// key is the bucket's and not retired. A write whose key a rotation
    /// retired while it ran is refused (and retried), so that once the
    /// bucket keys are retired no new data can name them.
    pub fn accepts_new(&self, sealing: &Sealing) -> bool {
        match sealing.bucket_key_id() {
            Some(id) => self.encryption.bucket_keys.iter().any(|k| k.id == id && !k.retired),
            None => true,
        }
    }
}

/// What binds one sealed segment: its salt and part number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentSeal {
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    pub part_number: u32,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// A stored run of bytes, referenced by exactly one object or part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataSegment {
    /// Opaque to everything but the backend that made it.
    pub data_id: String,
    /// Bytes stored.
    pub stored_size: u64,
}

/// Content headers that round-trip unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// RFC 7231 date, as the client sent it.
    pub expires: Option<String>,
}

/// Base64 checksums of the content, as S3 reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checksums {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
}

/// Object-level metadata given at creation (PUT, POST, Copy, multipart create).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectMetadata {
    pub content: ContentHeaders,
    /// `x-amz-meta-*` without the prefix, lower-cased names.
    pub user: BTreeMap<String, String>,
}

/// One part of an object's data, in order. A single PUT has one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectPart {
    pub segment: DataSegment,
    /// Content bytes of this part.
    pub size: u64,
    /// MD5 hex of this part's content.
    pub etag: String,
    /// Present when the segment is sealed.
    #[serde(default)]
    pub seal: Option<SegmentSeal>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRecord {
    /// Content bytes.
    pub size: u64,
    /// ETag without quotes: MD5 hex, or `hex-N` for multipart objects.
    pub etag: String,
    pub last_modified_unix_ms: i64,
    pub metadata: ObjectMetadata,
    #[serde(default)]
    pub checksums: Checksums,
    pub parts: Vec<ObjectPart>,
    /// Whether the object came from a multipart upload (even of one part).
    #[serde(default)]
    pub multipart: bool,
    /// Present when the object is sealed; then every part has a `seal`
    /// (format 1) or the data is self-describing (format 2).
    #[serde(default)]
    pub sealing: Option<Sealing>,
    /// Format 2 (upstream): the metadata as stored, sealed with the data
    /// key; `metadata` is empty until the reader opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    pub initiator: String,
    pub initiated_unix_ms: i64,
    pub metadata: ObjectMetadata,
    /// Checksum algorithm announced at creation, upper case (e.g. `CRC32`).
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// Decided at creation: every part is sealed with this upload's data key.
    #[serde(default)]
    pub sealing: Option<Sealing>,
    /// For a backend that stores metadata sealed (upstream): `metadata`
    /// sealed with the upload's data key. Not kept by the embedded store.
    #[serde(default, skip)]
    pub sealed_metadata: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartRecord {
    pub part_number: u32,
    pub part: ObjectPart,
    pub last_modified_unix_ms: i64,
    #[serde(default)]
    pub checksums: Checksums,
}
