//! GetObject and HeadObject: conditions, ranges, part numbers, and the body
//! stream assembled from the object's stored parts.

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::mpsc;

use super::conditions::Conditions;
use super::error::OrS3;
use super::metadata::{content_type, parse_http_date, user_metadata};
use super::{Gateway, quoted, timestamp};
use crate::storage::{ObjectRecord, Storage};

/// Chunks buffered between the storage reader task and the client.
const STREAM_BUFFER: usize = 4;

/// What part of an object a read returns.
struct Selection {
    range: Range<u64>,
    /// `Content-Range` when the read is partial.
    content_range: Option<String>,
    parts_count: Option<i32>,
}

fn select(object: &ObjectRecord, range: Option<&s3s::dto::Range>, part_number: Option<i32>) -> S3Result<Selection> {
    let parts_count = object.multipart.then_some(object.parts.len() as i32);
    if let Some(n) = part_number {
        if range.is_some() {
            return Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"));
        }
        let index = usize::try_from(n).ok().filter(|&i| i >= 1 && i <= object.parts.len().max(1));
        let Some(index) = index else {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("InvalidPartNumber".into()),
                "The requested partnumber is not satisfiable",
            );
            e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
            return Err(e);
        };
        let start: u64 = object.parts[..index - 1].iter().map(|p| p.size).sum();
        let size = object.parts.get(index - 1).map_or(0, |p| p.size);
        let range = start..start + size;
        let content_range = (size > 0).then(|| format!("bytes {}-{}/{}", range.start, range.end - 1, object.size));
        return Ok(Selection { range, content_range, parts_count: parts_count.or(Some(1)) });
    }
    match range {
        None => Ok(Selection { range: 0..object.size, content_range: None, parts_count }),
        Some(r) => {
            let range =
                r.check(object.size).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            let content_range = Some(format!("bytes {}-{}/{}", range.start, range.end - 1, object.size));
            Ok(Selection { range, content_range, parts_count })
        }
    }
}

/// Streams `range` of an object's content from its parts. A task reads
/// ahead a few chunks so that storage reads overlap the network send.
pub(super) fn content_stream(storage: Arc<dyn Storage>, object: &ObjectRecord, range: Range<u64>) -> StreamingBlob {
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for part in &object.parts {
        let (start, end) = (offset, offset + part.size);
        offset = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let local = range.start.max(start) - start..range.end.min(end) - start;
        pieces.push((part.segment.clone(), local));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER);
    tokio::spawn(async move {
        for (segment, local) in pieces {
            let mut stream = match storage.read_data(&segment, local).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot open stored data");
                    let _ = tx.send(Err(std::io::Error::other("stored data unavailable"))).await;
                    return;
                }
            };
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        }
    });
    StreamingBlob::wrap(ChannelStream(rx))
}

/// An mpsc receiver as a `Stream` that is also `Sync`, as s3s bodies must be.
struct ChannelStream(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures::Stream for ChannelStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl Gateway {
    async fn readable_object(&self, bucket: &str, key: &str) -> S3Result<ObjectRecord> {
        self.storage
            .get_object(bucket, key)
            .await
            .or_s3()?
            .ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))
    }

    pub(super) async fn do_get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        self.owned_bucket(&req, &input.bucket).await?;
        let object = self.readable_object(&input.bucket, &input.key).await?;
        let conditions = Conditions {
            if_match: input.if_match.clone(),
            if_none_match: input.if_none_match.clone(),
            if_modified_since: input.if_modified_since.clone(),
            if_unmodified_since: input.if_unmodified_since.clone(),
        };
        conditions.check(&object).map_err(|f| f.for_read())?;
        let selection = select(&object, input.range.as_ref(), input.part_number)?;
        let whole = selection.content_range.is_none();
        let want_checksums = whole && input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let c = if want_checksums { object.checksums.clone() } else { Default::default() };
        let meta = &object.metadata;
        let output = GetObjectOutput {
            body: Some(content_stream(self.storage.clone(), &object, selection.range.clone())),
            content_length: Some((selection.range.end - selection.range.start) as i64),
            content_range: selection.content_range,
            parts_count: selection.parts_count,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(quoted(&object.etag)),
            last_modified: Some(timestamp(object.last_modified_unix_ms)),
            content_type: content_type(meta),
            content_encoding: meta.content.content_encoding.clone(),
            content_disposition: meta.content.content_disposition.clone(),
            content_language: meta.content.content_language.clone(),
            cache_control: meta.content.cache_control.clone(),
            expires: meta.content.expires.as_deref().and_then(parse_http_date),
            metadata: user_metadata(meta),
            checksum_crc32: c.crc32,
            checksum_crc32c: c.crc32c,
            checksum_crc64nvme: c.crc64nvme,
            checksum_sha1: c.sha1,
            checksum_sha256: c.sha256,
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    pub(super) async fn do_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        self.owned_bucket(&req, &input.bucket).await?;
        let object = self.readable_object(&input.bucket, &input.key).await?;
        let conditions = Conditions {
            if_match: input.if_match.clone(),
            if_none_match: input.if_none_match.clone(),
            if_modified_since: input.if_modified_since.clone(),
            if_unmodified_since: input.if_unmodified_since.clone(),
        };
        conditions.check(&object).map_err(|f| f.for_read())?;
        let selection = select(&object, input.range.as_ref(), input.part_number)?;
        let whole = selection.content_range.is_none();
        let want_checksums = whole && input.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let c = if want_checksums { object.checksums.clone() } else { Default::default() };
        let meta = &object.metadata;
        let output = HeadObjectOutput {
            content_length: Some((selection.range.end - selection.range.start) as i64),
            content_range: selection.content_range,
            parts_count: selection.parts_count,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(quoted(&object.etag)),
            last_modified: Some(timestamp(object.last_modified_unix_ms)),
            content_type: content_type(meta),
            content_encoding: meta.content.content_encoding.clone(),
            content_disposition: meta.content.content_disposition.clone(),
            content_language: meta.content.content_language.clone(),
            cache_control: meta.content.cache_control.clone(),
            expires: meta.content.expires.as_deref().and_then(parse_http_date),
            metadata: user_metadata(meta),
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
