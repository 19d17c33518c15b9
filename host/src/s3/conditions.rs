//! Conditional requests (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`), evaluated in the order RFC 9110 §13.2.2 gives and
//! S3 follows.

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Error, s3_error};

use crate::storage::ObjectRecord;

#[derive(Default)]
pub struct Conditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// What a failed condition means for the request.
pub enum Failed {
    /// 412
    Precondition,
    /// 304 for GET/HEAD
    NotModified,
}

impl Failed {
    /// The error for a read of the object itself.
    pub fn for_read(self) -> S3Error {
        match self {
            Failed::Precondition => {
                s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
            }
            Failed::NotModified => {
                let mut e = s3_error!(NotModified);
                e.set_status_code(hyper::StatusCode::NOT_MODIFIED);
                e
            }
        }
    }

    /// Copy sources and writes answer 412 for every failed condition.
    pub fn for_copy(self) -> S3Error {
        s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
    }
}

fn matches(condition: &ETagCondition, etag: &str) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// Seconds, as `Last-Modified` carries them.
fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

impl Conditions {
    pub fn check(&self, object: &ObjectRecord) -> Result<(), Failed> {
        let modified = object.last_modified_unix_ms.div_euclid(1000);
        match &self.if_match {
            Some(c) if !matches(c, &object.etag) => return Err(Failed::Precondition),
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_unmodified_since
                    && modified > seconds(t)
                {
                    return Err(Failed::Precondition);
                }
            }
        }
        match &self.if_none_match {
            Some(c) if matches(c, &object.etag) => return Err(Failed::NotModified),
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_modified_since
                    && modified <= seconds(t)
                {
                    return Err(Failed::NotModified);
                }
            }
        }
        Ok(())
    }
}

/// For writes (`If-Match` / `If-None-Match: *` on PUT and complete): the
/// current object, if any, must satisfy them.
pub fn check_write(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    current: Option<&ObjectRecord>,
) -> Result<(), S3Error> {
    let failed = || s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold");
    if let Some(c) = if_match {
        match current {
            Some(object) if matches(c, &object.etag) => {}
            Some(_) => return Err(failed()),
            None => return Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
        }
    }
    if let Some(c) = if_none_match
        && let Some(object) = current
        && matches(c, &object.etag)
    {
        return Err(failed());
    }
    Ok(())
}
