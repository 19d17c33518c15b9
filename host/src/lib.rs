//! sealgate: an S3 gateway that encrypts whole buckets transparently.
//!
//! The modules follow the request: `listener` (connections, limits,
//! timeouts; `tls`) → `server` (the request envelope) → `request_guard`
//! (checks s3s has no hook for; a signed browser POST goes on to
//! `s3::post`, not s3s) → `auth` (who is calling) → `s3` (one S3
//! concern per file) → `policy` (the rules, a sandboxed WebAssembly guest)
//! → `kms` (the customer's keys; `kms::bucket_keys` the key hierarchy) →
//! `crypto` (sealed chunks: `format` on disk, `format_v2` upstream) →
//! `storage` (`storage::local` on this machine's disk, `storage::upstream`
//! in an S3 cluster shared by many gateways). `admin` is the
//! operator's port (with `rotation`, key rotation), `config` the settings,
//! `metrics` what it counts, `fuzzing` the fuzz targets' entry points,
//! `allocator` the allocator's tuning for streaming bodies.

pub mod admin;
pub mod admin_client;
pub mod allocator;
pub mod auth;
pub mod config;
pub mod crypto;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod kms;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod request_guard;
pub mod rotation;
pub mod s3;
pub mod server;
pub mod storage;
pub mod tls;
