//! The sealed segment format, version 1. See `docs/format.md`.
//!
//! A segment (a single PUT's data, or one part of a multipart upload) is
//! `version (1 byte) ‖ chunk 0 ‖ chunk 1 ‖ …`, each chunk the AES-256-GCM
//! sealing of up to 64 KiB of plaintext with its 16-byte tag. An empty
//! segment still has one (empty) chunk, so it cannot be truncated to nothing.
//!
//! Every segment has its own key, derived with HKDF-SHA256 from the
//! object's (or upload's) data key, a random 16-byte salt and the part
//! number. Chunk `i`'s nonce is `final flag ‖ i` and its AAD binds the
//! format version, salt, part number, index and final flag, so reordered,
//! dropped, duplicated, truncated, extended or spliced chunks all fail.
//!
//! These constants are part of the stored format: never change them; a new
//! layout gets a new version byte.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use zeroize::Zeroizing;

use super::{ChunkCipher, Implementation, TAG_LEN, new_cipher};

pub const FORMAT_VERSION: u8 = 1;
pub const CHUNK_LEN: u64 = 64 << 10;
pub const HEADER_LEN: u64 = 1;
const STORED_CHUNK_LEN: u64 = CHUNK_LEN + TAG_LEN as u64;
const AAD_LABEL: &[u8] = b"sealgate/1";
const KDF_LABEL: &[u8] = b"sealgate/1 segment key";

/// What, besides the data key, a segment's key and chunks are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentId {
    pub salt: [u8; 16],
    pub part_number: u32,
}

impl SegmentId {
    pub fn random(part_number: u32) -> Self {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        Self { salt, part_number }
    }
}

/// HKDF-SHA256(data key, salt, label ‖ part number).
pub fn segment_key(data_key: &Zeroizing<[u8; 32]>, id: &SegmentId) -> Zeroizing<[u8; 32]> {
    derive_key(data_key, id, KDF_LABEL)
}

/// HKDF-SHA256(data key, salt, `label` ‖ part number): the key of one
/// segment (or, in format 2, one part).
pub(super) fn derive_key(data_key: &Zeroizing<[u8; 32]>, id: &SegmentId, label: &[u8]) -> Zeroizing<[u8; 32]> {
    use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
    struct Len32;
    impl KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let part = id.part_number.to_be_bytes();
    let info = [label, &part[..]];
    let prk = Salt::new(HKDF_SHA256, &id.salt).extract(data_key.as_slice());
    let okm = prk.expand(&info, Len32).expect("32 bytes is a valid HKDF length");
    let mut key = Zeroizing::new([0u8; 32]);
    okm.fill(key.as_mut_slice()).expect("length matches");
    key
}

/// Chunks in a segment of `plain_len` bytes (at least one).
pub fn chunk_count(plain_len: u64) -> u64 {
    plain_len.div_ceil(CHUNK_LEN).max(1)
}

/// Bytes stored for `plain_len` bytes of plaintext.
pub fn stored_len(plain_len: u64) -> u64 {
    HEADER_LEN + plain_len + chunk_count(plain_len) * TAG_LEN as u64
}

/// Plaintext bytes in chunk `index`.
pub fn chunk_plain_len(plain_len: u64, index: u64) -> u64 {
    plain_len.saturating_sub(index * CHUNK_LEN).min(CHUNK_LEN)
}

/// The chunks that hold plaintext `range` (non-empty, within the segment);
/// an empty range maps to the first chunk, which must still authenticate.
pub fn chunks_covering(range: &Range<u64>) -> Range<u64> {
    if range.is_empty() {
        return 0..1;
    }
    range.start / CHUNK_LEN..(range.end - 1) / CHUNK_LEN + 1
}

/// Where chunks `chunks` sit in the stored segment.
pub fn stored_range(plain_len: u64, chunks: &Range<u64>) -> Range<u64> {
    let start = HEADER_LEN + chunks.start * STORED_CHUNK_LEN;
    let end =
        HEADER_LEN + (chunks.end - 1) * STORED_CHUNK_LEN + chunk_plain_len(plain_len, chunks.end - 1) + TAG_LEN as u64;
    start..end
}

fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3] = u8::from(last);
    n[4..].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(id: &SegmentId, index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 16 + 4 + 8 + 1);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&id.salt);
    aad.extend_from_slice(&id.part_number.to_be_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

/// Turns plaintext into stored chunks, whatever the format.
pub trait ChunkSealer: Send + Sync {
    /// Takes plaintext; queues whatever is ready to store.
    fn push(&mut self, data: &[u8], out: &mut VecDeque<Bytes>);
    /// Seals the last chunk.
    fn finish(&mut self, out: &mut VecDeque<Bytes>);
}

/// Gathers plaintext into chunk buffers that already have room for what
/// sealing adds (`header_len` bytes before, the tag after), so that a chunk
/// is sealed in place and leaves as one buffer: one copy of the plaintext,
/// one allocation per chunk.
pub struct ChunkBuilder {
    header_len: usize,
    building: BytesMut,
}

impl ChunkBuilder {
    pub fn new(header_len: usize) -> Self {
        Self { header_len, building: BytesMut::new() }
    }

    /// Takes from `data` what fits into the chunk being built. Returns that
    /// chunk (header room, plaintext) once it is full and more plaintext
    /// follows it, i.e. once it is known not to be the last.
    pub fn next_full(&mut self, data: &mut &[u8]) -> Option<BytesMut> {
        let full = self.header_len + CHUNK_LEN as usize;
        while !data.is_empty() {
            self.start_chunk(CHUNK_LEN as usize);
            if self.building.len() == full {
                return Some(std::mem::take(&mut self.building));
            }
            let take = (full - self.building.len()).min(data.len());
            self.building.extend_from_slice(&data[..take]);
            *data = &data[take..];
        }
        None
    }

    /// The last chunk (possibly empty of plaintext).
    pub fn take_last(&mut self) -> BytesMut {
        self.start_chunk(0);
        std::mem::take(&mut self.building)
    }

    /// Starts a chunk buffer (header room, then room for `plaintext` bytes
    /// and the tag) unless one is being built.
    fn start_chunk(&mut self, plaintext: usize) {
        if self.building.capacity() == 0 {
            self.building = BytesMut::with_capacity(self.header_len + plaintext + TAG_LEN);
            self.building.resize(self.header_len, 0);
        }
    }
}

/// Seals a plaintext stream chunk by chunk. A full chunk is only sealed
/// once more data follows it, because the last chunk is marked as such.
pub struct Sealer {
    cipher: Box<dyn ChunkCipher>,
    id: SegmentId,
    index: u64,
    chunks: ChunkBuilder,
    started: bool,
}

impl Sealer {
    pub fn new(implementation: Implementation, data_key: &Zeroizing<[u8; 32]>, id: SegmentId) -> Self {
        let cipher = new_cipher(implementation, &segment_key(data_key, &id));
        Self { cipher, id, index: 0, chunks: ChunkBuilder::new(0), started: false }
    }

    /// Seals `chunk` in place, appends its tag and queues it.
    fn seal_chunk(&mut self, mut chunk: BytesMut, last: bool, out: &mut VecDeque<Bytes>) {
        let tag = self.cipher.seal(nonce(self.index, last), &aad(&self.id, self.index, last), &mut chunk);
        self.index += 1;
        chunk.extend_from_slice(&tag);
        out.push_back(chunk.freeze());
    }
}

impl ChunkSealer for Sealer {
    fn push(&mut self, mut data: &[u8], out: &mut VecDeque<Bytes>) {
        if !self.started {
            self.started = true;
            out.push_back(Bytes::from_static(&[FORMAT_VERSION]));
        }
        while let Some(chunk) = self.chunks.next_full(&mut data) {
            self.seal_chunk(chunk, false, out);
        }
    }

    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        self.push(&[], out);
        let last = self.chunks.take_last();
        self.seal_chunk(last, true, out);
    }
}

/// A plaintext stream in, the sealed segment out.
pub struct SealingStream<S> {
    inner: S,
    sealer: Box<dyn ChunkSealer>,
    ready: VecDeque<Bytes>,
    finished: bool,
}

impl<S> SealingStream<S> {
    pub fn new(inner: S, sealer: Box<dyn ChunkSealer>) -> Self {
        Self { inner, sealer, ready: VecDeque::new(), finished: false }
    }
}

impl<S> Stream for SealingStream<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(ready) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(ready)));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(data))) => this.sealer.push(&data, &mut this.ready),
                Poll::Ready(None) => {
                    this.finished = true;
                    this.sealer.finish(&mut this.ready);
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("sealed chunk {0} failed authentication")]
    Chunk(u64),
    #[error("sealed segment has an unknown format version {0}")]
    Version(u8),
    #[error("sealed segment ends early")]
    Truncated,
}

