//! `dandelion up`: a whole Dandelion network on one machine — one entrance, N
//! boxes and one publisher, each with its own port and data directory under one
//! base directory, on the embedded store — wired together (publisher key,
//! entrance URL pinned to the entrance's ID, each box enrolled with an
//! invitation the entrance issued, as an operator's would be), on TLS under a
//! private CA of its own (`localca`), and stopped together on Ctrl-C.
//!
//! On loopback every box has the same address, so each box gets a demonstration
//! location through the entrance's operator override (shown as an override),
//! which gives the geo views something true to show.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dandelion_core::config::Config;
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::Role;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::GeoIp;
use dandelion_core::secrets;
use tokio::net::TcpListener;

use crate::client::{LocalNetwork, NETWORK_FILE};
use crate::localca::LocalCa;
use crate::server::admin_token_path;
use crate::shutdown::{GRACE_PERIOD, Shutdown};
use crate::{boxnode, entrance, publisher};
use dandelion_core::console::contexts::{
    CONTEXTS_FILE, Context as ConsoleContext, Contexts, Daemon as ContextDaemon, LOCAL_CONTEXT,
};

/// The default of `--port-base`: the entrance on 7070, the publisher on 7072,
/// the boxes from 7081.
pub const DEFAULT_PORT_BASE: u16 = 7070;

/// The highest `--port-base`: the last of 64 boxes still gets a port.
pub const MAX_PORT_BASE: u16 = u16::MAX - FIRST_BOX_OFFSET - 63;

const PUBLISHER_OFFSET: u16 = 2;
const FIRST_BOX_OFFSET: u16 = 11;

/// Where a local network listens, all from one base port, so two networks
/// (or a network and the tests) run side by side on different bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    base: u16,
}

impl Ports {
    /// `None` past [`MAX_PORT_BASE`] or for port 0.
    pub fn new(base: u16) -> Option<Ports> {
        (base != 0 && base <= MAX_PORT_BASE).then_some(Ports { base })
    }

    pub fn entrance(self) -> u16 {
        self.base
    }

    pub fn publisher(self) -> u16 {
        self.base + PUBLISHER_OFFSET
    }

    /// Box `i`'s port, counting from 0; `i` is below 64.
    pub fn box_port(self, i: u16) -> u16 {
        self.base + FIRST_BOX_OFFSET + i
    }
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            base: DEFAULT_PORT_BASE,
        }
    }
}

/// Demonstration locations handed to the boxes in turn.
const PLACES: [(&str, &str, &str, f64, f64); 8] = [
    ("Taipei", "Taipei City", "TW", 25.0330, 121.5654),
    ("Tokyo", "Tokyo", "JP", 35.6762, 139.6503),
    ("Frankfurt am Main", "Hesse", "DE", 50.1109, 8.6821),
    ("São Paulo", "São Paulo", "BR", -23.5505, -46.6333),
    ("New York", "New York", "US", 40.7128, -74.0060),
    ("Sydney", "New South Wales", "AU", -33.8688, 151.2093),
    ("Nairobi", "Nairobi County", "KE", -1.2921, 36.8219),
    ("Reykjavík", "Capital Region", "IS", 64.1466, -21.9426),
];

/// How long the boxes get to register before `up` gives up waiting (it keeps running).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for the {what}; is another `dandelion up` running? \
             (--port-base N starts this one on other ports)"
        )
    })
}

fn role_config(base: &Config, dir: PathBuf) -> Config {
    Config {
        data_dir: dir,
        store: "embedded".into(),
        log_file: false,
        ..base.clone()
    }
}

