//! The KMIP TTLV decoder (host/src/kms/kmip/ttlv.rs, compiled in as is):
//! never panics on any input, and whatever it accepts encodes back to the
//! same bytes (the decoder is strict: one encoding per tree) and decodes
//! again to the same tree.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/kms/kmip/ttlv.rs"]
mod ttlv;

fuzz_target!(|data: &[u8]| {
    let Ok(item) = ttlv::decode(data) else { return };
    let encoded = item.encode().expect("a decoded tree encodes");
    assert_eq!(encoded, data, "decode then encode changed the bytes");
    assert_eq!(ttlv::decode(&encoded).as_ref(), Ok(&item), "decode, encode, decode changed the tree");
});
