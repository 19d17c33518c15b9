//! Multipart uploads: create, upload part (and part copy), list parts,
//! complete, abort.

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::body::{BodyClaims, SealPlan, drain, ingest};
use super::conditions::{Conditions, check_write};
use super::error::OrS3;
use super::metadata::MetadataInput;
use super::policy::Ask;
use super::{Gateway, caller, now_ms, owner, quoted, timestamp};
use crate::crypto::format::SegmentId;
use crate::policy::Operation;
use crate::storage::{ObjectPart, ObjectRecord, PartRecord, StorageError, UploadRecord, WriteTarget, latest_parts};

/// Every part but the last must be at least this large (as AWS).
pub const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PART_NUMBER: i32 = 10_000;
const MAX_PARTS_LISTED: i32 = 1000;

fn part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"))
    }
}

/// The S3 multipart ETag: MD5 of the concatenated binary part MD5s, `-N`.
pub fn multipart_etag<'a>(part_etags: impl ExactSizeIterator<Item = &'a str>) -> String {
    use s3s::crypto::{Checksum as _, Md5};
    let count = part_etags.len();
    let mut md5 = Md5::new();
    for etag in part_etags {
        md5.update(&hex::decode(etag).unwrap_or_default());
    }
    format!("{}-{count}", hex::encode(md5.finalize()))
}

/// Parses `x-amz-copy-source-range: bytes=first-last` against the source size.
fn copy_range(header: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(header) = header else {
        return Ok(0..size);
    };
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = header.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(invalid)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| invalid())?, last.parse().map_err(|_| invalid())?);
    if first > last {
        return Err(invalid());
    }
    if last >= size {
        return Err(s3_error!(InvalidRange, "The requested range is not satisfiable"));
    }
    Ok(first..last + 1)
}

fn invalid_part() -> S3Error {
    s3_error!(
        InvalidPart,
        "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
    )
}

/// The stored parts a CompleteMultipartUpload names, checked against the
/// ETags it gives and the minimum part size.
fn chosen_parts(requested: &[CompletedPart], numbers: &[u32], stored: &[PartRecord]) -> S3Result<Vec<ObjectPart>> {
    let mut parts = Vec::with_capacity(requested.len());
    for (wanted, number) in requested.iter().zip(numbers) {
        // The part the client names by its ETag; without one, the latest.
        let mut candidates = stored.iter().rev().filter(|p| p.part_number == *number);
        let found = match wanted.e_tag.as_ref() {
            Some(etag) => candidates.find(|p| etag.value() == p.part.etag),
            None => candidates.next(),
        };
        parts.push(found.ok_or_else(invalid_part)?.part.clone());
    }
    if parts[..parts.len() - 1].iter().any(|p| p.size < MIN_PART_SIZE) {
        return Err(s3_error!(EntityTooSmall, "Your proposed upload is smaller than the minimum allowed object size."));
    }
    Ok(parts)
}

/// Where a part's bytes go.
fn part_target(bucket: crate::storage::BucketRecord, upload: &UploadRecord, number: u32) -> WriteTarget {
    let metadata = match &upload.sealed_metadata {
        Some(blob) => crate::storage::StoredMetadata::Sealed { blob: blob.clone(), clear: upload.metadata.clone() },
        None => crate::storage::StoredMetadata::Plain(upload.metadata.clone()),
    };
    WriteTarget { bucket, key: upload.key.clone(), part: Some((upload.clone(), number)), stored_len: None, metadata }
}

