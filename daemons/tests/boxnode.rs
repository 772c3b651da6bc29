//! The box over real sockets and real files: publisher sessions, transfers and
//! every refusal (with nothing left on disk), HTTP serving as a video player sees
//! it, expiry, household controls, the reachability answer and the heartbeat to a
//! fake entrance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::any;
use bytes::Bytes;
use dandelion_core::auth::{self, Nonce};
use dandelion_core::config::Config;
use dandelion_core::connection::{ClientConnection, ConnectionError, Incoming, connect_as};
use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{
    ExchangeReply, Header, Message, Publish, PublishReply, TransferOutcome, TransferResult,
};
use dandelion_daemons::listener::Remote;
use dandelion_daemons::server::{self, Common};
use dandelion_daemons::shutdown::Shutdown;
use http::Method;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `check` until it yields, failing the test at the deadline.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct TestBox {
    id: NodeId,
    origin: String,
    ws: String,
    data_dir: PathBuf,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    publisher: Identity,
    _dir: tempfile::TempDir,
}

impl Drop for TestBox {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start_box(tweak: impl FnOnce(&mut Config)) -> TestBox {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Identity::generate(Role::Publisher).unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.boxnode.publisher_keys = vec![publisher.public_key_hex()];
    tweak(&mut config);
    // The key the box will load, made now so the test knows whom it dials.
    let id = Identity::load_or_create(dir.path(), Role::Box)
        .unwrap()
        .id()
        .clone();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { dandelion_daemons::boxnode::run(listener, &config, shutdown).await }
    });
    let origin = format!("http://{addr}");
    let http = HttpClient::default();
    eventually("the box to answer", Duration::from_secs(10), || async {
        http.get(&format!("{origin}/healthz"), &[]).await.ok()
    })
    .await;
    TestBox {
        id,
        ws: format!("ws://{addr}/dandelion/ws"),
        origin,
        data_dir: dir.path().to_owned(),
        shutdown,
        task: Some(task),
        publisher,
        _dir: dir,
    }
}

async fn publish(
    url: &str,
    box_id: &NodeId,
    publisher: &Identity,
) -> (ClientConnection, PublishReply) {
    let mut conn = connect_as(url, box_id, publisher, None).await.unwrap();
    conn.send(&Message::Publish(Publish {
        header: Header::new(publisher.id().clone()),
        extra: Default::default(),
    }))
    .await
    .unwrap();
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(Message::PublishReply(reply))) => (conn, reply),
        other => panic!("expected a PUBLISH reply, got {other:?}"),
    }
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn start_frame(path: &str, ttl: Option<u64>, transfer: u64, data: &[u8], first: usize) -> Bytes {
    opening_frame(
        path,
        ttl,
        transfer,
        data.len(),
        Some(sha256(data)),
        &data[..first],
    )
}

/// A chunked start frame announcing `size` bytes and `sha256` (`None`: the
/// hash comes last), carrying `payload`, which need not be what it announces.
fn opening_frame(
    path: &str,
    ttl: Option<u64>,
    transfer: u64,
    size: usize,
    sha256: Option<String>,
    payload: &[u8],
) -> Bytes {
    Frame {
        header: FrameHeader::Start(StartHeader {
            path: path.to_owned(),
            ttl,
            chunked: Some(ChunkedStart {
                transfer,
                size: size as u64,
                sha256,
            }),
            extra: Map::new(),
        }),
        payload: Bytes::copy_from_slice(payload),
    }
    .encode()
}

fn continue_frame(transfer: u64, offset: usize, bytes: &[u8]) -> Bytes {
    Frame {
        header: FrameHeader::Continue {
            transfer,
            offset: offset as u64,
        },
        payload: Bytes::copy_from_slice(bytes),
    }
    .encode()
}

async fn result(conn: &mut ClientConnection) -> TransferResult {
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(Message::Transfer(r))) => r,
        other => panic!("expected a transfer result, got {other:?}"),
    }
}

/// Streams `data` in `chunk`-byte frames and returns the box's answer.
async fn upload(
    conn: &mut ClientConnection,
    path: &str,
    ttl: Option<u64>,
    transfer: u64,
    data: &[u8],
    chunk: usize,
) -> TransferResult {
    let first = data.len().min(chunk);
    conn.send_binary(start_frame(path, ttl, transfer, data, first))
        .await
        .unwrap();
    let mut offset = first;
    while offset < data.len() {
        let end = (offset + chunk).min(data.len());
        conn.send_binary(continue_frame(transfer, offset, &data[offset..end]))
            .await
            .unwrap();
        offset = end;
    }
    result(conn).await
}

fn stored_url(r: &TransferResult) -> String {
    match &r.outcome {
        TransferOutcome::Stored { url, .. } => url.clone(),
        other => panic!("expected STORED, got {other:?}"),
    }
}

