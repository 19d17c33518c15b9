//! Object metadata between S3 DTOs and storage records.

use s3s::dto::{ContentType, Metadata, Timestamp, TimestampFormat};

use crate::storage::{ContentHeaders, ObjectMetadata};

/// Largest total size of user metadata AWS accepts (names and values).
const MAX_USER_METADATA: usize = 2048;

/// The content headers and user metadata a create request carries.
pub struct MetadataInput {
    pub content_type: Option<ContentType>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
    pub user: Option<Metadata>,
}

impl MetadataInput {
    pub fn into_record(self) -> s3s::S3Result<ObjectMetadata> {
        let user: std::collections::BTreeMap<String, String> =
            self.user.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_USER_METADATA {
            return Err(s3s::s3_error!(
                MetadataTooLarge,
                "Your metadata headers exceed the maximum allowed metadata size."
            ));
        }
        Ok(ObjectMetadata {
            content: ContentHeaders {
                // S3 stores this type when the client names none.
                content_type: Some(
                    self.content_type.map_or_else(|| "binary/octet-stream".to_owned(), |c| c.to_string()),
                ),
                content_encoding: self.content_encoding,
                content_disposition: self.content_disposition,
                content_language: self.content_language,
                cache_control: self.cache_control,
                expires: self.expires.and_then(|t| format_http_date(&t)),
            },
            user,
        })
    }
}

fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

pub fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub fn user_metadata(meta: &ObjectMetadata) -> Option<Metadata> {
    (!meta.user.is_empty()).then(|| meta.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn content_type(meta: &ObjectMetadata) -> Option<ContentType> {
    meta.content.content_type.as_deref().and_then(|c| c.parse().ok())
}
