//! The sealed object format, version 2: objects stored on an upstream S3.
//! See `docs/scale-out.md`.
//!
//! Upstream there is no part table that survives re-chunking (a copy
//! between upstream buckets may use other part sizes), and listings must
//! give plaintext sizes without a request per object. So every stored
//! chunk carries a header that says where it belongs, and every chunk but
//! the object's last holds exactly 64 KiB of plaintext:
//!
//! ```text
//! stored chunk = header (26) ‖ AES-256-GCM(part key, plaintext ≤ 64 KiB) ‖ tag (16)
//! header       = version 2 (1) ‖ flags (1: last chunk of its part) ‖
//!                part number (u32 BE) ‖ index in part (u32 BE) ‖ part salt (16)
//! ```
//!
//! Chunk `g` of an object starts at `g · STRIDE` whatever its parts were,
//! and a stored size gives the plaintext size by arithmetic. Each part (a
//! single PUT is part 1) gets its own random salt, hence its own key,
//! HKDF-SHA256(data key, salt, label ‖ part number); the nonce is `last ‖
//! index` and the AAD is the header, so a chunk cannot move undetected.
//!
//! These constants are part of the stored format: never change them.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use zeroize::Zeroizing;

use super::format::{ChunkBuilder, ChunkSealer, OpenError, SegmentId};
use super::{ChunkCipher, Implementation, TAG_LEN, new_cipher};

pub const FORMAT_VERSION: u8 = 2;
pub const CHUNK_LEN: u64 = 64 << 10;
pub const HEADER_LEN: usize = 26;
/// Bytes each chunk adds to its plaintext.
pub const OVERHEAD: u64 = (HEADER_LEN + TAG_LEN) as u64;
/// Stored bytes of every chunk but an object's last.
pub const STRIDE: u64 = CHUNK_LEN + OVERHEAD;
const AAD_LABEL: &[u8] = b"sealgate/2";
const KDF_LABEL: &[u8] = b"sealgate/2 part key";
const LAST_OF_PART: u8 = 1;

/// Stored bytes of a part (or single PUT) of `plain_len` bytes.
pub fn stored_len(plain_len: u64) -> u64 {
    plain_len + plain_len.div_ceil(CHUNK_LEN).max(1) * OVERHEAD
}

/// Plaintext bytes of an object stored as `stored` bytes, if that is a
/// size the layout can produce.
pub fn plain_len(stored: u64) -> Option<u64> {
    let chunks = stored.div_ceil(STRIDE).max(1);
    let last = stored.checked_sub((chunks - 1) * STRIDE)?;
    (last >= OVERHEAD).then(|| stored - chunks * OVERHEAD)
}

/// The chunks holding plaintext `range` (an empty range: the first chunk).
pub fn chunks_covering(range: &Range<u64>) -> Range<u64> {
    super::format::chunks_covering(range)
}

/// Where chunks `chunks` lie in an object of `stored` bytes.
pub fn stored_range(stored: u64, chunks: &Range<u64>) -> Range<u64> {
    chunks.start * STRIDE..(chunks.end * STRIDE).min(stored)
}

fn part_key(data_key: &Zeroizing<[u8; 32]>, id: &SegmentId) -> Zeroizing<[u8; 32]> {
    super::format::derive_key(data_key, id, KDF_LABEL)
}

fn header(id: &SegmentId, index: u32, last: bool) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = FORMAT_VERSION;
    h[1] = if last { LAST_OF_PART } else { 0 };
    h[2..6].copy_from_slice(&id.part_number.to_be_bytes());
    h[6..10].copy_from_slice(&index.to_be_bytes());
    h[10..].copy_from_slice(&id.salt);
    h
}

fn nonce(index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3] = u8::from(last);
    n[8..].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(header: &[u8; HEADER_LEN]) -> [u8; AAD_LABEL.len() + HEADER_LEN] {
    let mut aad = [0u8; AAD_LABEL.len() + HEADER_LEN];
    aad[..AAD_LABEL.len()].copy_from_slice(AAD_LABEL);
    aad[AAD_LABEL.len()..].copy_from_slice(header);
    aad
}

/// Seals one part's plaintext stream into version-2 chunks.
pub struct PartSealer {
    cipher: Box<dyn ChunkCipher>,
    id: SegmentId,
    index: u32,
    chunks: ChunkBuilder,
}

impl PartSealer {
    pub fn new(implementation: Implementation, data_key: &Zeroizing<[u8; 32]>, id: SegmentId) -> Self {
        let cipher = new_cipher(implementation, &part_key(data_key, &id));
        Self { cipher, id, index: 0, chunks: ChunkBuilder::new(HEADER_LEN) }
    }

