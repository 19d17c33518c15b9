#![no_main]
//! Stored bytes of a sealed segment from a hostile disk: they open only to the sealed plaintext. See sealgate::fuzzing.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate::fuzzing::sealed_chunks(data));
