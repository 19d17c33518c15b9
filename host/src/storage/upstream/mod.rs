//! The `s3` backend: objects live in an S3 cluster the user runs, shared by
//! any number of identical gateways (see `docs/scale-out.md`).
//!
//! - Client bucket `B` is upstream bucket `PREFIX + B`, keys one to one.
//! - What the gateways share lives upstream too, in the state bucket:
//!   bucket records (`state.rs`) and an index of pending uploads.
//! - A multipart upload's own state travels in its id (`upload_id.rs`).
//! - Objects of encrypted buckets are stored in sealed format 2
//!   (`crypto::format_v2`), metadata sealed (`crypto::sealed_metadata`);
//!   objects of plain buckets exactly as the client sent them.
//!
//! Object reads and writes go through a lean client on hyper
//! (`data_plane.rs`), everything else through aws-sdk-s3; payload signing
//! is off for streamed bodies (the gateway checks the client's digests
//! itself).

mod buckets;
mod client;
mod data_plane;
mod key_limits;
mod objects;
mod record_lock;
mod state;
mod upload_id;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::storage::*;

pub use client::Failure;

/// Listed keys a DeleteBucket looks for before it calls a bucket empty.
const EMPTINESS_CHECKS: i32 = 16;

/// How to reach the upstream; see `--upstream-*` in `config.rs`.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: Secret,
    pub bucket_prefix: String,
    pub state_bucket: String,
    /// Bucket records change under a lock even where conditional writes work.
    pub record_lock: bool,
}

pub struct UpstreamStorage {
    client: aws_sdk_s3::Client,
    /// PutObject, UploadPart, GetObject and HeadObject.
    data: Arc<data_plane::DataPlane>,
    prefix: String,
    state_bucket: String,
    upload_ids: upload_id::UploadIds,
    metrics: Arc<Metrics>,
    /// Uploads sent but for their last bytes, waiting for a commit.
    pending: Arc<Mutex<HashMap<String, objects::PendingWrite>>>,
    /// Bucket records recently read, for reads of objects (see buckets.rs).
    read_cache: buckets::ReadCache,
    /// How bucket records change atomically on this upstream (state.rs).
    record_writes: state::RecordWrites,
    /// Keys this upstream would not store as given (key_limits.rs).
    key_limits: key_limits::KeyLimits,
}

impl UpstreamStorage {
    /// Connects, creates the state bucket if the upstream has none, and
    /// finds out which keys the upstream stores exactly and whether it
    /// honours conditional writes.
    pub async fn open(settings: &UpstreamSettings, metrics: Arc<Metrics>) -> Result<Self, StorageError> {
        let mut storage = Self {
            client: client::build(settings),
            data: Arc::new(data_plane::DataPlane::new(settings)),
            prefix: settings.bucket_prefix.clone(),
            state_bucket: settings.state_bucket.clone(),
            upload_ids: upload_id::UploadIds::new(
                settings.secret_key.expose(),
                crate::crypto::format_v2::FORMAT_VERSION,
            ),
            metrics,
            pending: Arc::default(),
            read_cache: buckets::ReadCache::default(),
            record_writes: state::RecordWrites::Conditional,
            key_limits: key_limits::KeyLimits::default(),
        };
        storage.ensure_bucket(&storage.state_bucket).await?;
        storage.key_limits = storage.probe_key_limits().await?;
        storage.record_writes = match storage.probe_record_writes().await? {
            state::RecordWrites::Conditional if settings.record_lock => {
                tracing::info!("bucket records change under a lock in the state bucket (--upstream-record-lock)");
                state::RecordWrites::Locked
            }
            found => found,
        };
        Ok(storage)
    }

    fn upstream_bucket(&self, bucket: &str) -> String {
        format!("{}{}", self.prefix, bucket)
    }

