//! Fuzzing entry points for what untrusted parties feed the host's own
//! parsers (the cargo-fuzz targets in `fuzz/` call these; `make test`
//! replays the committed corpora through them natively). Each checks an
//! invariant, not only "no panic":
//!
//! - [`sealed_chunks`]: stored bytes from a hostile disk never open to
//!   anything but the exact plaintext that was sealed;
//! - [`wrapped_data_key`]: a wrapped data key opens under its bucket key only
//!   if it is exactly one the gateway made, for that bucket and object;
//! - [`post_form`]: a browser POST form is let through only with a policy
//!   signature that verifies under the user's secret;
//! - [`request_head`]: the checks on the request line and headers never
//!   panic, and an encryption header outside `SignedHeaders` is refused.
//!
//! (The aws-chunked decoder, the Range header and the XML bodies are parsed
//! by s3s, not here; the KMIP TTLV decoder has its own target.)

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use zeroize::Zeroizing;

use crate::auth::{KeyPair, Users};
use crate::crypto::Implementation;
use crate::crypto::format::{ChunkSealer, HEADER_LEN, Opener, Sealer, SegmentId, chunk_count};
use crate::kms::KeyContext;
use crate::request_guard::RequestGuard;

const KEY: [u8; 32] = [7; 32];
const ID: SegmentId = SegmentId { salt: [9; 16], part_number: 3 };

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// The sealed chunks (without the version byte) of `plaintext(len)`.
fn sealed(len: usize) -> Vec<u8> {
    let mut sealer = Sealer::new(Implementation::Ring, &Zeroizing::new(KEY), ID);
    let mut out = VecDeque::new();
    sealer.push(&plaintext(len), &mut out);
    sealer.finish(&mut out);
    let all: Vec<u8> = out.into_iter().flat_map(|b| b.to_vec()).collect();
    all[HEADER_LEN as usize..].to_vec()
}

/// `data` = length selector ‖ chunk range ‖ stored bytes.
pub fn sealed_chunks(data: &[u8]) {
    let [selector, start, count, stored @ ..] = data else { return };
    let plain_len = [0usize, 1, 100, 65_536, 65_537, 140_000][*selector as usize % 6];
    let chunks = chunk_count(plain_len as u64);
    let start = u64::from(*start) % chunks;
    let end = (start + 1 + u64::from(*count)).min(chunks);
    for implementation in [Implementation::Ring, Implementation::RustCrypto] {
        let opener = Opener::new(implementation, &Zeroizing::new(KEY), ID, plain_len as u64);
        if let Ok(opened) = opener.open_chunks(start..end, BytesMut::from(stored)) {
            let reference = sealed(plain_len);
            let from = (start * (65_536 + 16)) as usize;
            let to = from + stored.len();
            assert_eq!(&reference[from..to], stored, "opened bytes that are not the sealed ones");
            let expected = plaintext(plain_len);
            let plain_from = (start * 65_536) as usize;
            assert_eq!(&opened[..], &expected[plain_from..plain_from + opened.len()]);
        }
    }
}

/// `data` = a wrapped data key as stored (any bytes).
pub fn wrapped_data_key(data: &[u8]) {
    use crate::kms::bucket_keys::fuzzing::{rewrap_like, unwrap_with};
    let bucket_key = [5u8; 32];
    let context = KeyContext { bucket: "bucket".into(), key: "object".into() };
    if let Some(opened) = unwrap_with(&bucket_key, data, &context) {
        // Only an exact wrapping made with this bucket key and context opens.
        assert_eq!(rewrap_like(&bucket_key, data, &opened, &context), data, "a forged wrapped key opened");
    }
}

/// `data` = a multipart/form-data body (boundary `fuzz`), any bytes.
pub fn post_form(data: &[u8]) {
    let users = Users::load(&KeyPair { access_key: "AKFUZZ".into(), secret_key: "fuzz-secret".into() }, None)
        .expect("one user");
    let guard = RequestGuard { users: Arc::new(users), allow_sigv2: true };
    let chunks: Vec<Result<Bytes, std::io::Error>> = data.chunks(97).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stream = futures::stream::iter(chunks);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    if let Ok(form) = runtime.block_on(guard.check_post_form(stream, "fuzz")) {
        // Let through: then the form carried a signature valid for the secret.
        assert_eq!(form.access_key, "AKFUZZ", "a form signed by nobody known was let through");
        assert!(form.field("policy").is_some(), "a form without a policy was let through");
        let signed = form.field("x-amz-signature").or_else(|| form.field("signature"));
        assert!(signed.is_some(), "a form without a signature was let through");
    }
}

/// `data` = a request target, a newline, then header lines `name: value`.
/// Whatever they are, a SigV4 request that adds an encryption header its
/// signature does not cover is refused.
pub fn request_head(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();
    let Ok(uri) = target.trim().parse::<hyper::Uri>() else { return };
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) =
                (hyper::header::HeaderName::from_bytes(name.trim().as_bytes()), value.trim().parse())
        {
            headers.append(name, value);
        }
    }
    let guard = RequestGuard { users: Arc::new(Users::empty()), allow_sigv2: false };
    let _ = guard.check_head(&uri, &headers);
    headers.insert(
        hyper::header::AUTHORIZATION,
        "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
            .parse()
            .expect("valid header"),
    );
    headers.insert("x-amz-server-side-encryption", hyper::header::HeaderValue::from_static("AES256"));
    assert!(guard.check_head(&uri, &headers).is_err(), "an unsigned encryption header got through");
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays `fuzz/corpus/<name>` (committed seeds and findings).
    fn replay(name: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            check(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn sealed_chunks_corpus() {
        replay("sealed_chunks", super::sealed_chunks);
    }

    #[test]
    fn wrapped_data_key_corpus() {
        replay("wrapped_data_key", super::wrapped_data_key);
    }

    #[test]
    fn post_form_corpus() {
        replay("post_form", super::post_form);
    }

    #[test]
    fn request_head_corpus() {
        replay("request_head", super::request_head);
    }

    #[test]
    fn a_genuine_sealing_opens_through_the_fuzz_check() {
        let stored = super::sealed(65_537);
        let mut data = vec![4u8, 0, 1];
        data.extend_from_slice(&stored);
        super::sealed_chunks(&data);
    }
}
