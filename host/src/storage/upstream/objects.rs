//! Objects upstream: writes held back before their last bytes until the
//! gateway has checked the body, reads with one ranged GET, and listings
//! that give plaintext sizes and ETags from the upstream's own listing.

use std::collections::HashMap;
use std::io::Read;
use std::ops::Range;

use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    EXPIRES, HeaderMap, HeaderName, LAST_MODIFIED,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::UpstreamStorage;
use super::client::{Failure, millis, unquote};
use super::data_plane::{Fetch, header, set_header};
use crate::crypto::{format_v2, sealed_metadata};
use crate::storage::*;

/// The user-metadata name that holds a sealed object's metadata.
pub const SEALED_METADATA: &str = "sg";
/// How user metadata travels in S3 headers.
const USER_METADATA_PREFIX: &str = "x-amz-meta-";
/// A download that sends nothing for this long has stalled (aws-sdk-s3's
/// stalled-stream protection did the same).
const DOWNLOAD_STALL: std::time::Duration = std::time::Duration::from_secs(10);
/// Entries of a listing in a bucket holding both kinds of object are
/// looked at one by one (see [`BucketRecord::stored_forms`]), this many at once.
const MIXED_LISTING_HEADS: usize = 16;

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// The ETag clients see for an object or part stored with upstream ETag
/// `etag`. A sealed single PUT's or part's upstream ETag is the MD5 of
/// ciphertext, which no client could check: `-0` marks it as not a content
/// MD5 (no upload has zero parts), so sync tools compare sizes and times
/// instead, and s3cmd does not call an uploaded part corrupt.
pub fn client_etag(etag: &str, sealed: bool) -> String {
    if sealed && !etag.contains('-') { format!("{etag}-0") } else { etag.to_owned() }
}

/// The upstream ETag of a part that clients know as `client` (the inverse
/// of [`client_etag`] for parts, whose upstream ETags have no `-`).
pub fn upstream_part_etag(client: &str, sealed: bool) -> &str {
    if sealed { client.strip_suffix("-0").unwrap_or(client) } else { client }
}

/// No such object is `None`; no such bucket, and anything else, an error.
fn absent_or_failure<T>(failure: Failure) -> Result<Option<T>, StorageError> {
    if failure.not_found() && !failure.is("NoSuchBucket") { Ok(None) } else { Err(failure.into()) }
}

/// An upload request sent but for its last bytes.
pub struct PendingWrite {
    /// True sends the rest; false (or dropping it) fails the request, so
    /// the upstream stores nothing.
    release: oneshot::Sender<bool>,
    /// The upstream's answer: the stored ETag.
    answer: JoinHandle<Result<String, StorageError>>,
}

/// Where a segment's bytes are upstream (its `data_id`, as JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct Location {
    bucket: String,
    key: String,
    /// The stored version's ETag: a read never mixes two versions.
    etag: String,
}

