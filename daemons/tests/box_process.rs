//! A real `dandelion-box` process: files keep their expiry across `kill -9` and a
//! restart, no live file is lost, and what a crash leaves behind (orphans,
//! temporary files) is cleaned up at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dandelion_core::connection::{Incoming, connect_as};
use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::protocol::{Header, Message, Publish, TransferOutcome};
use dandelion_testkit::free_port;
use dandelion_testkit::network::identity;
use dandelion_testkit::process::{Running, binary};
use sha2::{Digest, Sha256};

fn start(config: &Path, data: &Path, port: u16) -> Running {
    Running::spawn(
        // As household devices run it: the box role alone.
        Command::new(binary("dandelion-box"))
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

async fn until<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(http: &HttpClient, url: &str) -> Option<u16> {
    http.get(url, &[]).await.ok().map(|r| r.status.as_u16())
}

#[tokio::test]
async fn a_file_expires_on_time_across_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let publisher = Identity::generate(Role::Publisher).unwrap();
    let config = dir.path().join("dandelion.toml");
    std::fs::write(
        &config,
        format!(
            "[box]\npublisher_keys = [\"{}\"]\n",
            publisher.public_key_hex()
        ),
    )
    .unwrap();
    let port = free_port().unwrap();
    let origin = format!("http://127.0.0.1:{port}");
    let health = format!("{origin}/healthz");
    let http = HttpClient::default();
    let mut running = start(&config, &data, port);
    until("the box to start", Duration::from_secs(20), || {
        status(&http, &health)
    })
    .await;

    let box_id = NodeId::parse(&identity(&data, "box").0).unwrap();
    let mut conn = connect_as(
        &format!("ws://127.0.0.1:{port}/dandelion/ws"),
        &box_id,
        &publisher,
        None,
    )
    .await
    .unwrap();
    conn.send(&Message::Publish(Publish {
        header: Header::new(publisher.id().clone()),
        extra: Default::default(),
    }))
    .await
    .unwrap();
    assert!(matches!(
        conn.recv().await.unwrap(),
        Some(Incoming::Message(Message::PublishReply(_)))
    ));
    let mut urls = Vec::new();
    let stored_at = Instant::now();
    for (transfer, (path, ttl)) in [("/short.ts", 4), ("/long.ts", 3600)]
        .into_iter()
        .enumerate()
    {
        let body = format!("contents of {path}").into_bytes();
        let frame = Frame {
            header: FrameHeader::Start(StartHeader {
                path: path.to_owned(),
                ttl: Some(ttl),
                chunked: Some(ChunkedStart {
                    transfer: transfer as u64,
                    size: body.len() as u64,
                    sha256: Some(format!("{:x}", Sha256::digest(&body))),
                }),
                extra: Default::default(),
            }),
            payload: Bytes::from(body),
        };
        conn.send_binary(frame.encode()).await.unwrap();
        match conn.recv().await.unwrap() {
            Some(Incoming::Message(Message::Transfer(r))) => match r.outcome {
                TransferOutcome::Stored { url, .. } => urls.push(url),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    let files = data.join("files");
    let pid = publisher.id().to_string();
    std::fs::write(files.join(&pid).join("orphan.ts"), b"never indexed").unwrap();
    std::fs::write(files.join(".partial").join("99.partial"), b"half a file").unwrap();

    running.child().kill().unwrap(); // SIGKILL
    running.child().wait().unwrap();
    drop(conn);
    let _running = start(&config, &data, port);
    until("the box to restart", Duration::from_secs(20), || {
        status(&http, &health)
    })
    .await;

    assert!(
        !files.join(&pid).join("orphan.ts").exists(),
        "orphans are deleted at start"
    );
    assert_eq!(
        std::fs::read_dir(files.join(".partial")).unwrap().count(),
        0
    );
    assert_eq!(
        status(&http, &urls[1]).await,
        Some(200),
        "a live file survives"
    );
    let short = files.join(&pid).join("short.ts");
    until(
        "the short file to expire",
        Duration::from_secs(10),
        || async { (status(&http, &urls[0]).await == Some(404) && !short.exists()).then_some(()) },
    )
    .await;
    let elapsed = stored_at.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed <= Duration::from_secs(7),
        "expired after {elapsed:?}, TTL 4 s"
    );
    assert_eq!(status(&http, &urls[1]).await, Some(200));
    assert!(files.join(&pid).join("long.ts").exists());
}
