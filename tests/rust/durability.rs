//! Restart persistence and crash safety of the embedded store, through the
//! real gateway.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::{Gateway, create_encrypted_bucket, files_under, pattern};

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("keep").send().await.unwrap();
    let data = pattern(300_000, 7);
    s3.put_object()
        .bucket("keep")
        .key("dir/obj")
        .content_type("application/x-test")
        .metadata("color", "blue")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let upload = s3.create_multipart_upload().bucket("keep").key("pending").send().await.unwrap();
    let upload_id = upload.upload_id().unwrap().to_owned();
    s3.upload_part()
        .bucket("keep")
        .key("pending")
        .upload_id(&upload_id)
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await
        .unwrap();

    gw.restart();
    let s3 = gw.client();
    let out = s3.get_object().bucket("keep").key("dir/obj").send().await.unwrap();
    assert_eq!(out.content_type(), Some("application/x-test"));
    assert_eq!(out.metadata().unwrap().get("color").map(String::as_str), Some("blue"));
    assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), data);
    let parts = s3.list_parts().bucket("keep").key("pending").upload_id(&upload_id).send().await.unwrap();
    assert_eq!(parts.parts().len(), 1);
}

fn total_bytes(dir: &std::path::Path) -> u64 {
    files_under(dir).iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum()
}

#[tokio::test]
async fn kill_during_a_large_upload_leaves_the_old_object_and_no_garbage() {
    let mut gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("crash").send().await.unwrap();
    let old = pattern(1000, 1);
    s3.put_object().bucket("crash").key("victim").body(ByteStream::from(old.clone())).send().await.unwrap();
    let before = total_bytes(&gw.data_dir());

    // A 256 MiB upload that is still streaming when the gateway dies.
    let big = pattern(256 << 20, 2);
    let uploader = {
        let s3 = s3.clone();
        tokio::spawn(
            async move { s3.put_object().bucket("crash").key("victim").body(ByteStream::from(big)).send().await },
        )
    };
    // Wait until the gateway has started writing the body.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while total_bytes(&gw.data_dir()) < before + (8 << 20) {
        assert!(std::time::Instant::now() < deadline, "upload never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill9();
    assert!(uploader.await.unwrap().is_err(), "the upload cannot have succeeded");

    gw.restart();
    let s3 = gw.client();
    let out = s3.get_object().bucket("crash").key("victim").send().await.unwrap();
    assert_eq!(out.body.collect().await.unwrap().into_bytes().to_vec(), old);
    let after = total_bytes(&gw.data_dir());
    assert!(after <= before + (1 << 20), "partial upload left {} bytes behind", after - before);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("cut").send().await.unwrap();
    let before = total_bytes(&gw.data_dir());
    // A presigned PUT whose body stops halfway.
    let presigned = s3
        .put_object()
        .bucket("cut")
        .key("half")
        .presigned(aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let uri: hyper::Uri = presigned.uri().parse().unwrap();
    let mut conn = tokio::net::TcpStream::connect(gw.s3_addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 10000000\r\n\r\n",
        uri.path_and_query().unwrap(),
        uri.authority().unwrap()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![b'x'; 3_000_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let err = s3.head_object().bucket("cut").key("half").send().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert!(total_bytes(&gw.data_dir()) <= before + (64 << 10), "temp data leaked");
}

/// Overwrites acknowledged right before a SIGKILL: each key reads back as
/// its last acknowledged version after the restart, and the replaced data
/// files, which are removed in the background after the answer, are gone
/// after the restart whether or not that removal ran before the kill.
#[tokio::test]
async fn overwrites_acknowledged_just_before_a_kill_survive_and_leave_no_garbage() {
    let mut gw = Gateway::start();
    let s3 = gw.client();
    s3.create_bucket().bucket("plain").send().await.unwrap();
    create_encrypted_bucket(&s3, "sealed").await;
    const KEYS: u64 = 6;
    let put_all = |version: u64| {
        let s3 = s3.clone();
        async move {
            let mut puts = Vec::new();
            for bucket in ["plain", "sealed"] {
                for key in 0..KEYS {
                    let (s3, body) = (s3.clone(), pattern(3 << 20, version * 100 + key));
                    puts.push(tokio::spawn(async move {
                        s3.put_object()
                            .bucket(bucket)
                            .key(format!("k{key}"))
                            .body(ByteStream::from(body))
                            .send()
                            .await
                            .unwrap();
                    }));
                }
            }
            for put in puts {
                put.await.unwrap();
            }
        }
    };
    put_all(1).await;
    put_all(2).await;
    gw.kill9();

    gw.restart();
    let s3 = gw.client();
    for bucket in ["plain", "sealed"] {
        for key in 0..KEYS {
            let out = s3.get_object().bucket(bucket).key(format!("k{key}")).send().await.unwrap();
            let body = out.body.collect().await.unwrap().into_bytes();
            assert!(body.as_ref() == pattern(3 << 20, 200 + key).as_slice(), "{bucket}/k{key} is not its last version");
        }
    }
    let files = files_under(&gw.data_dir().join("objects"));
    assert_eq!(files.len() as u64, 2 * KEYS, "one data file per object is left: {files:?}");
}
