//! The thin wrapper that exports the rules of `sealgate-policy` as a
//! `sealgate:policy@1.0.0` component. It converts WIT types to the rules'
//! types and back; the rules themselves live in the library crate.
//!
//! `no_std`: the module imports nothing but the host's `kms` and `log`
//! interfaces, no WASI at all.

#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};

use sealgate_policy as rules;

wit_bindgen::generate!({
    world: "policy",
    path: "../../wit",
});

use sealgate::policy::kms::{self, DataKey};
use sealgate::policy::types::{self, BucketState, Effects, Operation, S3Error, Sealed};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

// `core` leaves memcmp/memcpy/memset to the C library; wasi-libc's (from the
// target's self-contained directory) provides them without importing WASI.
#[cfg(target_arch = "wasm32")]
#[link(name = "c", kind = "static")]
unsafe extern "C" {}

/// The canonical ABI's allocator export. On wasm32-wasip2 it normally comes
/// from std (wit-bindgen only ships one for p1); this module is `no_std`, so
/// it provides its own on top of the global allocator.
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

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

const VARIANT: rules::Variant = rules::Variant { encrypt_all: cfg!(feature = "encrypt-all") };
const NAME: &str = if cfg!(feature = "encrypt-all") { "encrypt-all" } else { "default" };

struct Policy;

/// The host's KMS imports as the rules' key service.
struct HostKms;

fn kms_error(e: kms::KmsError) -> rules::KmsError {
    rules::KmsError { code: e.code, message: e.message }
}

impl rules::KeyService for HostKms {
    type Key = DataKey;
    fn create_bucket_key(&mut self, bucket: &str) -> Result<String, rules::KmsError> {
        kms::create_bucket_key(bucket).map_err(kms_error)
    }
    fn generate_data_key(&mut self, key_id: &str) -> Result<DataKey, rules::KmsError> {
        kms::generate_data_key(key_id).map_err(kms_error)
    }
    fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> Result<DataKey, rules::KmsError> {
        kms::unwrap_data_key(key_id, wrapped).map_err(kms_error)
    }
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), rules::KmsError> {
        kms::destroy_bucket_key(key_id).map_err(kms_error)
    }
}

fn operation(op: Operation) -> rules::Operation {
    match op {
        Operation::CreateBucket => rules::Operation::CreateBucket,
        Operation::DeleteBucket => rules::Operation::DeleteBucket,
        Operation::PutBucketEncryption => rules::Operation::PutBucketEncryption,
        Operation::GetBucketEncryption => rules::Operation::GetBucketEncryption,
        Operation::DeleteBucketEncryption => rules::Operation::DeleteBucketEncryption,
        Operation::PutObject => rules::Operation::PutObject,
        Operation::CopyObject => rules::Operation::CopyObject,
        Operation::PostObject => rules::Operation::PostObject,
        Operation::CreateMultipartUpload => rules::Operation::CreateMultipartUpload,
        Operation::UploadPart => rules::Operation::UploadPart,
        Operation::UploadPartCopy => rules::Operation::UploadPartCopy,
        Operation::CompleteMultipartUpload => rules::Operation::CompleteMultipartUpload,
        Operation::GetObject => rules::Operation::GetObject,
        Operation::HeadObject => rules::Operation::HeadObject,
    }
}

fn sealed(s: Sealed) -> rules::Sealed {
    rules::Sealed { key_id: s.key_id, wrapped_key: s.wrapped_key }
}

fn request(r: Request) -> rules::Request {
    rules::Request {
        operation: operation(r.operation),
        bucket: r.bucket,
        key: r.key,
        headers: r.headers,
        bucket_state: r.bucket_state.map(|b| rules::BucketState { encrypted: b.encrypted, key_id: b.key_id }),
        target: r.target.map(sealed),
        source: r.source.map(sealed),
        requested_algorithm: r.requested_algorithm,
    }
}

fn decision(d: rules::Decision<DataKey>) -> Decision {
    match d {
        rules::Decision::Deny(e) => Decision::Deny(S3Error { status: e.status, code: e.code, message: e.message }),
        rules::Decision::Allow(e) => Decision::Allow(Effects {
            bucket_state: e.bucket_state.map(|b| BucketState { encrypted: b.encrypted, key_id: b.key_id }),
            seal_with: e.seal_with,
            open_with: e.open_with,
            report_algorithm: e.report_algorithm,
            response_headers: e.response_headers,
        }),
    }
}

impl Guest for Policy {
    fn describe() -> (String, String) {
        (NAME.to_string(), env!("CARGO_PKG_VERSION").to_string())
    }

    fn evaluate(r: types::Request) -> types::Decision {
        decision(rules::evaluate(&request(r), &mut HostKms, VARIANT))
    }
}

export!(Policy);
