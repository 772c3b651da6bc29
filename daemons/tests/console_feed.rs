//! `/dandelion/console` on real daemons: the admin token is required, a feed
//! opens with the role's whole view, and changes are pushed as they happen — a
//! box's heartbeats, a box turning stale and leaving, a pushed file being
//! placed and stored — without the console asking again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use dandelion_core::console::{self, BoxState, Feed, Update};
use dandelion_core::http::HttpClient;
use dandelion_testkit::network::{Network, NetworkBuilder};

/// Reads updates until `want` picks something out of one, or `timeout` passes.
async fn wait_update<T>(
    feed: &mut Feed,
    what: &str,
    timeout: Duration,
    mut want: impl FnMut(&Update) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let update = match tokio::time::timeout(left, feed.next()).await {
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
            Ok(Ok(Some(u))) => u,
            Ok(Ok(None)) => panic!("the feed closed while waiting for {what}"),
            Ok(Err(e)) => panic!("the feed broke while waiting for {what}: {e}"),
        };
        if let Some(found) = want(&update) {
            return found;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consoles_get_a_view_then_live_changes_from_every_role() {
    let root = tempfile::tempdir().unwrap();
    let mut net = tokio::task::spawn_blocking({
        let root = root.path().to_owned();
        move || NetworkBuilder::new(&root, 2).expire_after(6).start()
    })
    .await
    .unwrap();
    let entrance = net.entrance.origin();
    let token = Network::admin_token(&net.entrance);

    // No token, a wrong one: refused at the handshake, with the reason.
    let no = console::attach(&entrance, "")
        .await
        .unwrap_err()
        .to_string();
    assert!(no.contains("401") && no.contains("admin token"), "{no}");
    let wrong = console::attach(&entrance, "not-the-token")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        wrong.contains("403") && wrong.contains("wrong admin token"),
        "{wrong}"
    );

    let mut feed = console::attach(&entrance, &token).await.unwrap();
    let hello = wait_update(&mut feed, "hello", Duration::from_secs(5), |u| match u {
        Update::Hello(h) => Some(h.clone()),
        _ => None,
    })
    .await;
    assert_eq!(hello.role, "entrance");
    assert!(hello.id.starts_with("entrance-"), "{hello:?}");
    wait_update(
        &mut feed,
        "the entrance view",
        Duration::from_secs(5),
        |u| matches!(u, Update::Entrance(_)).then_some(()),
    )
    .await;
    // Both boxes' heartbeats arrive as rows, pushed.
    let mut active = std::collections::BTreeSet::new();
    wait_update(
        &mut feed,
        "a heartbeat row from each box",
        Duration::from_secs(20),
        |u| {
            if let Update::BoxRow(b) = u
                && b.state == BoxState::Active
            {
                active.insert(b.id.clone());
            }
            (active.len() == 2).then_some(())
        },
    )
    .await;

    // The publisher's and a box's feeds show a pushed file being placed and stored.
    let publisher = net.publisher.origin();
    let mut pub_feed = console::attach(&publisher, &Network::admin_token(&net.publisher))
        .await
        .unwrap();
    let file = root.path().join("seg.ts");
    std::fs::write(&file, vec![7u8; 40_000]).unwrap();
    let http = HttpClient::default();
    let pub_token = Network::admin_token(&net.publisher);
    console::push_file(
        &http,
        &publisher,
        &pub_token,
        &file,
        "live/seg.ts",
        "ttl=120",
        |_| {},
    )
    .await
    .unwrap();
    let holder = wait_update(
        &mut pub_feed,
        "the file placed in the publisher's view",
        Duration::from_secs(30),
        |u| match u {
            Update::Publisher(v) => v
                .files
                .iter()
                .find(|f| f.name == "live/seg.ts" && f.state == "placed")
                .map(|f| f.placements[0].box_id.clone()),
            _ => None,
        },
    )
    .await;
    let mut holder_box = None;
    for b in &net.boxes {
        if hello_id(b).await == holder {
            holder_box = Some(b);
        }
    }
    let holder_box = holder_box.expect("the holder is one of the boxes");
    let mut box_feed = console::attach(&holder_box.origin(), &Network::admin_token(holder_box))
        .await
        .unwrap();
    wait_update(
        &mut box_feed,
        "the box's hello",
        Duration::from_secs(5),
        |u| matches!(u, Update::Hello(_)).then_some(()),
    )
    .await;
    wait_update(
        &mut box_feed,
        "the stored file in the box's view",
        Duration::from_secs(10),
        |u| match u {
            Update::BoxNode(v) => v
                .files
                .iter()
                .any(|f| f.path.ends_with("live/seg.ts") && f.size == 40_000)
                .then_some(()),
            _ => None,
        },
    )
    .await;

    // A box killed without a word turns stale, then leaves at expiry; a box that
    // says goodbye leaves at once.
    let victim = net.boxes.remove(0);
    let victim_id = hello_id(&victim).await;
    drop(victim);
    wait_update(
        &mut feed,
        "the killed box turning stale",
        Duration::from_secs(20),
        |u| match u {
            Update::BoxRow(b) if b.id == victim_id && b.state == BoxState::Stale => Some(()),
            _ => None,
        },
    )
    .await;
    wait_update(
        &mut feed,
        "the killed box expiring",
        Duration::from_secs(20),
        |u| match u {
            Update::BoxGone { id, reason } if *id == victim_id => {
                assert!(reason.contains("expired"), "{reason}");
                Some(())
            }
            _ => None,
        },
    )
    .await;
    let last_id = hello_id(&net.boxes[0]).await;
    assert!(net.boxes[0].terminate(Duration::from_secs(10)));
    wait_update(
        &mut feed,
        "the stopped box saying goodbye",
        Duration::from_secs(10),
        |u| match u {
            Update::BoxGone { id, reason } if *id == last_id => {
                assert!(reason.contains("goodbye"), "{reason}");
                Some(())
            }
            _ => None,
        },
    )
    .await;
}

/// A daemon's ID, from the hello of its own feed.
async fn hello_id(d: &dandelion_testkit::daemon::Daemon) -> String {
    let mut feed = console::attach(&d.origin(), &Network::admin_token(d))
        .await
        .unwrap();
    match feed.next().await.unwrap() {
        Some(Update::Hello(h)) => h.id,
        other => panic!("expected a hello, got {other:?}"),
    }
}
