//! CopyObject, and the copy-source handling UploadPartCopy shares.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{BodyClaims, Ingested, SealPlan, ingest};
use super::conditions::Conditions;
use super::error::OrS3;
use super::get::content_stream;
use super::metadata::MetadataInput;
use super::policy::{Ask, open_metadata};
use super::{Gateway, now_ms, quoted, timestamp};
use crate::crypto::format::SegmentId;
use crate::kms::DataKey;
use crate::policy::Operation;
use crate::storage::{ObjectRecord, WriteTarget};

/// A readable copy source with its conditions checked.
pub(super) struct CopySourceObject {
    pub bucket: String,
    pub key: String,
    pub object: ObjectRecord,
}

impl Gateway {
    pub(super) async fn copy_source<T>(
        &self,
        req: &S3Request<T>,
        source: &CopySource,
        conditions: Conditions,
    ) -> S3Result<CopySourceObject> {
        let CopySource::Bucket { bucket, key, version_id } = source else {
            return Err(s3_error!(NotImplemented, "Access point copy sources are not supported"));
        };
        if version_id.as_deref().is_some_and(|v| v != "null") {
            return Err(s3_error!(NoSuchVersion, "The specified version does not exist."));
        }
        self.owned_bucket(req, bucket).await?;
        let object = self
            .storage
            .get_object(bucket, key)
            .await
            .or_s3()?
            .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))?;
        conditions.check(&object).map_err(|f| f.for_copy())?;
        Ok(CopySourceObject { bucket: bucket.to_string(), key: key.to_string(), object })
    }

    /// Re-reads `range` of the source through the same ingest path a PUT
    /// takes, so the copy gets its own digest and its own stored data.
    /// `open` is the source's data key when it is sealed; `seal` says how
    /// to seal the copy.
    pub(super) async fn copy_data(
        &self,
        target: WriteTarget,
        source: &ObjectRecord,
        range: std::ops::Range<u64>,
        open: Option<&DataKey>,
        seal: Option<SealPlan<'_>>,
    ) -> S3Result<Ingested> {
        let stream =
            content_stream(self.storage.clone(), self.metrics.clone(), source, range.clone(), open, None).await?;
        let claims = BodyClaims {
            content_length: Some(range.end - range.start),
            max_size: super::body::MAX_PUT_SIZE,
            ..Default::default()
        };
        ingest(self.storage.as_ref(), target, Some(stream), claims, seal).await
    }

    pub(super) async fn do_copy_object(
        &self,
        mut req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let mut destination = self.owned_bucket_for_write(&req, &bucket).await?;
        let conditions = Conditions {
            if_match: req.input.copy_source_if_match.take(),
            if_none_match: req.input.copy_source_if_none_match.take(),
            if_modified_since: req.input.copy_source_if_modified_since.take(),
            if_unmodified_since: req.input.copy_source_if_unmodified_since.take(),
        };
        let mut source = self.copy_source(&req, &req.input.copy_source, conditions).await?;
        let input = &mut req.input;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && source.bucket == bucket && source.key == key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let replacement = if replace {
            Some(
                MetadataInput {
                    content_type: input.content_type.take(),
                    content_encoding: input.content_encoding.take(),
                    content_disposition: input.content_disposition.take(),
                    content_language: input.content_language.take(),
                    cache_control: input.cache_control.take(),
                    expires: input.expires.take(),
                    user: input.metadata.take(),
                }
                .into_record()?,
            )
        } else {
            None
        };
        if source.object.size > super::body::MAX_PUT_SIZE {
            return Err(s3_error!(
                InvalidRequest,
                "The specified copy source is larger than the maximum allowable size for a copy source: 5368709120"
            ));
        }
        // The destination bucket decides whether the copy is sealed.
        let mut ask = Ask::new(Operation::CopyObject, &bucket, Some(&key), &req.headers);
        ask.source = Some((&source.bucket, &source.key, source.object.sealing.as_ref()));
        let allowed = self.consult_for_write(&req, ask, &mut destination).await?;
        open_metadata(&mut source.object, allowed.open_with.as_ref())?;
        let metadata = replacement.unwrap_or_else(|| source.object.metadata.clone());
        let seal =
            allowed.seal_with.as_ref().map(|k| SealPlan { data_key: &k.plaintext, segment: SegmentId::random(1) });
        let target = WriteTarget {
            bucket: destination.clone(),
            key: key.clone(),
            part: None,
            stored_len: None,
            metadata: self.stored_metadata(allowed.seal_with.as_ref(), &metadata),
        };
        let (open, size) = (allowed.open_with.as_ref(), source.object.size);
        let ingested = self.copy_data(target, &source.object, 0..size, open, seal).await?;
        let record = ObjectRecord {
            size: ingested.digest.size,
            etag: ingested.digest.md5_hex(),
            last_modified_unix_ms: now_ms(),
            metadata,
            // Checksums of the source are of the same bytes.
            checksums: source.object.checksums.clone(),
            parts: vec![ingested.part()],
            multipart: false,
            sealing: allowed.seal_with.as_ref().map(|k| self.sealing_of(k)),
            sealed_metadata: None,
        };
        let last_modified = record.last_modified_unix_ms;
        let etag = self.storage.commit_object(&destination, &key, record, vec![ingested.staged]).await.or_s3()?;
        let output = CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
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
}
