//! Replays the committed fuzz corpora (`fuzz/corpus/{rules,component}/*`)
//! through the rules natively, with both variants, checking the same
//! invariants the cargo-fuzz targets check (`sealgate_policy::fuzzing`).
//! Runs on stable in `make test`; the component path itself is only
//! exercised by `make fuzz`.

use std::path::{Path, PathBuf};

use sealgate_policy::fuzzing::{
    AWS_SSE, FakeKey, Input, Issue, KeyRef, KmsLog, Observed, ObservedEffects, check, check_native,
};
use sealgate_policy::{BucketState, Operation, Request, Variant};

fn corpus(name: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(name: &str) {
    let files = corpus(name);
    assert!(!files.is_empty(), "the {name} corpus is empty");
    let mut failures = Vec::new();
    for path in &files {
        let input = Input::build(&std::fs::read(path).unwrap());
        if let Err(e) = check_native(&input) {
            failures.push(format!("{}: {e}\n    input: {input:?}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus inputs break an invariant:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn rules_corpus_keeps_the_invariants() {
    replay("rules");
}

#[test]
fn component_corpus_keeps_the_invariants_natively() {
    replay("component");
}

/// The checker is not vacuous: decisions that break the invariants are caught.
#[test]
fn checker_catches_bad_decisions() {
    let request = Request {
        operation: Operation::PutObject,
        bucket: "b".into(),
        key: Some("k".into()),
        headers: vec![(AWS_SSE.into(), "aws:kms".into())],
        bucket_state: Some(BucketState { encrypted: false, key_id: None }),
        target: None,
        source: None,
        requested_algorithm: None,
    };
    let input = Input { request, kms: vec![] };
    let log = KmsLog::new(&[]);
    let allow = Observed::Allow(ObservedEffects::default());
    let err = check(&input, Variant::default(), &allow, &log).unwrap_err();
    assert!(err.starts_with("(a)"), "{err}");

    let mut plain = input.clone();
    plain.request.headers.clear();
    let foreign = Observed::Allow(ObservedEffects {
        seal_with: Some(KeyRef::Issued(Issue::Generate { key_id: "x".into() })),
        ..ObservedEffects::default()
    });
    let err = check(&plain, Variant::default(), &foreign, &log).unwrap_err();
    assert!(err.starts_with("(b)"), "{err}");

    let mut encrypted = plain.clone();
    encrypted.request.bucket_state = Some(BucketState { encrypted: true, key_id: Some("bk".into()) });
    let unsealed = Observed::Allow(ObservedEffects::default());
    assert!(check(&encrypted, Variant::default(), &unsealed, &log).unwrap_err().starts_with("(c)"));
    let made_up = Observed::from_native(
        sealgate_policy::Decision::Allow(sealgate_policy::Effects {
            seal_with: Some(FakeKey(7)),
            ..Default::default()
        }),
        &log,
    );
    assert!(check(&encrypted, Variant::default(), &made_up, &log).unwrap_err().contains("did not hand out"));

    let mut sse_c = encrypted.clone();
    sse_c.request.headers = vec![("x-amz-server-side-encryption-customer-key".into(), "k".into())];
    assert!(check(&sse_c, Variant::default(), &allow, &log).unwrap_err().starts_with("(d)"));

    let bad_deny = Observed::Deny { status: 200, code: "Ok".into(), message: String::new() };
    assert!(check(&plain, Variant::default(), &bad_deny, &log).unwrap_err().starts_with("(e)"));
}
