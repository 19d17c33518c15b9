//! Key rotation: `sealgate kms rewrap --bucket B` re-wraps every data key of
//! a bucket under a new master key of the same KMS. Object data is never
//! rewritten, only the wrapped keys in the metadata.
//!
//! The run is resumable: its first step makes the new key the bucket's key
//! and records the old one in `rotating_from`, so new objects use the new key
//! at once, objects not yet re-wrapped still name the old key in their own
//! sealing record (both keys are live, every object stays readable), and a
//! second run after an interruption continues with the same new key.

use std::sync::Arc;

use serde::Serialize;

use crate::kms::{KeyContext, Kms, KmsError};
use crate::storage::{ListEntry, ListQuery, Sealing, Storage, StorageError};

const PAGE: usize = 1000;
/// Passes over the bucket before giving up on objects still on the old key
/// (each pass only finds what was written with the old key meanwhile).
const MAX_PASSES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("the bucket has no master key (it never was encrypted)")]
    NoMasterKey,
    #[error("{0} data keys still use the old master key after {MAX_PASSES} passes; run the rewrap again")]
    Unfinished(u64),
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// What a run did; printed by the CLI as JSON.
#[derive(Debug, Default, Serialize)]
pub struct RewrapReport {
    pub bucket: String,
    pub old_key_id: String,
    pub new_key_id: String,
    /// The run continued one that had been interrupted.
    pub resumed: bool,
    pub objects_rewrapped: u64,
    pub uploads_rewrapped: u64,
    /// Objects replaced or deleted while being re-wrapped (nothing to do).
    pub objects_changed_meanwhile: u64,
    pub old_key_destroyed: bool,
}

pub struct Rotation {
    pub storage: Arc<dyn Storage>,
    pub kms: Arc<dyn Kms>,
}

impl Rotation {
    /// Re-wraps every data key of `bucket`; destroys the old master key at
    /// the end unless `keep_old_key`.
    pub async fn rewrap_bucket(&self, bucket: &str, keep_old_key: bool) -> Result<RewrapReport, RotationError> {
        let mut report = self.begin(bucket).await?;
        let mut remaining = u64::MAX;
        for _ in 0..MAX_PASSES {
            remaining = self.rewrap_objects(&mut report).await? + self.rewrap_uploads(&mut report).await?;
            if remaining == 0 {
                break;
            }
        }
        if remaining != 0 {
            return Err(RotationError::Unfinished(remaining));
        }
        self.finish(bucket).await?;
        if !keep_old_key {
            self.kms.destroy_key(&report.old_key_id).await?;
            report.old_key_destroyed = true;
        }
        tracing::info!(
            bucket,
            old_key = %report.old_key_id,
            new_key = %report.new_key_id,
            objects = report.objects_rewrapped,
            uploads = report.uploads_rewrapped,
            old_key_destroyed = report.old_key_destroyed,
            "key rotation finished"
        );
        Ok(report)
    }

    /// Starts a rotation (new key becomes the bucket's key) or picks up the
    /// one in progress.
    async fn begin(&self, bucket: &str) -> Result<RewrapReport, RotationError> {
        let mut record = self.storage.get_bucket(bucket).await?.ok_or(RotationError::NoSuchBucket)?;
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
        let new = self.kms.create_key(bucket).await?;
        record.encryption.rotating_from = Some(current.clone());
        record.encryption.key_id = Some(new.clone());
        if let Err(e) = self.storage.update_bucket(record).await {
            // The new key protects nothing yet.
            let _ = self.kms.destroy_key(&new).await;
            return Err(e.into());
        }
        tracing::info!(bucket, old_key = %current, new_key = %new, "key rotation started");
        Ok(report(current, new, false))
    }

    async fn finish(&self, bucket: &str) -> Result<(), RotationError> {
        let mut record = self.storage.get_bucket(bucket).await?.ok_or(RotationError::NoSuchBucket)?;
        record.encryption.rotating_from = None;
        Ok(self.storage.update_bucket(record).await?)
    }

    async fn rewrapped(
        &self,
        report: &RewrapReport,
        sealing: &Sealing,
        context: &KeyContext,
    ) -> Result<Sealing, KmsError> {
        let wrapped_key =
            self.kms.rewrap_data_key(&report.old_key_id, &sealing.wrapped_key, &report.new_key_id, context).await?;
        Ok(Sealing { key_id: report.new_key_id.clone(), wrapped_key, format: sealing.format })
    }

    /// One pass over the objects; returns how many still use the old key
    /// (changed while being re-wrapped: the next pass takes them).
    async fn rewrap_objects(&self, report: &mut RewrapReport) -> Result<u64, RotationError> {
        let mut query = ListQuery { prefix: String::new(), delimiter: None, start_after: None, max_keys: PAGE };
        let mut left = 0;
        loop {
            let page = self.storage.list_objects(&report.bucket, &query).await?;
            for entry in &page.entries {
                let ListEntry::Object(key, object) = entry else { continue };
                let Some(sealing) = object.sealing.as_ref().filter(|s| s.key_id == report.old_key_id) else {
                    continue;
                };
                let context = KeyContext { bucket: report.bucket.clone(), key: key.clone() };
                let new = self.rewrapped(report, sealing, &context).await?;
                if self.storage.replace_object_sealing(&report.bucket, key, sealing, new).await? {
                    report.objects_rewrapped += 1;
                } else {
                    report.objects_changed_meanwhile += 1;
                    left += 1;
                }
            }
            match page.entries.last() {
                Some(last) if page.is_truncated => query.start_after = Some(last.resume_marker().to_owned()),
                _ => break,
            }
        }
        Ok(left)
    }

    async fn rewrap_uploads(&self, report: &mut RewrapReport) -> Result<u64, RotationError> {
        let mut left = 0;
        for upload in self.storage.list_uploads(&report.bucket).await? {
            let Some(sealing) = upload.sealing.as_ref().filter(|s| s.key_id == report.old_key_id) else { continue };
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
}
