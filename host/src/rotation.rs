//! Key rotation: `sealgate kms rewrap --bucket B [--deep]` moves a bucket to
//! a new master key of the same KMS.
//!
//! The default run touches no object: a bucket's data keys are wrapped by
//! its bucket keys (see `kms::bucket_keys`), so it re-wraps those (a handful
//! of small records, two KMS calls each) under the new master key, and the
//! old master key can go. Objects written under any earlier bucket key stay
//! readable.
//!
//! `--deep` also re-wraps every object's (and pending upload's) data key
//! under a bucket key started after the rotation began, then drops the
//! earlier bucket keys: for when the old bucket keys themselves must be
//! gone, and to move data keys wrapped directly by the KMS (before the key
//! hierarchy existed) into it. Object data is never rewritten.
//!
//! Data keys wrapped directly by the old master key still need it: a default
//! run that finds such objects keeps the old key and says so.
//!
//! The run is resumable: its first step makes the new key the bucket's key
//! and records the old one in `rotating_from`, so new objects use the new key
//! at once, and a second run after an interruption continues with the same
//! new key.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::kms::bucket_keys::{BucketKeyKms, RewrapError, bucket_key_of};
use crate::kms::{KeyContext, Kms, KmsError};
use crate::storage::{BucketChange, ListEntry, ListQuery, Sealing, Storage, StorageError};

const PAGE: usize = 1000;
/// Passes over the bucket before giving up (each pass only finds what
/// changed during the one before; no new write can use a retired key).
const MAX_PASSES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("a rotation of this bucket is already running")]
    InProgress,
    #[error("the bucket has no master key (it never was encrypted)")]
    NoMasterKey,
    #[error("{0} data keys still use an old key after {MAX_PASSES} passes; run the rewrap again")]
    Unfinished(u64),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<RewrapError> for RotationError {
    fn from(e: RewrapError) -> Self {
        match e {
            RewrapError::Kms(e) => e.into(),
            RewrapError::Storage(StorageError::NoSuchBucket) => RotationError::NoSuchBucket,
            RewrapError::Storage(e) => e.into(),
        }
    }
}

/// What a run did; printed by the CLI as JSON.
#[derive(Debug, Default, Serialize)]
pub struct RewrapReport {
    pub bucket: String,
    pub old_key_id: String,
    pub new_key_id: String,
    /// The run continued one that had been interrupted.
    pub resumed: bool,
    pub deep: bool,
    /// Bucket keys now wrapped by the new master key instead of the old.
    pub bucket_keys_rewrapped: u64,
    /// Deep runs: data keys moved to the new bucket key.
    pub objects_rewrapped: u64,
    pub uploads_rewrapped: u64,
    /// Deep runs: earlier bucket keys removed once nothing used them.
    pub bucket_keys_dropped: u64,
    /// Objects replaced or deleted while being re-wrapped (nothing to do).
    pub objects_changed_meanwhile: u64,
    /// Data keys still wrapped directly by the old master key (written
    /// before the key hierarchy); while there are any, the old key stays.
    pub direct_data_keys_left: u64,
    pub old_key_destroyed: bool,
}

pub struct Rotation {
    storage: Arc<dyn Storage>,
    keys: Arc<BucketKeyKms>,
    /// Buckets being rotated now: one rotation per bucket at a time.
    running: Mutex<HashSet<String>>,
}

/// Marks a bucket's rotation as running until dropped.
struct Running<'r> {
    rotation: &'r Rotation,
    bucket: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.rotation.running().remove(&self.bucket);
    }
}

/// Which data keys a deep run moves: wrapped directly by a KMS, or by a
/// bucket key that existed when the rotation began.
struct DeepTarget {
    old_bucket_keys: HashSet<String>,
}

impl DeepTarget {
    fn moves(&self, sealing: &Sealing) -> bool {
        match bucket_key_of(&sealing.wrapped_key) {
            None => true,
            Some(id) => self.old_bucket_keys.contains(&id),
        }
    }
}

impl Rotation {
    pub fn new(storage: Arc<dyn Storage>, keys: Arc<BucketKeyKms>) -> Self {
        Self { storage, keys, running: Mutex::default() }
    }

    fn kms(&self) -> &dyn Kms {
        self.keys.as_ref()
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn claim(&self, bucket: &str) -> Result<Running<'_>, RotationError> {
        if !self.running().insert(bucket.to_owned()) {
            return Err(RotationError::InProgress);
        }
        Ok(Running { rotation: self, bucket: bucket.to_owned() })
    }

