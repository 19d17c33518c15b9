//! PutObject, and the upload of a browser POST (`post.rs` checks the form
//! and hands its file over as a PutObject with the form's fields as
//! headers).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{BodyClaims, SealPlan, drain, ingest};
use super::conditions::check_write;
use super::error::OrS3;
use super::metadata::MetadataInput;
use super::policy::Ask;
use super::post::FormLimits;
use super::{Gateway, now_ms, quoted};
use crate::crypto::format::SegmentId;
use crate::policy::Operation;
use crate::storage::{ObjectRecord, WriteTarget};

impl Gateway {
    pub(super) async fn do_put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let result = self.put_object(&mut req).await;
        if result.is_err() {
            drain(req.input.body.take()).await;
        }
        result
    }

    async fn put_object(&self, req: &mut S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        // `post.rs` hands a browser form upload over as a PutObject.
        let operation = if req.method == hyper::Method::POST { Operation::PostObject } else { Operation::PutObject };
        let (bucket_name, key) = (req.input.bucket.clone(), req.input.key.clone());
        let mut bucket = self.owned_bucket_for_write(req, &bucket_name).await?;
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
        let conditional = input.if_match.is_some() || input.if_none_match.is_some();
        if conditional {
            let current = self.storage.get_object(&bucket_name, &key).await.or_s3()?;
            check_write(input.if_match.as_ref(), input.if_none_match.as_ref(), current.as_ref())?;
        }
        let ask = Ask::new(operation, &bucket_name, Some(&key), &req.headers);
        let allowed = self.consult_for_write(req, ask, &mut bucket).await?;

        let mut claims = BodyClaims::from_headers(&req.headers, req.trailing_headers.take());
        claims.content_length = req.input.content_length.and_then(|n| u64::try_from(n).ok()).or(claims.content_length);
        let form_limits = req.extensions.get::<FormLimits>().copied();
        if let Some(limits) = form_limits {
            claims.max_size = claims.max_size.min(limits.max);
        }
        let seal =
            allowed.seal_with.as_ref().map(|k| SealPlan { data_key: &k.plaintext, segment: SegmentId::random(1) });
        let target = WriteTarget {
            bucket: bucket.clone(),
            key: key.clone(),
            part: None,
            stored_len: None,
            metadata: self.stored_metadata(allowed.seal_with.as_ref(), &metadata),
        };
        let ingested = ingest(self.storage.as_ref(), target, req.input.body.take(), claims, seal).await?;
        if form_limits.is_some_and(|limits| ingested.digest.size < limits.min) {
            return Err(s3_error!(
                EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size."
            ));
        }
        let record = ObjectRecord {
            size: ingested.digest.size,
            etag: ingested.digest.md5_hex(),
            last_modified_unix_ms: now_ms(),
            metadata,
            checksums: ingested.digest.checksums.clone(),
            parts: vec![ingested.part()],
            multipart: false,
            sealing: allowed.seal_with.as_ref().map(|k| self.sealing_of(k)),
            sealed_metadata: None,
        };
        if conditional {
            // Re-checked right before the commit to narrow the race with a concurrent writer.
            let current = self.storage.get_object(&bucket_name, &key).await.or_s3()?;
            check_write(req.input.if_match.as_ref(), req.input.if_none_match.as_ref(), current.as_ref())?;
        }
        let c = record.checksums.clone();
        let etag = self.storage.commit_object(&bucket, &key, record, vec![ingested.staged]).await.or_s3()?;
        let output = PutObjectOutput {
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
}