impl UpstreamStorage {
    /// Starts the upstream request for `target` and streams `body` into it
    /// but for the last piece, which waits for [`Self::finish_write`].
    pub(super) async fn start_write(
        &self,
        target: &WriteTarget,
        mut body: ByteStream,
    ) -> Result<StagedData, StorageError> {
        let Some(stored_len) = target.stored_len else {
            return Err(StorageError::LengthRequired);
        };
        check_reserved(&target.metadata)?;
        if target.part.is_none() {
            // An empty sealed object's one stored chunk is never read back.
            let empty = match target.metadata {
                StoredMetadata::Sealed { .. } => format_v2::stored_len(0),
                StoredMetadata::Plain(_) => 0,
            };
            self.key_limits.check_write(&target.key, stored_len > empty)?;
        }
        self.note_form(&target.bucket, matches!(target.metadata, StoredMetadata::Sealed { .. })).await?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let (release, released) = oneshot::channel::<bool>();
        let request = self.upload_request(target, stored_len, rx);
        let answer = if stored_len == 0 {
            // Nothing to hold back: the request itself waits for the commit.
            tokio::spawn(async move {
                if released.await != Ok(true) {
                    return Err(StorageError::Body(std::io::Error::other("write discarded")));
                }
                drop(tx);
                request.await
            })
        } else {
            let answer = tokio::spawn(request);
            let held = match feed_all_but_last(&mut body, &tx, stored_len).await {
                Ok(held) => held,
                Err(e) => {
                    // An error, not just an early end, so the upload is
                    // aborted at once whatever the HTTP client does with a
                    // body shorter than announced.
                    let _ = tx.try_send(Err(std::io::Error::other("request body failed")));
                    drop(tx);
                    // The upstream's own refusal says more than a closed channel.
                    return Err(match answer.await {
                        Ok(Err(upstream)) if !matches!(e, StorageError::Body(_)) => upstream,
                        _ => e,
                    });
                }
            };
            tokio::spawn(async move {
                let item = match released.await {
                    Ok(true) => Ok(held),
                    _ => Err(std::io::Error::other("write discarded")),
                };
                let _ = tx.send(item).await;
            });
            answer
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.pending.lock().expect("pending lock").insert(id.clone(), PendingWrite { release, answer });
        let pending = self.pending.clone();
        let discard_id = id.clone();
        let segment = DataSegment { data_id: id, stored_size: stored_len };
        Ok(StagedData::new(segment, move || {
            if let Some(write) = pending.lock().expect("pending lock").remove(&discard_id) {
                let _ = write.release.send(false);
            }
        }))
    }

    /// Sends the held-back bytes and waits for the upstream to store the
    /// object or part; returns the upstream's ETag.
    pub(super) async fn finish_write(&self, staged: StagedData) -> Result<String, StorageError> {
        let segment = staged.keep();
        let write = self.pending.lock().expect("pending lock").remove(&segment.data_id);
        let write = write.ok_or_else(|| StorageError::Metadata("commit of an unknown write".into()))?;
        let _ = write.release.send(true);
        write.answer.await.map_err(|e| StorageError::Unavailable(format!("upload task: {e}")))?
    }

    /// The PutObject or UploadPart request for `target`, its body read from `rx`.
    fn upload_request(
        &self,
        target: &WriteTarget,
        stored_len: u64,
        rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> impl std::future::Future<Output = Result<String, StorageError>> + Send + 'static {
        let frames = ReceiverStream::new(rx).map(|item| item.map(Frame::data));
        let body = BodyExt::boxed(StreamBody::new(frames));
        let (data, metrics) = (self.data.clone(), self.metrics.clone());
        let bucket = self.upstream_bucket(&target.bucket.name);
        let key = target.key.clone();
        let (operation, part, headers) = match &target.part {
            Some((upload, number)) => {
                let upstream_id = super::upload_id::upstream_part(&upload.upload_id).unwrap_or_default().to_owned();
                ("UploadPart", Some((upstream_id, *number)), HeaderMap::new())
            }
            None => ("PutObject", None, UpstreamHeaders::of(&target.metadata).into_header_map()),
        };
        async move {
            metrics.upstream_request(operation);
            let part = part.as_ref().map(|(id, number)| (id.as_str(), *number));
            data.upload(&bucket, &key, part, headers, stored_len, body).await.map_err(StorageError::from)
        }
    }

    /// The object as a record (HEAD), or None.
    pub(super) async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>, StorageError> {
        if !self.key_limits.can_exist(key) {
            return Ok(None);
        }
        self.metrics.upstream_request("HeadObject");
        let headers = match self.data.head(&self.upstream_bucket(bucket), key).await {
            Ok(headers) => headers,
            Err(failure) => return absent_or_failure(failure),
        };
        Ok(Some(self.record_from_answer(bucket, key, &headers)?))
    }

    /// The whole object in one GetObject: its record from the answer's
    /// headers, and its stored bytes as they follow.
    pub(super) async fn get_whole_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectRecord, StoredReader)>, StorageError> {
        if !self.key_limits.can_exist(key) {
            return Ok(None);
        }
        self.metrics.upstream_request("GetObject");
        let answer = match self.data.get(&self.upstream_bucket(bucket), key, Fetch::default()).await {
            Ok(answer) => answer,
            Err(failure) => return absent_or_failure(failure),
        };
        let record = self.record_from_answer(bucket, key, answer.headers())?;
        Ok(Some((record, Box::new(BlockingBody::new(answer.into_body())))))
    }

