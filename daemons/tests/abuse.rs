//! Load and abuse from one client with no credential, played against real
//! `dandelion` processes on loopback: each test is an attack that took a daemon
//! (and with it the delivery network) down or held its resources, and asserts
//! what a user would notice — the daemon still answers others quickly, the
//! attacker's connections end — plus what an operator would see in `/metrics`.
//! Loops are bounded (hundreds of connections, not the attack's thousands): the
//! caps are what is tested, and they are set low where the defaults would need
//! more descriptors than a test should take.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::network::NetworkBuilder;
use dandelion_testkit::wait_for;

/// Whether the server has closed `stream` (FIN or reset), without blocking.
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

fn open(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nonblocking(true).unwrap();
    stream
}

/// `GET path` over a new connection from `from` (another loopback address: a
/// client other than the attacker), with the time the answer took.
fn get_from(from: Ipv4Addr, addr: SocketAddr, path: &str) -> (String, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        let started = Instant::now();
        let mut stream = socket.connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("an answer within 5s")
            .unwrap();
        (answer, started.elapsed())
    })
}

fn metric(daemon: &Daemon, sample: &str) -> u64 {
    let (answer, _) = get_from(Ipv4Addr::new(127, 0, 0, 3), daemon.addr(), "/metrics");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The attack: one client opens connections and sends nothing, or half a
/// request, to use up the daemon's descriptors. Before, 4 000 idle connections
/// and 200 half-sent requests were all still open after 40 s, and a box under
/// `LimitNOFILE=16384` stopped answering after 16 400. Now one address gets
/// `max_connections_per_address` and no more, each is closed after
/// `header_read_timeout`, and another client's `/healthz` answers in under
/// 100 ms throughout.
#[test]
fn an_idle_connection_flood_neither_starves_others_nor_stays() {
    let dir = tempfile::tempdir().unwrap();
    let entrance = DaemonBuilder::new("entrance", dir.path())
        .top("[limits]")
        .top("max_connections_per_address = 100")
        .top("header_read_timeout = \"3s\"")
        .spawn();
    let addr = entrance.addr();

    let flood: Vec<TcpStream> = (0..150).map(|_| open(addr)).collect();
    // Half of the admitted ones start a request and never finish it.
    for stream in flood.iter().take(50) {
        let _ = (&*stream).write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    }
    let refused = wait_for(
        "the connections over the cap closed",
        Duration::from_secs(5),
        || {
            let n = flood.iter().filter(|s| closed(s)).count();
            (n >= 50).then_some(n)
        },
    );
    assert_eq!(
        refused, 50,
        "exactly the connections over the per-address cap are closed at once"
    );

    for _ in 0..5 {
        let (answer, took) = get_from(Ipv4Addr::new(127, 0, 0, 2), addr, "/healthz");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            took < Duration::from_millis(100),
            "/healthz took {took:?} under the flood"
        );
    }
    assert_eq!(
        metric(
            &entrance,
            "dandelion_refused_total{reason=\"connections_per_address\"}"
        ),
        50
    );
    assert!(
        entrance
            .log()
            .contains("limits.max_connections_per_address"),
        "the log says which limit was hit:\n{}",
        entrance.log()
    );

    // Idle and half-sent alike end after the header timeout.
    let started = Instant::now();
    wait_for(
        "every flood connection closed",
        Duration::from_secs(10),
        || flood.iter().all(closed).then_some(()),
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed after {:?}, the header timeout is 3s",
        started.elapsed()
    );
    // And the address may connect again.
    let again = open(addr);
    (&again)
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    again.set_nonblocking(false).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 12];
    (&again).read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A connection whose reader went away without a FIN (a household router
/// dropping its state) holds a WebSocket session forever unless the server
/// notices: it pings a quiet session and closes it when not even the pong comes.
#[test]
fn a_silent_websocket_session_is_pinged_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let entrance = DaemonBuilder::new("entrance", dir.path())
        .top("[limits]")
        .top("ws_ping_interval = \"1s\"")
        .set("legacy_peers = true")
        .spawn();
    let mut stream = TcpStream::connect(entrance.addr()).unwrap();
    stream
        .write_all(
            b"GET /dandelion/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let frames = &received[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(frames.first(), Some(&0x89), "a ping first: {frames:?}");
    assert!(frames.contains(&0x88), "then a close frame: {frames:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "closed after {took:?}; two ping intervals are 2s"
    );
}

/// A blocking connection to `addr` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((from, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// `n` pipelined `GET path` requests from 127.0.0.9 on one keep-alive connection, in batches
/// so neither side's buffers fill; the status codes seen, counted.
fn pipeline(addr: SocketAddr, path: &str, n: usize) -> std::collections::BTreeMap<u16, usize> {
    const BATCH: usize = 500;
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut statuses = std::collections::BTreeMap::new();
    let mut carry = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0;
    while sent < n {
        let batch = BATCH.min(n - sent);
        stream.write_all(request.repeat(batch).as_bytes()).unwrap();
        sent += batch;
        let mut seen = 0;
        while seen < batch {
            let got = stream.read(&mut buf).unwrap();
            assert!(
                got > 0,
                "the server closed the connection after {sent} requests"
            );
            carry.extend_from_slice(&buf[..got]);
            // Each answer starts with its status line; bodies are JSON or a line of text.
            let mut at = 0;
            while let Some(i) = find(&carry[at..], b"HTTP/1.1 ") {
                let start = at + i + 9;
                if carry.len() < start + 3 {
                    break;
                }
                let code = std::str::from_utf8(&carry[start..start + 3])
                    .unwrap()
                    .parse()
                    .unwrap();
                *statuses.entry(code).or_insert(0) += 1;
                seen += 1;
                at = start + 3;
            }
            carry.drain(..at);
        }
    }
    statuses
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn known_boxes(publisher: &Daemon) -> u64 {
    let (answer, _) = get_from(Ipv4Addr::new(127, 0, 0, 3), publisher.addr(), "/healthz");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["known_boxes"].as_u64())
        .unwrap_or(0)
}

/// The attack: ~100 000 `GET /dandelion/nonce` in a few seconds filled the
/// entrance's pending-nonce table, so every real handshake got `503 too many
/// handshakes in progress`: the publisher's searches failed, it soon knew no
/// boxes and viewers fell back to it. Nonces now cost the entrance nothing
/// until a proof redeems them, and the flooding address gets its
/// `handshakes_per_minute` and then 429: after the same flood a box and the publisher
/// (plain `ws://`, so unbound proofs and the used set are in play) open new
/// sessions and the publisher knows its box again.
#[test]
fn a_nonce_flood_leaves_no_state_and_real_handshakes_pass() {
    let root = tempfile::tempdir().unwrap();
    let mut network = NetworkBuilder::new(root.path(), 1).start();
    wait_for(
        "the publisher to know the box",
        Duration::from_secs(20),
        || (known_boxes(&network.publisher) == 1).then_some(()),
    );
    let addr = network.entrance.addr();
    let floods: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || pipeline(addr, "/dandelion/nonce", 26_000)))
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for flood in floods {
        for (code, n) in flood.join().unwrap() {
            *statuses.entry(code).or_insert(0) += n;
        }
    }
    assert_eq!(statuses.values().sum::<usize>(), 104_000, "{statuses:?}");
    assert_eq!(
        statuses.get(&503),
        None,
        "no answer says busy: {statuses:?}"
    );
    // The flooding address got its burst and no more; nobody else paid for it.
    let limited = statuses.get(&429).copied().unwrap_or(0);
    assert!(limited >= 104_000 - 200, "{statuses:?}");
    assert_eq!(
        metric(
            &network.entrance,
            "dandelion_refused_total{reason=\"handshake_rate\"}"
        ),
        limited as u64
    );

    // New sessions, each with a fresh handshake, right after the flood.
    network.boxes[0].restart();
    network.publisher.restart();
    wait_for(
        "the restarted publisher to know the restarted box",
        Duration::from_secs(20),
        || (known_boxes(&network.publisher) == 1).then_some(()),
    );
    assert_eq!(
        metric(
            &network.entrance,
            "dandelion_refused_total{reason=\"busy\"}"
        ),
        0
    );
}

