//! The S3 front: s3s parses, authenticates and routes requests (but the
//! browser POST, see `post`); the [`Gateway`] implements each operation,
//! one S3 concern per file.

mod body;
mod bucket;
mod conditions;
mod copy;
mod delete;
mod encryption;
pub mod error;
mod get;
mod list;
mod metadata;
mod multipart;
mod policy;
mod post;
mod put;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::metrics::Metrics;
use crate::policy::PolicyRuntime;
use crate::storage::{BucketRecord, Storage};
use error::OrS3;

/// The S3 service sealgate offers.
#[derive(Clone)]
pub struct Gateway {
    storage: Arc<dyn Storage>,
    policy: Arc<PolicyRuntime>,
    metrics: Arc<Metrics>,
    region: String,
}

impl Gateway {
    pub fn new(storage: Arc<dyn Storage>, policy: Arc<PolicyRuntime>, metrics: Arc<Metrics>, region: String) -> Self {
        Self { storage, policy, metrics, region }
    }

    /// The bucket, if it exists and the caller owns it. Ownership is also
    /// checked before routing (see `auth`); copy sources come through here.
    async fn owned_bucket<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<BucketRecord> {
        let bucket = self.storage.get_bucket(name).await.or_s3()?;
        check_owner(req, bucket)
    }

    /// As [`Self::owned_bucket`], for a read (of an object, a listing): the record may
    /// be a few seconds old (see [`crate::storage::Storage::get_bucket_for_read`]).
    async fn owned_bucket_for_read<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<BucketRecord> {
        let bucket = self.storage.get_bucket_for_read(name).await.or_s3()?;
        check_owner(req, bucket)
    }

    /// As [`Self::owned_bucket`], for a write of an object or part: the
    /// record may be a few seconds old where the backend checks it again at
    /// the commit (see [`crate::storage::Storage::get_bucket_for_write`]).
    async fn owned_bucket_for_write<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<BucketRecord> {
        let bucket = self.storage.get_bucket_for_write(name).await.or_s3()?;
        check_owner(req, bucket)
    }
}

fn check_owner<T>(req: &S3Request<T>, bucket: Option<BucketRecord>) -> S3Result<BucketRecord> {
    let bucket = bucket.ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
    if bucket.owner != caller(req)? {
        return Err(s3_error!(AccessDenied, "Access Denied"));
    }
    Ok(bucket)
}

/// The authenticated caller's access key (anonymous requests never get here).
fn caller<T>(req: &S3Request<T>) -> S3Result<&str> {
    req.credentials
        .as_ref()
        .map(|c| c.access_key.as_str())
        .ok_or_else(|| s3_error!(AccessDenied, "Signature is required"))
}

fn timestamp(unix_ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn quoted(etag: &str) -> ETag {
    ETag::Strong(etag.to_owned())
}

fn owner(access_key: &str) -> Owner {
    Owner { display_name: Some(access_key.to_owned()), id: Some(access_key.to_owned()) }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.do_list_buckets(req).await
    }
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.do_create_bucket(req).await
    }
    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.do_head_bucket(req).await
    }
    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.do_delete_bucket(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.do_get_bucket_location(req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.do_get_bucket_versioning(req).await
    }
    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.do_put_object(req).await
    }
    async fn put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        self.do_put_bucket_encryption(req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.do_get_bucket_encryption(req).await
    }
    async fn delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        self.do_delete_bucket_encryption(req).await
    }
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.do_get_object(req).await
    }
    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.do_head_object(req).await
    }
    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.do_delete_object(req).await
    }
    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.do_delete_objects(req).await
    }
    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.do_copy_object(req).await
    }
    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.do_list_objects(req).await
    }
    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.do_list_objects_v2(req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.do_list_object_versions(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.do_create_multipart_upload(req).await
    }
    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.do_upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.do_upload_part_copy(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.do_complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.do_abort_multipart_upload(req).await
    }
    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.do_list_parts(req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.do_list_multipart_uploads(req).await
    }
}
