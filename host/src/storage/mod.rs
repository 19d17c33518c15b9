//! The object store behind the S3 front.
//!
//! The [`Storage`] trait speaks of buckets, objects, multipart uploads and
//! opaque data segments, never of files: [`local`] keeps them on this
//! machine's disk, [`upstream`] in an S3 cluster shared by many gateways.
//! Writing is two-step: [`Storage::write_data`] makes the bytes durable but
//! invisible, then a commit (`commit_object`, `commit_part`,
//! `complete_upload`) makes them visible atomically. Dropping an
//! uncommitted [`StagedData`] discards its bytes. (Upstream, "durable but
//! invisible" is an upload request held back before its last bytes.)

mod data_file;
pub mod local;
mod records;
pub mod upstream;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use records::*;

/// A blocking reader of stored bytes (read on a blocking thread).
pub trait StoredRead: std::io::Read + Send {
    /// Up to `max` of the next bytes, empty at the end. A reader of a file
    /// reads them into a fresh buffer; an upstream's response body hands
    /// out the buffers its bytes arrived in, without a copy.
    fn next_piece(&mut self, max: usize) -> std::io::Result<Bytes> {
        let mut buf = Vec::with_capacity(max);
        std::io::Read::read_to_end(&mut std::io::Read::take(&mut *self, max as u64), &mut buf)?;
        Ok(Bytes::from(buf))
    }
}

impl StoredRead for std::io::Take<std::fs::File> {}
impl StoredRead for std::io::Empty {}

pub type StoredReader = Box<dyn StoredRead>;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync>>;

/// Storage failures, each meaning one thing to the S3 front.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("bucket does not exist")]
    NoSuchBucket,
    #[error("bucket already exists, owned by {owner}")]
    BucketExists { owner: String },
    #[error("bucket is not empty")]
    BucketNotEmpty,
    #[error("multipart upload does not exist")]
    NoSuchUpload,
    /// The data key of this write names a bucket key the bucket no longer
    /// has (a deep key rotation dropped it meanwhile); retrying works.
    #[error("the write's key was retired while it ran; retry")]
    KeyRetired,
    /// The bucket changed, while the write ran or since the record it
    /// started from was read, in a way that could change where or how it is
    /// stored (`what`); nothing was stored, and a retry decides afresh.
    #[error("the bucket changed while the write ran ({what}); retry")]
    BucketChanged { what: &'static str },
    /// CompleteMultipartUpload named a part that was replaced meanwhile.
    #[error("a part of the upload changed while it was being completed")]
    PartChanged,
    #[error("request body failed: {0}")]
    Body(std::io::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store: {0}")]
    Metadata(String),
    /// The upstream S3 did not answer, or answered with a server error.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// What this backend cannot do (said to the client as NotImplemented).
    #[error("not supported by this storage backend: {0}")]
    Unsupported(&'static str),
    /// A sealed multipart upload upstream needs every part but the last to
    /// be a whole number of 64 KiB chunks (see docs/scale-out.md).
    #[error("a part other than the last is not a multiple of 64 KiB")]
    UnalignedPart,
    /// The upstream refused the request as invalid (a key it cannot
    /// store, say); its S3 error code and status go to the client.
    #[error("upstream refused the request: {code} ({status})")]
    Refused { status: u16, code: String, message: String },
    /// The bucket name was deleted by its owner moments ago; another user
    /// may create it only once every gateway has forgotten the old one.
    #[error("the bucket was deleted moments ago; retry shortly")]
    RecentlyDeleted,
    /// The backend must know a body's length before it starts storing it.
    #[error("the request body has no announced length")]
    LengthRequired,
}

/// Where a write's bytes go and what they are. A backend that stores each
/// object in one request at its final place (upstream S3) needs it before
/// the first byte; the embedded store files bytes first and ignores it.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub bucket: BucketRecord,
    pub key: String,
    /// For a part: the upload and the part number.
    pub part: Option<(UploadRecord, u32)>,
    /// Bytes that will be stored (after sealing), when known.
    pub stored_len: Option<u64>,
    pub metadata: StoredMetadata,
}

/// An object's metadata as a backend stores it.
#[derive(Debug, Clone)]
pub enum StoredMetadata {
    /// As the client sent it (plain objects).
    Plain(ObjectMetadata),
    /// Sealed with the object's data key (see `crypto::sealed_metadata`);
    /// the clear fields are only for a backend that keeps them privately.
    Sealed { blob: String, clear: ObjectMetadata },
}

/// Bytes made durable by [`Storage::write_data`] but not yet part of any
/// object or part. Dropping it without committing discards the bytes.
pub struct StagedData {
    pub segment: DataSegment,
    discard: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl StagedData {
    pub fn new(segment: DataSegment, discard: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { segment, discard: Some(Box::new(discard)) }
    }

    /// Called by a backend once the segment is referenced by committed metadata.
    pub fn keep(mut self) -> DataSegment {
        self.discard = None;
        self.segment.clone()
    }
}

impl Drop for StagedData {
    fn drop(&mut self) {
        if let Some(discard) = self.discard.take() {
            discard();
        }
    }
}

/// An edit of a bucket record for [`Storage::modify_bucket`]; true to store
/// it. A backend may run it again on a newer record after losing a race.
pub type BucketChange = Box<dyn FnMut(&mut BucketRecord) -> bool + Send>;

/// What a listing asks for. `start_after` is exclusive; with a delimiter,
/// keys that roll up into a common prefix not after `start_after` are skipped,
/// so a page that ended on a common prefix resumes after all of its keys.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub start_after: Option<String>,
    pub max_keys: usize,
}

// Entries live briefly in one page's Vec; boxing each record would cost an
// allocation per listed key for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ListEntry {
    Object(String, ObjectRecord),
    CommonPrefix(String),
}

