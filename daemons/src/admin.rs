//! `dandelion boxes`, `evict`, `invite` and `owners`: operator commands that talk to a
//! running entrance's HTTP API. The admin token comes from `--token` /
//! `DANDELION_ADMIN_TOKEN`, else from the `--context`'s entrance, else from the
//! entrance's admin token file (its `admin_token_file` or data directory),
//! which is where an operator on the entrance's own machine already has it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use dandelion_core::console::contexts::Context as ConsoleContext;
use dandelion_core::http::{HttpClient, origin_of};
use dandelion_core::secrets::admin_token_path;
use dandelion_daemons::entrance::api::BoxView;

use dandelion_daemons::cli::{
    BoxesArgs, EntranceAccess, EvictArgs, InviteArgs, OwnersAction, OwnersArgs,
};
use dandelion_daemons::entrance::api::InviteReply;
use dandelion_daemons::entrance::enrol::OwnerView;

/// Where `dandelion up` runs its entrance, when no local network says otherwise.
const DEFAULT_ENTRANCE: &str = "http://127.0.0.1:7070";

/// An entrance to ask and the admin token to ask it with.
pub struct EntranceTarget {
    pub origin: String,
    pub token: String,
    http: HttpClient,
}

impl EntranceTarget {
    /// The entrance given, else the context's, else the local network's in
    /// `data_dir` (whose CA is then trusted), else [`DEFAULT_ENTRANCE`]; the token
    /// given, else the context's, else the local network's entrance's, else the
    /// one in `token_file` (the entrance's own, on its machine).
    pub fn resolve(
        url: Option<&str>,
        token: Option<&str>,
        context: Option<&ConsoleContext>,
        data_dir: &Path,
        token_file: &Path,
    ) -> anyhow::Result<EntranceTarget> {
        let context = context.filter(|_| url.is_none());
        let daemon = context.map(|c| c.daemon_for("entrance")).transpose()?;
        let local = match (url, context) {
            (None, None) => dandelion_core::console::LocalNetwork::load_trusted(data_dir)?,
            _ => None,
        };
        let given = url
            .map(dandelion_core::http::with_scheme)
            .or(daemon.map(|d| d.url.clone()))
            .or(local.as_ref().map(|net| net.entrance.clone()))
            .unwrap_or_else(|| DEFAULT_ENTRANCE.to_owned());
        let http_url = given
            .replacen("ws://", "http://", 1)
            .replacen("wss://", "https://", 1);
        let origin = origin_of(&http_url)
            .with_context(|| format!("`{given}` is not an entrance URL like http://host:7070"))?;
        let token = match (token, context.zip(daemon), &local) {
            (Some(t), _, _) => t.trim().to_owned(),
            (None, Some((c, daemon)), _) => daemon.token().map_err(|why| {
                anyhow::anyhow!("context `{}`, daemon `{}`: {why}", c.name, daemon.name)
            })?,
            (None, None, Some(net)) => read_token(&admin_token_path(&net.entrance_dir))?,
            (None, None, None) => read_token(token_file)?,
        };
        Ok(EntranceTarget {
            origin,
            token,
            http: HttpClient::new(Duration::from_secs(10)),
        })
    }

    /// Sends one admin request; the answer's body when it succeeded, else an
    /// error with the entrance's reason.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{path}", self.origin);
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        let body = match body {
            Some(v) => {
                headers.push(("content-type", "application/json"));
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let response = self
            .http
            .request(method, &url, &headers, body)
            .await
            .with_context(|| format!("asking the entrance at {}", self.origin))?;
        anyhow::ensure!(
            response.status.is_success(),
            "{url} answered {}: {}",
            response.status,
            response.text().trim()
        );
        Ok(response.body)
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| {
            format!(
                "cannot read the entrance's admin token {} (give --token or DANDELION_ADMIN_TOKEN, \
                 or --data-dir of the entrance)",
                path.display()
            )
        })?
        .trim()
        .to_owned())
}

/// `token_file`: where the entrance's admin token is read when neither
/// `--token`, a context nor a local network gives one (`Config::admin_token_file`).
pub async fn boxes(
    args: &BoxesArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<()> {
    let target = target(&args.access, context, data_dir, token_file)?;
    let mut query = Vec::new();
    if let Some(s) = &args.state {
        query.push(format!("state={}", urlencode(s)));
    }
    if let Some(c) = &args.country {
        query.push(format!("country={}", urlencode(c)));
    }
    let path = format!("/api/boxes?{}", query.join("&"));
    let body = target.call(http::Method::GET, &path, None).await?;
    let boxes: Vec<BoxView> = serde_json::from_slice(&body)
        .with_context(|| format!("{}{path} did not answer with a box list", target.origin))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&boxes)?);
    } else {
        print!("{}", table(&boxes, now()));
    }
    Ok(())
}

