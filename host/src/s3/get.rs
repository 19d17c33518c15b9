//! GetObject and HeadObject: conditions, ranges, part numbers, and the body
//! stream assembled from the object's stored parts.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::mpsc;

use super::conditions::Conditions;
use super::error::OrS3;
use super::metadata::{content_type, parse_http_date, user_metadata};
use super::policy::{Ask, open_metadata};
use super::{Gateway, quoted, timestamp};
use crate::policy::Operation;
use zeroize::Zeroizing;

use crate::crypto::Implementation;
use crate::crypto::format::{self, Opener, SegmentId};
use crate::crypto::format_v2;
use crate::kms::DataKey;
use crate::metrics::Metrics;
use crate::storage::{ObjectPart, ObjectRecord, SegmentSeal, Storage, StoredReader};

/// Chunks buffered between the storage reader task and the client.
const STREAM_BUFFER: usize = 4;
/// Plaintext bytes read with one system call.
const PLAIN_READ: u64 = 256 << 10;
/// Sealed chunks read with one system call (4 × 64 KiB, as plain reads).
const SEALED_READ_BATCH: u64 = 4;

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

/// Streams `range` of an object's content from its parts, opening sealed
/// parts with `key`. A blocking task reads (and decrypts) ahead a few
/// batches so that storage reads and decryption overlap the network send.
/// The first batch is awaited here: if it fails, the client gets a 500
/// before any byte.
/// `prefetched`, when given, holds the object's stored bytes from the
/// first (see [`Storage::get_object_to_read`]); it serves a read of all of
/// a one-part object (see [`Source`]) and is dropped otherwise.
pub(super) async fn content_stream(
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    object: &ObjectRecord,
    range: Range<u64>,
    key: Option<&DataKey>,
    prefetched: Option<StoredReader>,
) -> S3Result<StreamingBlob> {
    let mut prefetched = prefetched.filter(|_| object.parts.len() == 1);
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for part in &object.parts {
        let (start, end) = (offset, offset + part.size);
        offset = end;
        if end <= range.start || start >= range.end {
            continue;
        }
        let local = range.start.max(start) - start..range.end.min(end) - start;
        pieces.push((part.clone(), local));
    }
    let key = key.map(|k| k.plaintext.clone());
    let self_describing = object.sealing.as_ref().is_some_and(|s| s.format == format_v2::FORMAT_VERSION);
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER);
    tokio::spawn(async move {
        for (part, local) in pieces {
            // Both kinds of part are read on a blocking thread with one
            // system call per ~256 KiB straight into the buffer that is sent
            // (decrypted in place first when sealed): the two paths differ
            // by the cipher only.
            let (reader_storage, reader_key, reader_tx, reader_part, source) =
                (storage.clone(), key.clone(), tx.clone(), part.clone(), prefetched.take());
            let result = tokio::task::spawn_blocking(move || {
                let (storage, part, tx) = (reader_storage.as_ref(), &reader_part, &reader_tx);
                let source = Source { storage, prefetched: source };
                match (&part.seal, &reader_key) {
                    (_, Some(key)) if self_describing => read_sealed_v2(source, part, key, local, tx),
                    (None, _) if self_describing => Err(ReadError::Open("sealed object without a key".into())),
                    (None, _) => read_plain(source, part, local, tx),
                    (Some(seal), Some(key)) => read_sealed(storage, part, seal, key, local, tx),
                    (Some(_), None) => Err(ReadError::Open("sealed part without a key".into())),
                }
            })
            .await
            .unwrap_or_else(|e| Err(ReadError::Storage(format!("reader task failed: {e}"))));
            match result {
                Ok(()) => {}
                Err(ReadError::ClientGone) => return,
                Err(e) => {
                    if matches!(e, ReadError::Open(_)) {
                        metrics.decrypt_failed();
                    }
                    tracing::error!(error = %e, data_id = %part.segment.data_id, "reading stored data failed");
                    let _ = tx.send(Err(std::io::Error::other("stored data could not be read"))).await;
                    return;
                }
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(first)) => Some(first),
        Some(Err(_)) => return Err(s3_error!(InternalError, "We encountered an internal error. Please try again.")),
        None => None,
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(StreamingBlob::wrap(futures::stream::iter(first.map(Ok)).chain(rest)))
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the client went away")]
    ClientGone,
    #[error("storage: {0}")]
    Storage(String),
    #[error("sealed data did not open: {0}")]
    Open(String),
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

fn send(tx: &Sender, data: Bytes) -> Result<(), ReadError> {
    tx.blocking_send(Ok(data)).map_err(|_| ReadError::ClientGone)
}

/// The file's length was checked on open, so a short read means tampering.
fn read_failed(e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadError::Open("stored data ends early".into()),
        _ => ReadError::Storage(e.to_string()),
    }
}

/// The next `len` bytes of `reader` in a new buffer. `read_to_end` reads
/// into the spare capacity, so the buffer is not zeroed first.
fn read_buffer(reader: &mut dyn std::io::Read, len: usize) -> Result<BytesMut, ReadError> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf).map_err(read_failed)?;
    if buf.len() != len {
        return Err(read_failed(std::io::ErrorKind::UnexpectedEof.into()));
    }
    // Vec → Bytes → BytesMut takes the allocation over, no copy.
    Ok(Bytes::from(buf).try_into_mut().expect("a fresh buffer has one owner"))
}