/// A box (spawned in `box_dir`) that trusts a publisher key made for the
/// test: the box's ID, the publisher, the box.
/// Opens a publish session on `conn` as publisher `me`, as a publisher does
/// before sending file frames.
async fn publish(
    conn: &mut dandelion_core::connection::ClientConnection,
    me: dandelion_core::ids::NodeId,
) {
    use dandelion_core::protocol::{Header, Message, Publish};
    conn.send(&Message::Publish(Publish {
        header: Header::new(me),
        extra: Default::default(),
    }))
    .await
    .unwrap();
    let _reply = conn.recv().await.unwrap();
}

fn box_trusting_a_new_publisher(
    box_dir: &std::path::Path,
) -> (
    dandelion_core::ids::NodeId,
    dandelion_core::identity::Identity,
    Daemon,
) {
    use dandelion_core::ids::{NodeId, Role};
    let box_id = NodeId::parse(&dandelion_testkit::network::identity(box_dir, "box").0).unwrap();
    let publisher = dandelion_core::identity::Identity::generate(Role::Publisher).unwrap();
    let boxd = DaemonBuilder::new("box", box_dir)
        .set(format!(
            "publisher_keys = [{:?}]",
            publisher.public_key_hex()
        ))
        .spawn();
    (box_id, publisher, boxd)
}