impl Gateway {
    /// The upload, if it exists and belongs to this bucket and key.
    async fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<UploadRecord> {
        match self.storage.get_upload(bucket, key, upload_id).await.or_s3()? {
            Some(u) => Ok(u),
            None => Err(s3_error!(
                NoSuchUpload,
                "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            )),
        }
    }

    pub(super) async fn do_create_multipart_upload(
        &self,
        mut req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let bucket_record = self.owned_bucket(&req, &bucket).await?;
        let initiator = caller(&req)?.to_owned();
        // Whether the parts are sealed is decided now, for the whole upload.
        let mut ask = Ask::new(Operation::CreateMultipartUpload, &bucket, Some(&key), &req.headers);
        ask.bucket_state = Some(&bucket_record.encryption);
        let allowed = self.consult(ask).await?;
        let input = &mut req.input;
        let metadata = MetadataInput {
            content_type: input.content_type.take(),
            content_encoding: input.content_encoding.take(),
            content_disposition: input.content_disposition.take(),
            content_language: input.content_language.take(),
            cache_control: input.cache_control.take(),
            expires: input.expires.take(),
            user: input.metadata.take(),
        }
        .into_record()?;
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let checksum_algorithm = input.checksum_algorithm.as_ref().map(|a| a.as_str().to_ascii_uppercase());
        let sealed_metadata = match self.stored_metadata(allowed.seal_with.as_ref(), &metadata) {
            crate::storage::StoredMetadata::Sealed { blob, .. } => Some(blob),
            crate::storage::StoredMetadata::Plain(_) => None,
        };
        let record = UploadRecord {
            upload_id,
            bucket: bucket.clone(),
            key: key.clone(),
            initiator,
            initiated_unix_ms: now_ms(),
            metadata,
            checksum_algorithm: checksum_algorithm.clone(),
            sealing: allowed.seal_with.as_ref().map(|k| self.sealing_of(k)),
            sealed_metadata,
        };
        let upload_id = self.storage.create_upload(record).await.or_s3()?;
        let output = CreateMultipartUploadOutput {
            bucket: Some(bucket),
            key: Some(key),
            upload_id: Some(upload_id),
            checksum_algorithm: checksum_algorithm.map(ChecksumAlgorithm::from),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }

    pub(super) async fn do_upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let result = self.upload_part(&mut req).await;
        if result.is_err() {
            drain(req.input.body.take()).await;
        }
        result
    }

    async fn upload_part(&self, req: &mut S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let bucket_record = self.owned_bucket_for_write(req, &bucket).await?;
        let number = part_number(req.input.part_number)?;
        let upload_id = req.input.upload_id.clone();
        let upload = self.upload(&bucket, &key, &upload_id).await?;
        let mut ask = Ask::new(Operation::UploadPart, &bucket, Some(&key), &req.headers);
        ask.target = upload.sealing.as_ref();
        let allowed = self.consult(ask).await?;
        let mut claims = BodyClaims::from_headers(&req.headers, req.trailing_headers.take());
        claims.content_length = req.input.content_length.and_then(|n| u64::try_from(n).ok()).or(claims.content_length);
        let seal =
            allowed.seal_with.as_ref().map(|k| SealPlan { data_key: &k.plaintext, segment: SegmentId::random(number) });
        let target = part_target(bucket_record, &upload, number);
        let ingested = ingest(self.storage.as_ref(), target, req.input.body.take(), claims, seal).await?;
        let part = PartRecord {
            part_number: number,
            part: ingested.part(),
            last_modified_unix_ms: now_ms(),
            checksums: ingested.digest.checksums.clone(),
        };
        let etag = self.storage.commit_part(&upload, part, ingested.staged).await.or_s3()?;
        let c = ingested.digest.checksums;
        let output = UploadPartOutput {
            e_tag: Some(quoted(&etag)),
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_crc64nvme: c.crc64nvme,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }

    pub(super) async fn do_upload_part_copy(
        &self,
        mut req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let bucket_record = self.owned_bucket_for_write(&req, &bucket).await?;
        let number = part_number(req.input.part_number)?;
        let upload_id = req.input.upload_id.clone();
        let upload = self.upload(&bucket, &key, &upload_id).await?;
        let conditions = Conditions {
            if_match: req.input.copy_source_if_match.take(),
            if_none_match: req.input.copy_source_if_none_match.take(),
            if_modified_since: req.input.copy_source_if_modified_since.take(),
            if_unmodified_since: req.input.copy_source_if_unmodified_since.take(),
        };
        let source = self.copy_source(&req, &req.input.copy_source, conditions).await?;
        let range = copy_range(req.input.copy_source_range.as_deref(), source.object.size)?;
        let mut ask = Ask::new(Operation::UploadPartCopy, &bucket, Some(&key), &req.headers);
        ask.target = upload.sealing.as_ref();
        ask.source = Some((&source.bucket, &source.key, source.object.sealing.as_ref()));
        let allowed = self.consult(ask).await?;
        let seal =
            allowed.seal_with.as_ref().map(|k| SealPlan { data_key: &k.plaintext, segment: SegmentId::random(number) });
        let target = part_target(bucket_record, &upload, number);
        let ingested = self.copy_data(target, &source.object, range, allowed.open_with.as_ref(), seal).await?;
        let last_modified = now_ms();
        let part = PartRecord {
            part_number: number,
            part: ingested.part(),
            last_modified_unix_ms: last_modified,
            checksums: Default::default(),
        };
        let etag = self.storage.commit_part(&upload, part, ingested.staged).await.or_s3()?;
        let output = UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(quoted(&etag)),
                last_modified: Some(timestamp(last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }

    pub(super) async fn do_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = &req.input;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        self.owned_bucket(&req, &bucket).await?;
        let upload = self.upload(&bucket, &key, &input.upload_id).await?;
        let requested = input.multipart_upload.as_ref().and_then(|m| m.parts.as_ref()).filter(|p| !p.is_empty());
        let Some(requested) = requested else {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        };
        let numbers =
            requested.iter().map(|p| part_number(p.part_number.unwrap_or(0))).collect::<S3Result<Vec<u32>>>()?;
        if numbers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(s3_error!(
                InvalidPartOrder,
                "The list of parts was not in ascending order. Parts must be ordered by part number."
            ));
        }
        let current = self.storage.get_object(&bucket, &key).await.or_s3()?;
        check_write(input.if_match.as_ref(), input.if_none_match.as_ref(), current.as_ref())?;
        let mut ask = Ask::new(Operation::CompleteMultipartUpload, &bucket, Some(&key), &req.headers);
        ask.target = upload.sealing.as_ref();
        let allowed = self.consult(ask).await?;
        // A part re-sent while this runs replaces the one chosen here; the
        // store then refuses the commit (it never points at replaced data),
        // and the parts are chosen again, at most a few times.
        let mut attempts = 0;
        let etag = loop {
            let stored = self.storage.list_parts(&upload).await.or_s3()?;
            let parts = chosen_parts(requested, &numbers, &stored)?;
            let etag = multipart_etag(parts.iter().map(|p| p.etag.as_str()));
            let record = ObjectRecord {
                size: parts.iter().map(|p| p.size).sum(),
                etag: etag.clone(),
                last_modified_unix_ms: now_ms(),
                metadata: upload.metadata.clone(),
                checksums: Default::default(),
                parts,
                multipart: true,
                sealing: upload.sealing.clone(),
                sealed_metadata: None,
            };
            match self.storage.complete_upload(&upload, record).await {
                Err(StorageError::PartChanged) if attempts < 3 => attempts += 1,
                Err(StorageError::PartChanged) => return Err(invalid_part()),
                other => break other.or_s3()?,
            }
        };
        let output = CompleteMultipartUploadOutput {
            bucket: Some(bucket.clone()),
            key: Some(key.clone()),
            e_tag: Some(quoted(&etag)),
            location: Some(format!("/{bucket}/{key}")),
            ..Default::default()
        };
        let mut response = S3Response::new(output);
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }

    pub(super) async fn do_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = &req.input;
        self.owned_bucket(&req, &input.bucket).await?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        self.storage.abort_upload(&upload).await.or_s3()?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn do_list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = &req.input;
        self.owned_bucket(&req, &input.bucket).await?;
        let upload = self.upload(&input.bucket, &input.key, &input.upload_id).await?;
        let max = input.max_parts.unwrap_or(MAX_PARTS_LISTED).clamp(0, MAX_PARTS_LISTED) as usize;
        let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
        let mut stored: Vec<_> = self
            .storage
            .list_parts(&upload)
            .await
            .map(latest_parts)
            .or_s3()?
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = stored.len() > max;
        stored.truncate(max);
        let next_marker = stored.last().map(|p| p.part_number as i32).filter(|_| truncated);
        let parts = stored
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(quoted(&p.part.etag)),
                size: Some(p.part.size as i64),
                last_modified: Some(timestamp(p.last_modified_unix_ms)),
                checksum_crc32: p.checksums.crc32,
                checksum_crc32c: p.checksums.crc32c,
                checksum_crc64nvme: p.checksums.crc64nvme,
                checksum_sha1: p.checksums.sha1,
                checksum_sha256: p.checksums.sha256,
            })
            .collect();
        let output = ListPartsOutput {
            bucket: Some(upload.bucket.clone()),
            key: Some(upload.key.clone()),
            upload_id: Some(upload.upload_id.clone()),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next_marker,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            initiator: Some(Initiator {
                id: Some(upload.initiator.clone()),
                display_name: Some(upload.initiator.clone()),
            }),
            owner: Some(owner(&upload.initiator)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: upload.checksum_algorithm.clone().map(ChecksumAlgorithm::from),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_matches_the_s3_form() {
        // Two parts whose MD5s are those of "a" and "b".
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let mut joined = hex::decode(a).unwrap();
        joined.extend(hex::decode(b).unwrap());
        use s3s::crypto::{Checksum as _, Md5};
        let expected = format!("{}-2", hex::encode(Md5::checksum(&joined)));
        assert_eq!(multipart_etag([a, b].into_iter()), expected);
    }

    #[test]
    fn copy_ranges_are_inclusive_and_bounded() {
        assert_eq!(copy_range(Some("bytes=0-9"), 10).unwrap(), 0..10);
        assert_eq!(copy_range(None, 7).unwrap(), 0..7);
        assert!(copy_range(Some("bytes=5-10"), 10).is_err());
        assert!(copy_range(Some("bytes=5-4"), 10).is_err());
        assert!(copy_range(Some("5-6"), 10).is_err());
    }
}