    /// Creates an upstream bucket unless it exists already.
    async fn ensure_bucket(&self, name: &str) -> Result<(), StorageError> {
        self.metrics.upstream_request("CreateBucket");
        match self.client.create_bucket().bucket(name).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::from_sdk(e);
                if failure.is("BucketAlreadyOwnedByYou") || failure.is("BucketAlreadyExists") {
                    Ok(())
                } else {
                    Err(failure.into())
                }
            }
        }
    }

    /// Whether the upstream bucket holds any object. Garage lists a deleted
    /// object for a moment after its DeleteObject returned, so a listed
    /// key counts only once a HEAD finds it (a few requests, on DeleteBucket
    /// only); a truncated page of vanished keys counts as not empty.
    async fn holds_objects(&self, bucket: &str) -> Result<bool, StorageError> {
        self.metrics.upstream_request("ListObjectsV2");
        let page = self
            .client
            .list_objects_v2()
            .bucket(self.upstream_bucket(bucket))
            .max_keys(EMPTINESS_CHECKS)
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        for key in page.contents().iter().filter_map(|o| o.key()) {
            self.metrics.upstream_request("HeadObject");
            match self.data.head(&self.upstream_bucket(bucket), key).await {
                Ok(_) => return Ok(true),
                Err(failure) if failure.not_found() => {}
                Err(failure) => return Err(failure.into()),
            }
        }
        Ok(page.is_truncated().unwrap_or(false))
    }

    /// Marks the bucket as holding objects of this kind before the first
    /// one is written (see [`BucketRecord::stored_forms`]).
    ///
    /// Listings take the record from a gateway's read cache, so a gateway
    /// may list with a record read before the change. For a bucket that
    /// held nothing a listing notices (entries, no kind: it reads afresh).
    /// For one that held the other kind it cannot, so the kind is announced
    /// a cache lifetime before it is used: the change marks the forms
    /// `unsettled`, and every writer that sees that waits
    /// [`buckets::READ_CACHE_TTL`] after its read, then clears it. By then
    /// every record cached before the change has expired, whichever
    /// gateway holds it; no clocks are compared. It costs the first writes
    /// of a bucket's second kind about 2 s, once.
    async fn note_form(&self, bucket: &BucketRecord, sealed: bool) -> Result<(), StorageError> {
        let forms = bucket.stored_forms;
        let noted = if sealed { forms.sealed } else { forms.plain };
        if noted && !forms.unsettled {
            return Ok(());
        }
        if !noted {
            let change: BucketChange = Box::new(move |record| {
                let forms = &mut record.stored_forms;
                let held_other = if sealed { forms.plain } else { forms.sealed };
                let slot = if sealed { &mut forms.sealed } else { &mut forms.plain };
                let added = !std::mem::replace(slot, true);
                forms.unsettled |= added && held_other;
                added
            });
            let record = self.modify_bucket(&bucket.name, change).await?;
            if !record.stored_forms.unsettled {
                return Ok(());
            }
        }
        tokio::time::sleep(buckets::READ_CACHE_TTL).await;
        let settle: BucketChange = Box::new(|record| std::mem::take(&mut record.stored_forms.unsettled));
        self.modify_bucket(&bucket.name, settle).await.map(drop)
    }
}

#[async_trait::async_trait]
impl Storage for UpstreamStorage {
    fn sealed_format(&self) -> u8 {
        crate::crypto::format_v2::FORMAT_VERSION
    }

