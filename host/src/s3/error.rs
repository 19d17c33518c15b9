//! How storage failures become S3 errors. Internal details are logged, never
//! sent to the client.

use s3s::{Body, S3Error, S3ErrorCode, s3_error};

use crate::storage::StorageError;

/// An S3 error answer for requests sealgate answers without s3s (refusals
/// before routing, browser POST): AWS's XML body.
pub fn error_response(status: hyper::StatusCode, code: &str, message: &str) -> hyper::Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code><Message>{}</Message></Error>",
        xml_escape(code),
        xml_escape(message)
    );
    let mut res = hyper::Response::new(Body::from(xml));
    *res.status_mut() = status;
    res.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    res
}

pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

pub fn storage_error(e: StorageError) -> S3Error {
    match e {
        StorageError::NoSuchBucket => {
            s3_error!(NoSuchBucket, "The specified bucket does not exist")
        }
        StorageError::BucketExists { .. } => s3_error!(BucketAlreadyExists),
        StorageError::RecentlyDeleted => s3_error!(
            OperationAborted,
            "A conflicting conditional operation is currently in progress against this resource. Please try again."
        ),
        StorageError::BucketNotEmpty => s3_error!(BucketNotEmpty, "The bucket you tried to delete is not empty"),
        StorageError::NoSuchUpload => s3_error!(NoSuchUpload, "The specified multipart upload does not exist."),
        StorageError::KeyRetired => {
            s3_error!(ServiceUnavailable, "A key rotation retired this write's key while it ran; please retry.")
        }
        StorageError::BucketChanged { what } => S3Error::with_message(
            S3ErrorCode::ServiceUnavailable,
            format!("The bucket changed while this write ran ({what}); please retry."),
        ),
        StorageError::PartChanged => s3_error!(
            InvalidPart,
            "One or more of the specified parts could not be found. The part may not have been uploaded, or the specified entity tag may not match the part's entity tag."
        ),
        StorageError::Body(e) => S3Error::with_message(S3ErrorCode::IncompleteBody, format!("request body: {e}")),
        StorageError::Io(e) => {
            tracing::error!(error = %e, "storage I/O failed");
            s3_error!(InternalError, "We encountered an internal error. Please try again.")
        }
        StorageError::Metadata(e) => {
            tracing::error!(error = %e, "metadata store failed");
            s3_error!(InternalError, "We encountered an internal error. Please try again.")
        }
        StorageError::Unavailable(e) => {
            tracing::warn!(error = %e, "upstream storage unavailable");
            s3_error!(ServiceUnavailable, "The storage behind this gateway is unavailable. Please retry.")
        }
        StorageError::Unsupported(what) => S3Error::with_message(
            S3ErrorCode::NotImplemented,
            format!("Not supported with this storage backend: {what}"),
        ),
        StorageError::Refused { status, code, message } => {
            let mut e = S3Error::with_message(
                S3ErrorCode::from_bytes(code.as_bytes()).unwrap_or(S3ErrorCode::InvalidRequest),
                message,
            );
            e.set_status_code(hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST));
            e
        }
        StorageError::LengthRequired => {
            let mut e = S3Error::with_message(
                S3ErrorCode::MissingContentLength,
                "You must provide the Content-Length HTTP header.",
            );
            e.set_status_code(hyper::StatusCode::LENGTH_REQUIRED);
            e
        }
        StorageError::UnalignedPart => s3_error!(
            InvalidPart,
            "In an encrypted bucket stored upstream, every part but the last must be a multiple of 64 KiB (65536 bytes)."
        ),
    }
}

/// Lets `?` turn storage errors into S3 errors inside handlers.
pub trait OrS3<T> {
    fn or_s3(self) -> Result<T, S3Error>;
}

impl<T> OrS3<T> for Result<T, StorageError> {
    fn or_s3(self) -> Result<T, S3Error> {
        self.map_err(storage_error)
    }
}