/// Runs the network until `shutdown`.
pub async fn run(
    base: &Config,
    boxes: u16,
    ports: Ports,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if base.store != "embedded" {
        // Silently running on another store than the one asked for would
        // leave an operator trying Redis believing it works.
        bail!(
            "`dandelion up` runs every daemon on its own embedded store, not on {}: drop the config's \
             `store`, or start the roles yourself on the shared store (docs/operations.md)",
            dandelion_core::store::redact_url(&base.store)
        );
    }
    let root = base.data_dir.clone();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let entrance_dir = root.join("entrance");
    let publisher_dir = root.join("publisher");
    let box_dirs: Vec<PathBuf> = (1..=boxes).map(|i| root.join(format!("box-{i}"))).collect();
    for dir in [&entrance_dir, &publisher_dir].into_iter().chain(&box_dirs) {
        dandelion_core::config::prepare_data_dir(dir)?;
    }

    // Bind everything first: a busy port fails the whole start, before anything runs.
    let entrance_listener = bind(ports.entrance(), "entrance").await?;
    let publisher_listener = bind(ports.publisher(), "publisher").await?;
    let mut box_listeners = Vec::new();
    for i in 0..boxes {
        box_listeners.push(bind(ports.box_port(i), "box").await?);
    }

    let publisher_key = Identity::load_or_create(&publisher_dir, Role::Publisher)?.public_key_hex();
    // The boxes and the publisher are pinned to the entrance's ID, made here
    // before the entrance runs, as an operator copies it from `dandelion id entrance`.
    let entrance_id = Identity::load_or_create(&entrance_dir, Role::Entrance)?
        .id()
        .clone();
    let entrance_url = format!("wss://127.0.0.1:{}/dandelion/ws", ports.entrance());
    let entrance_pin = PinnedUrl::new(&entrance_url, entrance_id)?;
    // Every daemon on TLS under the network's own CA, which every client of
    // this process (and the client commands and console, from network.json) trusts.
    let ca = LocalCa::load_or_create(&root)?;
    dandelion_core::tls::trust(&ca.ca_file)?;
    let with_tls = |cfg: &mut Config, dir: &Path| -> anyhow::Result<(PathBuf, PathBuf)> {
        cfg.ca_file = Some(ca.ca_file.clone());
        ca.issue(dir)
    };

    let mut entrance_cfg = role_config(base, entrance_dir.clone());
    let (cert, key) = with_tls(&mut entrance_cfg, &entrance_dir)?;
    entrance_cfg.entrance.tls_cert = Some(cert);
    entrance_cfg.entrance.tls_key = Some(key);
    entrance_cfg.entrance.listen = entrance_listener.local_addr()?;
    entrance_cfg.entrance.public_url = Some(entrance_url.clone());
    entrance_cfg.entrance.publisher_keys = vec![publisher_key.clone()];
    // Everything runs on this machine: its data URLs are loopback addresses,
    // all its boxes belong to its one user and come from one address.
    entrance_cfg.entrance.reachability_private = true;
    entrance_cfg.entrance.max_boxes_per_owner = 0;
    entrance_cfg.entrance.new_boxes_per_address_per_hour = 0;
    entrance_cfg.entrance.new_boxes_per_prefix_per_hour = 0;

    let mut publisher_cfg = role_config(base, publisher_dir.clone());
    let (cert, key) = with_tls(&mut publisher_cfg, &publisher_dir)?;
    publisher_cfg.publisher.tls_cert = Some(cert);
    publisher_cfg.publisher.tls_key = Some(key);
    publisher_cfg.publisher.listen = publisher_listener.local_addr()?;
    publisher_cfg.publisher.entrances = vec![entrance_pin.clone()];
    publisher_cfg.publisher.search_interval = Duration::from_secs(2);

    // Every admin token made now, not by the daemons as they start, so
    // `invite_boxes` and `place_boxes` can read the entrance's straight away and
    // network.json and the console context never name a file not there yet.
    for dir in [&entrance_dir, &publisher_dir].into_iter().chain(&box_dirs) {
        secrets::load_or_create(&admin_token_path(dir), || secrets::random_hex(32))?;
    }

    // The roles are not tracked tasks of `shutdown`: each drains the tracker when
    // it stops, and would otherwise wait for itself.
    let mut roles = Vec::new();
    let mut box_urls = Vec::new();
    roles.push(tokio::spawn({
        let (cfg, s) = (entrance_cfg.clone(), shutdown.clone());
        async move { report("entrance", entrance::run(entrance_listener, &cfg, s).await) }
    }));
    let entrance_origin = format!("https://127.0.0.1:{}", ports.entrance());
    let invitations = tokio::select! {
        () = shutdown.cancelled() => Vec::new(),
        codes = invite_boxes(&entrance_origin, &entrance_dir, boxes.into()) => codes?,
    };
    for ((listener, dir), invitation) in box_listeners.into_iter().zip(&box_dirs).zip(invitations) {
        let addr = listener.local_addr()?;
        let mut cfg = role_config(base, dir.clone());
        let (cert, key) = with_tls(&mut cfg, dir)?;
        cfg.boxnode.tls_cert = Some(cert);
        cfg.boxnode.tls_key = Some(key);
        cfg.boxnode.listen = addr;
        cfg.boxnode.public_url = Some(format!("https://{addr}"));
        cfg.boxnode.entrances = vec![entrance_pin.clone()];
        cfg.boxnode.invitation = Some(invitation);
        cfg.boxnode.publisher_keys = vec![publisher_key.clone()];
        cfg.boxnode.heartbeat_interval = Duration::from_secs(2);
        box_urls.push(format!("https://{addr}"));
        let s = shutdown.clone();
        roles.push(tokio::spawn(async move {
            report("box", boxnode::run(listener, &cfg, s).await)
        }));
    }
    roles.push(tokio::spawn({
        let (cfg, s) = (publisher_cfg.clone(), shutdown.clone());
        async move {
            report(
                "publisher",
                publisher::run(publisher_listener, &cfg, s).await,
            )
        }
    }));

    let network = LocalNetwork {
        entrance: entrance_origin,
        publisher: format!("https://127.0.0.1:{}", ports.publisher()),
        boxes: box_urls.clone(),
        entrance_dir: entrance_dir.clone(),
        publisher_dir: publisher_dir.clone(),
        box_dirs: box_dirs.clone(),
        ca_file: Some(ca.ca_file.clone()),
    };
    let network_file = root.join(NETWORK_FILE);
    std::fs::write(&network_file, serde_json::to_vec_pretty(&network)?)
        .with_context(|| format!("cannot write {}", network_file.display()))?;
    let contexts_file = root.join(CONTEXTS_FILE);
    std::fs::write(&contexts_file, local_context(&network).to_toml()?)
        .with_context(|| format!("cannot write {}", contexts_file.display()))?;

    tokio::select! {
        () = shutdown.cancelled() => {}
        placed = place_boxes(&network, boxes as usize) => match placed {
            Ok(()) => {}
            Err(e) => tracing::warn!("could not give the boxes their demonstration locations: {e:#}"),
        },
    }
    if !shutdown.is_triggered() {
        print_banner(&network, &root);
        shutdown.cancelled().await;
    }
    let _ = std::fs::remove_file(&network_file);
    let _ = std::fs::remove_file(&contexts_file);
    // Each role stops within its own grace period; this only waits for them.
    if tokio::time::timeout(GRACE_PERIOD * 2, futures_util::future::join_all(roles))
        .await
        .is_err()
    {
        tracing::warn!("some daemons did not stop in time");
    }
    Ok(())
}