    /// The record of an object from a HeadObject or GetObject answer's headers.
    fn record_from_answer(&self, bucket: &str, key: &str, headers: &HeaderMap) -> Result<ObjectRecord, StorageError> {
        let stored = header(headers, CONTENT_LENGTH).and_then(|l| l.parse().ok()).unwrap_or_default();
        let etag = unquote(header(headers, ETAG));
        let modified = header(headers, LAST_MODIFIED)
            .and_then(|t| DateTime::from_str(t, DateTimeFormat::HttpDate).ok())
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default();
        let text = |name: HeaderName| header(headers, name).map(str::to_owned);
        let content = ContentHeaders {
            content_type: text(CONTENT_TYPE),
            content_encoding: text(CONTENT_ENCODING),
            content_disposition: text(CONTENT_DISPOSITION),
            content_language: text(CONTENT_LANGUAGE),
            cache_control: text(CACHE_CONTROL),
            expires: text(EXPIRES),
        };
        let mut user: HashMap<String, String> = headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix(USER_METADATA_PREFIX)?;
                Some((name.to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            })
            .collect();
        let sealed = user.remove(SEALED_METADATA);
        let metadata = ObjectMetadata { content, user: user.into_iter().collect() };
        self.record_of(bucket, key, stored, &etag, modified, sealed, metadata)
    }

    /// A record from what the upstream says about an object.
    #[allow(clippy::too_many_arguments)]
    fn record_of(
        &self,
        bucket: &str,
        key: &str,
        stored: u64,
        etag: &str,
        last_modified: i64,
        sealed_blob: Option<String>,
        metadata: ObjectMetadata,
    ) -> Result<ObjectRecord, StorageError> {
        let location = Location { bucket: self.upstream_bucket(bucket), key: key.to_owned(), etag: etag.to_owned() };
        let segment =
            DataSegment { data_id: serde_json::to_string(&location).expect("serializes"), stored_size: stored };
        let (size, sealing, metadata) = match &sealed_blob {
            None => (stored, None, metadata),
            Some(blob) => {
                let sealing = sealed_metadata::sealing_of(blob)
                    .map_err(|e| StorageError::Metadata(format!("object {bucket}/{key}: {e}")))?;
                let size = format_v2::plain_len(stored).ok_or_else(|| {
                    StorageError::Metadata(format!("object {bucket}/{key}: size fits no sealed layout"))
                })?;
                (size, Some(sealing), ObjectMetadata::default())
            }
        };
        let client_etag = client_etag(etag, sealing.is_some());
        Ok(ObjectRecord {
            size,
            etag: client_etag.clone(),
            last_modified_unix_ms: last_modified,
            metadata,
            checksums: Checksums::default(),
            parts: vec![ObjectPart { segment, size, etag: client_etag.clone(), seal: None }],
            multipart: client_etag.contains('-') && !client_etag.ends_with("-0"),
            sealing,
            sealed_metadata: sealed_blob,
        })
    }

    /// A blocking reader of `range` of a stored object (one ranged GET).
    pub(super) fn open_reader(&self, segment: &DataSegment, range: Range<u64>) -> Result<StoredReader, StorageError> {
        if range.is_empty() {
            return Ok(Box::new(std::io::empty()));
        }
        let location: Location = serde_json::from_str(&segment.data_id)
            .map_err(|e| StorageError::Metadata(format!("segment location: {e}")))?;
        self.metrics.upstream_request("GetObject");
        let fetch = Fetch { range: Some(range), if_match: Some(&location.etag) };
        let request = self.data.get(&location.bucket, &location.key, fetch);
        let answer = tokio::runtime::Handle::current().block_on(request).map_err(StorageError::from)?;
        Ok(Box::new(BlockingBody::new(answer.into_body())))
    }

