//! The sealgate policy SDK: a policy module is its rules plus one line.
//!
//! ```ignore
//! use sealgate_policy_sdk::{Decision, HostKms, Request, export_policy};
//!
//! fn evaluate(request: &Request, kms: &mut HostKms) -> Decision {
//!     sealgate_policy_sdk::rules::evaluate(request, kms, Default::default())
//! }
//!
//! export_policy!(name: "my-rules", version: "1.0.0", evaluate: evaluate);
//! ```
//!
//! It provides what every module otherwise copies: the bindings of
//! `wit/v2.0.0` (world `sealgate:policy/policy@2.0.0`), the conversions between
//! them and the plain types of the rules crate ([`rules`]), the host's KMS
//! imports as a [`rules::KeyService`] ([`HostKms`]), and the runtime glue of
//! a `no_std` component (global allocator, the canonical ABI's
//! `cabi_realloc`, a panic handler that traps) — the only `unsafe` a module
//! needs, in one place. Build a module for `wasm32-wasip2` as a `cdylib`.

#![no_std]

extern crate alloc;

mod glue;

#[cfg(feature = "bindings")]
mod policy;

#[cfg(feature = "bindings")]
pub use policy::*;

/// Contract 1.0.0, for modules that must be built against it.
#[cfg(feature = "v1")]
pub mod v1;

#[cfg(feature = "v1")]
pub use sealgate_policy as rules;

#[cfg(all(feature = "bindings", feature = "v1"))]
compile_error!("one contract per build: `v1` needs `default-features = false`");