impl ListEntry {
    /// The key or prefix a following page resumes after.
    pub fn resume_marker(&self) -> &str {
        match self {
            ListEntry::Object(key, _) | ListEntry::CommonPrefix(key) => key,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    pub is_truncated: bool,
}

/// The most recent upload of each part number, from a [`Storage::list_parts`] answer.
pub fn latest_parts(parts: Vec<PartRecord>) -> Vec<PartRecord> {
    let mut latest: Vec<PartRecord> = Vec::with_capacity(parts.len());
    for part in parts {
        match latest.last_mut() {
            Some(previous) if previous.part_number == part.part_number => *previous = part,
            _ => latest.push(part),
        }
    }
    latest
}

#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The sealed format this backend stores: `crypto::format` (1) or
    /// `crypto::format_v2` (2).
    fn sealed_format(&self) -> u8 {
        crate::crypto::format::FORMAT_VERSION
    }
    /// Whether a write must know its length before it starts (an upstream
    /// PutObject announces it); `local` streams bodies of any length.
    fn needs_content_length(&self) -> bool {
        false
    }
    /// `local` or `s3` (for `/health`).
    fn backend(&self) -> &'static str {
        "local"
    }
    /// Whether the store answers at all (for `/health`).
    async fn ping(&self) -> Result<(), StorageError> {
        self.list_buckets().await.map(drop)
    }

    async fn create_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError>;
    async fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StorageError>;
    /// The bucket record for a read (GET and HEAD of an object, listings):
    /// it may be a few seconds old where the backend is shared by many
    /// gateways (see `storage::upstream::buckets`).
    async fn get_bucket_for_read(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        self.get_bucket(name).await
    }
    /// The bucket record a write (PutObject, CopyObject's destination,
    /// UploadPart) starts from. A backend may give the one it gives reads
    /// only if it reads the record again when the write commits and refuses
    /// a write the record no longer allows (`commit_object`).
    async fn get_bucket_for_write(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        self.get_bucket(name).await
    }
    async fn update_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError>;
    /// Read-modify-write of one bucket record, atomic against every other
    /// change of it (a compare-and-swap): `change` edits the current record
    /// and says whether to store it. Returns the record as it is afterwards.
    /// Fails with `NoSuchBucket` when there is none.
    async fn modify_bucket(&self, name: &str, change: BucketChange) -> Result<BucketRecord, StorageError>;
    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StorageError>;
    /// Fails with `BucketNotEmpty` while the bucket holds objects; pending
    /// multipart uploads of the bucket are discarded with it.
    async fn delete_bucket(&self, name: &str) -> Result<(), StorageError>;