    /// Rotates `bucket`'s master key; destroys the old one at the end unless
    /// `keep_old_key` or data keys still need it.
    pub async fn rewrap_bucket(
        &self,
        bucket: &str,
        keep_old_key: bool,
        deep: bool,
    ) -> Result<RewrapReport, RotationError> {
        if deep && !self.storage.rewraps_in_place() {
            return Err(StorageError::Unsupported(
                "deep key rotation (it would rewrite every object upstream; the default rotation rewrites none)",
            )
            .into());
        }
        let _only_one = self.claim(bucket)?;
        let mut report = self.begin(bucket).await?;
        report.deep = deep;
        report.bucket_keys_rewrapped =
            self.keys.rewrap_bucket_keys(bucket, &report.old_key_id, &report.new_key_id).await?;
        if deep {
            // Every bucket key from before this rotation is retired now (by
            // this run or an earlier one); those started since are not, and
            // stay, also when this run resumes an interrupted one.
            let old_bucket_keys = self.bucket_key_ids(bucket, |retired| retired).await?;
            self.move_data_keys(&mut report, DeepTarget { old_bucket_keys }).await?;
        } else {
            report.direct_data_keys_left = self.count_direct_data_keys(&report).await?;
        }
        // Data keys wrapped directly by the old key keep the rotation open:
        // the next run (with --deep) resumes it and can retire the old key.
        if report.direct_data_keys_left == 0 {
            self.finish(bucket).await?;
        }
        if !keep_old_key && report.direct_data_keys_left == 0 {
            self.keys.master().destroy_key(&report.old_key_id).await?;
            report.old_key_destroyed = true;
        }
        tracing::info!(
            bucket,
            old_key = %report.old_key_id,
            new_key = %report.new_key_id,
            deep,
            bucket_keys = report.bucket_keys_rewrapped,
            objects = report.objects_rewrapped,
            uploads = report.uploads_rewrapped,
            direct_data_keys_left = report.direct_data_keys_left,
            old_key_destroyed = report.old_key_destroyed,
            "key rotation finished"
        );
        Ok(report)
    }

    /// Ids of the bucket's bucket keys whose `retired` flag passes `select`.
    async fn bucket_key_ids(&self, bucket: &str, select: fn(bool) -> bool) -> Result<HashSet<String>, RotationError> {
        let record = self.storage.get_bucket(bucket).await?.ok_or(RotationError::NoSuchBucket)?;
        Ok(record.encryption.bucket_keys.into_iter().filter(|k| select(k.retired)).map(|k| k.id).collect())
    }

    /// Starts a rotation (new key becomes the bucket's key) or picks up the
    /// one in progress.
    async fn begin(&self, bucket: &str) -> Result<RewrapReport, RotationError> {
        let record = self.storage.get_bucket(bucket).await?.ok_or(RotationError::NoSuchBucket)?;
        let current = record.encryption.key_id.clone().ok_or(RotationError::NoMasterKey)?;
        let report = |old: String, new: String, resumed| RewrapReport {
            bucket: bucket.to_owned(),
            old_key_id: old,
            new_key_id: new,
            resumed,
            ..RewrapReport::default()
        };
        if let Some(old) = record.encryption.rotating_from.clone() {
            return Ok(report(old, current, true));
        }
        let new = self.kms().create_key(bucket).await?;
        let (expected, new_key) = (current.clone(), new.clone());
        // Compare-and-swap: a concurrent rotation or encryption change wins,
        // and this run stops with nothing changed.
        let change: BucketChange = Box::new(move |record| {
            let unchanged =
                record.encryption.key_id.as_deref() == Some(&expected) && record.encryption.rotating_from.is_none();
            if unchanged {
                record.encryption.rotating_from = Some(expected.clone());
                record.encryption.key_id = Some(new_key.clone());
            }
            unchanged
        });
        let stored = self.storage.modify_bucket(bucket, change).await;
        let started = matches!(&stored, Ok(r) if r.encryption.key_id.as_deref() == Some(new.as_str()));
        if !started {
            // The new key protects nothing yet.
            let _ = self.keys.master().destroy_key(&new).await;
            return match stored {
                Err(StorageError::NoSuchBucket) => Err(RotationError::NoSuchBucket),
                Err(e) => Err(e.into()),
                Ok(_) => Err(RotationError::Kms(KmsError::Unavailable(
                    "the bucket's key changed while the rotation started; run it again".into(),
                ))),
            };
        }
        self.keys.forget_bucket(bucket);
        tracing::info!(bucket, old_key = %current, new_key = %new, "key rotation started");
        Ok(report(current, new, false))
    }

    async fn finish(&self, bucket: &str) -> Result<(), RotationError> {
        let change: BucketChange = Box::new(|record| {
            record.encryption.rotating_from = None;
            true
        });
        self.storage.modify_bucket(bucket, change).await?;
        Ok(())
    }