/// Asserts that the process peaked less than `budget_kib` above `idle_kib`.
fn assert_peak_within(pid: u32, idle_kib: u64, budget_kib: u64) {
    let (_, peak) = memory_kib(pid);
    eprintln!("box memory: {idle_kib} KiB idle, {peak} KiB peak");
    assert!(
        peak < idle_kib + budget_kib,
        "the box peaked at {} MiB from {} MiB idle; the budget is {} MiB more",
        peak >> 10,
        idle_kib >> 10,
        budget_kib >> 10
    );
}

/// A process's resident and peak resident memory, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The attack: a trusted publisher (or whoever stole its key) opens sessions
/// and sends the largest frames it may. Before, eight sessions each sending one
/// 64 MiB frame took a box from 21 MB to a 560 MB peak. Now a box holds at
/// most `max_publisher_sessions` (16) sessions, no message over one chunk frame
/// (about 1 MiB), and at most `upload_memory` (8 MiB) of received bytes not yet
/// on disk: with 20 sessions, 4 sending 64 MiB frames and 16 streaming 1 MiB
/// chunks as fast as they can, the box's peak stays within 64 MiB of its idle
/// memory, and the honest transfers are stored.
#[test]
fn hostile_sessions_keep_a_box_within_its_memory_budget() {
    use bytes::Bytes;
    use dandelion_core::connection::{Incoming, connect_as};
    use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
    use dandelion_core::protocol::{Message, TransferOutcome};
    use sha2::{Digest, Sha256};

    const BUDGET_KIB: u64 = 64 << 10;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 12;

    let dir = tempfile::tempdir().unwrap();
    let box_dir = dir.path().join("box");
    let (box_id, publisher, boxd) = box_trusting_a_new_publisher(&box_dir);
    let pid = boxd.pid().unwrap();
    let (idle, _) = memory_kib(pid);
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", boxd.port());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (refused, stored) = runtime.block_on(async {
        let mut sessions = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            match connect_as(&url, &box_id, &publisher, None).await {
                Ok(conn) => sessions.push(conn),
                Err(e) if e.to_string().contains("503") => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let oversized = Bytes::from(vec![7u8; 64 << 20]);
        let body = Bytes::from(vec![5u8; CHUNK * CHUNKS]);
        let sha256 = format!("{:x}", Sha256::digest(&body));
        let tasks: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                let (oversized, body, sha256) = (oversized.clone(), body.clone(), sha256.clone());
                let me = publisher.id().clone();
                tokio::spawn(async move {
                    publish(&mut conn, me).await;
                    if i < 4 {
                        // Refused at its length: the session ends, nothing is buffered.
                        let _ = conn.send_binary(oversized).await;
                        let _ = conn.recv().await;
                        return false;
                    }
                    for (n, chunk) in body.chunks(CHUNK).enumerate() {
                        let offset = (n * CHUNK) as u64;
                        let header = if n == 0 {
                            FrameHeader::Start(StartHeader {
                                path: format!("/live/{i}.ts"),
                                ttl: Some(600),
                                chunked: Some(ChunkedStart {
                                    transfer: 1,
                                    size: body.len() as u64,
                                    sha256: Some(sha256.clone()),
                                }),
                                extra: Default::default(),
                            })
                        } else {
                            FrameHeader::Continue {
                                transfer: 1,
                                offset,
                            }
                        };
                        let frame = Frame {
                            header,
                            payload: body.slice(n * CHUNK..n * CHUNK + chunk.len()),
                        };
                        conn.send_binary(frame.encode()).await.unwrap();
                    }
                    matches!(
                        conn.recv().await,
                        Ok(Some(Incoming::Message(Message::Transfer(r))))
                            if matches!(r.outcome, TransferOutcome::Stored { .. })
                    )
                })
            })
            .collect();
        let mut stored = 0;
        for task in tasks {
            stored += usize::from(task.await.unwrap());
        }
        (refused, stored)
    });
    assert_eq!(refused, 4, "sessions beyond max_publisher_sessions get 503");
    assert_eq!(stored, 12, "every honest transfer is stored");
    assert_peak_within(pid, idle, BUDGET_KIB);
    assert!(
        metric(
            &boxd,
            "dandelion_refused_total{reason=\"publisher_sessions_full\"}"
        ) == 4,
        "refusals are counted"
    );
}

