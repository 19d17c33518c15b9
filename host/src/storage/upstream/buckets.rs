//! Bucket records for reads, without a state read per GET or HEAD, and
//! without opening an ownership race.
//!
//! A read (GET and HEAD of an object, a listing) takes the bucket record
//! from this gateway's cache if it was read at most [`READ_CACHE_TTL`] ago.
//! So does a write of an object or part when it starts, but an object is
//! stored only once the record, read afresh just before its last bytes go
//! upstream, still allows it ([`UpstreamStorage::check_commit`]): the same
//! bucket (a write that began before a DeleteBucket never lands in a bucket
//! created again under the name), encryption not turned on since a plain
//! write began, its bucket key not retired. Otherwise the write is
//! discarded and answered 503, which clients retry. One state read per
//! PUT, as before, and it now guards the whole time the body took. Bucket
//! settings always read the record afresh. The stored forms, which decide
//! how a listing reports sizes, only ever grow, and a
//! kind is announced a cache lifetime before a bucket holding the other
//! kind gets it (`UpstreamStorage::note_form`), so no listing uses a record
//! that misses a kind of the objects it lists.
//!
//! What a stale record could get wrong for a read is its owner: a bucket
//! deleted through one gateway and created again by another user, while a
//! second gateway still holds the old record, would let the old owner read
//! the new owner's objects. So a deletion first leaves a tombstone,
//! `deleted/<name>` in the state bucket (the old owner and the time), and
//! another user's CreateBucket of that name is refused with 409
//! `OperationAborted` (what AWS answers while a deleted bucket's name is not
//! yet free) until [`RECREATE_HOLD`] has passed: by then every gateway's
//! cached record is gone. The hold exceeds the cache lifetime by a margin
//! for the gateways' clocks, which must agree within 8 s (NTP). The owner
//! may create the name again at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::UpstreamStorage;
use super::client::Failure;
use super::objects::now_ms;
use crate::storage::{BucketRecord, Sealing, StorageError};

/// How long a read may use a bucket record this gateway read before.
pub const READ_CACHE_TTL: Duration = Duration::from_secs(2);
/// How long after a deletion another user may not create the name.
pub const RECREATE_HOLD: Duration = Duration::from_secs(10);
/// Records kept at most (a gateway in front of more buckets forgets all
/// and starts again: a cache miss costs one read).
const CACHE_CAPACITY: usize = 10_000;

/// This gateway's recently read bucket records.
#[derive(Default)]
pub struct ReadCache(Mutex<HashMap<String, (Instant, BucketRecord)>>);

impl ReadCache {
    fn fresh(&self, name: &str) -> Option<BucketRecord> {
        let cache = self.0.lock().expect("bucket cache lock");
        cache.get(name).filter(|(read, _)| read.elapsed() < READ_CACHE_TTL).map(|(_, record)| record.clone())
    }

    /// Keeps `record`, as read or written by a request sent at `asked`, or
    /// forgets the name. It ages from when the request was sent: what it
    /// returned is at least as new as that moment (`UpstreamStorage::note_form`
    /// relies on it).
    pub fn remember(&self, name: &str, record: Option<&BucketRecord>, asked: Instant) {
        let mut cache = self.0.lock().expect("bucket cache lock");
        match record {
            Some(record) => {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(name.to_owned(), (asked, record.clone()));
            }
            None => {
                cache.remove(name);
            }
        }
    }
}

/// Who deleted a bucket name, and when (the deleting gateway's clock).
#[derive(Serialize, Deserialize)]
struct Tombstone {
    owner: String,
    deleted_unix_ms: i64,
}

fn tombstone_key(name: &str) -> String {
    format!("deleted/{name}")
}

impl UpstreamStorage {
    /// The record from the cache if fresh enough, else read afresh.
    pub(super) async fn bucket_for_read(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        match self.read_cache.fresh(name) {
            Some(record) => Ok(Some(record)),
            None => self.fresh_bucket(name).await,
        }
    }

    /// The record as the state bucket has it now (and cached for reads).
    pub(super) async fn fresh_bucket(&self, name: &str) -> Result<Option<BucketRecord>, StorageError> {
        let asked = Instant::now();
        let record = self.read_record(name).await?.map(|(record, _)| record);
        self.read_cache.remember(name, record.as_ref(), asked);
        Ok(record)
    }

    /// Refuses to commit a write that began with record `began` unless the
    /// record as it is now still allows it; see the module documentation.
    /// A refused write is discarded before its last bytes go upstream.
    pub(super) async fn check_commit(
        &self,
        began: &BucketRecord,
        sealing: Option<&Sealing>,
    ) -> Result<(), StorageError> {
        let now = self.fresh_bucket(&began.name).await?.ok_or(StorageError::NoSuchBucket)?;
        // Another generation: deleted and created again, before this write
        // or (when it started from a cached record) since it was cached;
        // only a retry can tell, and it lands in the new bucket, decided anew.
        if now.generation != began.generation {
            return Err(StorageError::BucketChanged { what: "it was deleted and created again" });
        }
        match sealing {
            Some(sealing) if !now.accepts_new(sealing) => Err(StorageError::KeyRetired),
            None if now.encryption.encrypted && !began.encryption.encrypted => {
                Err(StorageError::BucketChanged { what: "its default encryption was turned on" })
            }
            _ => Ok(()),
        }
    }

    /// Written before a bucket is deleted; see the module documentation.
    pub(super) async fn leave_tombstone(&self, record: &BucketRecord) -> Result<(), StorageError> {
        let tombstone = Tombstone { owner: record.owner.clone(), deleted_unix_ms: now_ms() };
        self.metrics.upstream_request("PutObject");
        self.client
            .put_object()
            .bucket(&self.state_bucket)
            .key(tombstone_key(&record.name))
            .content_type("application/json")
            .body(ByteStream::from(serde_json::to_vec(&tombstone).expect("tombstones serialize")))
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        Ok(())
    }

    /// Whether someone other than `owner` deleted the name less than
    /// [`RECREATE_HOLD`] ago.
    pub(super) async fn held_for_another(&self, name: &str, owner: &str) -> Result<bool, StorageError> {
        let Some((body, _)) = self.read_state_object(&tombstone_key(name)).await? else {
            return Ok(false);
        };
        let Ok(tombstone) = serde_json::from_slice::<Tombstone>(&body) else {
            return Ok(false);
        };
        let age_ms = now_ms() - tombstone.deleted_unix_ms;
        Ok(tombstone.owner != owner && age_ms < RECREATE_HOLD.as_millis() as i64)
    }
}
