//! Bucket records in the state bucket: `buckets/<name>`, the JSON of a
//! [`BucketRecord`], changed only by compare-and-swap so that two gateways
//! never overwrite each other's change: a conditional PutObject where the
//! upstream honours its conditions, else a check and a write under the
//! record's lock (`record_lock.rs`).

use aws_sdk_s3::primitives::ByteStream;
use http_body_util::BodyExt;

use super::UpstreamStorage;
use super::client::{Failure, unquote};
use super::data_plane::{Fetch, header};
use super::record_lock::RecordLock;
use crate::storage::{BucketChange, BucketRecord, StorageError};

/// Attempts of a read-modify-write before giving up on a busy record.
const CAS_ATTEMPTS: usize = 16;

fn record_key(name: &str) -> String {
    format!("buckets/{name}")
}

/// How the record changes are made atomic, as the start-up probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordWrites {
    /// `If-None-Match: *` and `If-Match` on PutObject.
    Conditional,
    /// The upstream stores conditional writes whose condition fails.
    Locked,
}

/// How a conditional write is guarded.
#[derive(Clone, Copy)]
enum Guard<'a> {
    /// Only if no record exists.
    Absent,
    /// Only if the record still has this ETag.
    Unchanged(&'a str),
}

impl UpstreamStorage {
    /// The record and its upstream ETag.
    pub(super) async fn read_record(&self, name: &str) -> Result<Option<(BucketRecord, String)>, StorageError> {
        let Some((body, etag)) = self.read_state_object(&record_key(name)).await? else {
            return Ok(None);
        };
        let record =
            serde_json::from_slice(&body).map_err(|e| StorageError::Metadata(format!("bucket record {name}: {e}")))?;
        Ok(Some((record, etag)))
    }

    /// An object of the state bucket and its ETag, or None.
    pub(super) async fn read_state_object(&self, key: &str) -> Result<Option<(bytes::Bytes, String)>, StorageError> {
        self.metrics.upstream_request("GetObject");
        let answer = match self.data.get(&self.state_bucket, key, Fetch::default()).await {
            Ok(answer) => answer,
            Err(failure) => return if failure.not_found() { Ok(None) } else { Err(failure.into()) },
        };
        let etag = unquote(header(answer.headers(), hyper::header::ETAG));
        let body = answer.into_body().collect().await.map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(Some((body.to_bytes(), etag)))
    }

    /// Writes a record; false when the guard did not hold.
    async fn write_record(&self, record: &BucketRecord, guard: Option<Guard<'_>>) -> Result<bool, StorageError> {
        if self.record_writes == RecordWrites::Conditional {
            return self.put_record_object(record, guard).await;
        }
        let lock = self.lock_state_object(&record_key(&record.name)).await?;
        let written = self.write_record_locked(&lock, record, guard).await;
        lock.release().await;
        written
    }

    /// The conditional write, as a check and a write under `lock`.
    async fn write_record_locked(
        &self,
        lock: &RecordLock,
        record: &BucketRecord,
        guard: Option<Guard<'_>>,
    ) -> Result<bool, StorageError> {
        if let Some(guard) = guard
            && !self.guard_holds(&record.name, guard).await?
        {
            return Ok(false);
        }
        lock.check_fresh()?;
        self.put_record_object(record, None).await
    }

    /// Under the record's lock: whether the guard holds now.
    async fn guard_holds(&self, name: &str, guard: Guard<'_>) -> Result<bool, StorageError> {
        self.metrics.upstream_request("HeadObject");
        let head = self.client.head_object().bucket(&self.state_bucket).key(record_key(name)).send().await;
        let etag = match head {
            Ok(output) => Some(unquote(output.e_tag())),
            Err(e) => {
                let failure = Failure::from_sdk(e);
                if !failure.not_found() {
                    return Err(failure.into());
                }
                None
            }
        };
        Ok(match guard {
            Guard::Absent => etag.is_none(),
            Guard::Unchanged(expected) => etag.as_deref() == Some(expected),
        })
    }