/// Holds a process's direct writes to the disk under `dir` to `bytes_per_sec`
/// (cgroup v1 `blkio` throttling), as a slow SD card would. `None` where this
/// machine has no such controller, the directory no block device, or the test
/// no right to use them.
struct SlowDisk {
    group: std::path::PathBuf,
    pid: u32,
}

impl SlowDisk {
    const ROOT: &str = "/sys/fs/cgroup/blkio";

    fn new(pid: u32, dir: &std::path::Path, bytes_per_sec: u64) -> Option<SlowDisk> {
        use std::os::unix::fs::MetadataExt;
        let root = std::path::Path::new(Self::ROOT);
        if !root.join("blkio.throttle.write_bps_device").exists() {
            return None;
        }
        let dev = std::fs::metadata(dir).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        // Throttling is set on a whole disk, not on a partition of it.
        let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let disk = if sys.join("partition").exists() {
            std::fs::read_to_string(sys.join("../dev")).ok()?
        } else {
            std::fs::read_to_string(sys.join("dev")).ok()?
        };
        let group = root.join(format!("dandelion-test-{}-{pid}", std::process::id()));
        std::fs::create_dir(&group).ok()?;
        let slow = SlowDisk { group, pid };
        std::fs::write(
            slow.group.join("blkio.throttle.write_bps_device"),
            format!("{} {bytes_per_sec}", disk.trim()),
        )
        .ok()?;
        std::fs::write(slow.group.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(slow)
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let root = std::path::Path::new(Self::ROOT);
        let _ = std::fs::write(root.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.group);
    }
}

/// The attack: a trusted publisher (or whoever stole its key) fills every
/// session with every transfer it may open (16 sessions × 8), each a file big
/// enough to be written past the page cache (through an aligned copy of each
/// frame), and sends 1 MiB frames as fast as it can to a box whose disk is
/// slow. A frame used to leave `upload_memory` as soon as its write was
/// started, not when it ended: the writes piled up, each holding its frame
/// and its copy, far past the budget. Now a frame counts until its write ends.
#[test]
fn writes_under_way_count_against_the_upload_memory() {
    use bytes::Bytes;
    use dandelion_core::connection::{Incoming, connect_as};
    use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
    use dandelion_core::protocol::{Message, TransferOutcome};
    use sha2::{Digest, Sha256};

    const BUDGET_KIB: u64 = 64 << 10;
    const CHUNK: usize = 1 << 20;
    const SIZE: usize = CHUNK + 4096;
    const SESSIONS: usize = 16;
    const TRANSFERS: u64 = 8;

    let dir = tempfile::tempdir().unwrap();
    let box_dir = dir.path().join("box");
    // Declared first, dropped last: the box must be gone before its group.
    let slow;
    let (box_id, publisher, boxd) = box_trusting_a_new_publisher(&box_dir);
    let pid = boxd.pid().unwrap();
    slow = SlowDisk::new(pid, &box_dir, 64 << 20);
    if slow.is_none() {
        eprintln!(
            "skipping: no cgroup v1 blkio throttling here (needs root and {}) to make the box's disk slow",
            SlowDisk::ROOT
        );
        return;
    }
    let (idle, _) = memory_kib(pid);
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", boxd.port());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stored = runtime.block_on(async {
        let body = Bytes::from(vec![3u8; SIZE]);
        let sha256 = format!("{:x}", Sha256::digest(&body));
        let mut tasks = Vec::new();
        for s in 0..SESSIONS {
            let mut conn = connect_as(&url, &box_id, &publisher, None).await.unwrap();
            let (body, sha256, me) = (body.clone(), sha256.clone(), publisher.id().clone());
            tasks.push(tokio::spawn(async move {
                publish(&mut conn, me).await;
                // The first 1 MiB of all eight, then their last 4 KiB.
                for (n, part) in [0..CHUNK, CHUNK..SIZE].into_iter().enumerate() {
                    for t in 1..=TRANSFERS {
                        let header = if n == 0 {
                            FrameHeader::Start(StartHeader {
                                path: format!("/big/{s}-{t}.bin"),
                                ttl: Some(600),
                                chunked: Some(ChunkedStart {
                                    transfer: t,
                                    size: SIZE as u64,
                                    sha256: Some(sha256.clone()),
                                }),
                                extra: Default::default(),
                            })
                        } else {
                            FrameHeader::Continue {
                                transfer: t,
                                offset: part.start as u64,
                            }
                        };
                        let payload = body.slice(part.clone());
                        conn.send_binary(Frame { header, payload }.encode())
                            .await
                            .unwrap();
                    }
                }
                let mut stored = 0;
                for _ in 0..TRANSFERS {
                    if let Ok(Some(Incoming::Message(Message::Transfer(r)))) = conn.recv().await
                        && matches!(r.outcome, TransferOutcome::Stored { .. })
                    {
                        stored += 1;
                    }
                }
                stored
            }));
        }
        let mut stored = 0;
        for task in tasks {
            stored += task.await.unwrap();
        }
        stored
    });
    assert_eq!(
        stored,
        SESSIONS * TRANSFERS as usize,
        "every transfer is stored"
    );
    assert_peak_within(pid, idle, BUDGET_KIB);
}

