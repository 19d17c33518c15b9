//! ListObjects (v1, v2), ListObjectVersions and ListMultipartUploads.

use base64::Engine as _;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::error::OrS3;
use super::{Gateway, owner, quoted, timestamp};
use crate::storage::{ListEntry, ListPage, ListQuery, ObjectRecord};

const MAX_KEYS: i32 = 1000;

fn max_keys(requested: Option<i32>) -> S3Result<usize> {
    match requested {
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys cannot be negative")),
        Some(n) => Ok(n.min(MAX_KEYS) as usize),
        None => Ok(MAX_KEYS as usize),
    }
}

/// `encoding-type=url`: everything but unreserved characters and `/` is
/// percent-encoded, which every client decodes back exactly.
struct Encoder {
    url: bool,
}

impl Encoder {
    fn new(encoding_type: Option<&EncodingType>) -> S3Result<Self> {
        match encoding_type.map(EncodingType::as_str) {
            None => Ok(Self { url: false }),
            Some("url") => Ok(Self { url: true }),
            Some(_) => Err(s3_error!(InvalidArgument, "Invalid Encoding Method specified in Request")),
        }
    }

    fn encode(&self, s: &str) -> String {
        if !self.url {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn opt(&self, s: Option<&str>) -> Option<String> {
        s.map(|s| self.encode(s))
    }
}

fn split_page(page: ListPage, enc: &Encoder) -> (Vec<(String, ObjectRecord)>, Option<CommonPrefixList>) {
    let mut objects = Vec::new();
    let mut prefixes = Vec::new();
    for entry in page.entries {
        match entry {
            ListEntry::Object(key, record) => objects.push((key, record)),
            ListEntry::CommonPrefix(p) => prefixes.push(CommonPrefix { prefix: Some(enc.encode(&p)) }),
        }
    }
    (objects, (!prefixes.is_empty()).then_some(prefixes))
}

fn object_entry(key: &str, record: &ObjectRecord, enc: &Encoder, with_owner: Option<&str>) -> Object {
    Object {
        key: Some(enc.encode(key)),
        size: Some(record.size as i64),
        e_tag: Some(quoted(&record.etag)),
        last_modified: Some(timestamp(record.last_modified_unix_ms)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        owner: with_owner.map(owner),
        ..Default::default()
    }
}

fn encode_token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker)
}

fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

impl Gateway {
    async fn list_page(
        &self,
        bucket: &crate::storage::BucketRecord,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        start_after: Option<String>,
        max: usize,
    ) -> S3Result<ListPage> {
        let query = ListQuery {
            prefix: prefix.unwrap_or_default().to_owned(),
            delimiter: delimiter.map(str::to_owned),
            start_after: start_after.filter(|s| !s.is_empty()),
            max_keys: max,
        };
        self.storage.list_objects(bucket, &query).await.or_s3()
    }

