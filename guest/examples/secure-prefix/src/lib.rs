//! An example policy module written with the SDK (see `guest/README.md`):
//! the documented rules, plus two of an operator's own for buckets whose
//! name starts with `secure-`:
//! - they are created encrypted even when the client sends no encryption
//!   header (the `encrypt-all` variant of the rules, for them only);
//! - their encryption cannot be removed (`DeleteBucketEncryption` is denied).

#![no_std]

use sealgate_policy_sdk::rules::{Decision as RulesDecision, Operation, S3Error, Variant, evaluate as documented};
use sealgate_policy_sdk::{Decision, HostKms, Request, export_policy};

const PREFIX: &str = "secure-";

fn evaluate(request: &Request, kms: &mut HostKms) -> Decision {
    if !request.bucket.starts_with(PREFIX) {
        return documented(request, kms, Variant::default());
    }
    if request.operation == Operation::DeleteBucketEncryption {
        return RulesDecision::Deny(S3Error {
            status: 403,
            code: "AccessDenied".into(),
            message: "Encryption of secure-* buckets cannot be removed".into(),
        });
    }
    documented(request, kms, Variant::ENCRYPT_ALL)
}

export_policy!(name: "secure-prefix", version: "1.0.0", evaluate: evaluate);
