//! Put/Get/DeleteBucketEncryption. What they mean is the policy guest's
//! decision; the host stores the setting it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Gateway;
use super::error::OrS3;
use super::policy::Ask;
use crate::policy::{Allowed, Operation};

use crate::storage::{BucketChange, BucketRecord};

/// The one algorithm a configuration asks for; None when it is not exactly
/// one rule with a default (the guest then answers MalformedXML).
fn requested_algorithm(config: &ServerSideEncryptionConfiguration) -> Option<String> {
    match config.rules.as_slice() {
        [rule] => rule.apply_server_side_encryption_by_default.as_ref().map(|d| d.sse_algorithm.as_str().to_owned()),
        _ => None,
    }
}

impl Gateway {
    /// Stores the bucket setting a decision returned, then settles its KMS
    /// side effects. Compare-and-swap: the decision was made on `seen`, the
    /// bucket as this request read it; if its key changed meanwhile (a key
    /// rotation), nothing is stored and the client is asked to retry.
    async fn apply_bucket_state(&self, seen: &BucketRecord, allowed: Allowed) -> S3Result<()> {
        let state = allowed.bucket_state.clone();
        let seen_key = seen.encryption.key_id.clone();
        let conflict = Arc::new(AtomicBool::new(false));
        let conflicted = conflict.clone();
        let change: BucketChange = Box::new(move |record| {
            if record.encryption.key_id != seen_key {
                conflicted.store(true, Ordering::SeqCst);
                return false;
            }
            if let Some(state) = &state {
                record.encryption.encrypted = state.encrypted;
                record.encryption.key_id = state.key_id.clone();
            }
            true
        });
        let stored = self.storage.modify_bucket(&seen.name, change).await.or_s3();
        let stored = match stored {
            Ok(_) if conflict.load(Ordering::SeqCst) => Err(s3_error!(
                OperationAborted,
                "A conflicting conditional operation is currently in progress against this resource. Please try again."
            )),
            other => other.map(drop),
        };
        match stored {
            Ok(()) => {
                allowed.after.committed().await;
                Ok(())
            }
            Err(e) => {
                allowed.after.failed().await;
                Err(e)
            }
        }
    }

    pub(super) async fn do_put_bucket_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let bucket = self.owned_bucket(&req, &req.input.bucket).await?;
        let mut ask = Ask::new(Operation::PutBucketEncryption, &bucket.name, None, &req.headers);
        ask.bucket_state = Some(&bucket.encryption);
        ask.requested_algorithm = requested_algorithm(&req.input.server_side_encryption_configuration);
        let allowed = self.consult(ask).await?;
        self.apply_bucket_state(&bucket, allowed).await?;
        Ok(S3Response::new(PutBucketEncryptionOutput::default()))
    }

    pub(super) async fn do_get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let bucket = self.owned_bucket(&req, &req.input.bucket).await?;
        let mut ask = Ask::new(Operation::GetBucketEncryption, &bucket.name, None, &req.headers);
        ask.bucket_state = Some(&bucket.encryption);
        let allowed = self.consult(ask).await?;
        let Some(algorithm) = allowed.report_algorithm else {
            return Err(s3_error!(
                ServerSideEncryptionConfigurationNotFoundError,
                "The server side encryption configuration was not found"
            ));
        };
        let rule = ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                sse_algorithm: ServerSideEncryption::from(algorithm),
                kms_master_key_id: None,
            }),
            bucket_key_enabled: Some(false),
        };
        let config = ServerSideEncryptionConfiguration { rules: vec![rule] };
        Ok(S3Response::new(GetBucketEncryptionOutput { server_side_encryption_configuration: Some(config) }))
    }

    pub(super) async fn do_delete_bucket_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        let bucket = self.owned_bucket(&req, &req.input.bucket).await?;
        let mut ask = Ask::new(Operation::DeleteBucketEncryption, &bucket.name, None, &req.headers);
        ask.bucket_state = Some(&bucket.encryption);
        let allowed = self.consult(ask).await?;
        self.apply_bucket_state(&bucket, allowed).await?;
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}