    pub(super) async fn do_list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let bucket = self.owned_bucket_for_read(&req, &req.input.bucket).await?;
        let input = &req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let page = self
            .list_page(&bucket, input.prefix.as_deref(), input.delimiter.as_deref(), input.marker.clone(), max)
            .await?;
        let truncated = page.is_truncated;
        let next_marker = page.entries.last().map(|e| e.resume_marker().to_owned()).filter(|_| truncated);
        let (objects, common_prefixes) = split_page(page, &enc);
        let output = ListObjectsOutput {
            name: Some(bucket.name.clone()),
            prefix: Some(enc.encode(input.prefix.as_deref().unwrap_or_default())),
            marker: Some(enc.encode(input.marker.as_deref().unwrap_or_default())),
            delimiter: enc.opt(input.delimiter.as_deref()),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_marker: next_marker.map(|m| enc.encode(&m)),
            contents: Some(objects.iter().map(|(k, r)| object_entry(k, r, &enc, Some(&bucket.owner))).collect()),
            common_prefixes,
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket = self.owned_bucket_for_read(&req, &req.input.bucket).await?;
        let input = &req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let resume = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone(),
        };
        let page = self.list_page(&bucket, input.prefix.as_deref(), input.delimiter.as_deref(), resume, max).await?;
        let truncated = page.is_truncated;
        let next = page.entries.last().map(|e| encode_token(e.resume_marker())).filter(|_| truncated);
        let key_count = page.entries.len() as i32;
        let (objects, common_prefixes) = split_page(page, &enc);
        let fetch_owner = input.fetch_owner.unwrap_or(false).then_some(bucket.owner.as_str());
        let output = ListObjectsV2Output {
            name: Some(bucket.name.clone()),
            prefix: Some(enc.encode(input.prefix.as_deref().unwrap_or_default())),
            delimiter: enc.opt(input.delimiter.as_deref()),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            is_truncated: Some(truncated),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token: next,
            start_after: enc.opt(input.start_after.as_deref()),
            contents: Some(objects.iter().map(|(k, r)| object_entry(k, r, &enc, fetch_owner)).collect()),
            common_prefixes,
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    /// Buckets are unversioned: every object is its own single, latest
    /// version `null`.
    pub(super) async fn do_list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let bucket = self.owned_bucket_for_read(&req, &req.input.bucket).await?;
        let input = &req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_keys)?;
        let page = self
            .list_page(&bucket, input.prefix.as_deref(), input.delimiter.as_deref(), input.key_marker.clone(), max)
            .await?;
        let truncated = page.is_truncated;
        let next_key_marker = page.entries.last().map(|e| e.resume_marker().to_owned()).filter(|_| truncated);
        let (objects, common_prefixes) = split_page(page, &enc);
        let versions = objects
            .iter()
            .map(|(key, r)| ObjectVersion {
                key: Some(enc.encode(key)),
                version_id: Some("null".into()),
                is_latest: Some(true),
                size: Some(r.size as i64),
                e_tag: Some(quoted(&r.etag)),
                last_modified: Some(timestamp(r.last_modified_unix_ms)),
                storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                owner: Some(owner(&bucket.owner)),
                ..Default::default()
            })
            .collect();
        let output = ListObjectVersionsOutput {
            name: Some(bucket.name.clone()),
            prefix: Some(enc.encode(input.prefix.as_deref().unwrap_or_default())),
            delimiter: enc.opt(input.delimiter.as_deref()),
            key_marker: Some(enc.encode(input.key_marker.as_deref().unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next_key_marker.as_deref().map(|m| enc.encode(m)),
            next_version_id_marker: next_key_marker.map(|_| "null".into()),
            versions: Some(versions),
            common_prefixes,
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let bucket = self.owned_bucket_for_read(&req, &req.input.bucket).await?;
        let input = &req.input;
        let enc = Encoder::new(input.encoding_type.as_ref())?;
        let max = max_keys(input.max_uploads)?;
        let prefix = input.prefix.as_deref().unwrap_or_default();
        let key_marker = input.key_marker.as_deref().unwrap_or_default();
        let id_marker = input.upload_id_marker.as_deref().unwrap_or_default();
        let mut uploads: Vec<_> = self
            .storage
            .list_uploads(&bucket.name)
            .await
            .or_s3()?
            .into_iter()
            .filter(|u| u.key.starts_with(prefix))
            .filter(|u| {
                key_marker.is_empty()
                    || u.key.as_str() > key_marker
                    || (u.key == key_marker && u.upload_id.as_str() > id_marker && !id_marker.is_empty())
            })
            .collect();
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone())).filter(|_| truncated);
        let list = uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(enc.encode(&u.key)),
                upload_id: Some(u.upload_id),
                initiated: Some(timestamp(u.initiated_unix_ms)),
                initiator: Some(Initiator { id: Some(u.initiator.clone()), display_name: Some(u.initiator.clone()) }),
                owner: Some(owner(&u.initiator)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let output = ListMultipartUploadsOutput {
            bucket: Some(bucket.name.clone()),
            prefix: enc.opt(input.prefix.as_deref()),
            key_marker: enc.opt(input.key_marker.as_deref()),
            upload_id_marker: input.upload_id_marker.clone(),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().map(|(k, _)| enc.encode(k)),
            next_upload_id_marker: last.map(|(_, id)| id),
            uploads: Some(list),
            encoding_type: input.encoding_type.clone(),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}
