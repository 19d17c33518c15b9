//! A lock on one state object, for upstreams that store a conditional
//! PutObject instead of refusing it (Garage 2.x): there a bucket record's
//! compare-and-swap runs as check-and-write under this lock.
//!
//! It needs nothing of the upstream but read-after-write consistency of
//! PutObject and ListObjectsV2 (Garage's default `consistency_mode =
//! "consistent"`: quorum writes and reads). A contender writes
//! `locks/<object>/<random id>`, then lists `locks/<object>/`. Seeing only
//! its own entry, it holds the lock; seeing another, it removes its entry,
//! waits a random while and tries again. Of two contenders, the one whose
//! listing began last began it after both entries were written, so it sees
//! the other's and backs off: never do both hold the lock. (Both may back
//! off; the random waits part them.)
//!
//! An entry whose upstream timestamp is [`LEASE`] older than the
//! contender's own belongs to a gateway that died holding the lock, and is
//! removed. A holder gives up before writing if it has held the lock for
//! half of that, so a slow holder is not overtaken by one that took its
//! lease for stale.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use rand::Rng;

use super::UpstreamStorage;
use super::client::{Failure, millis};
use crate::metrics::Metrics;
use crate::storage::StorageError;

/// How long an entry of a live holder may stand before others remove it.
pub(super) const LEASE: Duration = Duration::from_secs(30);
/// Tries to take a busy lock before answering `Unavailable` (retry).
const ATTEMPTS: u32 = 40;

/// A lock held; [`RecordLock::release`] it. Dropped unreleased (an error,
/// a cancelled request), it is released in the background.
pub(super) struct RecordLock {
    client: aws_sdk_s3::Client,
    metrics: Arc<Metrics>,
    bucket: String,
    entry: Option<String>,
    taken: Instant,
}

impl RecordLock {
    /// Whether the lock is still safely held: a holder past half the lease
    /// must not write any more (see the module's comment).
    pub(super) fn check_fresh(&self) -> Result<(), StorageError> {
        if self.taken.elapsed() < LEASE / 2 {
            Ok(())
        } else {
            Err(StorageError::Unavailable("held a state lock too long; retry".into()))
        }
    }

    pub(super) async fn release(mut self) {
        if let Some(entry) = self.entry.take() {
            self.metrics.upstream_request("DeleteObject");
            let _ = self.client.delete_object().bucket(&self.bucket).key(entry).send().await;
        }
    }
}

impl Drop for RecordLock {
    fn drop(&mut self) {
        let (Some(entry), Ok(runtime)) = (self.entry.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        self.metrics.upstream_request("DeleteObject");
        let delete = self.client.delete_object().bucket(&self.bucket).key(entry);
        runtime.spawn(async move {
            let _ = delete.send().await;
        });
    }
}

impl UpstreamStorage {
    /// Takes the lock of the state object `key`.
    pub(super) async fn lock_state_object(&self, key: &str) -> Result<RecordLock, StorageError> {
        let prefix = format!("locks/{key}/");
        for attempt in 0..ATTEMPTS {
            let entry = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
            self.metrics.upstream_request("PutObject");
            self.client
                .put_object()
                .bucket(&self.state_bucket)
                .key(&entry)
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
            let lock = RecordLock {
                client: self.client.clone(),
                metrics: self.metrics.clone(),
                bucket: self.state_bucket.clone(),
                entry: Some(entry.clone()),
                taken: Instant::now(),
            };
            if self.alone_in(&prefix, &entry).await? {
                return Ok(lock);
            }
            lock.release().await;
            let backoff = 10 * u64::from(attempt.min(10) + 1);
            let wait = rand::rng().random_range(1..=backoff);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        Err(StorageError::Unavailable(format!("state object {key} is busy; retry")))
    }

    /// Whether `entry` is the only live entry under `prefix`; removes the
    /// stale ones it finds.
    async fn alone_in(&self, prefix: &str, entry: &str) -> Result<bool, StorageError> {
        let page = self.state_page(prefix, None).await?;
        let stamp = |o: &aws_sdk_s3::types::Object| millis(o.last_modified());
        let Some(mine) = page.contents().iter().find(|o| o.key() == Some(entry)).map(stamp) else {
            // Our own write not listed: the upstream is not read-after-write.
            return Err(StorageError::Unavailable("the upstream did not list a state lock just written".into()));
        };
        let mut alone = true;
        for other in page.contents().iter().filter(|o| o.key() != Some(entry)) {
            if mine - stamp(other) > LEASE.as_millis() as i64 {
                self.metrics.upstream_request("DeleteObject");
                let stale = other.key().unwrap_or_default();
                tracing::warn!(entry = stale, "removing a stale state lock");
                let _ = self.client.delete_object().bucket(&self.state_bucket).key(stale).send().await;
            } else {
                alone = false;
            }
        }
        Ok(alone)
    }
}
