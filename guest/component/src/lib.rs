//! The thin wrapper that exports the rules of `sealgate-policy` as a
//! `sealgate:policy@2.0.0` component, through the policy SDK
//! (`guest/sdk`), which owns the bindings, the conversions and the
//! `no_std` runtime glue.
//!
//! `no_std`: the module imports nothing but the host's `kms` and `log`
//! interfaces, no WASI at all.

#![no_std]

use sealgate_policy_sdk::{Decision, HostKms, Request, export_policy, rules};

#[cfg(all(feature = "encrypt-all", feature = "aws"))]
compile_error!("one module, one variant: build `encrypt-all` and `aws` separately");

const VARIANT: rules::Variant = if cfg!(feature = "encrypt-all") {
    rules::Variant::ENCRYPT_ALL
} else if cfg!(feature = "aws") {
    rules::Variant::AWS
} else {
    rules::Variant::DEFAULT
};
const NAME: &str = if cfg!(feature = "encrypt-all") {
    "encrypt-all"
} else if cfg!(feature = "aws") {
    "aws"
} else {
    "default"
};

fn evaluate(request: &Request, kms: &mut HostKms) -> Decision {
    rules::evaluate(request, kms, VARIANT)
}

export_policy!(name: NAME, version: env!("CARGO_PKG_VERSION"), evaluate: evaluate);