/// Opens the chunks of one segment that a read needs.
pub struct Opener {
    cipher: Box<dyn ChunkCipher>,
    id: SegmentId,
    plain_len: u64,
}

impl Opener {
    pub fn new(implementation: Implementation, data_key: &Zeroizing<[u8; 32]>, id: SegmentId, plain_len: u64) -> Self {
        Self { cipher: new_cipher(implementation, &segment_key(data_key, &id)), id, plain_len }
    }

    /// Stored length of chunk `index`.
    pub fn stored_chunk_len(&self, index: u64) -> usize {
        (chunk_plain_len(self.plain_len, index) + TAG_LEN as u64) as usize
    }

    /// Opens the consecutive stored chunks `indices` held in `stored` (as
    /// they lie on disk) and returns their plaintexts packed together, tags
    /// dropped, decrypted in place. Nothing is returned unless every chunk
    /// authenticated.
    pub fn open_chunks(&self, indices: Range<u64>, mut stored: BytesMut) -> Result<Bytes, OpenError> {
        if stored.len() != indices.clone().map(|i| self.stored_chunk_len(i)).sum::<usize>() {
            return Err(OpenError::Truncated);
        }
        let (mut read, mut write) = (0, 0);
        for index in indices {
            let last = index + 1 == chunk_count(self.plain_len);
            let plain_len = self.stored_chunk_len(index) - TAG_LEN;
            let tag_at = read + plain_len;
            let tag: [u8; TAG_LEN] = stored[tag_at..tag_at + TAG_LEN].try_into().expect("16 bytes");
            let opened = self.cipher.open_shifted(
                nonce(index, last),
                &aad(&self.id, index, last),
                &mut stored[write..tag_at],
                read - write,
                &tag,
            );
            if opened.is_err() {
                stored.fill(0);
                return Err(OpenError::Chunk(index));
            }
            read = tag_at + TAG_LEN;
            write += plain_len;
        }
        stored.truncate(write);
        Ok(stored.freeze())
    }

