//! The sealed data path through the real gateway with `aws-sdk-s3`: round
//! trips and ranges in an encrypted bucket, nothing in plaintext at rest,
//! and every kind of tampering with the stored chunks detected.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Gateway, create_encrypted_bucket, files_under, md5_hex, pattern};

const CHUNK: usize = 64 << 10;
const TAG: usize = 16;
const STORED_CHUNK: usize = CHUNK + TAG;
const HEADER: usize = 1;

async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    data: Vec<u8>,
) -> aws_sdk_s3::operation::put_object::PutObjectOutput {
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from(data)).send().await.unwrap()
}

/// The whole object, or None when the gateway refused or broke off the read.
async fn try_get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, range: Option<String>) -> Option<Vec<u8>> {
    let out = s3.get_object().bucket(bucket).key(key).set_range(range).send().await.ok()?;
    out.body.collect().await.ok().map(|b| b.into_bytes().to_vec())
}

fn data_files(gw: &Gateway) -> Vec<std::path::PathBuf> {
    files_under(&gw.data_dir().join("objects"))
}

#[tokio::test]
async fn sealed_objects_of_edge_sizes_round_trip_with_plaintext_etags_and_sizes() {
    let gw = Gateway::start();
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "sealed").await;
    let sizes = [0usize, 1, 65_535, 65_536, 65_537, 5 * 1024 * 1024 + 1, 100 * 1024 * 1024];
    for (i, size) in sizes.into_iter().enumerate() {
        let data = pattern(size, 40 + i as u64);
        let key = format!("obj-{size}");
        let out = put(&s3, "sealed", &key, data.clone()).await;
        assert_eq!(out.e_tag(), Some(format!("\"{}\"", md5_hex(&data)).as_str()), "etag of {size}");
        assert_eq!(out.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
        let head = s3.head_object().bucket("sealed").key(&key).send().await.unwrap();
        assert_eq!(head.content_length(), Some(size as i64));
        assert_eq!(head.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
        assert_eq!(try_get(&s3, "sealed", &key, None).await.as_deref(), Some(data.as_slice()), "content of {size}");
    }
    let listed = s3.list_objects_v2().bucket("sealed").send().await.unwrap();
    for object in listed.contents() {
        let size: usize = object.key().unwrap().trim_start_matches("obj-").parse().unwrap();
        assert_eq!(object.size(), Some(size as i64), "listing shows plaintext sizes");
    }
}

#[tokio::test]
async fn range_reads_of_sealed_objects_match_the_source() {
    let gw = Gateway::start();
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "ranges").await;
    let size = 3 * CHUNK + 12_345;
    let data = pattern(size, 9);
    put(&s3, "ranges", "r", data.clone()).await;
    let mut ranges: Vec<(usize, usize)> = vec![
        (0, 0),
        (0, CHUNK - 1),
        (CHUNK - 1, CHUNK),
        (CHUNK, CHUNK),
        (CHUNK - 10, 2 * CHUNK + 10),
        (size - 1, size - 1),
        (0, size - 1),
    ];
    let mut x = 12345u64;
    for _ in 0..40 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let a = (x >> 33) as usize % size;
        let b = a + ((x >> 13) as usize % (size - a));
        ranges.push((a, b));
    }
    for (a, b) in ranges {
        let got = try_get(&s3, "ranges", "r", Some(format!("bytes={a}-{b}"))).await;
        assert_eq!(got.as_deref(), Some(&data[a..=b]), "bytes={a}-{b}");
    }
    let suffix = try_get(&s3, "ranges", "r", Some("bytes=-70000".into())).await.unwrap();
    assert_eq!(suffix, data[size - 70_000..]);
    let open = try_get(&s3, "ranges", "r", Some(format!("bytes={}-", 2 * CHUNK + 1))).await.unwrap();
    assert_eq!(open, data[2 * CHUNK + 1..]);
}

#[tokio::test]
async fn nothing_of_a_sealed_object_reaches_the_disk_in_plaintext() {
    let mut gw = Gateway::start();
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "secret").await;
    let marker = b"SEALGATE-AT-REST-MARKER-".repeat(50_000);
    put(&s3, "secret", "single", marker.clone()).await;
    let upload = s3.create_multipart_upload().bucket("secret").key("multi").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let mut parts = CompletedMultipartUpload::builder();
    for n in 1..=2 {
        let body = if n == 1 { b"SEALGATE-AT-REST-MARKER-".repeat(220_000) } else { marker.clone() };
        let out = s3
            .upload_part()
            .bucket("secret")
            .key("multi")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
        parts = parts.parts(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    s3.complete_multipart_upload()
        .bucket("secret")
        .key("multi")
        .upload_id(id)
        .multipart_upload(parts.build())
        .send()
        .await
        .unwrap();
    s3.copy_object().bucket("secret").key("copy").copy_source("secret/single").send().await.unwrap();
    gw.stop();
    let needle = b"SEALGATE-AT-REST-MARKER";
    for file in files_under(gw.dir.path()) {
        if file.ends_with("gateway.log") {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "plaintext found in {}", file.display());
    }
}

/// One sealed object of 4 chunks in a fresh gateway; returns its data file.
async fn single_sealed_object(gw: &Gateway, data: &[u8]) -> std::path::PathBuf {
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "tamper").await;
    put(&s3, "tamper", "victim", data.to_vec()).await;
    let files = data_files(gw);
    assert_eq!(files.len(), 1);
    files[0].clone()
}