    /// Writes the header into the room the chunk has for it, seals the
    /// plaintext after it in place, appends the tag and queues the chunk.
    fn seal_chunk(&mut self, mut chunk: BytesMut, last: bool, out: &mut VecDeque<Bytes>) {
        let header = header(&self.id, self.index, last);
        chunk[..HEADER_LEN].copy_from_slice(&header);
        let tag = self.cipher.seal(nonce(self.index, last), &aad(&header), &mut chunk[HEADER_LEN..]);
        self.index += 1;
        chunk.extend_from_slice(&tag);
        out.push_back(chunk.freeze());
    }
}

impl ChunkSealer for PartSealer {
    fn push(&mut self, mut data: &[u8], out: &mut VecDeque<Bytes>) {
        while let Some(chunk) = self.chunks.next_full(&mut data) {
            self.seal_chunk(chunk, false, out);
        }
    }

    fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        let last = self.chunks.take_last();
        self.seal_chunk(last, true, out);
    }
}

/// Opens consecutive stored chunks of one object, whatever parts they
/// belong to. Keeps the last part key it derived.
pub struct ObjectOpener {
    implementation: Implementation,
    data_key: Zeroizing<[u8; 32]>,
    stored_size: u64,
    current: Option<(SegmentId, Box<dyn ChunkCipher>)>,
    /// Part number, index and last flag of the chunk opened before.
    previous: Option<(u32, u32, bool)>,
}

impl ObjectOpener {
    pub fn new(implementation: Implementation, data_key: &Zeroizing<[u8; 32]>, stored_size: u64) -> Self {
        Self { implementation, data_key: data_key.clone(), stored_size, current: None, previous: None }
    }

    /// Opens the chunks held in `stored`, which starts at chunk `first` of
    /// the object, and returns their plaintexts packed together. Nothing is
    /// returned unless every chunk authenticated and fits the layout.
    pub fn open_chunks(&mut self, first: u64, mut stored: BytesMut) -> Result<Bytes, OpenError> {
        let start = first * STRIDE;
        let end = start + stored.len() as u64;
        if end > self.stored_size || (end != self.stored_size && !stored.len().is_multiple_of(STRIDE as usize)) {
            return Err(OpenError::Truncated);
        }
        let (mut read, mut write, mut index) = (0usize, 0usize, first);
        while read < stored.len() {
            let chunk_len = (stored.len() - read).min(STRIDE as usize);
            if (chunk_len as u64) < OVERHEAD {
                return Err(OpenError::Truncated);
            }
            let head: [u8; HEADER_LEN] = stored[read..read + HEADER_LEN].try_into().expect("header length");
            let object_end = start + (read + chunk_len) as u64 == self.stored_size;
            let chunk = &mut stored[write..read + chunk_len];
            let result = self
                .check_order(&head, index == 0)
                .and_then(|()| self.open_one(&head, object_end, chunk_len, chunk, read - write));
            if result.is_err() {
                stored.fill(0);
                return Err(OpenError::Chunk(index));
            }
            read += chunk_len;
            write += chunk_len - OVERHEAD as usize;
            index += 1;
        }
        stored.truncate(write);
        Ok(stored.freeze())
    }

    /// Chunks follow each other: the next index of the same part, or index
    /// 0 of a later part after the last chunk of one. (A read that starts
    /// mid-object cannot check where its first chunk belongs; a whole read
    /// checks every position.)
    fn check_order(&mut self, head: &[u8; HEADER_LEN], first_of_object: bool) -> Result<(), OpenError> {
        let part = u32::from_be_bytes(head[2..6].try_into().expect("4 bytes"));
        let index = u32::from_be_bytes(head[6..10].try_into().expect("4 bytes"));
        let last = head[1] == LAST_OF_PART;
        let follows = match self.previous {
            None => !first_of_object || index == 0,
            Some((p, i, l)) => (p == part && !l && index == i.wrapping_add(1)) || (l && part > p && index == 0),
        };
        self.previous = Some((part, index, last));
        if follows { Ok(()) } else { Err(OpenError::Chunk(0)) }
    }