    pub fn check_version(byte: u8) -> Result<(), OpenError> {
        if byte == FORMAT_VERSION { Ok(()) } else { Err(OpenError::Version(byte)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal_all(data: &[u8], key: &Zeroizing<[u8; 32]>, id: SegmentId, pieces: usize) -> Vec<u8> {
        let mut sealer = Sealer::new(Implementation::Ring, key, id);
        let mut out = VecDeque::new();
        for piece in data.chunks(pieces.max(1)) {
            sealer.push(piece, &mut out);
        }
        sealer.finish(&mut out);
        out.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    /// Opens a whole segment with both implementations, in batches of
    /// different sizes (ring packs chunks in the decrypting pass, RustCrypto
    /// by the trait's default move); both must agree.
    fn open_all(stored: &[u8], key: &Zeroizing<[u8; 32]>, id: SegmentId, plain_len: u64) -> Result<Vec<u8>, OpenError> {
        let ring = open_all_with(Implementation::Ring, 4, stored, key, id, plain_len);
        let rust = open_all_with(Implementation::RustCrypto, 3, stored, key, id, plain_len);
        match (&ring, &rust) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            _ => panic!("the implementations disagree: ring {:?}, RustCrypto {:?}", ring.is_ok(), rust.is_ok()),
        }
        ring
    }

    fn open_all_with(
        implementation: Implementation,
        batch: u64,
        stored: &[u8],
        key: &Zeroizing<[u8; 32]>,
        id: SegmentId,
        plain_len: u64,
    ) -> Result<Vec<u8>, OpenError> {
        Opener::check_version(*stored.first().ok_or(OpenError::Truncated)?)?;
        let opener = Opener::new(implementation, key, id, plain_len);
        let (mut plain, mut offset, mut index) = (Vec::new(), HEADER_LEN as usize, 0);
        while index < chunk_count(plain_len) {
            let indices = index..(index + batch).min(chunk_count(plain_len));
            let len: usize = indices.clone().map(|i| opener.stored_chunk_len(i)).sum();
            let buf = BytesMut::from(stored.get(offset..offset + len).ok_or(OpenError::Truncated)?);
            plain.extend(opener.open_chunks(indices.clone(), buf)?);
            (offset, index) = (offset + len, indices.end);
        }
        if offset != stored.len() {
            return Err(OpenError::Truncated);
        }
        Ok(plain)
    }

    proptest! {
        #[test]
        fn layout_arithmetic_matches_what_the_sealer_writes(len in 0usize..300_000, piece in 1usize..100_000) {
            let key = Zeroizing::new([3u8; 32]);
            let id = SegmentId { salt: [5; 16], part_number: 2 };
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let stored = seal_all(&data, &key, id, piece);
            prop_assert_eq!(stored.len() as u64, stored_len(len as u64));
            prop_assert_eq!(open_all(&stored, &key, id, len as u64).unwrap(), data);
        }

        #[test]
        fn covering_chunks_contain_the_range(len in 1u64..1_000_000, a in 0u64..1_000_000, b in 0u64..1_000_000) {
            let (start, end) = (a.min(b) % len, (a.max(b) % len) + 1);
            prop_assume!(start < end);
            let chunks = chunks_covering(&(start..end));
            prop_assert!(chunks.start * CHUNK_LEN <= start);
            prop_assert!(chunks.end * CHUNK_LEN >= end);
            prop_assert!((chunks.end - 1) * CHUNK_LEN < end, "no extra chunk at the end");
            prop_assert!(chunks.end <= chunk_count(len));
            let stored = stored_range(len, &chunks);
            let expected: u64 = chunks.clone().map(|i| chunk_plain_len(len, i) + TAG_LEN as u64).sum();
            prop_assert_eq!(stored.end - stored.start, expected);
            prop_assert!(stored.end <= stored_len(len));
        }
    }

    #[test]
    fn every_tampering_fails() {
        let key = Zeroizing::new([9u8; 32]);
        let id = SegmentId { salt: [1; 16], part_number: 1 };
        let len = 3 * CHUNK_LEN as usize + 100;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let stored = seal_all(&data, &key, id, 10_000);
        let c = STORED_CHUNK_LEN as usize;
        let h = HEADER_LEN as usize;
        let chunk = |i: usize| stored[h + i * c..(h + (i + 1) * c).min(stored.len())].to_vec();
        let with_chunks = |order: &[usize]| {
            let mut s = stored[..h].to_vec();
            for &i in order {
                s.extend(chunk(i));
            }
            s
        };
        // reordered, dropped, duplicated
        assert!(open_all(&with_chunks(&[1, 0, 2, 3]), &key, id, len as u64).is_err());
        assert!(open_all(&with_chunks(&[0, 2, 3]), &key, id, len as u64 - CHUNK_LEN).is_err());
        assert!(open_all(&with_chunks(&[0, 0, 2, 3]), &key, id, len as u64).is_err());
        // truncated to a chunk boundary, claiming the shorter length
        assert!(open_all(&with_chunks(&[0, 1, 2]), &key, id, 3 * CHUNK_LEN).is_err());
        // extended past the last chunk
        let mut extended = stored.clone();
        extended.extend(chunk(1));
        assert!(open_all(&extended, &key, id, len as u64).is_err());
        // spliced from another part of the same object, and from another object
        let other_part = seal_all(&data, &key, SegmentId { part_number: 2, ..id }, 10_000);
        let mut spliced = stored.clone();
        spliced[h + c..h + 2 * c].copy_from_slice(&other_part[h + c..h + 2 * c]);
        assert!(open_all(&spliced, &key, id, len as u64).is_err());
        let other_object = seal_all(&data, &key, SegmentId::random(1), 10_000);
        let mut spliced = stored.clone();
        spliced[h..h + c].copy_from_slice(&other_object[h..h + c]);
        assert!(open_all(&spliced, &key, id, len as u64).is_err());
        // a flipped bit, and an unknown version
        let mut flipped = stored.clone();
        flipped[h + 5] ^= 0x80;
        assert!(open_all(&flipped, &key, id, len as u64).is_err());
        let mut version = stored.clone();
        version[0] = 2;
        assert!(open_all(&version, &key, id, len as u64).is_err());
        // and the untouched segment opens
        assert_eq!(open_all(&stored, &key, id, len as u64).unwrap(), data);
    }

    #[test]
    fn empty_segments_still_authenticate() {
        let key = Zeroizing::new([2u8; 32]);
        let id = SegmentId { salt: [0; 16], part_number: 1 };
        let stored = seal_all(&[], &key, id, 1);
        assert_eq!(stored.len(), 1 + TAG_LEN);
        assert_eq!(open_all(&stored, &key, id, 0).unwrap(), Vec::<u8>::new());
        assert!(open_all(&stored[..1], &key, id, 0).is_err());
    }
}
