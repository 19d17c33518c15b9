//! Multipart uploads upstream. The upstream keeps the parts; the client's
//! upload id keeps the gateway's decisions (`upload_id.rs`); the state
//! bucket keeps `uploads/<bucket>/<client id>`, an index written at
//! creation and removed at completion or abort, only so that
//! ListMultipartUploads can give clients the ids they need (one state
//! listing per page, nothing per upload).

use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::UpstreamStorage;
use super::client::{Failure, millis, unquote};
use super::objects::{UpstreamHeaders, client_etag, upstream_part_etag};
use super::upload_id::upstream_part;
use crate::crypto::format_v2;
use crate::storage::*;

/// Longest path segment some upstreams accept (SeaweedFS keeps keys as a
/// file tree with 255-byte names); sealed upload ids are longer.
const INDEX_SEGMENT: usize = 200;

/// `uploads/<bucket>/<client id>`, the id cut into segments with `/` (ids
/// never contain one).
fn index_key(bucket: &str, client_id: &str) -> String {
    let mut key = format!("uploads/{bucket}/");
    let bytes = client_id.as_bytes();
    for (i, segment) in bytes.chunks(INDEX_SEGMENT).enumerate() {
        if i > 0 {
            key.push('/');
        }
        key.push_str(std::str::from_utf8(segment).unwrap_or_default());
    }
    key
}

/// Parts by number, then time. SeaweedFS lists every upload of a re-sent
/// part (to the second); the caller picks among them (see `s3::multipart`).
fn by_number_then_time(mut parts: Vec<PartRecord>) -> Vec<PartRecord> {
    // Stable: of equal numbers and times, the one listed later stays last.
    parts.sort_by_key(|p| (p.part_number, p.last_modified_unix_ms));
    parts
}

impl UpstreamStorage {
    pub(super) async fn start_upload(&self, mut upload: UploadRecord) -> Result<String, StorageError> {
        let metadata = match &upload.sealed_metadata {
            Some(blob) => StoredMetadata::Sealed { blob: blob.clone(), clear: upload.metadata.clone() },
            None => StoredMetadata::Plain(upload.metadata.clone()),
        };
        super::objects::check_reserved(&metadata)?;
        // A completed upload has data, unless all its parts are empty.
        self.key_limits.check_write(&upload.key, true)?;
        let bucket = self.get_bucket(&upload.bucket).await?.ok_or(StorageError::NoSuchBucket)?;
        self.note_form(&bucket, upload.sealing.is_some()).await?;
        self.metrics.upstream_request("CreateMultipartUpload");
        let create =
            self.client.create_multipart_upload().bucket(self.upstream_bucket(&upload.bucket)).key(&upload.key);
        let created = UpstreamHeaders::of(&metadata)
            .apply_create(create)
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        let upstream_id = created.upload_id().unwrap_or_default().to_owned();
        let client_id = self.upload_ids.compose(&upload, &upstream_id);
        upload.upload_id = client_id.clone();
        self.metrics.upstream_request("PutObject");
        let indexed = self
            .client
            .put_object()
            .bucket(&self.state_bucket)
            .key(index_key(&upload.bucket, &client_id))
            .body(SdkStream::from_static(b""))
            .send()
            .await;
        if let Err(e) = indexed {
            let _ = self.abort_upstream(&upload.bucket, &upload.key, &upstream_id).await;
            return Err(Failure::from_sdk(e).into());
        }
        Ok(client_id)
    }

