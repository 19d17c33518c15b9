//! The bucket-encryption rules of sealgate.
//!
//! A plain library so that the same logic is unit-tested and fuzzed natively
//! and shipped inside the WebAssembly policy component (`component/`). It
//! knows nothing of WIT or of the host: the KMS is the [`KeyService`] trait
//! and keys are an opaque type the caller chooses.
//!
//! The rules implement `shared/spec/bucket-encryption.rst`:
//! buckets created with `x-amz-scal-server-side-encryption: AES256` seal
//! every object written into them; object-level encryption headers are
//! accepted only as `AES256` on an encrypted bucket; nothing unsupported
//! (SSE-C, SSE-KMS) ever passes as encrypted. The [`Variant::AWS`] rules
//! follow AWS S3's SSE-S3 instead: the object-level header seals that one
//! object in any bucket.

#![cfg_attr(not(any(test, feature = "fuzzing")), no_std)]

extern crate alloc;

mod rules;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use rules::evaluate;

use alloc::string::String;
use alloc::vec::Vec;

/// The only algorithm sealgate seals with.
pub const AES256: &str = "AES256";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CreateBucket,
    DeleteBucket,
    PutBucketEncryption,
    GetBucketEncryption,
    DeleteBucketEncryption,
    PutObject,
    CopyObject,
    PostObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    GetObject,
    HeadObject,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketState {
    pub encrypted: bool,
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub wrapped_key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub operation: Operation,
    pub bucket: String,
    pub key: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub bucket_state: Option<BucketState>,
    pub target: Option<Sealed>,
    pub source: Option<Sealed>,
    pub requested_algorithm: Option<String>,
}

impl Request {
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    /// Every value of a header: a repeated header must not hide a second,
    /// different value behind an acceptable first one (found by fuzzing).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn has_header_prefix(&self, prefix: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.to_ascii_lowercase().starts_with(prefix))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: u16,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects<K> {
    pub bucket_state: Option<BucketState>,
    pub seal_with: Option<K>,
    pub open_with: Option<K>,
    pub report_algorithm: Option<String>,
    pub response_headers: Vec<(String, String)>,
}

impl<K> Default for Effects<K> {
    fn default() -> Self {
        Self {
            bucket_state: None,
            seal_with: None,
            open_with: None,
            report_algorithm: None,
            response_headers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<K> {
    Deny(S3Error),
    Allow(Effects<K>),
}

/// Why a KMS call failed (the WIT `kms-error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsErrorKind {
    /// Not reachable or not answering; the request may be retried.
    Unavailable,
    /// The call was refused (permissions, a disabled key).
    Refused,
    /// The key or wrapped key is not known.
    NotFound,
    /// What the KMS was given is invalid (a corrupt wrapped key).
    Invalid,
}

impl KmsErrorKind {
    pub const ALL: [KmsErrorKind; 4] =
        [KmsErrorKind::Unavailable, KmsErrorKind::Refused, KmsErrorKind::NotFound, KmsErrorKind::Invalid];

    /// The kebab-case name: the WIT enum case, and contract 1.0.0's string code.
    pub fn code(self) -> &'static str {
        match self {
            KmsErrorKind::Unavailable => "unavailable",
            KmsErrorKind::Refused => "refused",
            KmsErrorKind::NotFound => "not-found",
            KmsErrorKind::Invalid => "invalid",
        }
    }

    /// Contract 1.0.0's free-string code; an unknown one counts as refused.
    pub fn from_code(code: &str) -> KmsErrorKind {
        Self::ALL.into_iter().find(|k| k.code() == code).unwrap_or(KmsErrorKind::Refused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsError {
    pub kind: KmsErrorKind,
    pub message: String,
}

/// The KMS as the rules see it.
pub trait KeyService {
    type Key;
    fn create_bucket_key(&mut self, bucket: &str) -> Result<String, KmsError>;
    fn generate_data_key(&mut self, key_id: &str) -> Result<Self::Key, KmsError>;
    fn unwrap_data_key(&mut self, key_id: &str, wrapped: &[u8]) -> Result<Self::Key, KmsError>;
    fn destroy_bucket_key(&mut self, key_id: &str) -> Result<(), KmsError>;
}

/// Which variant of the rules a module ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    /// Every new bucket is encrypted, header or not.
    pub encrypt_all: bool,
    /// AWS S3's SSE-S3: `x-amz-server-side-encryption: AES256` on a write
    /// seals that object in any bucket (so every bucket gets a master key
    /// when it is created), and the header on GET or HEAD is refused.
    pub sse_s3_per_object: bool,
}

impl Variant {
    /// `default.wasm`: the product documentation's rules.
    pub const DEFAULT: Self = Self { encrypt_all: false, sse_s3_per_object: false };
    /// `encrypt-all.wasm`: every new bucket is encrypted.
    pub const ENCRYPT_ALL: Self = Self { encrypt_all: true, sse_s3_per_object: false };
    /// `aws.wasm`: AWS S3's SSE-S3 semantics.
    pub const AWS: Self = Self { encrypt_all: false, sse_s3_per_object: true };
    /// Every variant, for the tests and fuzzers that check them all.
    pub const ALL: [Self; 3] = [Self::DEFAULT, Self::ENCRYPT_ALL, Self::AWS];
}