    /// One page of a bucket's listing: one upstream listing request, and
    /// per-entry requests only in a bucket that holds both kinds of object.
    pub(super) async fn list_page(&self, bucket: &BucketRecord, query: &ListQuery) -> Result<ListPage, StorageError> {
        self.metrics.upstream_request("ListObjectsV2");
        let page = self
            .client
            .list_objects_v2()
            .bucket(self.upstream_bucket(&bucket.name))
            .prefix(&query.prefix)
            .set_delimiter(query.delimiter.clone())
            .set_start_after(upstream_start_after(query))
            .max_keys(query.max_keys.max(1) as i32)
            .send()
            .await
            .map_err(|e| StorageError::from(Failure::from_sdk(e)))?;
        if query.max_keys == 0 {
            return Ok(ListPage {
                entries: Vec::new(),
                is_truncated: !page.contents().is_empty() || !page.common_prefixes().is_empty(),
            });
        }
        let mut forms = bucket.stored_forms;
        if !forms.sealed && !forms.plain && !page.contents().is_empty() {
            // Objects, but the record knows of no kind: it was cached before
            // the first write (see `note_form`).
            let fresh = self.fresh_bucket(&bucket.name).await?.ok_or(StorageError::NoSuchBucket)?;
            forms = fresh.stored_forms;
        }
        let mut entries = Vec::new();
        let mut mixed = Vec::new();
        for object in page.contents() {
            let key = object.key().unwrap_or_default().to_owned();
            if forms.sealed && forms.plain {
                mixed.push(key);
                continue;
            }
            let stored = object.size().unwrap_or_default().max(0) as u64;
            let etag = unquote(object.e_tag());
            let modified = millis(object.last_modified());
            let record = self.listed_record(&bucket.name, &key, stored, &etag, modified, forms.sealed);
            entries.push(ListEntry::Object(key, record));
        }
        let heads = futures::stream::iter(mixed.into_iter().map(|key| async move {
            let record = self.head_object(&bucket.name, &key).await;
            (key, record)
        }))
        .buffered(MIXED_LISTING_HEADS)
        .collect::<Vec<_>>()
        .await;
        for (key, record) in heads {
            if let Some(record) = record? {
                entries.push(ListEntry::Object(key, record));
            }
        }
        entries.extend(
            page.common_prefixes().iter().filter_map(|p| p.prefix()).map(|p| ListEntry::CommonPrefix(p.to_owned())),
        );
        entries.sort_by(|a, b| a.resume_marker().cmp(b.resume_marker()));
        Ok(ListPage { entries, is_truncated: page.is_truncated().unwrap_or(false) })
    }

    /// A listed object: sizes and ETags by arithmetic, nothing fetched.
    fn listed_record(
        &self,
        bucket: &str,
        key: &str,
        stored: u64,
        etag: &str,
        modified: i64,
        sealed: bool,
    ) -> ObjectRecord {
        let size = if sealed { format_v2::plain_len(stored).unwrap_or(stored) } else { stored };
        let client_etag = client_etag(etag, sealed);
        let location = Location { bucket: self.upstream_bucket(bucket), key: key.to_owned(), etag: etag.to_owned() };
        ObjectRecord {
            size,
            etag: client_etag.clone(),
            last_modified_unix_ms: modified,
            metadata: ObjectMetadata::default(),
            checksums: Checksums::default(),
            parts: vec![ObjectPart {
                segment: DataSegment {
                    data_id: serde_json::to_string(&location).expect("serializes"),
                    stored_size: stored,
                },
                size,
                etag: client_etag.clone(),
                seal: None,
            }],
            multipart: client_etag.contains('-') && !client_etag.ends_with("-0"),
            sealing: None,
            sealed_metadata: None,
        }
    }
}