fn chunk(stored: &[u8], i: usize) -> &[u8] {
    &stored[HEADER + i * STORED_CHUNK..(HEADER + (i + 1) * STORED_CHUNK).min(stored.len())]
}

async fn assert_tampering_detected(name: &str, tamper: impl FnOnce(&[u8]) -> Vec<u8>) {
    let gw = Gateway::start();
    let data = pattern(3 * CHUNK + 500, 77);
    let file = single_sealed_object(&gw, &data).await;
    let stored = std::fs::read(&file).unwrap();
    std::fs::write(&file, tamper(&stored)).unwrap();
    let got = try_get(&gw.client(), "tamper", "victim", None).await;
    assert!(got.is_none(), "{name}: the tampered object was served");
}

#[tokio::test]
async fn every_kind_of_chunk_tampering_is_detected() {
    assert_tampering_detected("flipped bit", |s| {
        let mut s = s.to_vec();
        s[HEADER + STORED_CHUNK + 100] ^= 1;
        s
    })
    .await;
    assert_tampering_detected("reordered", |s| {
        [&s[..HEADER], chunk(s, 1), chunk(s, 0), chunk(s, 2), chunk(s, 3)].concat()
    })
    .await;
    assert_tampering_detected("duplicated", |s| {
        [&s[..HEADER], chunk(s, 0), chunk(s, 0), chunk(s, 2), chunk(s, 3)].concat()
    })
    .await;
    assert_tampering_detected("dropped", |s| [&s[..HEADER], chunk(s, 0), chunk(s, 2), chunk(s, 3)].concat()).await;
    assert_tampering_detected("truncated", |s| s[..s.len() - 10].to_vec()).await;
    assert_tampering_detected("extended", |s| [s, chunk(s, 1)].concat()).await;
    assert_tampering_detected("wrong version", |s| [&[2u8][..], &s[1..]].concat()).await;
}

#[tokio::test]
async fn chunks_spliced_from_another_object_or_part_are_detected() {
    let gw = Gateway::start();
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "splice").await;
    // Two parts of one multipart object, then one single object.
    let upload = s3.create_multipart_upload().bucket("splice").key("multi").send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let mut parts = CompletedMultipartUpload::builder();
    let part_data = [pattern(5 << 20, 1), pattern(3 * CHUNK, 2)];
    for (n, body) in (1..).zip(part_data.iter()) {
        let out = s3
            .upload_part()
            .bucket("splice")
            .key("multi")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        parts = parts.parts(CompletedPart::builder().part_number(n).e_tag(out.e_tag().unwrap()).build());
    }
    s3.complete_multipart_upload()
        .bucket("splice")
        .key("multi")
        .upload_id(id)
        .multipart_upload(parts.build())
        .send()
        .await
        .unwrap();
    let mut files = data_files(&gw);
    files.sort_by_key(|f| std::fs::metadata(f).unwrap().len());
    let (part2, part1) = (files[0].clone(), files[1].clone());
    put(&s3, "splice", "single", pattern(3 * CHUNK, 3)).await;
    let single = data_files(&gw).into_iter().find(|f| *f != part1 && *f != part2).unwrap();

    // Chunk 1 of part 2 replaced by chunk 1 of part 1 (same object, other part).
    let original_part2 = std::fs::read(&part2).unwrap();
    let p1 = std::fs::read(&part1).unwrap();
    let spliced =
        [&original_part2[..HEADER], chunk(&original_part2, 0), chunk(&p1, 1), chunk(&original_part2, 2)].concat();
    std::fs::write(&part2, &spliced).unwrap();
    assert!(try_get(&s3, "splice", "multi", Some(format!("bytes={}-", 5 << 20))).await.is_none(), "part splice served");
    std::fs::write(&part2, &original_part2).unwrap();
    assert_eq!(try_get(&s3, "splice", "multi", Some(format!("bytes={}-", 5 << 20))).await.unwrap(), part_data[1]);

    // Chunk 1 of the single object replaced by chunk 1 of another object's segment.
    let s = std::fs::read(&single).unwrap();
    let spliced = [&s[..HEADER], chunk(&s, 0), chunk(&original_part2, 1), chunk(&s, 2)].concat();
    std::fs::write(&single, &spliced).unwrap();
    assert!(try_get(&s3, "splice", "single", None).await.is_none(), "object splice served");
}

#[tokio::test]
async fn sealed_objects_and_bucket_settings_survive_a_restart() {
    let mut gw = Gateway::start();
    let s3 = gw.client();
    create_encrypted_bucket(&s3, "durable").await;
    let data = pattern(200_000, 5);
    put(&s3, "durable", "k", data.clone()).await;
    gw.restart();
    let s3 = gw.client();
    assert_eq!(try_get(&s3, "durable", "k", None).await.unwrap(), data);
    let again = put(&s3, "durable", "k2", data.clone()).await;
    assert_eq!(again.server_side_encryption().map(|s| s.as_str()), Some("AES256"));
    let config = s3.get_bucket_encryption().bucket("durable").send().await.unwrap();
    let rule = &config.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(rule.apply_server_side_encryption_by_default().unwrap().sse_algorithm().as_str(), "AES256");
}
