//! The Rust `aws-sdk-s3`, with its default checksum behaviour, against three
//! gateways (`--backend s3`) in front of one real SeaweedFS cluster. Each
//! request goes to the next gateway, and the upstream is read directly to
//! see what it learned.

mod common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use common::seaweed::SeaweedFs;
use common::{Gateway, create_encrypted_bucket, md5_hex, pattern};

const MIB: usize = 1024 * 1024;

/// Three gateways with one configuration: one upstream, one key store.
struct Fleet {
    gateways: Vec<Gateway>,
    upstream: SeaweedFs,
    _kms: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Self {
        let upstream = SeaweedFs::start();
        let kms = tempfile::tempdir().unwrap();
        let args = upstream.gateway_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gateways = (0..3).map(|_| Gateway::start_sharing_kms(kms.path(), &args)).collect();
        Fleet { gateways, upstream, _kms: kms }
    }

    /// A client of gateway `i % 3`.
    fn via(&self, i: usize) -> Client {
        self.gateways[i % self.gateways.len()].client()
    }

    async fn bucket(&self, name: &str, encrypted: bool) {
        if encrypted {
            create_encrypted_bucket(&self.via(0), name).await;
        } else {
            self.via(0).create_bucket().bucket(name).send().await.unwrap();
        }
    }
}

async fn get(s3: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3.get_object().bucket(bucket).key(key).checksum_mode(ChecksumMode::Enabled).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The upstream copy of a sealed object holds no plaintext digest and only
/// the sealed metadata value; a plain object is stored as sent.
async fn check_upstream(fleet: &Fleet, bucket: &str, key: &str, data: &[u8], encrypted: bool) {
    let up = fleet.upstream.client();
    let head = up.head_object().bucket(bucket).key(key).send().await.unwrap();
    let body = up.get_object().bucket(bucket).key(key).send().await.unwrap();
    let stored = body.body.collect().await.unwrap().into_bytes();
    let metadata: Vec<&String> = head.metadata().map(|m| m.keys().collect()).unwrap_or_default();
    if encrypted {
        assert_eq!(metadata, ["sg"], "{key}: upstream metadata");
        assert_ne!(&stored[..], data, "{key}: stored in plaintext");
        let md5 = md5_hex(data);
        assert!(!head.e_tag().unwrap_or_default().contains(&md5), "{key}: plaintext MD5 upstream");
        assert!(!String::from_utf8_lossy(&stored).contains(&md5), "{key}: plaintext MD5 upstream");
    } else {
        assert_eq!(&stored[..], data, "{key}: a plain object is stored as sent");
    }
}

async fn single_puts_read_back_the_same_on_every_gateway(encrypted: bool) {
    let fleet = Fleet::start();
    let bucket = if encrypted { "rust-sealed" } else { "rust-plain" };
    fleet.bucket(bucket, encrypted).await;
    let sizes = [0usize, 1, 65_536, 65_537, 3 * MIB + 5];
    let mut etags = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let data = pattern(size, i as u64);
        let key = format!("obj-{size}");
        // Created on the gateway after the one that created the bucket.
        let put = fleet.via(i + 1).put_object().bucket(bucket).key(&key).body(ByteStream::from(data.clone()));
        let etag = put.send().await.unwrap().e_tag().unwrap().to_owned();
        if !encrypted {
            assert_eq!(etag, format!("\"{}\"", md5_hex(&data)), "{key}");
        }
        for g in 0..3 {
            let s3 = fleet.via(g);
            assert_eq!(get(&s3, bucket, &key).await, data, "{key} through gateway {g}");
            let head = s3.head_object().bucket(bucket).key(&key).send().await.unwrap();
            assert_eq!(head.content_length(), Some(size as i64), "{key} through gateway {g}");
            assert_eq!(head.e_tag(), Some(etag.as_str()), "{key} through gateway {g}");
        }
        if size > 70_000 {
            let range = fleet.via(i + 2).get_object().bucket(bucket).key(&key).range("bytes=65530-131080");
            let part = range.send().await.unwrap().body.collect().await.unwrap().into_bytes();
            assert_eq!(&part[..], &data[65_530..=131_080], "{key}: range");
        }
        check_upstream(&fleet, bucket, &key, &data, encrypted).await;
        etags.push((key, size as i64, etag));
    }
    // The listing says what HEAD says: plaintext sizes, the same ETags.
    let listed = fleet.via(2).list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut seen: Vec<(String, i64, String)> = listed
        .contents()
        .iter()
        .map(|o| (o.key().unwrap().to_owned(), o.size().unwrap(), o.e_tag().unwrap().to_owned()))
        .collect();
    seen.sort();
    etags.sort();
    assert_eq!(seen, etags);
}