pub async fn evict(
    args: &EvictArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<()> {
    let target = target(&args.access, context, data_dir, token_file)?;
    let path = format!("/api/boxes/{}/evict", urlencode(&args.box_id));
    let body = serde_json::json!({ "reason": args.reason });
    target
        .call(http::Method::POST, &path, Some(body))
        .await
        .with_context(|| format!("evicting {}", args.box_id))?;
    println!("evicted {}: {}", args.box_id, args.reason);
    Ok(())
}

fn target(
    access: &EntranceAccess,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<EntranceTarget> {
    EntranceTarget::resolve(
        access.entrance.as_deref(),
        access.token.as_deref(),
        context,
        data_dir,
        token_file,
    )
}

pub async fn invite(
    args: &InviteArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<()> {
    let target = target(&args.access, context, data_dir, token_file)?;
    let body = serde_json::json!({
        "owner": args.owner,
        "expires_in_secs": args.expires.as_secs(),
    });
    let answer = target
        .call(http::Method::POST, "/api/invitations", Some(body))
        .await
        .with_context(|| format!("inviting a box for {}", args.owner))?;
    let reply: InviteReply = serde_json::from_slice(&answer)
        .with_context(|| format!("{} did not answer with an invitation", target.origin))?;
    eprintln!(
        "Invitation for {}, good for one box until {} (shown once, keep it secret):",
        reply.owner,
        rfc3339(reply.expires)
    );
    println!("{}", reply.code);
    eprintln!(
        "On the box, in the [box] section of its config: invitation = \"{}\"",
        reply.code
    );
    Ok(())
}

pub async fn owners(
    args: &OwnersArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<()> {
    let target = target(&args.access, context, data_dir, token_file)?;
    match &args.action {
        Some(OwnersAction::Revoke { owner, reason }) => {
            let path = format!("/api/owners/{}/revoke", urlencode(owner));
            let answer = target
                .call(
                    http::Method::POST,
                    &path,
                    Some(serde_json::json!({ "reason": reason })),
                )
                .await
                .with_context(|| format!("revoking {owner}"))?;
            let boxes = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["boxes"].as_array().map(Vec::len))
                .unwrap_or(0);
            println!(
                "revoked {owner} ({boxes} boxes removed, their keys refused for good): {reason}"
            );
        }
        Some(OwnersAction::Cap { owner, max_boxes }) => {
            let cap =
                match max_boxes.as_str() {
                    "default" => None,
                    n => Some(n.parse::<u32>().with_context(|| {
                        format!("`{n}` is not a number of boxes (or `default`)")
                    })?),
                };
            let path = format!("/api/owners/{}/cap", urlencode(owner));
            target
                .call(
                    http::Method::PUT,
                    &path,
                    Some(serde_json::json!({ "max_boxes": cap })),
                )
                .await
                .with_context(|| format!("capping {owner}"))?;
            match cap {
                Some(0) => println!("{owner} may enrol any number of boxes"),
                Some(n) => println!("{owner} may enrol at most {n} boxes"),
                None => println!("{owner} is back to the entrance's max_boxes_per_owner"),
            }
        }
        None => {
            let answer = target.call(http::Method::GET, "/api/owners", None).await?;
            let owners: Vec<OwnerView> = serde_json::from_slice(&answer)
                .with_context(|| format!("{} did not answer with an owner list", target.origin))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&owners)?);
            } else {
                print!("{}", owners_table(&owners));
            }
        }
    }
    Ok(())
}

/// The table `dandelion owners` prints.
pub fn owners_table(owners: &[OwnerView]) -> String {
    let mut out = format!(
        "{:<32} {:>5} {:>4} {:>7}  {}\n",
        "OWNER", "BOXES", "CAP", "INVITES", "STATUS"
    );
    for o in owners {
        let cap = if o.max_boxes == 0 {
            "-".to_owned()
        } else {
            o.max_boxes.to_string()
        };
        let status = o.revoked.as_ref().map_or_else(
            || "ok".to_owned(),
            |r| format!("revoked {}: {}", rfc3339(r.at), r.reason),
        );
        out.push_str(&format!(
            "{:<32} {:>5} {:>4} {:>7}  {status}\n",
            o.owner,
            o.boxes.len(),
            cap,
            o.pending_invitations
        ));
    }
    out
}

fn rfc3339(at: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped non-negative
    let time = UNIX_EPOCH + Duration::from_secs(at.max(0.0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ago(now: f64, then: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped non-negative
    let secs = (now - then).max(0.0) as u64;
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

fn bytes(n: Option<u64>, per_second: bool) -> String {
    n.map_or_else(
        || "-".into(),
        |n| {
            let text = bytesize::ByteSize::b(n).display().si().to_string();
            if per_second {
                format!("{text}/s")
            } else {
                text
            }
        },
    )
}

/// The table `dandelion boxes` prints.
pub fn table(boxes: &[BoxView], now: f64) -> String {
    let mut rows = vec![
        [
            "ID",
            "STATE",
            "REASON",
            "AGE",
            "LOCATION",
            "UPLOAD",
            "FREE",
            "VERSION",
            "HEARTBEAT",
        ]
        .map(String::from),
    ];
    for b in boxes {
        let state = if b.legacy {
            format!("{} (legacy)", b.state.as_str())
        } else {
            b.state.as_str().to_owned()
        };
        let location = match (&b.geo.city, &b.geo.country) {
            (Some(c), Some(k)) => format!("{c}, {k}"),
            (Some(c), None) => c.clone(),
            (None, Some(k)) => k.clone(),
            (None, None) => "-".into(),
        };
        rows.push([
            b.id.clone(),
            state,
            b.reason.chars().take(40).collect(),
            ago(now, b.first_seen),
            location,
            bytes(b.upload_rate, true),
            bytes(b.free_storage, false),
            b.version.clone().unwrap_or_else(|| "-".into()),
            format!("{} ago", ago(now, b.last_heartbeat)),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if boxes.is_empty() {
        out.push_str("(no boxes)\n");
    }
    out
}