/// The attack: six box identities each put an 800 KB field in their
/// `EXCHANGE`, which pushed the entrance's `SEARCH` answer past the publisher's
/// 4 MiB message limit, and the publisher then forgot every box. Now an
/// `EXCHANGE` over 16 KiB is refused at its frame header (the session closes,
/// `too_large` is counted, nothing is stored); answers are built to fit; and a
/// publisher whose search fails keeps the boxes it knew — here even with its
/// only entrance gone for longer than it takes to forget a box.
#[test]
fn bloated_exchanges_are_refused_and_a_failing_search_forgets_nothing() {
    use dandelion_core::connection::{Incoming, connect_as};
    use dandelion_core::identity::Identity;
    use dandelion_core::ids::{NodeId, Role};
    use dandelion_core::protocol::{Exchange, Header, Message};
    use dandelion_testkit::network::{JOIN_TOKEN, entrance_id};

    let root = tempfile::tempdir().unwrap();
    let mut network = NetworkBuilder::new(root.path(), 1).start();
    wait_for(
        "the publisher to know the box",
        Duration::from_secs(20),
        || (known_boxes(&network.publisher) == 1).then_some(()),
    );
    let entrance = NodeId::parse(&entrance_id(&root.path().join("entrance"))).unwrap();
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", network.entrance.port());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answered = runtime.block_on(async {
        let mut answered = 0;
        for _ in 0..6 {
            let attacker = Identity::generate(Role::Box).unwrap();
            let mut conn = connect_as(&url, &entrance, &attacker, Some(JOIN_TOKEN))
                .await
                .unwrap();
            let mut extra = std::collections::BTreeMap::new();
            extra.insert("PAD".into(), "x".repeat(800_000).into());
            let _ = conn
                .send(&Message::Exchange(Exchange {
                    header: Header::new(attacker.id().clone()),
                    connect_ws: Some("ws://127.0.0.1:9/dandelion/ws".into()),
                    data_url: Some("http://127.0.0.1:9".into()),
                    system_info: None,
                    geoip: None,
                    traffic_flow: None,
                    extra,
                }))
                .await;
            if let Ok(Some(Incoming::Message(Message::ExchangeReply(_)))) = conn.recv().await {
                answered += 1;
            }
        }
        answered
    });
    assert_eq!(answered, 0, "no bloated EXCHANGE is accepted");
    assert_eq!(
        metric(
            &network.entrance,
            "dandelion_refused_total{reason=\"too_large\"}"
        ),
        6
    );
    assert_eq!(known_boxes(&network.publisher), 1);

    // The entrance goes away: the publisher's searches fail for longer than it
    // takes to forget an unlisted box (6 intervals of 1 s), and it keeps its box.
    network.entrance.kill9();
    wait_for("eight failed searches", Duration::from_secs(30), || {
        (metric(&network.publisher, "dandelion_search_failures_total") >= 8).then_some(())
    });
    assert_eq!(
        known_boxes(&network.publisher),
        1,
        "the publisher kept its box"
    );
}