/// Where a reader's stored bytes come from: the storage, or the answer
/// that already brought them (only ever for the whole part).
struct Source<'a> {
    storage: &'a dyn Storage,
    prefetched: Option<StoredReader>,
}

impl Source<'_> {
    fn open(self, part: &ObjectPart, stored: Range<u64>) -> Result<StoredReader, ReadError> {
        match self.prefetched {
            Some(reader) if stored == (0..part.segment.stored_size) => Ok(reader),
            _ => self.storage.read_data(&part.segment, stored).map_err(|e| ReadError::Storage(e.to_string())),
        }
    }
}

/// Reads `local` of a plaintext part, at most `PLAIN_READ` bytes at a
/// time (as they arrived, from an upstream).
/// Runs on a blocking thread.
fn read_plain(source: Source<'_>, part: &ObjectPart, local: Range<u64>, tx: &Sender) -> Result<(), ReadError> {
    let mut reader = source.open(part, local.clone())?;
    let mut left = local.end - local.start;
    while left > 0 {
        let piece = reader.next_piece(left.min(PLAIN_READ) as usize).map_err(read_failed)?;
        if piece.is_empty() {
            return Err(read_failed(std::io::ErrorKind::UnexpectedEof.into()));
        }
        left -= piece.len() as u64;
        send(tx, piece)?;
    }
    Ok(())
}

/// Reads the sealed chunks covering `local`, opens each and sends the
/// requested slice. Nothing of a chunk is sent unless it authenticated.
///
/// Runs on a blocking thread: stored chunks are read straight into the
/// buffer they are decrypted in (no copy), and decryption runs beside the
/// runtime thread that writes to the socket.
fn read_sealed(
    storage: &dyn Storage,
    part: &ObjectPart,
    seal: &SegmentSeal,
    key: &Zeroizing<[u8; 32]>,
    local: Range<u64>,
    tx: &Sender,
) -> Result<(), ReadError> {
    use std::io::Read;
    if part.segment.stored_size != format::stored_len(part.size) {
        return Err(ReadError::Open("stored size does not match the sealed layout".into()));
    }
    let salt: [u8; 16] = seal.salt.as_slice().try_into().map_err(|_| ReadError::Open("bad salt".into()))?;
    let opener =
        Opener::new(Implementation::DEFAULT, key, SegmentId { salt, part_number: seal.part_number }, part.size);
    let chunks = format::chunks_covering(&local);
    let stored = format::stored_range(part.size, &chunks);
    let with_header = chunks.start == 0;
    let read_from = if with_header { stored.start - format::HEADER_LEN } else { stored.start };
    let mut reader =
        storage.read_data(&part.segment, read_from..stored.end).map_err(|e| ReadError::Storage(e.to_string()))?;
    if with_header {
        let mut version = [0u8; 1];
        reader.read_exact(&mut version).map_err(read_failed)?;
        Opener::check_version(version[0]).map_err(|e| ReadError::Open(e.to_string()))?;
    }
    send_in_batches(chunks, &local, tx, |batch| {
        let stored_batch = read_buffer(&mut reader, batch.clone().map(|i| opener.stored_chunk_len(i)).sum())?;
        opener.open_chunks(batch, stored_batch).map_err(|e| ReadError::Open(e.to_string()))
    })
}

