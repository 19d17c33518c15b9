//! The rules, natively, both variants: arbitrary request and KMS behaviour,
//! every decision checked against `sealgate_policy::fuzzing::check`.

#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use sealgate_policy::fuzzing::{Input, check_native};

fuzz_target!(|data: &[u8]| -> Corpus {
    let input = Input::build(data);
    if let Err(violation) = check_native(&input) {
        panic!("invariant violated: {violation}\ninput: {input:#?}");
    }
    Corpus::Keep
});