/// The local network as the console context `local`: each daemon with its own
/// token file and the network's CA.
fn local_context(network: &LocalNetwork) -> Contexts {
    let names = ["entrance".to_owned(), "publisher".to_owned()]
        .into_iter()
        .chain((0..network.boxes.len()).map(|i| format!("box-{i}")));
    let daemons = names
        .zip(network.daemons())
        .map(|(name, (url, token_file))| ContextDaemon {
            role: Some(name.split('-').next().unwrap_or(&name).to_owned()),
            name,
            url,
            token_file: Some(token_file),
            token_env: None,
        })
        .collect();
    Contexts {
        contexts: vec![ConsoleContext {
            name: LOCAL_CONTEXT.to_owned(),
            ca_file: network.ca_file.clone(),
            daemons,
        }],
    }
}

fn report(role: &str, result: anyhow::Result<()>) {
    if let Err(e) = result {
        tracing::error!("the {role} stopped: {e:#}");
    }
}

/// The owner `dandelion up` enrols its boxes for.
const LOCAL_OWNER: &str = "local";

/// How long an invitation of `dandelion up` is good for: its boxes redeem it
/// within seconds; an enrolled box (a restart) leaves its new one unused.
const LOCAL_INVITATION_VALIDITY: Duration = Duration::from_secs(600);