    /// One PutObject of a record, with the guard as its condition.
    async fn put_record_object(&self, record: &BucketRecord, guard: Option<Guard<'_>>) -> Result<bool, StorageError> {
        self.metrics.upstream_request("PutObject");
        let body = serde_json::to_vec(record).expect("records serialize");
        let mut put = self
            .client
            .put_object()
            .bucket(&self.state_bucket)
            .key(record_key(&record.name))
            .content_type("application/json")
            .body(ByteStream::from(body));
        put = match guard {
            None => put,
            Some(Guard::Absent) => put.if_none_match("*"),
            Some(Guard::Unchanged(etag)) => put.if_match(format!("\"{etag}\"")),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let failure = Failure::from_sdk(e);
                // 409: a concurrent conditional write won (S3 answers ConditionalRequestConflict).
                if failure.precondition_failed() || failure.status == Some(409) {
                    Ok(false)
                } else {
                    Err(failure.into())
                }
            }
        }
    }

    /// Whether the upstream refuses a PutObject whose condition fails, as
    /// S3 does; Garage 2.x stores it. Four requests at start.
    pub(super) async fn probe_record_writes(&self) -> Result<RecordWrites, StorageError> {
        let key = format!("probes/conditional-writes-{}", uuid::Uuid::new_v4().simple());
        let put = |guard: Option<&str>, if_match: bool| {
            let mut put =
                self.client.put_object().bucket(&self.state_bucket).key(&key).body(ByteStream::from_static(b"probe"));
            if let Some(value) = guard {
                put = if if_match { put.if_match(value) } else { put.if_none_match(value) };
            }
            self.metrics.upstream_request("PutObject");
            put.send()
        };
        put(Some("*"), false).await.map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        let again = put(Some("*"), false).await;
        let stale = put(Some("\"00000000000000000000000000000000\""), true).await;
        self.metrics.upstream_request("DeleteObject");
        let _ = self.client.delete_object().bucket(&self.state_bucket).key(&key).send().await;
        for (what, answer) in [("If-None-Match: *", again.map(drop)), ("If-Match", stale.map(drop))] {
            match answer {
                Ok(()) => {
                    tracing::warn!(
                        condition = what,
                        "the upstream stores a PutObject whose condition fails; bucket records change under \
                         a lock in the state bucket instead (docs/scale-out.md)"
                    );
                    return Ok(RecordWrites::Locked);
                }
                Err(e) => {
                    let failure = Failure::from_sdk(e);
                    if !(failure.precondition_failed() || failure.status == Some(409)) {
                        return Err(failure.into());
                    }
                }
            }
        }
        Ok(RecordWrites::Conditional)
    }

    /// Creates the record unless one exists; returns the existing one then.
    pub(super) async fn create_record(&self, record: &BucketRecord) -> Result<Option<BucketRecord>, StorageError> {
        if self.write_record(record, Some(Guard::Absent)).await? {
            return Ok(None);
        }
        match self.read_record(&record.name).await? {
            Some((existing, _)) => Ok(Some(existing)),
            // Deleted again meanwhile: whoever asks next may create it.
            None => Err(StorageError::Unavailable("bucket record changed concurrently; retry".into())),
        }
    }

    pub(super) async fn put_record(&self, record: &BucketRecord) -> Result<(), StorageError> {
        self.write_record(record, None).await.map(drop)
    }

    pub(super) async fn modify_record(
        &self,
        name: &str,
        mut change: BucketChange,
    ) -> Result<BucketRecord, StorageError> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut current, etag) = self.read_record(name).await?.ok_or(StorageError::NoSuchBucket)?;
            if !change(&mut current) {
                return Ok(current);
            }
            if self.write_record(&current, Some(Guard::Unchanged(&etag))).await? {
                return Ok(current);
            }
            // Lost a race with another gateway: apply the change again to the newer record.
        }
        Err(StorageError::Unavailable(format!("bucket record {name} is changing too often; retry")))
    }

    pub(super) async fn delete_record(&self, name: &str) -> Result<(), StorageError> {
        if self.record_writes == RecordWrites::Conditional {
            return self.delete_record_object(name).await;
        }
        let lock = self.lock_state_object(&record_key(name)).await?;
        let deleted = match lock.check_fresh() {
            Ok(()) => self.delete_record_object(name).await,
            Err(e) => Err(e),
        };
        lock.release().await;
        deleted
    }

    async fn delete_record_object(&self, name: &str) -> Result<(), StorageError> {
        self.metrics.upstream_request("DeleteObject");
        let delete = self.client.delete_object().bucket(&self.state_bucket).key(record_key(name)).send();
        delete.await.map(drop).map_err(|e| StorageError::from(Failure::from_sdk(e)))
    }

    /// Every bucket record: one listing page per 1000 buckets plus one read each.
    pub(super) async fn all_records(&self) -> Result<Vec<BucketRecord>, StorageError> {
        let names = self.state_keys("buckets/").await?;
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            if let Some((record, _)) = self.read_record(&name).await? {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// The keys under `prefix` in the state bucket, without the prefix.
    pub(super) async fn state_keys(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self.state_page(prefix, token).await?;
            keys.extend(page.contents().iter().filter_map(|o| o.key()?.strip_prefix(prefix)).map(str::to_owned));
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// One page of the state bucket's listing under `prefix`.
    pub(super) async fn state_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output, StorageError> {
        self.metrics.upstream_request("ListObjectsV2");
        let list = self.client.list_objects_v2().bucket(&self.state_bucket).prefix(prefix);
        list.set_continuation_token(token).send().await.map_err(|e| StorageError::from(Failure::from_sdk(e)))
    }
}
