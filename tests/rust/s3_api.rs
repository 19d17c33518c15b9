//! The S3 surface through the real gateway with the Rust `aws-sdk-s3`.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Gateway, md5_hex, pattern};

fn error_code<E: aws_sdk_s3::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_owned()
}

async fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, data: Vec<u8>) -> String {
    let out = client.put_object().bucket(bucket).key(key).body(ByteStream::from(data)).send().await.unwrap();
    out.e_tag().unwrap().to_owned()
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn objects_of_edge_sizes_round_trip_with_md5_etags() {
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("sizes").send().await.unwrap();
    for (i, size) in [0usize, 1, 65_535, 65_536, 65_537, 5 * 1024 * 1024 + 1].into_iter().enumerate() {
        let data = pattern(size, i as u64);
        let etag = put(&s3, "sizes", &format!("obj-{size}"), data.clone()).await;
        assert_eq!(etag, format!("\"{}\"", md5_hex(&data)), "etag of {size} bytes");
        assert_eq!(get(&s3, "sizes", &format!("obj-{size}")).await, data, "content of {size} bytes");
        let head = s3.head_object().bucket("sizes").key(format!("obj-{size}")).send().await.unwrap();
        assert_eq!(head.content_length(), Some(size as i64));
    }
}

#[tokio::test]
async fn keys_that_look_like_paths_are_stored_exactly_and_stay_inside_the_data_dir() {
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("paths").send().await.unwrap();
    let keys = [
        "../../etc/passwd",
        "a//b",
        "a/./b",
        "a/../b",
        "/leading",
        "trailing/",
        "ünïcødé/ключ",
        "日本語",
        "a",
        "a/b",
        "a/b/c",
        "sp ace+plus%25",
    ];
    for (i, key) in keys.iter().enumerate() {
        put(&s3, "paths", key, format!("content {i}").into_bytes()).await;
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get(&s3, "paths", key).await, format!("content {i}").into_bytes(), "key {key:?}");
    }
    let listed: Vec<String> = s3
        .list_objects_v2()
        .bucket("paths")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(listed, expected);
    // Nothing was written outside the gateway's own directories.
    for file in common::files_under(gw.dir.path()) {
        assert!(file.starts_with(gw.dir.path()));
    }
    assert!(!gw.dir.path().join("etc").exists());
}

#[tokio::test]
async fn key_length_limit_is_1024_bytes() {
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("long").send().await.unwrap();
    let ok = "k".repeat(1024);
    put(&s3, "long", &ok, b"x".to_vec()).await;
    assert_eq!(get(&s3, "long", &ok).await, b"x");
    let err = s3
        .put_object()
        .bucket("long")
        .key("k".repeat(1025))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "KeyTooLongError");
}

#[tokio::test]
async fn paginated_listing_never_skips_or_repeats() {
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("pages").send().await.unwrap();
    let mut keys = vec![];
    for dir in ["a", "a/b", "b", "c/d", "c/e", "z"] {
        for i in 0..4 {
            keys.push(format!("{dir}/{i}"));
        }
    }
    keys.extend(["a".to_string(), "c".to_string(), "c/".to_string()]);
    for key in &keys {
        put(&s3, "pages", key, vec![]).await;
    }
    keys.sort();

    // Without a delimiter: every key exactly once, in order.
    let mut seen = vec![];
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("pages")
            .max_keys(3)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        token = page.next_continuation_token().map(str::to_owned);
        if !page.is_truncated().unwrap() {
            break;
        }
    }
    assert_eq!(seen, keys);

    // With a delimiter: keys and common prefixes exactly once, in order.
    let mut seen = vec![];
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("pages")
            .delimiter("/")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        seen.extend(page.common_prefixes().iter().map(|p| p.prefix().unwrap().to_owned()));
        token = page.next_continuation_token().map(str::to_owned);
        if !page.is_truncated().unwrap() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, vec!["a", "a/", "b/", "c", "c/", "z/"]);

    // v1 markers, with a prefix.
    let mut seen = vec![];
    let mut marker: Option<String> = None;
    loop {
        let page =
            s3.list_objects().bucket("pages").prefix("c").max_keys(2).set_marker(marker.clone()).send().await.unwrap();
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_owned()));
        if !page.is_truncated().unwrap() {
            break;
        }
        marker = page.next_marker().map(str::to_owned);
    }
    assert_eq!(seen, keys.iter().filter(|k| k.starts_with('c')).cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn multipart_upload_checks_order_etags_and_sizes() {
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let part1 = pattern(5 * 1024 * 1024 + 3, 1);
    let part2 = pattern(1234, 2);
    let create = s3.create_multipart_upload().bucket("mpu").key("big").send().await.unwrap();
    let id = create.upload_id().unwrap();
    let mut etags = vec![];
    for (n, data) in [(1, part1.clone()), (2, part2.clone())] {
        let out = s3
            .upload_part()
            .bucket("mpu")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        etags.push(out.e_tag().unwrap().to_owned());
    }
    let part = |n: i32, etag: &str| CompletedPart::builder().part_number(n).e_tag(etag).build();

    let wrong_order = CompletedMultipartUpload::builder().parts(part(2, &etags[1])).parts(part(1, &etags[0])).build();
    let err = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(wrong_order)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "InvalidPartOrder");

    let wrong_etag = CompletedMultipartUpload::builder()
        .parts(part(1, "\"00000000000000000000000000000000\""))
        .parts(part(2, &etags[1]))
        .build();
    let err = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(wrong_etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "InvalidPart");

    let good = CompletedMultipartUpload::builder().parts(part(1, &etags[0])).parts(part(2, &etags[1])).build();
    let done = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(good)
        .send()
        .await
        .unwrap();
    let mut md5s = hex::decode(md5_hex(&part1)).unwrap();
    md5s.extend(hex::decode(md5_hex(&part2)).unwrap());
    assert_eq!(done.e_tag().unwrap(), format!("\"{}-2\"", md5_hex(&md5s)));
    let mut whole = part1.clone();
    whole.extend(&part2);
    assert_eq!(get(&s3, "mpu", "big").await, whole);

    // A small part that is not the last one.
    let create = s3.create_multipart_upload().bucket("mpu").key("small").send().await.unwrap();
    let id = create.upload_id().unwrap();
    let mut etags = vec![];
    for n in 1..=2 {
        let out = s3
            .upload_part()
            .bucket("mpu")
            .key("small")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(vec![n as u8; 100]))
            .send()
            .await
            .unwrap();
        etags.push(out.e_tag().unwrap().to_owned());
    }
    let parts = CompletedMultipartUpload::builder().parts(part(1, &etags[0])).parts(part(2, &etags[1])).build();
    let err = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("small")
        .upload_id(id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "EntityTooSmall");
    s3.abort_multipart_upload().bucket("mpu").key("small").upload_id(id).send().await.unwrap();
    let err = s3
        .upload_part()
        .bucket("mpu")
        .key("small")
        .upload_id(id)
        .part_number(3)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error_code(&err), "NoSuchUpload");
}

