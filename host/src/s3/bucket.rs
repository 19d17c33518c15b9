//! Bucket operations: list, create, head, delete, location, versioning.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::error::OrS3;
use super::policy::Ask;
use super::{Gateway, caller, now_ms, owner, timestamp};
use crate::policy::{BucketState, Operation};
use crate::storage::{BucketEncryption, BucketRecord, StorageError};

fn already_exists(owner: &str, me: &str) -> s3s::S3Error {
    if owner == me {
        s3_error!(
            BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it."
        )
    } else {
        s3_error!(BucketAlreadyExists, "The requested bucket name is not available.")
    }
}

impl Gateway {
    pub(super) async fn do_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let me = caller(&req)?;
        let mut buckets: Vec<_> =
            self.storage.list_buckets().await.or_s3()?.into_iter().filter(|b| b.owner == me).collect();
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        let output = ListBucketsOutput {
            buckets: Some(
                buckets
                    .into_iter()
                    .map(|b| Bucket {
                        name: Some(b.name),
                        creation_date: Some(timestamp(b.created_unix_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            owner: Some(owner(me)),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let me = caller(&req)?.to_owned();
        let bucket = req.input.bucket.clone();
        if let Some(constraint) = req
            .input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|l| l.as_str())
            .filter(|l| !l.is_empty())
            && constraint != self.region
        {
            return Err(s3_error!(
                IllegalLocationConstraintException,
                "The {constraint} location constraint is incompatible for the region specific endpoint this request was sent to."
            ));
        }
        if let Some(existing) = self.storage.get_bucket(&bucket).await.or_s3()? {
            return Err(already_exists(&existing.owner, &me));
        }
        let allowed = self.consult(Ask::new(Operation::CreateBucket, &bucket, None, &req.headers)).await?;
        let state = allowed.bucket_state.clone().unwrap_or(BucketState { encrypted: false, key_id: None });
        let record = BucketRecord {
            name: bucket.clone(),
            owner: me.clone(),
            created_unix_ms: now_ms(),
            encryption: BucketEncryption { encrypted: state.encrypted, key_id: state.key_id, ..Default::default() },
            generation: uuid::Uuid::new_v4().simple().to_string(),
            stored_forms: Default::default(),
        };
        match self.storage.create_bucket(record).await {
            Ok(()) => allowed.after.committed().await,
            Err(e) => {
                allowed.after.failed().await;
                return Err(match e {
                    StorageError::BucketExists { owner } => already_exists(&owner, &me),
                    other => super::error::storage_error(other),
                });
            }
        }
        let output = CreateBucketOutput { location: Some(format!("/{bucket}")) };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.owned_bucket(&req, &req.input.bucket).await?;
        let output = HeadBucketOutput { bucket_region: Some(self.region.clone()), ..Default::default() };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = self.owned_bucket(&req, &req.input.bucket).await?;
        let mut ask = Ask::new(Operation::DeleteBucket, &bucket.name, None, &req.headers);
        ask.bucket_state = Some(&bucket.encryption);
        let allowed = self.consult(ask).await?;
        match self.storage.delete_bucket(&bucket.name).await.or_s3() {
            Ok(()) => allowed.after.committed().await,
            Err(e) => {
                allowed.after.failed().await;
                return Err(e);
            }
        }
        // The guest destroys the bucket's key; a key rotation that was
        // interrupted leaves its old key, which nothing else would destroy.
        if let Some(old_key) = &bucket.encryption.rotating_from
            && let Err(e) = self.policy.kms().destroy_key(old_key).await
        {
            tracing::warn!(bucket = %bucket.name, key_id = %old_key, error = %e, "destroying the pre-rotation key failed");
        }
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(super) async fn do_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.owned_bucket(&req, &req.input.bucket).await?;
        // AWS answers an empty constraint for us-east-1.
        let location_constraint =
            (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
    }

    pub(super) async fn do_get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        // Buckets are never versioned: no Status, as AWS answers for a bucket
        // that never had versioning enabled.
        self.owned_bucket(&req, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }
}