/// Opens `chunks` (64 KiB of plaintext each, either format) a batch at a
/// time with `open_batch` and sends the slice of each batch that `local`
/// wants.
fn send_in_batches(
    chunks: Range<u64>,
    local: &Range<u64>,
    tx: &Sender,
    mut open_batch: impl FnMut(Range<u64>) -> Result<Bytes, ReadError>,
) -> Result<(), ReadError> {
    let mut index = chunks.start;
    while index < chunks.end {
        let batch = index..chunks.end.min(index + SEALED_READ_BATCH);
        let plain = open_batch(batch.clone())?;
        let batch_start = batch.start * format::CHUNK_LEN;
        let from = local.start.saturating_sub(batch_start) as usize;
        let to = ((local.end - batch_start) as usize).min(plain.len());
        if from < to {
            send(tx, plain.slice(from..to))?;
        }
        index = batch.end;
    }
    Ok(())
}

/// As [`read_sealed`], for an object stored upstream in format 2, whose
/// chunks say which part they belong to (one stored segment per object).
fn read_sealed_v2(
    source: Source<'_>,
    part: &ObjectPart,
    key: &Zeroizing<[u8; 32]>,
    local: Range<u64>,
    tx: &Sender,
) -> Result<(), ReadError> {
    let stored_size = part.segment.stored_size;
    if format_v2::plain_len(stored_size) != Some(part.size) {
        return Err(ReadError::Open("stored size does not match the sealed layout".into()));
    }
    let chunks = format_v2::chunks_covering(&local);
    let stored = format_v2::stored_range(stored_size, &chunks);
    let mut reader = source.open(part, stored.clone())?;
    let mut opener = format_v2::ObjectOpener::new(Implementation::DEFAULT, key, stored_size);
    send_in_batches(chunks, &local, tx, |batch| {
        let batch_stored = format_v2::stored_range(stored_size, &batch);
        let buf = read_buffer(&mut reader, (batch_stored.end - batch_stored.start) as usize)?;
        opener.open_chunks(batch.start, buf).map_err(|e| ReadError::Open(e.to_string()))
    })
}

/// What of the object a GET or HEAD returns, conditions checked.
fn read_view(
    object: &ObjectRecord,
    conditions: Conditions,
    range: Option<&s3s::dto::Range>,
    part_number: Option<i32>,
    checksum_mode: Option<&ChecksumMode>,
) -> S3Result<ObjectView> {
    conditions.check(object).map_err(|f| f.for_read())?;
    let selection = select(object, range, part_number)?;
    let whole = selection.content_range.is_none();
    let wanted = whole && checksum_mode.is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
    let checksums = if wanted { object.checksums.clone() } else { Default::default() };
    Ok(ObjectView { selection, checksums })
}

/// The response fields GET and HEAD share.
struct ObjectView {
    selection: Selection,
    checksums: crate::storage::Checksums,
}