#[tokio::test]
async fn bucket_errors_are_the_aws_ones() {
    let gw = Gateway::start();
    let s3 = gw.client();
    let err = s3.get_object().bucket("missing-bucket").key("k").send().await.unwrap_err();
    assert_eq!(error_code(&err), "NoSuchBucket");
    s3.create_bucket().bucket("errs").send().await.unwrap();
    let err = s3.create_bucket().bucket("errs").send().await.unwrap_err();
    assert_eq!(error_code(&err), "BucketAlreadyOwnedByYou");
    let err = s3.get_object().bucket("errs").key("nope").send().await.unwrap_err();
    assert_eq!(error_code(&err), "NoSuchKey");
    put(&s3, "errs", "k", b"v".to_vec()).await;
    let err = s3.delete_bucket().bucket("errs").send().await.unwrap_err();
    assert_eq!(error_code(&err), "BucketNotEmpty");
    s3.delete_object().bucket("errs").key("k").send().await.unwrap();
    s3.delete_bucket().bucket("errs").send().await.unwrap();
    let err = s3.create_bucket().bucket("Bad_Name").send().await.unwrap_err();
    assert_eq!(error_code(&err), "InvalidBucketName");
}

#[tokio::test]
async fn users_own_their_buckets() {
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(users.path(), "[[user]]\naccess_key = \"bob\"\nsecret_key = \"bob-secret-key\"\n").unwrap();
    let gw = Gateway::start_with(&["--users", users.path().to_str().unwrap()]);
    let alice = gw.client();
    let bob = gw.client_as("bob", "bob-secret-key");
    alice.create_bucket().bucket("alices").send().await.unwrap();
    put(&alice, "alices", "k", b"secret".to_vec()).await;
    let err = bob.get_object().bucket("alices").key("k").send().await.unwrap_err();
    assert_eq!(error_code(&err), "AccessDenied");
    let err = bob.list_objects_v2().bucket("alices").send().await.unwrap_err();
    assert_eq!(error_code(&err), "AccessDenied");
    let err = bob.create_bucket().bucket("alices").send().await.unwrap_err();
    assert_eq!(error_code(&err), "BucketAlreadyExists");
    bob.create_bucket().bucket("bobs").send().await.unwrap();
    let names: Vec<_> =
        bob.list_buckets().send().await.unwrap().buckets().iter().map(|b| b.name().unwrap().to_owned()).collect();
    assert_eq!(names, vec!["bobs"]);

    let wrong = gw.client_as("bob", "not-bobs-secret");
    let err = wrong.list_buckets().send().await.unwrap_err();
    assert_eq!(error_code(&err), "SignatureDoesNotMatch");
    let unknown = gw.client_as("nobody", "whatever");
    let err = unknown.list_buckets().send().await.unwrap_err();
    assert_eq!(error_code(&err), "InvalidAccessKeyId");
}
