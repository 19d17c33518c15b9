//! The runtime a `no_std` component needs and std would otherwise provide.

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

// `core` leaves memcmp/memcpy/memset to the C library; wasi-libc's (from the
// target's self-contained directory) provides them without importing WASI.
// `-bundle`: found when the module's cdylib is linked, not bundled into
// this rlib (rustc does not search the self-contained directory for rlibs).
#[cfg(target_arch = "wasm32")]
#[link(name = "c", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}

/// The canonical ABI's allocator export. On wasm32-wasip2 it normally comes
/// from std (wit-bindgen only ships one for p1); modules are `no_std`, so the
/// SDK provides it on top of the global allocator.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(old_ptr: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI passes a power-of-two alignment and, for a
    // non-zero old length, a pointer this allocator returned with that layout.
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

/// A panic is a trap: the host turns it into 500 InternalError for that
/// request, and nothing is written.
#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