    fn upstream_id<'a>(&self, upload: &'a UploadRecord) -> &'a str {
        upstream_part(&upload.upload_id).unwrap_or_default()
    }

    /// Every part, with plaintext sizes (one ListParts per 1000 parts).
    pub(super) async fn parts_of(&self, upload: &UploadRecord) -> Result<Vec<PartRecord>, StorageError> {
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            self.metrics.upstream_request("ListParts");
            let page = self
                .client
                .list_parts()
                .bucket(self.upstream_bucket(&upload.bucket))
                .key(&upload.key)
                .upload_id(self.upstream_id(upload))
                .set_part_number_marker(marker)
                .send()
                .await
                .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
            for part in page.parts() {
                let stored = part.size().unwrap_or_default().max(0) as u64;
                let size =
                    if upload.sealing.is_some() { format_v2::plain_len(stored).unwrap_or(stored) } else { stored };
                let number = part.part_number().unwrap_or_default().max(0) as u32;
                parts.push(PartRecord {
                    part_number: number,
                    part: ObjectPart {
                        // Complete names parts by number and ETag.
                        segment: DataSegment { data_id: number.to_string(), stored_size: stored },
                        size,
                        etag: client_etag(&unquote(part.e_tag()), upload.sealing.is_some()),
                        seal: None,
                    },
                    last_modified_unix_ms: millis(part.last_modified()),
                    checksums: Checksums::default(),
                });
            }
            marker = page.next_part_number_marker().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || marker.is_none() {
                break;
            }
        }
        Ok(by_number_then_time(parts))
    }

    pub(super) async fn finish_upload(
        &self,
        upload: &UploadRecord,
        object: ObjectRecord,
    ) -> Result<String, StorageError> {
        // Chunks of a part start at index 0, so the object keeps one
        // stride only if every part but the last is whole chunks.
        let (last, rest) = object.parts.split_last().ok_or_else(|| StorageError::Metadata("no parts".into()))?;
        if upload.sealing.is_some() && rest.iter().any(|p| p.size % format_v2::CHUNK_LEN != 0) {
            return Err(StorageError::UnalignedPart);
        }
        let completed: Vec<CompletedPart> = rest
            .iter()
            .chain(std::iter::once(last))
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.segment.data_id.parse().unwrap_or_default())
                    .e_tag(format!("\"{}\"", upstream_part_etag(&p.etag, upload.sealing.is_some())))
                    .build()
            })
            .collect();
        self.metrics.upstream_request("CompleteMultipartUpload");
        let done = self
            .client
            .complete_multipart_upload()
            .bucket(self.upstream_bucket(&upload.bucket))
            .key(&upload.key)
            .upload_id(self.upstream_id(upload))
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await
            .map_err(|e| {
                let failure = Failure::from_sdk(e);
                if failure.is("InvalidPart") { StorageError::PartChanged } else { failure.into() }
            })?;
        self.forget_upload(upload).await;
        Ok(client_etag(&unquote(done.e_tag()), upload.sealing.is_some()))
    }

    pub(super) async fn drop_upload(&self, upload: &UploadRecord) -> Result<(), StorageError> {
        self.abort_upstream(&upload.bucket, &upload.key, self.upstream_id(upload)).await?;
        self.forget_upload(upload).await;
        Ok(())
    }

    async fn abort_upstream(&self, bucket: &str, key: &str, upstream_id: &str) -> Result<(), StorageError> {
        self.metrics.upstream_request("AbortMultipartUpload");
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(self.upstream_bucket(bucket))
            .key(key)
            .upload_id(upstream_id)
            .send()
            .await;
        match aborted {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::from_sdk(e);
                if failure.is("NoSuchUpload") { Ok(()) } else { Err(failure.into()) }
            }
        }
    }

    /// Drops the index entry; a failure only leaves an entry that matches
    /// no upstream upload, which listings skip.
    async fn forget_upload(&self, upload: &UploadRecord) {
        self.metrics.upstream_request("DeleteObject");
        let key = index_key(&upload.bucket, &upload.upload_id);
        if let Err(e) = self.client.delete_object().bucket(&self.state_bucket).key(key).send().await {
            tracing::warn!(error = %Failure::from_sdk(e).message, "dropping an upload index entry failed");
        }
    }

    /// The bucket's pending uploads: the upstream's, joined with the index
    /// that holds their client ids.
    pub(super) async fn uploads_of(&self, bucket: &str) -> Result<Vec<UploadRecord>, StorageError> {
        Ok(self.scan_uploads(bucket).await?.indexed)
    }

    /// Expiry in one bucket: the indexed uploads initiated before
    /// `cutoff_ms`, and the upstream uploads no client was ever told of (a
    /// gateway killed between the upstream's CreateMultipartUpload and the
    /// index write; or ids no longer valid) once they are older than both
    /// the cutoff and [`ORPHAN_MIN_AGE_MS`], so that an upload being created
    /// right now is never taken for one. Returns how many went.
    pub(super) async fn expire_uploads_of(&self, bucket: &str, cutoff_ms: i64) -> Result<u64, StorageError> {
        let scan = self.scan_uploads(bucket).await?;
        let mut expired = 0;
        for upload in scan.indexed.iter().filter(|u| u.initiated_unix_ms < cutoff_ms) {
            self.drop_upload(upload).await?;
            expired += 1;
        }
        let orphan_cutoff = cutoff_ms.min(super::objects::now_ms() - ORPHAN_MIN_AGE_MS);
        for orphan in scan.orphans.iter().filter(|o| o.initiated_unix_ms < orphan_cutoff) {
            tracing::info!(bucket, upload = %orphan.upstream_id, "aborting an upstream upload no client knows of");
            self.abort_upstream(bucket, &orphan.key, &orphan.upstream_id).await?;
            expired += 1;
        }
        Ok(expired)
    }

    /// The bucket's upstream uploads (one ListMultipartUploads per 1000),
    /// joined with the index (one state listing).
    async fn scan_uploads(&self, bucket: &str) -> Result<UploadScan, StorageError> {
        let prefix = index_key(bucket, "");
        let client_ids: std::collections::HashMap<String, String> = self
            .state_keys(&prefix)
            .await?
            .into_iter()
            .map(|segments| segments.replace('/', ""))
            .filter_map(|id| Some((upstream_part(&id)?.to_owned(), id)))
            .collect();
        let mut scan = UploadScan::default();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            self.metrics.upstream_request("ListMultipartUploads");
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(self.upstream_bucket(bucket))
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
            for listed in page.uploads() {
                let (Some(key), Some(upstream)) = (listed.key(), listed.upload_id()) else { continue };
                let initiated_unix_ms = millis(listed.initiated());
                match client_ids.get(upstream).and_then(|id| self.upload_ids.parse(bucket, key, id)) {
                    Some((mut upload, _)) => {
                        upload.initiated_unix_ms = initiated_unix_ms;
                        scan.indexed.push(upload);
                    }
                    None => scan.orphans.push(Orphan {
                        key: key.to_owned(),
                        upstream_id: upstream.to_owned(),
                        initiated_unix_ms,
                    }),
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || key_marker.is_none() {
                break;
            }
        }
        Ok(scan)
    }
}

/// How old an upstream upload without an index entry must be before the
/// expiry takes it for an orphan: far longer than the one state write
/// between the upstream's CreateMultipartUpload and the index.
const ORPHAN_MIN_AGE_MS: i64 = 10_000;

/// A bucket's upstream uploads: those clients know of, and the rest.
#[derive(Default)]
struct UploadScan {
    indexed: Vec<UploadRecord>,
    orphans: Vec<Orphan>,
}

struct Orphan {
    key: String,
    upstream_id: String,
    initiated_unix_ms: i64,
}