/// Where the upstream listing resumes. A `start_after` that rolls up into a
/// common prefix (a page that ended on that prefix) resumes after every key
/// under it (see [`ListQuery`]). Upstreams differ there: SeaweedFS skips
/// them, Garage lists the prefix again. So ask for the greatest key under
/// the prefix: the prefix, then U+10FFFF (the greatest UTF-8 character)
/// up to S3's 1024-byte key limit, which no longer key under it can pass.
fn upstream_start_after(query: &ListQuery) -> Option<String> {
    let after = query.start_after.as_deref()?;
    let rolled_up = query.delimiter.as_deref().filter(|d| !d.is_empty()).and_then(|delimiter| {
        let rest = after.strip_prefix(query.prefix.as_str())?;
        let end = query.prefix.len() + rest.find(delimiter)? + delimiter.len();
        Some(&after[..end])
    });
    let Some(common_prefix) = rolled_up else {
        return Some(after.to_owned());
    };
    let mut greatest = common_prefix.to_owned();
    while greatest.len() <= MAX_KEY_BYTES {
        greatest.push('\u{10FFFF}');
    }
    Some(greatest)
}

/// S3's limit on a key's length, in bytes of UTF-8.
const MAX_KEY_BYTES: usize = 1024;

/// Sends every piece of `body` but the last into `tx`; returns the last.
/// Fails when the body fails, or its length is not the announced one.
async fn feed_all_but_last(
    body: &mut ByteStream,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    stored_len: u64,
) -> Result<Bytes, StorageError> {
    let mut held = Bytes::new();
    let mut total = 0u64;
    while let Some(item) = body.next().await {
        let piece = item.map_err(StorageError::Body)?;
        if piece.is_empty() {
            continue;
        }
        total += piece.len() as u64;
        if total > stored_len {
            return Err(StorageError::Body(std::io::Error::other("body longer than announced")));
        }
        let previous = std::mem::replace(&mut held, piece);
        if !previous.is_empty() && tx.send(Ok(previous)).await.is_err() {
            return Err(StorageError::Unavailable("the upstream ended the upload early".into()));
        }
    }
    if total != stored_len {
        return Err(StorageError::Body(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(held)
}

/// Sets content headers and user metadata on a CreateMultipartUpload builder.
macro_rules! with_headers {
    ($builder:expr, $headers:expr) => {{
        let UpstreamHeaders { content: c, user } = $headers;
        $builder
            .set_content_type(c.content_type)
            .set_content_encoding(c.content_encoding)
            .set_content_disposition(c.content_disposition)
            .set_content_language(c.content_language)
            .set_cache_control(c.cache_control)
            .set_expires(c.expires.as_deref().and_then(|e| DateTime::from_str(e, DateTimeFormat::HttpDate).ok()))
            .set_metadata((!user.is_empty()).then_some(user))
    }};
}

/// How an object's metadata travels upstream: a sealed object's as one
/// opaque value and a neutral content type, a plain one's as sent.
pub(super) struct UpstreamHeaders {
    content: ContentHeaders,
    user: HashMap<String, String>,
}

/// A plain object may not carry the name sealed metadata lives under: read
/// back, it would pass for a sealed object.
pub(super) fn check_reserved(metadata: &StoredMetadata) -> Result<(), StorageError> {
    match metadata {
        StoredMetadata::Plain(m) if m.user.contains_key(SEALED_METADATA) => Err(StorageError::Refused {
            status: 400,
            code: "InvalidArgument".into(),
            message: format!("x-amz-meta-{SEALED_METADATA} is reserved by this gateway"),
        }),
        _ => Ok(()),
    }
}

impl UpstreamHeaders {
    pub(super) fn of(metadata: &StoredMetadata) -> Self {
        match metadata {
            StoredMetadata::Plain(m) => {
                Self { content: m.content.clone(), user: m.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect() }
            }
            StoredMetadata::Sealed { blob, .. } => Self {
                content: ContentHeaders { content_type: Some("application/octet-stream".into()), ..Default::default() },
                user: HashMap::from([(SEALED_METADATA.to_owned(), blob.clone())]),
            },
        }
    }

    /// The headers of a PutObject. An `Expires` that is no HTTP date is
    /// left out, as for a multipart upload.
    fn into_header_map(self) -> HeaderMap {
        let UpstreamHeaders { content: c, user } = self;
        let mut headers = HeaderMap::new();
        let expires = c.expires.filter(|e| DateTime::from_str(e, DateTimeFormat::HttpDate).is_ok());
        let fields = [
            (CONTENT_TYPE, c.content_type),
            (CONTENT_ENCODING, c.content_encoding),
            (CONTENT_DISPOSITION, c.content_disposition),
            (CONTENT_LANGUAGE, c.content_language),
            (CACHE_CONTROL, c.cache_control),
            (EXPIRES, expires),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                set_header(&mut headers, name.as_str(), &value);
            }
        }
        for (name, value) in user {
            set_header(&mut headers, &format!("{USER_METADATA_PREFIX}{name}"), &value);
        }
        headers
    }

    pub(super) fn apply_create(self, create: CreateMultipartUploadFluentBuilder) -> CreateMultipartUploadFluentBuilder {
        with_headers!(create, self)
    }
}

/// An upstream response body read from a blocking thread.
struct BlockingBody {
    handle: tokio::runtime::Handle,
    body: Incoming,
    current: Bytes,
}

impl BlockingBody {
    fn new(body: Incoming) -> Self {
        Self { handle: tokio::runtime::Handle::current(), body, current: Bytes::new() }
    }
}

impl BlockingBody {
    /// Waits for the next bytes unless some are left; false at the end.
    fn fill(&mut self) -> std::io::Result<bool> {
        while self.current.is_empty() {
            let frame = self.handle.block_on(tokio::time::timeout(DOWNLOAD_STALL, self.body.frame()));
            match frame {
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the upstream stalled")),
                Ok(None) => return Ok(false),
                Ok(Some(Ok(frame))) => self.current = frame.into_data().unwrap_or_default(),
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e)),
            }
        }
        Ok(true)
    }
}

