//! DeleteObject and DeleteObjects. Deleting a missing key succeeds, as in S3.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Gateway;

/// AWS refuses more keys than this in one DeleteObjects.
const MAX_DELETE_KEYS: usize = 1000;

impl Gateway {
    pub(super) async fn do_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.owned_bucket(&req, &req.input.bucket).await?;
        self.storage.delete_object(&req.input.bucket, &req.input.key).await.map_err(super::error::storage_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn do_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.owned_bucket(&req, &req.input.bucket).await?;
        let delete = &req.input.delete;
        if delete.objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let quiet = delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in &delete.objects {
            match self.storage.delete_object(&req.input.bucket, &object.key).await {
                Ok(_) if quiet => {}
                Ok(_) => deleted.push(DeletedObject { key: Some(object.key.clone()), ..Default::default() }),
                Err(e) => {
                    tracing::error!(error = %e, "delete failed");
                    errors.push(Error {
                        code: Some("InternalError".into()),
                        key: Some(object.key.clone()),
                        message: Some("We encountered an internal error. Please try again.".into()),
                        version_id: None,
                    });
                }
            }
        }
        let output = DeleteObjectsOutput {
            deleted: (!deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}