    /// Stores a body durably but invisibly; see [`StagedData`].
    async fn write_data(&self, target: &WriteTarget, body: ByteStream) -> Result<StagedData, StorageError>;
    /// Reads `range` (relative to the segment) of a committed segment. A
    /// blocking reader: callers read into their own buffers on a blocking
    /// thread (sealed reads decrypt them in place, no copy). Call it from
    /// `spawn_blocking`.
    fn read_data(&self, segment: &DataSegment, range: std::ops::Range<u64>) -> Result<StoredReader, StorageError>;

    /// Makes an object visible, replacing any previous one with that key;
    /// returns its ETag as stored (unquoted). Fails with `NoSuchBucket`
    /// unless `bucket` still exists as the same bucket (same generation)
    /// as when the write began, and with `KeyRetired` when a rotation
    /// retired the write's bucket key meanwhile.
    async fn commit_object(
        &self,
        bucket: &BucketRecord,
        key: &str,
        object: ObjectRecord,
        data: Vec<StagedData>,
    ) -> Result<String, StorageError>;
    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StorageError>;
    /// For a GET of a whole object: its record and, from a backend that
    /// gets both in one answer (one upstream request instead of two), a
    /// reader of all its stored bytes. Others give no reader: the read
    /// goes through `read_data` as any other.
    async fn get_object_to_read(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectRecord, Option<StoredReader>)>, StorageError> {
        Ok(self.get_object(bucket, key).await?.map(|object| (object, None)))
    }
    /// Returns whether there was an object to delete.
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StorageError>;
    async fn list_objects(&self, bucket: &BucketRecord, query: &ListQuery) -> Result<ListPage, StorageError>;

    /// Whether `replace_object_sealing` and `replace_upload_sealing` work
    /// here, and listings report each object's sealing: a deep key
    /// rotation needs all three, and must not start where they are missing
    /// (it would retire bucket keys that objects still need).
    fn rewraps_in_place(&self) -> bool {
        true
    }

    /// Key rotation: replaces the object's sealing if it still is
    /// `expected`. False when the object was replaced or deleted meanwhile.
    async fn replace_object_sealing(
        &self,
        bucket: &str,
        key: &str,
        expected: &Sealing,
        new: Sealing,
    ) -> Result<bool, StorageError>;

    /// Starts an upload; returns the id the client uses for it (the
    /// backend may choose another than `upload.upload_id`).
    async fn create_upload(&self, upload: UploadRecord) -> Result<String, StorageError>;
    /// The upload of this bucket and key with this id, if there is one.
    async fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<UploadRecord>, StorageError>;
    /// Adds or replaces a part of a pending upload; returns the part's ETag.
    async fn commit_part(
        &self,
        upload: &UploadRecord,
        part: PartRecord,
        data: StagedData,
    ) -> Result<String, StorageError>;
    /// The upload's parts by number. An upstream may list earlier uploads
    /// of a re-sent part too, oldest first (see [`latest_parts`]).
    async fn list_parts(&self, upload: &UploadRecord) -> Result<Vec<PartRecord>, StorageError>;
    /// Atomically makes `object` (built from some of the upload's parts)
    /// visible and forgets the upload; unused parts are discarded. The
    /// object gets the upload's sealing as stored at that moment. Fails
    /// with `PartChanged`, committing nothing, when a part `object` uses is
    /// no longer the upload's (replaced by a re-upload meanwhile). Returns
    /// the object's ETag as stored.
    async fn complete_upload(&self, upload: &UploadRecord, object: ObjectRecord) -> Result<String, StorageError>;
    async fn abort_upload(&self, upload: &UploadRecord) -> Result<(), StorageError>;
    async fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StorageError>;
    /// Discards unfinished uploads started more than `max_age` ago; returns how many.
    async fn expire_uploads(&self, max_age: std::time::Duration) -> Result<u64, StorageError>;
    /// Key rotation: as [`Storage::replace_object_sealing`], for an upload.
    async fn replace_upload_sealing(
        &self,
        upload_id: &str,
        expected: &Sealing,
        new: Sealing,
    ) -> Result<bool, StorageError>;
}