impl Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

impl StoredRead for BlockingBody {
    fn next_piece(&mut self, max: usize) -> std::io::Result<Bytes> {
        if !self.fill()? {
            return Ok(Bytes::new());
        }
        Ok(self.current.split_to(max.min(self.current.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(prefix: &str, delimiter: Option<&str>, after: &str) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delimiter.map(str::to_owned),
            start_after: Some(after.into()),
            max_keys: 1000,
        }
    }

    #[test]
    fn a_listing_resumed_after_a_common_prefix_skips_every_key_under_it() {
        let after = upstream_start_after(&query("", Some("/"), "b/")).unwrap();
        assert!(after.starts_with("b/") && after.len() > MAX_KEY_BYTES);
        let longest_key_under = format!("b/{}", "\u{10FFFF}".repeat((MAX_KEY_BYTES - 2) / 4));
        assert!(after.as_bytes() > longest_key_under.as_bytes() && after.as_bytes() < b"b0".as_slice());
        assert!(upstream_start_after(&query("a/", Some("/"), "a/x/y")).unwrap().starts_with("a/x/\u{10FFFF}"));
    }

    #[test]
    fn other_resumes_pass_through() {
        assert_eq!(upstream_start_after(&query("", None, "b/")).as_deref(), Some("b/"));
        assert_eq!(upstream_start_after(&query("a", Some("/"), "a0")).as_deref(), Some("a0"));
        assert_eq!(upstream_start_after(&query("x/", Some("/"), "a/b")).as_deref(), Some("a/b"));
        assert_eq!(upstream_start_after(&ListQuery::default()), None);
    }
}
