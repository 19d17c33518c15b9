//! Writing one data file from a body stream, on the blocking thread that
//! calls it: the stream is polled right there (sealing happens inside that
//! poll), each batch of ready chunks goes to the file in one `writev`, and
//! writeback is started every few MiB so that the closing fsync has little
//! left to wait for. No second buffer, no thread hop per write.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::{ByteStream, StorageError};

/// Dirty data handed to the kernel for writeback at a time.
const WRITEBACK_WINDOW: u64 = 8 << 20;
/// Most bytes gathered into one `writev`.
const BATCH_BYTES: usize = 1 << 20;
/// Most chunks gathered into one `writev` (below the kernel's IOV_MAX).
const BATCH_CHUNKS: usize = 64;

/// Creates `path` (it must not exist), writes the whole body into it and
/// makes it durable. Returns the number of bytes written. On error the
/// file may be left behind: the caller owns its removal.
pub fn write_new_file(path: &Path, mut body: ByteStream) -> Result<u64, StorageError> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    let (mut written, mut handed_over) = (0u64, 0u64);
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH_CHUNKS);
    loop {
        // Wait for one chunk, then take whatever else is already there.
        let Some(first) = futures::executor::block_on(body.next()) else { break };
        batch.push(first.map_err(StorageError::Body)?);
        let mut batch_bytes = batch[0].len();
        while batch.len() < BATCH_CHUNKS && batch_bytes < BATCH_BYTES {
            match body.next().now_or_never() {
                Some(Some(chunk)) => {
                    let chunk = chunk.map_err(StorageError::Body)?;
                    batch_bytes += chunk.len();
                    batch.push(chunk);
                }
                // The end is seen again by the blocking wait above.
                Some(None) | None => break,
            }
        }
        write_all_chunks(&mut file, &batch)?;
        batch.clear();
        written += batch_bytes as u64;
        if written - handed_over >= WRITEBACK_WINDOW {
            start_writeback(&file, handed_over, written - handed_over);
            handed_over = written;
        }
    }
    file.sync_all()?;
    Ok(written)
}

fn write_all_chunks(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk,
/// without waiting. Only a hint: the closing fsync is what makes the file
/// durable, so a failure here is ignored.
///
/// Hand-written with `libc` because neither std nor rustix offers
/// `sync_file_range(2)`; the call only reads its integer arguments.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: the descriptor is open for the duration of the call (borrowed
    // from `file`) and the call takes no pointers.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}