    fn backend(&self) -> &'static str {
        "s3"
    }

    fn needs_content_length(&self) -> bool {
        true
    }

    /// Sealings live in each object's upstream metadata, and listings are
    /// answered without reading it: see `replace_object_sealing`.
    fn rewraps_in_place(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.metrics.upstream_request("HeadBucket");
        self.client
            .head_bucket()
            .bucket(&self.state_bucket)
            .send()
            .await
            .map(drop)
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))
    }

    async fn create_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError> {
        let upstream = self.upstream_bucket(&bucket.name);
        if upstream == self.state_bucket {
            return Err(StorageError::BucketExists { owner: "sealgate".into() });
        }
        // The record decides who wins a race between gateways; the upstream
        // bucket follows it.
        if let Some(existing) = self.create_record(&bucket).await? {
            return Err(StorageError::BucketExists { owner: existing.owner });
        }
        // Checked once the record is ours: a deletion leaves its tombstone
        // before its record goes, so it is always seen here.
        match self.held_for_another(&bucket.name, &bucket.owner).await {
            Ok(false) => {}
            held => {
                let _ = self.delete_record(&bucket.name).await;
                return Err(held.err().unwrap_or(StorageError::RecentlyDeleted));
            }
        }
        if let Err(e) = self.ensure_bucket(&upstream).await {
            let _ = self.delete_record(&bucket.name).await;
            return Err(e);
        }
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        self.fresh_bucket(name).await
    }

    async fn get_bucket_for_read(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        self.bucket_for_read(name).await
    }

    /// Checked again at the commit: `check_commit`.
    async fn get_bucket_for_write(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        self.bucket_for_read(name).await
    }

    async fn update_bucket(&self, bucket: BucketRecord) -> Result<(), StorageError> {
        let asked = Instant::now();
        self.put_record(&bucket).await?;
        self.read_cache.remember(&bucket.name, Some(&bucket), asked);
        Ok(())
    }

    async fn modify_bucket(&self, name: &str, change: BucketChange) -> Result<BucketRecord, StorageError> {
        let asked = Instant::now();
        let record = self.modify_record(name, change).await?;
        self.read_cache.remember(name, Some(&record), asked);
        Ok(record)
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>, StorageError> {
        self.all_records().await
    }

    async fn delete_bucket(&self, name: &str) -> Result<(), StorageError> {
        let record = self.fresh_bucket(name).await?.ok_or(StorageError::NoSuchBucket)?;
        if self.holds_objects(name).await? {
            return Err(StorageError::BucketNotEmpty);
        }
        for upload in self.uploads_of(name).await? {
            self.abort_upload(&upload).await?;
        }
        self.metrics.upstream_request("DeleteBucket");
        if let Err(e) = self.client.delete_bucket().bucket(self.upstream_bucket(name)).send().await {
            let failure = Failure::from_sdk(e);
            if !failure.is("NoSuchBucket") {
                return Err(failure.into());
            }
        }
        self.leave_tombstone(&record).await?;
        self.read_cache.remember(name, None, Instant::now());
        self.delete_record(name).await
    }

    async fn write_data(&self, target: &WriteTarget, body: ByteStream) -> Result<StagedData, StorageError> {
        self.start_write(target, body).await
    }

    fn read_data(&self, segment: &DataSegment, range: std::ops::Range<u64>) -> Result<StoredReader, StorageError> {
        self.open_reader(segment, range)
    }

    async fn commit_object(
        &self,
        bucket: &BucketRecord,
        _key: &str,
        object: ObjectRecord,
        mut data: Vec<StagedData>,
    ) -> Result<String, StorageError> {
        let staged = data.pop().ok_or_else(|| StorageError::Metadata("commit without data".into()))?;
        self.check_commit(bucket, object.sealing.as_ref()).await?;
        let etag = self.finish_write(staged).await?;
        Ok(objects::client_etag(&etag, object.sealing.is_some()))
    }

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StorageError> {
        self.head_object(bucket, key).await
    }

    async fn get_object_to_read(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectRecord, Option<StoredReader>)>, StorageError> {
        Ok(self.get_whole_object(bucket, key).await?.map(|(object, body)| (object, Some(body))))
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, StorageError> {
        if !self.key_limits.can_exist(key) {
            // The upstream would delete the key it turns this one into.
            return Ok(true);
        }
        self.metrics.upstream_request("DeleteObject");
        self.client
            .delete_object()
            .bucket(self.upstream_bucket(bucket))
            .key(key)
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        // S3 does not say whether there was one; nothing relies on it here.
        Ok(true)
    }

    async fn list_objects(&self, bucket: &BucketRecord, query: &ListQuery) -> Result<ListPage, StorageError> {
        self.list_page(bucket, query).await
    }

    async fn replace_object_sealing(
        &self,
        _bucket: &str,
        _key: &str,
        _expected: &Sealing,
        _new: Sealing,
    ) -> Result<bool, StorageError> {
        Err(StorageError::Unsupported("deep key rotation (it would rewrite every object upstream)"))
    }

    async fn create_upload(&self, upload: UploadRecord) -> Result<String, StorageError> {
        self.start_upload(upload).await
    }

    async fn get_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Option<UploadRecord>, StorageError> {
        Ok(self.upload_ids.parse(bucket, key, upload_id).map(|(upload, _)| upload))
    }

    async fn commit_part(
        &self,
        upload: &UploadRecord,
        _part: PartRecord,
        data: StagedData,
    ) -> Result<String, StorageError> {
        let etag = self.finish_write(data).await?;
        Ok(objects::client_etag(&etag, upload.sealing.is_some()))
    }

    async fn list_parts(&self, upload: &UploadRecord) -> Result<Vec<PartRecord>, StorageError> {
        self.parts_of(upload).await
    }

    async fn complete_upload(&self, upload: &UploadRecord, object: ObjectRecord) -> Result<String, StorageError> {
        self.finish_upload(upload, object).await
    }

    async fn abort_upload(&self, upload: &UploadRecord) -> Result<(), StorageError> {
        self.drop_upload(upload).await
    }

    async fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadRecord>, StorageError> {
        self.uploads_of(bucket).await
    }

    async fn expire_uploads(&self, max_age: std::time::Duration) -> Result<u64, StorageError> {
        let mut expired = 0;
        let cutoff = crate::storage::upstream::objects::now_ms() - max_age.as_millis() as i64;
        for bucket in self.all_records().await? {
            expired += self.expire_uploads_of(&bucket.name, cutoff).await?;
        }
        Ok(expired)
    }

    async fn replace_upload_sealing(
        &self,
        _upload_id: &str,
        _expected: &Sealing,
        _new: Sealing,
    ) -> Result<bool, StorageError> {
        Err(StorageError::Unsupported("deep key rotation (it would rewrite every object upstream)"))
    }
}