    /// Deep runs: passes over objects and uploads until one finds nothing
    /// to move (an upload moved in a pass may have completed before it was
    /// moved, so only a pass with no move at all proves nothing is left),
    /// then drops the old bucket keys.
    async fn move_data_keys(&self, report: &mut RewrapReport, target: DeepTarget) -> Result<(), RotationError> {
        let mut remaining = u64::MAX;
        for _ in 0..MAX_PASSES {
            let moved_before = report.objects_rewrapped + report.uploads_rewrapped;
            let left = self.rewrap_objects(report, &target).await? + self.rewrap_uploads(report, &target).await?;
            remaining = left + (report.objects_rewrapped + report.uploads_rewrapped - moved_before);
            if remaining == 0 {
                break;
            }
        }
        if remaining != 0 {
            return Err(RotationError::Unfinished(remaining));
        }
        let keep: Vec<String> =
            self.bucket_key_ids(&report.bucket, |_| true).await?.difference(&target.old_bucket_keys).cloned().collect();
        report.bucket_keys_dropped = self.keys.drop_bucket_keys_except(&report.bucket, &keep).await?;
        Ok(())
    }

    async fn rewrapped(
        &self,
        report: &RewrapReport,
        sealing: &Sealing,
        context: &KeyContext,
    ) -> Result<Sealing, KmsError> {
        let wrapped_key =
            self.kms().rewrap_data_key(&sealing.key_id, &sealing.wrapped_key, &report.new_key_id, context).await?;
        Ok(Sealing { key_id: report.new_key_id.clone(), wrapped_key, format: sealing.format })
    }

    /// One page of the bucket's sealed objects after `start_after`, and
    /// where the next page starts (None at the end).
    async fn sealed_page(
        &self,
        bucket: &str,
        start_after: Option<String>,
    ) -> Result<(Vec<(String, Sealing)>, Option<String>), RotationError> {
        let query = ListQuery { prefix: String::new(), delimiter: None, start_after, max_keys: PAGE };
        let record = self.storage.get_bucket(bucket).await?.ok_or(RotationError::NoSuchBucket)?;
        let page = self.storage.list_objects(&record, &query).await?;
        let next = match page.entries.last() {
            Some(last) if page.is_truncated => Some(last.resume_marker().to_owned()),
            _ => None,
        };
        let sealed = page
            .entries
            .into_iter()
            .filter_map(|entry| match entry {
                ListEntry::Object(key, object) => object.sealing.map(|s| (key, s)),
                ListEntry::CommonPrefix(_) => None,
            })
            .collect();
        Ok((sealed, next))
    }

    /// One pass over the objects; returns how many still need moving
    /// (changed while being re-wrapped: the next pass takes them).
    async fn rewrap_objects(&self, report: &mut RewrapReport, target: &DeepTarget) -> Result<u64, RotationError> {
        let (mut left, mut after) = (0, None);
        let bucket = report.bucket.clone();
        loop {
            let (page, next) = self.sealed_page(&bucket, after).await?;
            for (key, sealing) in page.iter().filter(|(_, s)| target.moves(s)) {
                let context = KeyContext { bucket: bucket.clone(), key: key.clone() };
                let new = self.rewrapped(report, sealing, &context).await?;
                if self.storage.replace_object_sealing(&bucket, key, sealing, new).await? {
                    report.objects_rewrapped += 1;
                } else {
                    report.objects_changed_meanwhile += 1;
                    left += 1;
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => return Ok(left),
            }
        }
    }

    async fn rewrap_uploads(&self, report: &mut RewrapReport, target: &DeepTarget) -> Result<u64, RotationError> {
        let mut left = 0;
        for upload in self.storage.list_uploads(&report.bucket).await? {
            let Some(sealing) = upload.sealing.as_ref().filter(|s| target.moves(s)) else { continue };
            let context = KeyContext { bucket: report.bucket.clone(), key: upload.key.clone() };
            let new = self.rewrapped(report, sealing, &context).await?;
            if self.storage.replace_upload_sealing(&upload.upload_id, sealing, new).await? {
                report.uploads_rewrapped += 1;
            } else {
                left += 1;
            }
        }
        Ok(left)
    }

    /// Default runs: data keys (objects and uploads) wrapped directly by the
    /// old master key. Reads metadata only.
    async fn count_direct_data_keys(&self, report: &RewrapReport) -> Result<u64, RotationError> {
        let direct = |s: &Sealing| bucket_key_of(&s.wrapped_key).is_none() && s.key_id == report.old_key_id;
        let (mut count, mut after) = (0, None);
        loop {
            let (page, next) = self.sealed_page(&report.bucket, after).await?;
            count += page.iter().filter(|(_, s)| direct(s)).count() as u64;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let uploads = self.storage.list_uploads(&report.bucket).await?;
        Ok(count + uploads.iter().filter(|u| u.sealing.as_ref().is_some_and(direct)).count() as u64)
    }
}
