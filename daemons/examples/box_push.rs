//! A minimal publisher for benchmarks: pushes files straight to one box, in
//! 1 MiB chunks, as the publisher whose key lives in `--key-dir`.
//!
//! ```sh
//! cargo run --release -p dandelion-daemons --example box_push -- \
//!     --key-dir /tmp/pub --to ws://127.0.0.1:7071/dandelion/ws --prefix /bench --ttl 3600 FILE...
//! ```
//!
//! The key dir is a data directory (`dandelion --data-dir DIR id publisher` prints
//! the public key to put in the box's `publisher_keys`). Each file is stored as
//! `<prefix>/<file name>`; the box's answer is printed per file. `--ca FILE`
//! trusts the CA certificates in FILE (PEM) besides the system's, for a box with
//! a certificate of its own behind a `wss://` URL.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use dandelion_core::connection::{Incoming, connect_as};
use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
use dandelion_core::identity::Identity;
use dandelion_core::ids::Role;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{Header, Message, Publish};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

const CHUNK: usize = 1 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut key_dir, mut to, mut prefix, mut ttl, mut files) =
        (None, None, String::from("/bench"), 3600u64, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--key-dir" => key_dir = args.next().map(PathBuf::from),
            "--to" => to = args.next(),
            "--prefix" => prefix = args.next().context("--prefix needs a value")?,
            "--ttl" => ttl = args.next().context("--ttl needs a value")?.parse()?,
            "--ca" => {
                let ca = PathBuf::from(args.next().context("--ca needs a file")?);
                dandelion_core::tls::trust(&ca)
                    .with_context(|| format!("--ca {}", ca.display()))?;
            }
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let (Some(key_dir), Some(to)) = (key_dir, to) else {
        bail!(
            "usage: box_push --key-dir DIR --to WS-URL#BOX-ID [--prefix /bench] [--ttl SECS] [--ca CA.pem] FILE..."
        );
    };
    let to = PinnedUrl::parse(&to)?;
    let identity = Identity::load_or_create(&key_dir, Role::Publisher)?;
    let mut conn = connect_as(to.url(), to.id(), &identity, None).await?;
    conn.send(&Message::Publish(Publish {
        header: Header::new(identity.id().clone()),
        extra: Default::default(),
    }))
    .await?;
    conn.recv().await?;
    for (n, path) in files.iter().enumerate() {
        let started = Instant::now();
        // First pass hashes, second streams: the file is never held in memory.
        let mut hasher = Sha256::new();
        let mut file = tokio::fs::File::open(path).await?;
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let k = file.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            size += k as u64;
        }
        let name = path.file_name().context("no file name")?.to_string_lossy();
        let transfer = n as u64;
        let mut file = tokio::fs::File::open(path).await?;
        let mut offset = 0u64;
        let mut first = true;
        loop {
            let k = read_full(&mut file, &mut buf).await?;
            let payload = Bytes::copy_from_slice(&buf[..k]);
            let header = if first {
                FrameHeader::Start(StartHeader {
                    path: format!("{prefix}/{name}"),
                    ttl: Some(ttl),
                    chunked: Some(ChunkedStart {
                        transfer,
                        size,
                        sha256: Some(format!("{:x}", hasher.clone().finalize())),
                    }),
                    extra: Default::default(),
                })
            } else {
                FrameHeader::Continue { transfer, offset }
            };
            first = false;
            conn.send_binary(Frame { header, payload }.encode()).await?;
            offset += k as u64;
            if offset >= size {
                break;
            }
        }
        match conn.recv().await? {
            Some(Incoming::Message(m)) => println!(
                "{} ({size} bytes, {:.2}s): {}",
                path.display(),
                started.elapsed().as_secs_f64(),
                m.encode()
            ),
            other => bail!("unexpected answer {other:?}"),
        }
    }
    conn.close().await;
    Ok(())
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let k = file.read(&mut buf[filled..]).await?;
        if k == 0 {
            break;
        }
        filled += k;
    }
    Ok(filled)
}