/// Fills the fields GET and HEAD outputs share (their types differ, the names do not).
macro_rules! object_output {
    ($out:ty, $object:expr, $view:expr) => {{
        let object = $object;
        let view = $view;
        let meta = &object.metadata;
        let c = view.checksums;
        <$out>::default_with(|o: &mut $out| {
            o.content_length = Some((view.selection.range.end - view.selection.range.start) as i64);
            o.content_range = view.selection.content_range;
            o.parts_count = view.selection.parts_count;
            o.accept_ranges = Some("bytes".into());
            o.e_tag = Some(quoted(&object.etag));
            o.last_modified = Some(timestamp(object.last_modified_unix_ms));
            o.content_type = content_type(meta);
            o.content_encoding = meta.content.content_encoding.clone();
            o.content_disposition = meta.content.content_disposition.clone();
            o.content_language = meta.content.content_language.clone();
            o.cache_control = meta.content.cache_control.clone();
            o.expires = meta.content.expires.as_deref().and_then(parse_http_date);
            o.metadata = user_metadata(meta);
            o.checksum_crc32 = c.crc32;
            o.checksum_crc32c = c.crc32c;
            o.checksum_crc64nvme = c.crc64nvme;
            o.checksum_sha1 = c.sha1;
            o.checksum_sha256 = c.sha256;
        })
    }};
}

/// GET and HEAD find, check and ask about the object the same way (their
/// input types differ, the field names do not): the object, what of it to
/// return, and the guest's decision.
macro_rules! read_object {
    ($gateway:expr, $req:expr, $operation:expr) => {{
        let input = &$req.input;
        let bucket = $gateway.owned_bucket_for_read(&$req, &input.bucket).await?;
        let conditions = Conditions {
            if_match: input.if_match.clone(),
            if_none_match: input.if_none_match.clone(),
            if_modified_since: input.if_modified_since.clone(),
            if_unmodified_since: input.if_unmodified_since.clone(),
        };
        let range = input.range.as_ref();
        let whole_get = $operation == Operation::GetObject && range.is_none() && input.part_number.is_none();
        let (mut object, prefetched) = $gateway.find_object(&input.bucket, &input.key, whole_get).await?;
        let view = read_view(&object, conditions, range, input.part_number, input.checksum_mode.as_ref())?;
        // Metadata sealed upstream needs the data key even for a HEAD: the
        // rules decide it as the read it is.
        let operation = if object.sealed_metadata.is_some() { Operation::GetObject } else { $operation };
        let mut ask = Ask::new(operation, &input.bucket, Some(&input.key), &$req.headers);
        ask.bucket_state = Some(&bucket.encryption);
        ask.target = object.sealing.as_ref();
        let allowed = $gateway.consult(ask).await?;
        open_metadata(&mut object, allowed.open_with.as_ref())?;
        (object, view, allowed, prefetched)
    }};
}

trait DefaultWith: Default {
    fn default_with(f: impl FnOnce(&mut Self)) -> Self {
        let mut value = Self::default();
        f(&mut value);
        value
    }
}

impl DefaultWith for GetObjectOutput {}
impl DefaultWith for HeadObjectOutput {}

impl Gateway {
    /// The object, and for a GET of all of it, its stored bytes if they come
    /// in the same answer (see [`Storage::get_object_to_read`]).
    async fn find_object(
        &self,
        bucket: &str,
        key: &str,
        whole_get: bool,
    ) -> S3Result<(ObjectRecord, Option<StoredReader>)> {
        let found = if whole_get {
            self.storage.get_object_to_read(bucket, key).await.or_s3()?
        } else {
            self.storage.get_object(bucket, key).await.or_s3()?.map(|object| (object, None))
        };
        found.ok_or_else(|| s3_error!(NoSuchKey, "The specified key does not exist."))
    }

    pub(super) async fn do_get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let (object, view, allowed, prefetched) = read_object!(self, req, Operation::GetObject);
        let range = view.selection.range.clone();
        let key = allowed.open_with.as_ref();
        let (storage, metrics) = (self.storage.clone(), self.metrics.clone());
        let body = content_stream(storage, metrics, &object, range, key, prefetched).await?;
        let mut output = object_output!(GetObjectOutput, &object, view);
        output.body = Some(body);
        let mut response = S3Response::new(output);
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }

    pub(super) async fn do_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (object, view, allowed, _) = read_object!(self, req, Operation::HeadObject);
        let mut response = S3Response::new(object_output!(HeadObjectOutput, &object, view));
        response.headers.extend(allowed.response_headers);
        Ok(response)
    }
}