#[tokio::test]
async fn single_puts_read_back_the_same_on_every_gateway_plain() {
    single_puts_read_back_the_same_on_every_gateway(false).await;
}

#[tokio::test]
async fn single_puts_read_back_the_same_on_every_gateway_encrypted() {
    single_puts_read_back_the_same_on_every_gateway(true).await;
}

/// A multipart upload whose steps go to different gateways, with and
/// without a checksum algorithm declared at creation (the SDK then sends
/// and checks CRC32 per part and for the whole object).
#[tokio::test]
async fn multipart_uploads_with_the_sdks_checksums_complete_across_gateways() {
    let fleet = Fleet::start();
    for (b, encrypted) in [("rust-mpu-plain", false), ("rust-mpu-sealed", true)] {
        fleet.bucket(b, encrypted).await;
        for (k, algorithm) in [None, Some(ChecksumAlgorithm::Crc32)].into_iter().enumerate() {
            let key = format!("big-{k}");
            let create =
                fleet.via(k).create_multipart_upload().bucket(b).key(&key).set_checksum_algorithm(algorithm.clone());
            let upload_id = create.send().await.unwrap().upload_id().unwrap().to_owned();
            let parts: Vec<Vec<u8>> =
                [5 * MIB, 5 * MIB, 1234].iter().enumerate().map(|(i, n)| pattern(*n, 10 + i as u64)).collect();
            let mut completed = Vec::new();
            for (i, data) in parts.iter().enumerate() {
                let number = i as i32 + 1;
                let part = fleet
                    .via(k + i + 1)
                    .upload_part()
                    .bucket(b)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .set_checksum_algorithm(algorithm.clone())
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .unwrap();
                completed.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(part.e_tag().unwrap())
                        .set_checksum_crc32(part.checksum_crc32().map(str::to_owned))
                        .build(),
                );
            }
            let listed = fleet.via(k + 2).list_parts().bucket(b).key(&key).upload_id(&upload_id).send().await.unwrap();
            let listed: Vec<(i32, i64, String)> = listed
                .parts()
                .iter()
                .map(|p| (p.part_number().unwrap(), p.size().unwrap(), p.e_tag().unwrap().to_owned()))
                .collect();
            let expected: Vec<(i32, i64, String)> = completed
                .iter()
                .zip(&parts)
                .map(|(c, d)| (c.part_number().unwrap(), d.len() as i64, c.e_tag().unwrap().to_owned()))
                .collect();
            assert_eq!(listed, expected, "{b}/{key}: ListParts on another gateway");
            let done = fleet
                .via(k + 3)
                .complete_multipart_upload()
                .bucket(b)
                .key(&key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                .send()
                .await
                .unwrap();
            let etag = done.e_tag().unwrap().to_owned();
            assert!(etag.ends_with("-3\""), "{b}/{key}: {etag}");
            let whole = parts.concat();
            for g in 0..3 {
                assert_eq!(get(&fleet.via(g), b, &key).await, whole, "{b}/{key} through gateway {g}");
                let head = fleet.via(g).head_object().bucket(b).key(&key).send().await.unwrap();
                assert_eq!((head.content_length(), head.e_tag()), (Some(whole.len() as i64), Some(etag.as_str())));
            }
            check_upstream(&fleet, b, &key, &whole, encrypted).await;
        }
    }
}

/// CopyObject in every plain/encrypted combination, each step on another
/// gateway: the gateway reads, opens, re-seals and writes.
#[tokio::test]
async fn copies_between_plain_and_encrypted_buckets() {
    let fleet = Fleet::start();
    fleet.bucket("rust-copy-plain", false).await;
    fleet.bucket("rust-copy-sealed", true).await;
    let data = pattern(2 * MIB + 17, 99);
    for (i, b) in ["rust-copy-plain", "rust-copy-sealed"].into_iter().enumerate() {
        let put = fleet.via(i).put_object().bucket(b).key("source").body(ByteStream::from(data.clone()));
        put.send().await.unwrap();
    }
    let mut step = 0;
    for from in ["rust-copy-plain", "rust-copy-sealed"] {
        for to in ["rust-copy-plain", "rust-copy-sealed"] {
            step += 1;
            let key = format!("copy-of-{from}");
            let copy = fleet.via(step).copy_object().bucket(to).key(&key).copy_source(format!("{from}/source"));
            let etag = copy.send().await.unwrap().copy_object_result().unwrap().e_tag().unwrap().to_owned();
            assert_eq!(get(&fleet.via(step + 1), to, &key).await, data, "{from} -> {to}");
            let head = fleet.via(step + 2).head_object().bucket(to).key(&key).send().await.unwrap();
            assert_eq!(head.e_tag(), Some(etag.as_str()), "{from} -> {to}");
            check_upstream(&fleet, to, &key, &data, to == "rust-copy-sealed").await;
        }
    }
}