/// The attack: a `PUT` declaring 5 GiB (over `max_file_size`, 4 GiB) had up to
/// 4 GiB written to the publisher's disk before it was refused. Now the
/// declared length alone gets `413` at once, before a byte of the body is
/// read, and nothing is left behind.
#[test]
fn a_declared_oversized_push_is_refused_before_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = DaemonBuilder::new("publisher", dir.path()).spawn();
    let token = dandelion_testkit::network::Network::admin_token(&publisher);
    let mut stream = TcpStream::connect(publisher.addr()).unwrap();
    stream
        .write_all(
            format!(
                "PUT /api/files/huge.ts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
                 Content-Length: {}\r\n\r\nthe first bytes of five gibibytes",
                5u64 << 30
            )
            .as_bytes(),
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 12];
    stream
        .read_exact(&mut head)
        .expect("an answer without the body");
    assert_eq!(&head, b"HTTP/1.1 413");
    let leftovers: Vec<_> = dandelion_testkit::files_under(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("huge"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The attack: guessing the join token. Wrong tokens were refused but never
/// throttled, so an address could try as fast as the entrance answered. Now
/// an address gets `failed_credentials_per_minute` (10) failures, then 429 for
/// every credentialed request — even with the right token, so guesses cannot
/// be told apart — while a box at another address joins as usual.
#[test]
fn join_token_guesses_are_throttled_per_address() {
    use dandelion_core::connection::{ConnectOptions, connect_as_with};
    use dandelion_core::identity::Identity;
    use dandelion_core::ids::{NodeId, Role};
    use dandelion_testkit::network::{JOIN_TOKEN, entrance_id};

    let dir = tempfile::tempdir().unwrap();
    let entrance_dir = dir.path().join("entrance");
    let id = NodeId::parse(&entrance_id(&entrance_dir)).unwrap();
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set("reachability_check = false")
        .spawn();
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", entrance.port());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let attempt = |from: Ipv4Addr, token: &str| {
        runtime.block_on(async {
            let me = Identity::generate(Role::Box).unwrap();
            let options = ConnectOptions {
                local_addr: Some(from.into()),
            };
            match connect_as_with(&url, &id, &me, Some(token), options).await {
                Ok(_) => "joined".to_owned(),
                Err(e) => e.to_string(),
            }
        })
    };
    let attacker = Ipv4Addr::new(127, 0, 0, 5);
    let answers: Vec<String> = (0..20)
        .map(|n| attempt(attacker, &format!("guess-number-{n:04}")))
        .collect();
    let wrong = answers.iter().filter(|a| a.contains("403")).count();
    let throttled = answers.iter().filter(|a| a.contains("429")).count();
    assert_eq!((wrong, throttled), (11, 9), "{answers:#?}");
    assert!(attempt(attacker, JOIN_TOKEN).contains("429"));
    assert_eq!(attempt(Ipv4Addr::new(127, 0, 0, 6), JOIN_TOKEN), "joined");
    assert!(
        metric(
            &entrance,
            "dandelion_refused_total{reason=\"credentials_rate\"}"
        ) >= 10
    );
}

/// A peer the registry cannot admit because its store is down learns that it
/// should retry, not where the store lives: the Redis error names its host and
/// port, and an unauthenticated caller has no business knowing either.
#[test]
fn a_failing_store_is_not_named_to_peers() {
    use dandelion_core::connection::connect_as;
    use dandelion_core::identity::Identity;
    use dandelion_core::ids::{NodeId, Role};
    use dandelion_testkit::network::{JOIN_TOKEN, entrance_id};
    use dandelion_testkit::redis::RedisServer;

    let redis = RedisServer::start();
    let port = redis.port().to_string();
    let root = tempfile::tempdir().unwrap();
    let network = NetworkBuilder::new(root.path(), 1)
        .entrance_top(format!("store = {:?}", redis.url()))
        .start();
    wait_for(
        "the publisher to know the box",
        Duration::from_secs(20),
        || (known_boxes(&network.publisher) == 1).then_some(()),
    );
    drop(redis);
    let entrance = NodeId::parse(&entrance_id(&root.path().join("entrance"))).unwrap();
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", network.entrance.port());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let refused = runtime.block_on(async {
        let newcomer = Identity::generate(Role::Box).unwrap();
        connect_as(&url, &entrance, &newcomer, Some(JOIN_TOKEN))
            .await
            .err()
            .map(|e| e.to_string())
    });
    let refused = refused.expect("a newcomer is not admitted while the store is down");
    assert!(
        refused.contains("503"),
        "a retry, not a bad credential: {refused}"
    );
    assert!(refused.contains("try again"), "{refused}");
    assert!(
        !refused.contains(&port),
        "the store's port leaks: {refused}"
    );
    let (health, _) = get_from(Ipv4Addr::LOCALHOST, network.entrance.addr(), "/healthz");
    assert!(!health.contains(&port), "the store's port leaks: {health}");
    assert!(
        network.entrance.log().contains(&port),
        "the operator's log says which store failed"
    );
}
