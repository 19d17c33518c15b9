//! Bucket records in the state bucket: `buckets/<name>`, the JSON of a
//! [`BucketRecord`], changed only by conditional writes so that two
//! gateways never overwrite each other's change.

use aws_sdk_s3::primitives::ByteStream;

use super::UpstreamStorage;
use super::client::{Failure, unquote};
use crate::storage::{BucketChange, BucketRecord, StorageError};

/// Attempts of a read-modify-write before giving up on a busy record.
const CAS_ATTEMPTS: usize = 16;

fn record_key(name: &str) -> String {
    format!("buckets/{name}")
}

/// How a conditional write is guarded.
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
        let got = self.client.get_object().bucket(&self.state_bucket).key(key).send().await;
        let output = match got {
            Ok(output) => output,
            Err(e) => {
                let failure = Failure::from_sdk(e);
                return if failure.not_found() { Ok(None) } else { Err(failure.into()) };
            }
        };
        let etag = unquote(output.e_tag());
        let body = output.body.collect().await.map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(Some((body.into_bytes(), etag)))
    }

    /// Writes a record; false when the guard did not hold.
    async fn write_record(&self, record: &BucketRecord, guard: Option<Guard<'_>>) -> Result<bool, StorageError> {
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

    /// Refuses an upstream that ignores conditional PutObject: the bucket
    /// records rely on `If-None-Match: *` (one CreateBucket wins) and
    /// `If-Match` (no lost update), and an upstream that answers 200 to both
    /// (Garage 2.x does) would silently let two gateways overwrite each
    /// other's records — and with them bucket keys. Four requests at start.
    pub(super) async fn check_conditional_writes(&self) -> Result<(), StorageError> {
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
                Ok(()) => return Err(StorageError::UnsafeUpstream(what)),
                Err(e) => {
                    let failure = Failure::from_sdk(e);
                    if !(failure.precondition_failed() || failure.status == Some(409)) {
                        return Err(failure.into());
                    }
                }
            }
        }
        Ok(())
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
        self.metrics.upstream_request("DeleteObject");
        self.client
            .delete_object()
            .bucket(&self.state_bucket)
            .key(record_key(name))
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        Ok(())
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
            self.metrics.upstream_request("ListObjectsV2");
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.state_bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key()?.strip_prefix(prefix)).map(str::to_owned));
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }
}
