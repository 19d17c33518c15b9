#![no_main]
//! A request target and headers from anyone: an unsigned encryption header is always refused. See sealgate::fuzzing.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate::fuzzing::request_head(data));