    /// Opens one chunk lying at `shift + …` of `buf` into the start of `buf`.
    fn open_one(
        &mut self,
        head: &[u8; HEADER_LEN],
        object_end: bool,
        chunk_len: usize,
        buf: &mut [u8],
        shift: usize,
    ) -> Result<(), OpenError> {
        let bad = || OpenError::Chunk(0);
        if head[0] != FORMAT_VERSION {
            return Err(OpenError::Version(head[0]));
        }
        let last = match head[1] {
            0 => false,
            LAST_OF_PART => true,
            _ => return Err(bad()),
        };
        // Only an object's last chunk may be short, and it ends its part.
        let full = chunk_len as u64 == STRIDE;
        if (object_end && !last) || (!full && !object_end) {
            return Err(bad());
        }
        let part_number = u32::from_be_bytes(head[2..6].try_into().expect("4 bytes"));
        let index = u32::from_be_bytes(head[6..10].try_into().expect("4 bytes"));
        let id = SegmentId { salt: head[10..].try_into().expect("16 bytes"), part_number };
        if self.current.as_ref().is_none_or(|(current, _)| *current != id) {
            let cipher = new_cipher(self.implementation, &part_key(&self.data_key, &id));
            self.current = Some((id, cipher));
        }
        let (_, cipher) = self.current.as_ref().expect("set above");
        let tag_at = shift + chunk_len - TAG_LEN;
        let tag: [u8; TAG_LEN] = buf[tag_at..tag_at + TAG_LEN].try_into().expect("16 bytes");
        let body = &mut buf[..tag_at];
        cipher.open_shifted(nonce(index, last), &aad(head), body, shift + HEADER_LEN, &tag).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_part(data: &[u8], key: &Zeroizing<[u8; 32]>, part: u32) -> Vec<u8> {
        let mut sealer = PartSealer::new(Implementation::Ring, key, SegmentId::random(part));
        let mut out = VecDeque::new();
        for piece in data.chunks(10_000) {
            sealer.push(piece, &mut out);
        }
        sealer.finish(&mut out);
        out.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    fn open(stored: &[u8], key: &Zeroizing<[u8; 32]>, range: Range<u64>) -> Result<Vec<u8>, OpenError> {
        let chunks = chunks_covering(&range);
        let at = stored_range(stored.len() as u64, &chunks);
        let mut opener = ObjectOpener::new(Implementation::Ring, key, stored.len() as u64);
        let plain = opener.open_chunks(chunks.start, BytesMut::from(&stored[at.start as usize..at.end as usize]))?;
        let from = (range.start - chunks.start * CHUNK_LEN) as usize;
        Ok(plain[from..from + (range.end - range.start) as usize].to_vec())
    }

    #[test]
    fn sizes_follow_from_the_stored_size() {
        for plain in [0u64, 1, 65_535, 65_536, 65_537, 5 << 20, (5 << 20) + 3] {
            assert_eq!(plain_len(stored_len(plain)), Some(plain), "{plain}");
        }
        assert_eq!(plain_len(10), None);
        assert_eq!(plain_len(STRIDE + 5), None);
    }

    #[test]
    fn parts_concatenate_into_one_readable_object() {
        let key = Zeroizing::new([7u8; 32]);
        let a: Vec<u8> = (0..(2 * CHUNK_LEN) as usize).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..100_000usize).map(|i| (i * 7) as u8).collect();
        let mut stored = seal_part(&a, &key, 1);
        stored.extend(seal_part(&b, &key, 2));
        let whole = [a.clone(), b.clone()].concat();
        assert_eq!(plain_len(stored.len() as u64), Some(whole.len() as u64));
        assert_eq!(open(&stored, &key, 0..whole.len() as u64).unwrap(), whole);
        assert_eq!(open(&stored, &key, 70_000..200_000).unwrap(), whole[70_000..200_000]);
    }

    #[test]
    fn tampering_truncation_and_moves_fail() {
        let key = Zeroizing::new([9u8; 32]);
        let data = vec![5u8; 200_000];
        let stored = seal_part(&data, &key, 1);
        let mut flipped = stored.clone();
        flipped[STRIDE as usize + 40] ^= 1;
        assert!(open(&flipped, &key, 0..200_000).is_err());
        // Cut at a chunk boundary: the new last chunk is not marked last.
        assert!(open(&stored[..2 * STRIDE as usize], &key, 0..2 * CHUNK_LEN).is_err());
        let mut swapped = stored.clone();
        let (first, second) = swapped.split_at_mut(STRIDE as usize);
        first.swap_with_slice(&mut second[..STRIDE as usize]);
        assert!(open(&swapped, &key, 0..200_000).is_err());
        assert!(open(&stored, &Zeroizing::new([1u8; 32]), 0..10).is_err());
    }
}
