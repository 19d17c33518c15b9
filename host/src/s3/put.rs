//! PutObject (and PostObject, which s3s turns into a PutObject).

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::body::{BodyClaims, ingest};
use super::conditions::check_write;
use super::error::OrS3;
use super::metadata::MetadataInput;
use super::{Gateway, now_ms, quoted};
use crate::storage::{ObjectPart, ObjectRecord};

impl Gateway {
    pub(super) async fn do_put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = &mut req.input;
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        self.owned_bucket(&req, &bucket).await?;
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
            let current = self.storage.get_object(&bucket, &key).await.or_s3()?;
            check_write(input.if_match.as_ref(), input.if_none_match.as_ref(), current.as_ref())?;
        }
        let mut claims = BodyClaims::from_headers(&req.headers, req.trailing_headers.take());
        claims.content_length = req.input.content_length.and_then(|n| u64::try_from(n).ok());
        let ingested = ingest(self.storage.as_ref(), req.input.body.take(), claims).await?;
        let digest = ingested.digest;
        let etag = digest.md5_hex();
        let record = ObjectRecord {
            size: digest.size,
            etag: etag.clone(),
            last_modified_unix_ms: now_ms(),
            metadata,
            checksums: digest.checksums.clone(),
            parts: vec![ObjectPart { segment: ingested.staged.segment.clone(), size: digest.size, etag: etag.clone() }],
            multipart: false,
        };
        if conditional {
            // Re-checked right before the commit to narrow the race with a concurrent writer.
            let current = self.storage.get_object(&bucket, &key).await.or_s3()?;
            check_write(req.input.if_match.as_ref(), req.input.if_none_match.as_ref(), current.as_ref())?;
        }
        self.storage.commit_object(&bucket, &key, record, vec![ingested.staged]).await.or_s3()?;
        let c = digest.checksums;
        let output = PutObjectOutput {
            e_tag: Some(quoted(&etag)),
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_crc64nvme: c.crc64nvme,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}
