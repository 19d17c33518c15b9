#![no_main]
//! A browser POST form from anyone: let through only with a valid policy signature. See sealgate::fuzzing.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate::fuzzing::post_form(data));
