//! Tuning of glibc's allocator for the data path.
//!
//! A PUT moves its body through buffers of a few hundred KiB (hyper's reads,
//! sealed chunks) that are allocated on one thread and freed on another.
//! With glibc's defaults those buffers kept coming back as fresh pages: a
//! 256 MiB sealed PUT took ~26,000 minor page faults (about 100 MiB of pages
//! zeroed and mapped again), 7–8 % of the gateway's CPU. Keeping buffers up
//! to 4 MiB on the heap and trimming freed heap memory only beyond 32 MiB
//! brought that to ~300 faults and the PUT up 5–8 %, with peak RSS
//! unchanged within a few MiB (measured with the release binary and curl,
//! see BENCHMARKS.md).

/// Below this size, allocations come from the heap rather than their own
/// `mmap` (which is unmapped on free and faulted in again next time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 4 << 20;
/// Freed memory at the top of a heap is returned to the kernel only beyond this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 32 << 20;

/// Applies the settings above; call once, early in `main`. Hand-written
/// with `libc` because no crate wraps `mallopt(3)`; elsewhere than glibc it
/// does nothing.
pub fn tune_for_streaming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's tunables (integers); it is
    // safe to call at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