/// One invitation per box, issued through the entrance's admin API as
/// `dandelion invite` would, once the entrance answers.
async fn invite_boxes(
    entrance: &str,
    entrance_dir: &Path,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let http = HttpClient::default();
    let token = std::fs::read_to_string(admin_token_path(entrance_dir))
        .context("cannot read the entrance's admin token")?;
    let auth = format!("Bearer {}", token.trim());
    let body = serde_json::to_vec(&serde_json::json!({
        "owner": LOCAL_OWNER,
        "expires_in_secs": LOCAL_INVITATION_VALIDITY.as_secs(),
    }))?;
    let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
    let mut codes = Vec::with_capacity(count);
    while codes.len() < count {
        let answer = http
            .request(
                http::Method::POST,
                &format!("{entrance}/api/invitations"),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.clone().into(),
            )
            .await;
        match answer {
            Ok(r) if r.status.is_success() => {
                codes.push(r.json::<entrance::api::InviteReply>()?.code);
                continue;
            }
            Ok(r) if r.status.is_client_error() => bail!(
                "the entrance refused to invite the boxes: {} {}",
                r.status,
                r.text().trim()
            ),
            // Not up yet (or its store is still opening): asked again shortly.
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(r) => bail!("the entrance could not invite the boxes: {}", r.status),
            Err(e) => return Err(e).context("the entrance did not answer to invite the boxes"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(codes)
}

/// Waits for the boxes to register, then sets their demonstration locations.
async fn place_boxes(net: &LocalNetwork, count: usize) -> anyhow::Result<()> {
    let http = HttpClient::default();
    let token = std::fs::read_to_string(admin_token_path(&net.entrance_dir))
        .context("cannot read the entrance's admin token")?;
    let auth = format!("Bearer {}", token.trim());
    let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
    let ids = loop {
        if let Ok(r) = http
            .get(
                &format!("{}/api/boxes", net.entrance),
                &[("authorization", &auth)],
            )
            .await
            && let Ok(list) = r.json::<serde_json::Value>()
        {
            let ids: Vec<String> = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|b| b["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if ids.len() >= count {
                break ids;
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only some boxes registered within {}s",
                REGISTER_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut ids = ids;
    ids.sort();
    for (id, (city, region, country, lat, lon)) in ids.iter().zip(PLACES.iter().cycle()) {
        let mut geo = GeoIp {
            city: Some((*city).into()),
            region: Some((*region).into()),
            country: Some((*country).into()),
            ..GeoIp::default()
        };
        geo.set_lat_lon(*lat, *lon);
        let body = serde_json::to_vec(&geo)?;
        let r = http
            .request(
                http::Method::PUT,
                &format!("{}/api/boxes/{id}/location", net.entrance),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.into(),
            )
            .await?;
        if !r.status.is_success() {
            bail!(
                "the entrance refused a location for {id}: {} {}",
                r.status,
                r.text().trim()
            );
        }
    }
    Ok(())
}

fn print_banner(net: &LocalNetwork, root: &Path) {
    println!(
        "Dandelion is up: one entrance, {} boxes, one publisher (data in {})",
        net.boxes.len(),
        root.display()
    );
    println!();
    println!(
        "  entrance   {}   (boxes: {}/api/boxes)",
        net.entrance, net.entrance
    );
    for (i, b) in net.boxes.iter().enumerate() {
        println!("  box {:<6} {b}", i + 1);
    }
    println!("  publisher  {}", net.publisher);
    println!();
    println!(
        "  admin tokens: {}/admin.token, {}/admin.token",
        net.entrance_dir.display(),
        net.publisher_dir.display()
    );
    if let Some(ca) = &net.ca_file {
        println!(
            "  TLS:          every daemon on https:// and wss://, under the local CA {}",
            ca.display()
        );
    }
    println!(
        "  console:      dandelion-console --data-dir {}   (or cargo run --release --bin dandelion-console)",
        root.display()
    );
    println!(
        "  context:      `local` in {} (dandelion-console --context local --data-dir {})",
        root.join(CONTEXTS_FILE).display(),
        root.display()
    );
    println!();
    println!("Try it:");
    println!(
        "  dandelion push ./some-file.ts --data-dir {}",
        root.display()
    );
    let cacert = net
        .ca_file
        .as_ref()
        .map(|ca| format!("--cacert {} ", ca.display()))
        .unwrap_or_default();
    println!(
        "  curl {cacert}-L {}/some-file.ts -o copy.ts",
        net.publisher
    );
    println!("Ctrl-C stops everything.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_follows_the_base_and_the_last_box_fits() {
        let ports = Ports::default();
        assert_eq!(
            (ports.entrance(), ports.publisher(), ports.box_port(0)),
            (7070, 7072, 7081)
        );
        let other = Ports::new(8070).unwrap();
        assert_eq!((other.publisher(), other.box_port(2)), (8072, 8083));
        let top = Ports::new(MAX_PORT_BASE).unwrap();
        assert_eq!(top.box_port(63), u16::MAX);
        assert_eq!(Ports::new(MAX_PORT_BASE + 1), None);
        assert_eq!(Ports::new(0), None);
    }
}
