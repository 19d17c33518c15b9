#![no_main]
//! A wrapped data key from a hostile metadata store: only a genuine wrapping opens. See sealgate::fuzzing.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate::fuzzing::wrapped_data_key(data));