fn refused_code(r: &TransferResult) -> String {
    match &r.outcome {
        TransferOutcome::Refused { code, .. } => code.clone(),
        other => panic!("expected REFUSED, got {other:?}"),
    }
}

/// Every regular file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn a_chunked_upload_is_stored_byte_exact_and_served_to_players() {
    let b = start_box(|_| {}).await;
    let (mut conn, reply) = publish(&b.ws, &b.id, &b.publisher).await;
    let pid = b.publisher.id().to_string();
    assert_eq!(reply.data_url, Some(format!("{}/{pid}/", b.origin)));
    assert_eq!(reply.max_file_size, Some(4 << 30));

    let data = pattern(300_000);
    let mut frame = start_frame("/live/demo/seg1.ts", Some(600), 7, &data, 100_000);
    // Extra header keys come back with the result.
    let mut decoded = Frame::decode(frame.clone(), &Default::default()).unwrap();
    if let FrameHeader::Start(s) = &mut decoded.header {
        s.extra.insert("STREAM".into(), Value::from("demo"));
    }
    frame = decoded.encode();
    conn.send_binary(frame).await.unwrap();
    conn.send_binary(continue_frame(7, 100_000, &data[100_000..200_000]))
        .await
        .unwrap();
    conn.send_binary(continue_frame(7, 200_000, &data[200_000..]))
        .await
        .unwrap();
    let r = result(&mut conn).await;
    assert_eq!(r.transfer, Some(7));
    assert_eq!(r.headers.get("STREAM"), Some(&Value::from("demo")));
    let url = stored_url(&r);
    assert_eq!(url, format!("{}/{pid}/live/demo/seg1.ts", b.origin));
    let TransferOutcome::Stored {
        size, sha256: hash, ..
    } = &r.outcome
    else {
        unreachable!()
    };
    assert_eq!((*size, hash.as_str()), (300_000, sha256(&data).as_str()));
    let on_disk = std::fs::read(
        b.data_dir
            .join("files")
            .join(&pid)
            .join("live/demo/seg1.ts"),
    )
    .unwrap();
    assert_eq!(on_disk, data);

    let http = HttpClient::default();
    let full = http.get(&url, &[]).await.unwrap();
    assert_eq!(full.status, 200);
    assert_eq!(&full.body[..], &data[..]);
    let h = |r: &dandelion_core::http::Response, name: &str| {
        r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(h(&full, "content-type").as_deref(), Some("video/mp2t"));
    assert_eq!(
        h(&full, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(
        h(&full, "access-control-expose-headers")
            .unwrap()
            .contains("Content-Range")
    );
    assert!(
        h(&full, "cache-control")
            .unwrap()
            .starts_with("public, max-age=")
    );
    assert!(h(&full, "last-modified").is_some());
    let etag = h(&full, "etag").unwrap();

    let range = http
        .get(&url, &[("range", "bytes=1000-1999")])
        .await
        .unwrap();
    assert_eq!(range.status, 206);
    assert_eq!(&range.body[..], &data[1000..2000]);
    assert_eq!(
        h(&range, "content-range").as_deref(),
        Some("bytes 1000-1999/300000")
    );

    let cached = http.get(&url, &[("if-none-match", &etag)]).await.unwrap();
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let head = http
        .request(Method::HEAD, &url, &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(h(&head, "content-length").as_deref(), Some("300000"));
    // Plain GETs come from the hot-file cache, HEAD and conditionals from
    // ServeFile: both must carry the same validators, and a repeat the same bytes.
    assert_eq!(h(&head, "etag"), Some(etag.clone()));
    assert_eq!(h(&head, "last-modified"), h(&full, "last-modified"));
    let again = http.get(&url, &[]).await.unwrap();
    assert_eq!(&again.body[..], &data[..]);
    assert_eq!(h(&again, "etag"), Some(etag.clone()));
    assert!(head.body.is_empty());

    let preflight = http
        .request(Method::OPTIONS, &url, &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(preflight.status, 204);
    assert!(
        h(&preflight, "access-control-allow-headers")
            .unwrap()
            .contains("Range")
    );

    // A playlist is never cached without revalidation.
    let playlist = b"#EXTM3U\n#EXTINF:2,\nseg1.ts\n";
    let r = upload(
        &mut conn,
        "/live/demo/index.m3u8",
        None,
        8,
        playlist,
        1 << 20,
    )
    .await;
    let p = http.get(&stored_url(&r), &[]).await.unwrap();
    assert_eq!(
        h(&p, "content-type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(h(&p, "cache-control").as_deref(), Some("no-cache"));

    // Overwriting replaces the file.
    let r = upload(
        &mut conn,
        "/live/demo/index.m3u8",
        None,
        9,
        b"#EXTM3U\n",
        1 << 20,
    )
    .await;
    assert_eq!(
        &http.get(&stored_url(&r), &[]).await.unwrap().body[..],
        b"#EXTM3U\n"
    );

    // The box's own routes are not shadowed, and missing files are 404.
    assert!(
        http.get(&format!("{}/", b.origin), &[])
            .await
            .unwrap()
            .text()
            .starts_with("HI box-")
    );
    assert_eq!(
        http.get(&format!("{}/{pid}/nope.ts", b.origin), &[])
            .await
            .unwrap()
            .status,
        404
    );

    // Traffic shows in the admin listing and in /metrics.
    let token = std::fs::read_to_string(b.data_dir.join("admin.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    assert_eq!(
        http.get(&format!("{}/api/files", b.origin), &[])
            .await
            .unwrap()
            .status,
        401
    );
    let list: Value = http
        .get(
            &format!("{}/api/files", b.origin),
            &[("authorization", &auth)],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let seg = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == format!("{pid}/live/demo/seg1.ts"))
        .unwrap();
    assert_eq!(seg["size"], 300_000);
    // Four GETs; the HEAD above sent no file (the publisher's serve probes
    // are HEADs) and is not counted.
    assert_eq!(seg["requests"], 4);
    assert_eq!(seg["bytes_served"], 2 * 300_000 + 1000);
    assert!(seg["ttl_left"].as_u64().unwrap() > 590);
    let metrics = http
        .get(&format!("{}/metrics", b.origin), &[])
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("dandelion_box_served_requests_total 6"),
        "{metrics}"
    );
    eventually("the storage gauges", Duration::from_secs(5), || async {
        let m = http
            .get(&format!("{}/metrics", b.origin), &[])
            .await
            .unwrap()
            .text();
        (m.contains("dandelion_box_stored_files 2")
            && m.contains("dandelion_box_stored_bytes 300008"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_publisher_sending_only_garbage_frames_is_cut_off() {
    let b = start_box(|_| {}).await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    for i in 0..5 {
        conn.send_binary(Bytes::from_static(b"not a frame"))
            .await
            .unwrap();
        match conn.recv().await.unwrap() {
            Some(Incoming::Message(Message::Transfer(r))) => {
                assert_eq!(refused_code(&r), "missing_start_marker", "frame {i}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let end = tokio::time::timeout(Duration::from_secs(5), conn.recv())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn the_originals_one_frame_transfer_is_accepted_on_the_originals_path() {
    let b = start_box(|_| {}).await;
    let id = {
        let http = HttpClient::default();
        let text = http
            .get(&format!("{}/", b.origin), &[])
            .await
            .unwrap()
            .text();
        text.lines()
            .next()
            .unwrap()
            .trim_start_matches("HI ")
            .to_owned()
    };
    let hi = HttpClient::default()
        .get(&format!("{}/dandelion/{id}/", b.origin), &[])
        .await
        .unwrap();
    assert_eq!(hi.text(), format!("HI {id}"));
    let url = format!("{}/dandelion/{id}/ws/", b.origin.replace("http", "ws"));
    let (mut conn, _) = publish(&url, &b.id, &b.publisher).await;
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../core/tests/fixtures/original-messages/12-publisher-to-box-file-frame.bin"),
    )
    .unwrap();
    conn.send_binary(Bytes::from(fixture)).await.unwrap();
    let r = result(&mut conn).await;
    assert_eq!(r.file_path, "/srv/video/hls/plain3.ts");
    let body = HttpClient::default()
        .get(&stored_url(&r), &[])
        .await
        .unwrap();
    assert_eq!(&body.body[..], b"#EXTM3U segment bytes 3\n");
}

#[tokio::test]
async fn every_refusal_says_why_and_leaves_nothing_on_disk() {
    let b = start_box(|c| {
        c.boxnode.max_file_size = bytesize::ByteSize::b(10_000);
        c.boxnode.storage_quota = Some(bytesize::ByteSize::b(25_000));
        c.boxnode.publisher_quota = Some(bytesize::ByteSize::b(15_000));
    })
    .await;
    let (mut conn, reply) = publish(&b.ws, &b.id, &b.publisher).await;
    assert_eq!(reply.quota_free, Some(15_000));
    let pid = b.publisher.id().to_string();
    let files = b.data_dir.join("files");
    // A symlink planted in the publisher's directory must not be followed.
    std::fs::create_dir_all(files.join(&pid)).unwrap();
    std::os::unix::fs::symlink("/tmp", files.join(&pid).join("link")).unwrap();
    let before = files_under(&files);

    let small = pattern(100);
    let cases: &[(&str, &str)] = &[
        ("/a/../../../etc/passwd", "path_dot_component"),
        ("//etc/passwd", "path_absolute"),
        ("/link/escape.ts", "path_symlink"),
        ("/a\\b.ts", "path_backslash"),
        ("/a\u{1}b.ts", "path_control_char"),
        ("/cafe\u{0301}.ts", "path_not_nfc"),
        ("/rtl\u{202E}st.ts", "path_odd_unicode"),
    ];
    let mut transfer = 0;
    for (path, code) in cases {
        transfer += 1;
        let r = upload(&mut conn, path, None, transfer, &small, 1 << 20).await;
        assert_eq!(refused_code(&r), *code, "{path:?}");
        assert_eq!(r.file_path, *path);
    }
    let long = format!("/{}.ts", "x".repeat(300));
    transfer += 1;
    let r = upload(&mut conn, &long, None, transfer, &small, 1 << 20).await;
    assert_eq!(refused_code(&r), "path_component_too_long");

    // Over the file size limit.
    transfer += 1;
    let r = upload(&mut conn, "/big.ts", None, transfer, &pattern(10_001), 4096).await;
    assert_eq!(refused_code(&r), "file_too_large");

    // Over the publisher's share: 10 000 stored, 6 000 more do not fit 15 000.
    transfer += 1;
    stored_url(&upload(&mut conn, "/ok.ts", None, transfer, &pattern(10_000), 4096).await);
    transfer += 1;
    let r = upload(
        &mut conn,
        "/second.ts",
        None,
        transfer,
        &pattern(6_000),
        4096,
    )
    .await;
    assert_eq!(refused_code(&r), "publisher_quota");

    // Over the box's quota (on a second box with only a total quota).
    let b2 = start_box(|c| {
        c.boxnode.storage_quota = Some(bytesize::ByteSize::b(12_000));
    })
    .await;
    let (mut conn2, _) = publish(&b2.ws, &b2.id, &b2.publisher).await;
    stored_url(&upload(&mut conn2, "/a.ts", None, 1, &pattern(8_000), 4096).await);
    let r = upload(&mut conn2, "/b.ts", None, 2, &pattern(8_000), 4096).await;
    assert_eq!(refused_code(&r), "storage_quota");

    // A hash mismatch: the start frame promises another file.
    transfer += 1;
    let data = pattern(5_000);
    let mut start = Frame::decode(
        start_frame("/bad-hash.ts", None, transfer, &data, 2000),
        &Default::default(),
    )
    .unwrap();
    if let FrameHeader::Start(s) = &mut start.header {
        s.chunked.as_mut().unwrap().sha256 = Some(sha256(b"something else"));
    }
    conn.send_binary(start.encode()).await.unwrap();
    conn.send_binary(continue_frame(transfer, 2000, &data[2000..]))
        .await
        .unwrap();
    assert_eq!(refused_code(&result(&mut conn).await), "hash_mismatch");

    // A size mismatch: more bytes than SIZE.
    transfer += 1;
    conn.send_binary(start_frame("/bad-size.ts", None, transfer, &data, 2000))
        .await
        .unwrap();
    conn.send_binary(continue_frame(transfer, 2000, &pattern(4_000)))
        .await
        .unwrap();
    assert_eq!(refused_code(&result(&mut conn).await), "payload_past_size");

    // A transfer cut off midway: its temporary file goes with the connection.
    transfer += 1;
    conn.send_binary(start_frame("/cut.ts", None, transfer, &data, 2000))
        .await
        .unwrap();
    let partial = files.join(".partial");
    eventually(
        "the cut-off transfer's temporary file",
        Duration::from_secs(5),
        || async { (std::fs::read_dir(&partial).unwrap().count() == 1).then_some(()) },
    )
    .await;
    drop(conn);
    eventually(
        "the temporary file to be removed",
        Duration::from_secs(5),
        || async { (std::fs::read_dir(&partial).unwrap().count() == 0).then_some(()) },
    )
    .await;

    let mut expected = before.clone();
    expected.push(format!("{pid}/ok.ts"));
    expected.sort();
    assert_eq!(
        files_under(&files),
        expected,
        "only the accepted file was added"
    );
    assert!(!files.join(&pid).join("second.ts").exists());
}

/// A box with no certificate of its own still speaks TLS to its publishers,
/// with its identity certificate, on the port viewers reach over plain HTTP.
/// A publisher that expected another box refuses that certificate before it
/// signs or sends anything, and the box counts the failed handshake.
#[tokio::test]
async fn a_box_without_a_certificate_speaks_tls_with_its_identity() {
    let b = start_box(|_| {}).await;
    let wss = b.ws.replacen("ws://", "wss://", 1);
    let (mut conn, reply) = publish(&wss, &b.id, &b.publisher).await;
    // Viewers keep plain HTTP on the same port.
    assert_eq!(
        reply.data_url,
        Some(format!("{}/{}/", b.origin, b.publisher.id()))
    );
    conn.close().await;

    let other = Identity::generate(Role::Box).unwrap();
    let err = connect_as(&wss, other.id(), &b.publisher, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectionError::Unproven { .. })
            && err.to_string().contains(&format!("from {}", b.id)),
        "{err}"
    );
    let http = HttpClient::default();
    eventually(
        "the box to count the refused handshake",
        Duration::from_secs(10),
        || async {
            let metrics = http
                .get(&format!("{}/metrics", b.origin), &[])
                .await
                .ok()?
                .text();
            metrics
                .contains("dandelion_refused_total{reason=\"tls_handshake\"} 1")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn untrusted_publishers_and_other_roles_are_refused() {
    let b = start_box(|_| {}).await;
    let http = HttpClient::default();
    let stranger = Identity::generate(Role::Publisher).unwrap();
    let err = connect_as(&b.ws, &b.id, &stranger, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403 Forbidden") && err.contains("not trusted by this box"),
        "{err}"
    );
    let a_box = Identity::generate(Role::Box).unwrap();
    let err = connect_as(&b.ws, &b.id, &a_box, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("403 Forbidden"), "{err}");
    let err = dandelion_core::connection::connect(&b.ws, &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401 Unauthorized"), "{err}");
    let metrics = http
        .get(&format!("{}/metrics", b.origin), &[])
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("dandelion_refused_total{reason=\"untrusted_publisher\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_expired_file_is_404_and_leaves_the_disk() {
    let b = start_box(|_| {}).await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    let r = upload(&mut conn, "/short.ts", Some(1), 1, b"brief", 1 << 20).await;
    let url = stored_url(&r);
    let path = b
        .data_dir
        .join("files")
        .join(b.publisher.id().as_str())
        .join("short.ts");
    assert!(path.exists());
    let http = HttpClient::default();
    eventually("the file to expire", Duration::from_secs(5), || async {
        (http.get(&url, &[]).await.unwrap().status == 404).then_some(())
    })
    .await;
    eventually(
        "the sweeper to delete it",
        Duration::from_secs(5),
        || async { (!path.exists()).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn the_reachability_answer_is_a_proof_for_the_verifier() {
    let b = start_box(|_| {}).await;
    let http = HttpClient::default();
    let entrance = Identity::generate(Role::Entrance).unwrap();
    let nonce_text = "ab".repeat(32);
    let url = format!(
        "{}/dandelion/reachability?nonce={nonce_text}&verifier={}",
        b.origin,
        entrance.id()
    );
    let proof: auth::Proof = http.get(&url, &[]).await.unwrap().json().unwrap();
    assert!(proof.id.starts_with("box-"));
    let nonce = Nonce::parse(&nonce_text).unwrap();
    // A reachability proof names the box's data URL, and opens no session.
    let claim = auth::Claim::reachability(entrance.id(), &nonce, &b.origin).unwrap();
    assert_eq!(
        auth::verify_from(&proof, &b.id, &claim),
        Ok(proof.public_key.clone())
    );
    assert_eq!(
        auth::verify(&proof, &auth::Claim::session_client(entrance.id(), &nonce)),
        Err(auth::AuthError::BadSignature)
    );
    for bad in [
        format!(
            "{}/dandelion/reachability?nonce=zz&verifier={}",
            b.origin,
            entrance.id()
        ),
        format!(
            "{}/dandelion/reachability?nonce={nonce_text}&verifier=nobody",
            b.origin
        ),
        format!("{}/dandelion/reachability", b.origin),
    ] {
        assert_eq!(http.get(&bad, &[]).await.unwrap().status, 400, "{bad}");
    }
}

/// Reads the response head of a raw GET and leaves the body unread, holding a
/// download open.
async fn open_download(addr: &str, path: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[tokio::test]
async fn the_upload_cap_holds_and_downloads_beyond_the_cap_get_503() {
    const CAP: u64 = 1024 * 1024;
    let b = start_box(|c| {
        c.boxnode.upload_cap = Some(bytesize::ByteSize::b(CAP));
        c.boxnode.max_downloads = 1;
    })
    .await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    let data = pattern(3 * 1024 * 1024);
    let url = stored_url(&upload(&mut conn, "/big.mp4", None, 1, &data, 1 << 20).await);
    let addr = b.origin.trim_start_matches("http://").to_owned();
    let path = url.trim_start_matches(&b.origin).to_owned();

    let mut held = open_download(&addr, &path).await;
    let http = HttpClient::default();
    let busy = http.get(&url, &[]).await.unwrap();
    assert_eq!(busy.status, 503);
    assert_eq!(busy.headers.get("retry-after").unwrap(), "1");

    // Drain the held download and time it: 3 MiB at 1 MiB/s.
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    while got < data.len() {
        let n = held.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got += n;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = got as f64 / secs;
    assert!(
        (rate - CAP as f64).abs() / (CAP as f64) < 0.10,
        "served {got} bytes in {secs:.2}s = {rate:.0} B/s against a cap of {CAP}"
    );
}

/// A fake entrance: admits boxes like the real one, records what they send,
/// answers heartbeats with the publisher keys to trust.
#[derive(Clone)]
struct FakeEntrance {
    common: Arc<Common>,
    seen: tokio::sync::mpsc::UnboundedSender<Message>,
    peers: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
    keys: Vec<String>,
}

async fn entrance_session(
    State(e): State<FakeEntrance>,
    ConnectInfo(Remote { addr: peer, .. }): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    let _ = e.peers.send(peer);
    let headers = request.headers().clone();
    dandelion_daemons::handshake::verify_proof(
        &headers,
        &e.common.nonces,
        e.common.identity.id(),
        dandelion_core::auth::Channel::Unbound,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        dandelion_daemons::handshake::bearer(request.headers()),
        Some("join-me-0123456789")
    );
    let shutdown = e.common.shutdown.clone();
    dandelion_daemons::ws::upgrade(request, &shutdown, move |mut conn| async move {
        while let Ok(Some(Incoming::Message(m))) = conn.recv().await {
            let reply = matches!(m, Message::Exchange(_)).then(|| {
                Message::ExchangeReply(ExchangeReply {
                    header: Header::new(e.common.identity.id().clone()),
                    entrance_urls: vec![],
                    entrances: None,
                    publisher_keys: Some(e.keys.clone()),
                    heartbeat_interval: Some(1),
                    extra: Default::default(),
                })
            });
            let _ = e.seen.send(m);
            if let Some(reply) = reply
                && conn.send(&reply).await.is_err()
            {
                break;
            }
        }
    })
}

#[tokio::test]
async fn heartbeats_reach_the_entrance_teach_trusted_keys_and_end_with_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let common = Arc::new(
        Common::open(
            &Config {
                data_dir: dir.path().to_owned(),
                ..Config::default()
            },
            Role::Entrance,
            shutdown.clone(),
        )
        .await
        .unwrap(),
    );
    let entrance_id = common.identity.id().clone();
    let learned = Identity::generate(Role::Publisher).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (peers_tx, mut peers) = tokio::sync::mpsc::unbounded_channel();
    let fake = FakeEntrance {
        common: common.clone(),
        seen: tx,
        peers: peers_tx,
        keys: vec![learned.public_key_hex()],
    };
    let router = Router::new()
        .route("/dandelion/ws", any(entrance_session))
        .with_state(fake)
        .merge(server::common_routes(common));
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let entrance: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, router, shutdown.clone()));

    let b = start_box(|c| {
        c.boxnode.entrances = vec![
            PinnedUrl::new(
                &format!("ws://{entrance}/dandelion/ws"),
                entrance_id.clone(),
            )
            .unwrap(),
        ];
        c.boxnode.join_token = Some("join-me-0123456789".into());
        c.boxnode.heartbeat_interval = Duration::from_secs(1);
        c.boxnode.bind_outgoing = Some("127.0.0.2".parse().unwrap());
        c.boxnode.publisher_quota = Some(bytesize::ByteSize::b(5_000_000));
    })
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    // The session left from the configured source address.
    assert_eq!(peers.recv().await.unwrap().ip().to_string(), "127.0.0.2");
    let Message::Exchange(ex) = first else {
        panic!("expected EXCHANGE, got {first:?}")
    };
    assert!(ex.header.id.as_str().starts_with("box-"));
    assert_eq!(ex.data_url.as_deref(), Some(b.origin.as_str()));
    assert_eq!(
        ex.connect_ws,
        Some(format!(
            "{}/dandelion/{}/ws",
            b.origin.replace("http://", "wss://"),
            ex.header.id
        ))
    );
    let info = ex.system_info.unwrap();
    assert!(
        info.cpu_cores.unwrap() >= 1 && info.disk_total.unwrap() > 0 && info.mem_total.unwrap() > 0
    );
    assert_eq!(info.max_downloads, Some(256));
    assert_eq!(info.storage_used, Some(0));
    assert_eq!(
        info.extra.get("PUBLISHER_QUOTA"),
        Some(&Value::from(5_000_000))
    );
    assert_eq!(ex.traffic_flow.unwrap().requests, Some(0));

    // The key the entrance named now opens a publisher session.
    eventually(
        "the learned key to be trusted",
        Duration::from_secs(10),
        || async {
            connect_as(&b.ws, &b.id, &learned, None)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    // What the entrance names adds to the configured keys, never replaces them.
    publish(&b.ws, &b.id, &b.publisher).await;
    // A second heartbeat follows within the (1 s ± jitter) interval.
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(second, Message::Exchange(_)), "{second:?}");

    b.shutdown.trigger();
    let goodbye = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await.unwrap() {
                Message::Goodbye(g) => return g,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(goodbye.header.id, ex.header.id);
    let mut b = b;
    let task = b.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    shutdown.trigger();
}

/// One HTTP/1.1 response off `s`: status, headers (names lowercased) and body
/// (none for a `HEAD`, whose `content-length` describes the `GET`).
async fn read_response(
    s: &mut tokio::net::TcpStream,
    head_only: bool,
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: std::collections::HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    s.read_exact(&mut body).await.unwrap();
    (status, headers, body)
}

/// The box answers plain whole-file GETs and HEADs itself with sendfile and
/// hands a connection to hyper at its first other request (a range, a missing
/// file, ...). A player must not tell the two apart: pipelined on one
/// keep-alive connection, every answer is byte-exact and the 200s carry the
/// same validators, type, caching and CORS headers; `Connection: close` is
/// honoured; the traffic counters count every byte either way.
#[tokio::test]
async fn plain_gets_answered_zero_copy_and_by_hyper_agree_on_one_connection() {
    let b = start_box(|_| {}).await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    let data = pattern(300 * 1024);
    let url = stored_url(&upload(&mut conn, "/live/seg 1.ts", None, 1, &data, 1 << 20).await);
    let addr = b.origin.trim_start_matches("http://").to_owned();
    let path = url.trim_start_matches(&b.origin).to_owned();
    assert!(path.contains("%20"), "{path}");
    let missing = path.replace("seg%201", "seg%202");

    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let pipelined = format!(
        "GET {path}?v=1 HTTP/1.1\r\nHost: x\r\n\r\n\
         HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET {missing} HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let (status, fast, body) = read_response(&mut s, false).await;
    assert_eq!(status, 200);
    assert!(body == data, "the zero-copy body is byte-exact");
    let (status, head, body) = read_response(&mut s, true).await;
    assert_eq!((status, body.len()), (200, 0));
    assert_eq!(head.get("content-length"), Some(&data.len().to_string()));
    let (status, ranged, body) = read_response(&mut s, false).await;
    assert_eq!(status, 206);
    assert_eq!(body, &data[10..20]);
    assert_eq!(ranged.get("etag"), fast.get("etag"));
    let (status, hyper, body) = read_response(&mut s, false).await;
    assert_eq!(status, 200);
    assert!(body == data, "after the hand-over hyper answers the rest");
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
        "accept-ranges",
        "access-control-allow-origin",
        "access-control-expose-headers",
    ] {
        assert_eq!(fast.get(name), hyper.get(name), "{name}");
        assert_eq!(fast.get(name), head.get(name), "{name}");
    }
    assert_eq!(
        fast.get("content-type").map(String::as_str),
        Some("video/mp2t")
    );
    assert!(fast.contains_key("date"));
    let (status, _, _) = read_response(&mut s, false).await;
    assert_eq!(status, 404);

    // Connection: close is answered, then the box closes.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, headers, body) = read_response(&mut s, false).await;
    assert_eq!((status, body.len()), (200, data.len()));
    assert_eq!(headers.get("connection").map(String::as_str), Some("close"));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the box closes after Connection: close")
        .unwrap();
    assert!(rest.is_empty());

    // Three full bodies and ten bytes, whichever path sent them.
    let served = 3 * data.len() + 10;
    let metrics = HttpClient::default()
        .get(&format!("{}/metrics", b.origin), &[])
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains(&format!("dandelion_box_served_bytes_total {served}")),
        "{metrics}"
    );
    // Four GETs of the file; the HEAD sent none and is not counted.
    assert!(
        metrics.contains("dandelion_box_served_requests_total 4"),
        "{metrics}"
    );
}

/// The attack on the zero-copy path's own head reading: half a request, or
/// none, holds a connection only for `header_read_timeout`, and viewers are
/// served meanwhile.
#[tokio::test]
async fn a_half_sent_request_on_the_file_path_is_closed_after_the_header_timeout() {
    let b = start_box(|c| c.limits.header_read_timeout = Duration::from_secs(1)).await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    let data = pattern(1000);
    let url = stored_url(&upload(&mut conn, "/a.ts", None, 1, &data, 1 << 20).await);
    let addr = b.origin.trim_start_matches("http://").to_owned();
    let path = url.trim_start_matches(&b.origin).to_owned();

    // (A connection that sends nothing is the listener's: it waits for the
    // first byte to tell TLS from plain HTTP, within its handshake timeout.)
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    // After a whole answer, an idle keep-alive connection waits as long.
    let mut kept = tokio::net::TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(read_response(&mut kept, false).await.2 == data);

    let viewer = HttpClient::default().get(&url, &[]).await.unwrap();
    assert_eq!(viewer.status, 200);
    let started = Instant::now();
    for s in [&mut half, &mut kept] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("closed within the header timeout")
            .ok();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// A publisher keeps several transfers in flight on one session: the box reads
/// the next file's frames while earlier ones are made durable, and answers
/// each by its transfer id. Twelve files sent back to back, without waiting,
/// get twelve verdicts (in any order), each naming its own transfer and file,
/// and every file is served byte-exact; one refused among them (a bad
/// SHA-256) is refused alone.
#[tokio::test]
async fn transfers_pipelined_on_one_session_each_get_their_own_verdict() {
    let b = start_box(|_| {}).await;
    let (mut conn, _) = publish(&b.ws, &b.id, &b.publisher).await;
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            let mut data = pattern(40 * 1024 + i * 1000);
            data[0] = u8::try_from(i).unwrap();
            (format!("/live/seg-{i}.ts"), data)
        })
        .collect();
    for (i, (path, data)) in files.iter().enumerate() {
        let transfer = 100 + i as u64;
        let frame = if i == 5 {
            // Other bytes of the same length: the hash no longer matches.
            let other = pattern(data.len() + 1);
            opening_frame(
                path,
                None,
                transfer,
                data.len(),
                Some(sha256(data)),
                &other[1..],
            )
        } else {
            start_frame(path, None, transfer, data, data.len())
        };
        conn.send_binary(frame).await.unwrap();
    }
    let mut verdicts = std::collections::HashMap::new();
    for _ in 0..files.len() {
        let r = result(&mut conn).await;
        let transfer = r.transfer.expect("a chunked transfer's verdict names it");
        assert!(verdicts.insert(transfer, r).is_none(), "one verdict each");
    }
    let http = HttpClient::default();
    for (i, (path, data)) in files.iter().enumerate() {
        let r = &verdicts[&(100 + i as u64)];
        assert_eq!(&r.file_path, path);
        if i == 5 {
            assert_eq!(refused_code(r), "hash_mismatch");
            continue;
        }
        let got = http.get(&stored_url(r), &[]).await.unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body == data.as_slice(), "{path} is byte-exact");
    }
}

/// `dandelion/2` on a real box: a transfer whose hash comes in its final frame
/// is stored only once that hash matches; a wrong one is refused and leaves
/// nothing; an aborted one leaves no partial file and no verdict, and the
/// session goes on.
#[tokio::test]
async fn hash_last_transfers_are_verified_at_their_final_frame_and_abort_cleanly() {
    let b = start_box(|_| {}).await;
    let (mut conn, reply) = publish(&b.ws, &b.id, &b.publisher).await;
    assert_eq!(
        reply.header.level(),
        2,
        "the box says it takes the hash last"
    );
    let data = pattern(300 * 1024);
    let opening = |transfer: u64, path: &str| {
        opening_frame(path, None, transfer, data.len(), None, &data[..100 * 1024])
    };
    let last = |transfer: u64, sha256: String| {
        Frame {
            header: FrameHeader::Finish {
                transfer,
                offset: data.len() as u64,
                sha256,
            },
            payload: Bytes::new(),
        }
        .encode()
    };
    let partials = || {
        std::fs::read_dir(b.data_dir.join("files").join(".partial"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // Aborted half way: the partial file goes, and no verdict comes.
    conn.send_binary(opening(1, "/gone.bin")).await.unwrap();
    conn.send_binary(continue_frame(1, 100 * 1024, &data[100 * 1024..200 * 1024]))
        .await
        .unwrap();
    conn.send_binary(
        Frame {
            header: FrameHeader::Abort {
                transfer: 1,
                reason: "the upload was cut off".into(),
            },
            payload: Bytes::new(),
        }
        .encode(),
    )
    .await
    .unwrap();

    // Every byte, then the wrong hash: refused.
    conn.send_binary(opening(2, "/wrong.bin")).await.unwrap();
    conn.send_binary(continue_frame(2, 100 * 1024, &data[100 * 1024..]))
        .await
        .unwrap();
    conn.send_binary(last(2, sha256(b"other bytes")))
        .await
        .unwrap();
    let r = result(&mut conn).await;
    assert_eq!(
        (r.transfer, refused_code(&r)),
        (Some(2), "hash_mismatch".into())
    );

    // Every byte, then the right hash: stored, byte-exact.
    conn.send_binary(opening(3, "/right.bin")).await.unwrap();
    conn.send_binary(continue_frame(3, 100 * 1024, &data[100 * 1024..]))
        .await
        .unwrap();
    conn.send_binary(last(3, sha256(&data))).await.unwrap();
    let r = result(&mut conn).await;
    assert_eq!(
        r.transfer,
        Some(3),
        "no verdict for the aborted transfer came first"
    );
    let got = HttpClient::default()
        .get(&stored_url(&r), &[])
        .await
        .unwrap();
    assert!(got.body == data.as_slice(), "the stored file is byte-exact");
    assert_eq!(partials(), 0, "no partial file is left behind");
    let stored = std::fs::read_dir(b.data_dir.join("files").join(b.publisher.id().as_str()))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    assert_eq!(stored, ["right.bin"]);
}
