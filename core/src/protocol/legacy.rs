//! What the original 2017 peers can take.
//!
//! The original stored every message it received in a Redis hash (aioredis
//! `hmset_dict`) before using it. A hash holds strings and numbers only: one
//! object, list, boolean or null in a message made the whole write fail, and
//! the original publisher then learned nothing from that `SEARCH` answer. Its
//! clients also dial only URLs that pass its URL check (`utils.check_is_valid_url`),
//! which takes `http(s)://` with an IPv4 literal or `localhost` and nothing else.
//! So answers to legacy peers are built here, in their shape, rather than by
//! leaving fields out of ours: a field added to our messages later cannot leak
//! into theirs.

use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use super::common::{GeoIp, Header};
use super::registry::Exchange;

/// The original's URL check: `re.match` (anchored at the start only) of
/// `https?://((\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})|(localhost))(:\d{1,5})?/.+`.
///
/// The parts are separated by characters the digits cannot match, so reading
/// each part greedily decides exactly what the regex's backtracking would.
pub fn original_accepts(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = match rest.strip_prefix("localhost") {
        Some(after) => after,
        None => match dotted_quad(rest) {
            Some(after) => after,
            None => return false,
        },
    };
    let rest = match rest.strip_prefix(':') {
        Some(port) => {
            let digits = port.bytes().take_while(u8::is_ascii_digit).count();
            if !(1..=5).contains(&digits) {
                return false;
            }
            &port[digits..]
        }
        None => rest,
    };
    // `/.+`: a slash, then at least one character `.` matches (anything but a newline).
    rest.strip_prefix('/')
        .and_then(|path| path.chars().next())
        .is_some_and(|c| c != '\n')
}

/// `\d{1,3}` four times with dots between; what follows them.
fn dotted_quad(s: &str) -> Option<&str> {
    let mut rest = s;
    for i in 0..4 {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        rest = &rest[digits..];
        if i < 3 {
            rest = rest.strip_prefix('.')?;
        }
    }
    Some(rest)
}

/// `url` as the original would dial it, or `None` when it cannot be put so.
///
/// `ws://` and `wss://` become `http://` and `https://` (the original named
/// WebSocket endpoints by their HTTP URL), and the entrance path gets the
/// original's trailing slash. A host name is left out rather than resolved:
/// resolving would put this process's DNS view (split horizon, a resolver
/// that is down) into what a peer is told, and the answer could change after
/// it was handed out. An operator who wants original peers to learn an
/// entrance gives it an IPv4 address (`advertise`, `peers`).
pub fn original_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        Some(_) => return None,
        None => authority,
    };
    if host.parse::<Ipv4Addr>().is_err() && !host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let path = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    let url = format!("{scheme}://{}{path}", authority.to_ascii_lowercase());
    original_accepts(&url).then_some(url)
}

/// Every URL of `urls` an original peer can dial, in its form (see [`original_url`]).
pub fn original_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in urls.into_iter().filter_map(original_url) {
        if !out.contains(&url) {
            out.push(url);
        }
    }
    out
}

/// One `BOX_SET` entry for an original publisher, shaped as the original's own
/// entries were: a flat object of strings, `COMMAND` included.
///
/// Strings pass as they are and numbers as their decimal text (what a trip
/// through a Redis hash made of them). Objects, lists, booleans and nulls are
/// left out — the box's `…:TRAFFIC_FLOW:log-…` entries among them, which the
/// original entrance could never store either — except the location this
/// entrance found for the box, which goes flat as `GEOIP-COUNTRY`,
/// `GEOIP-CITY`, … in the style of the original's `CPU-USR` and `MEM-TOTAL`.
///
/// `None` when the publisher could not use the box: it dials `CONNECT_WS` only if
/// the URL check passes, and a box may name only the address it connected from
/// (`observed_ip`), so that nobody can send original publishers, which cannot
/// check whom they reach, to someone else's address.
pub fn box_entry(
    exchange: &Exchange,
    geo: Option<&GeoIp>,
    observed_ip: Option<&str>,
) -> Option<Map<String, Value>> {
    let connect_ws = exchange.connect_ws.as_deref()?;
    if !original_accepts(connect_ws) || !names_only(connect_ws, observed_ip?) {
        return None;
    }
    let Value::Object(fields) = serde_json::to_value(exchange).ok()? else {
        return None;
    };
    let mut entry = Map::new();
    for (key, value) in fields {
        if let Some(text) = scalar_text(&value) {
            entry.insert(key, Value::String(text));
        }
    }
    if let Some(Ok(Value::Object(geo))) = geo.map(serde_json::to_value) {
        for (key, value) in geo {
            if let Some(text) = scalar_text(&value) {
                entry.insert(format!("GEOIP-{key}"), Value::String(text));
            }
        }
    }
    entry.remove("GEOIP");
    entry.insert("COMMAND".into(), Value::from("EXCHANGE"));
    Some(entry)
}

/// A value as the text a Redis hash would have kept, if it could keep it.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether a URL the original accepts points at `ip` (`localhost` at a loopback address).
fn names_only(url: &str, ip: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default();
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
    let ip = ip.to_canonical();
    if host.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback();
    }
    host.parse::<Ipv4Addr>()
        .is_ok_and(|h| std::net::IpAddr::V4(h) == ip)
}

/// `header` as the start of a message to an original peer.
fn own(header: &Header) -> Map<String, Value> {
    match serde_json::to_value(header) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// The answer to an original box's `EXCHANGE`: `MESSAGE: ACCEPTED` and the
/// entrances it can dial (already in the original's form, [`original_urls`]).
/// None of our additions (`ENTRANCES`, `PUBLISHER_KEYS`, …): the original
/// box could use none of them.
pub fn exchange_reply(header: &Header, entrance_urls: Vec<String>) -> Value {
    let mut reply = own(header);
    reply.insert("ENTRANCE_URLS".into(), Value::from(entrance_urls));
    reply.insert("MESSAGE".into(), Value::from(super::ACCEPTED));
    reply.insert("COMMAND".into(), Value::from("EXCHANGE"));
    Value::Object(reply)
}

/// A refusal in the original's shape: `ERROR` and no `COMMAND` (the original
/// client then logs the whole message, which is how its operator gets to read
/// `text`), with the entrances it may dial instead.
pub fn error_reply(header: &Header, code: &str, text: &str, entrance_urls: Vec<String>) -> Value {
    let mut reply = own(header);
    reply.insert("ENTRANCE_URLS".into(), Value::from(entrance_urls));
    reply.insert("ERROR".into(), Value::from(text));
    reply.insert("CODE".into(), Value::from(code));
    Value::Object(reply)
}

/// The whole `SEARCH` answer for an original publisher: this entrance's
/// header, `COMMAND`, and `BOX_SET` — no `ENTRANCE_URLS`, as in the original
/// (its publisher learns no entrances).
pub fn search_reply(
    header: &Header,
    boxes: impl IntoIterator<Item = (String, Map<String, Value>)>,
) -> Value {
    let mut reply = own(header);
    reply.insert("COMMAND".into(), Value::from("SEARCH"));
    let box_set: Map<String, Value> = boxes
        .into_iter()
        .map(|(id, entry)| (id, Value::Object(entry)))
        .collect();
    reply.insert("BOX_SET".into(), Value::Object(box_set));
    Value::Object(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_check_is_the_originals() {
        for good in [
            "http://127.0.0.1:7070/dandelion/ws/",
            "https://10.0.0.1/dandelion/ws/",
            "http://localhost:12345/x",
            "https://999.1.1.1:1/x",
            "http://1.2.3.4//",
            // Anchored at the start only.
            "http://1.2.3.4/a\nanything",
        ] {
            assert!(original_accepts(good), "{good}");
        }
        for bad in [
            "ws://127.0.0.1:7070/dandelion/ws",
            "wss://127.0.0.1/x",
            "http://entrance.example.org/dandelion/ws/",
            "http://localhost.example.org/x",
            "http://[::1]:7070/x",
            "http://1.2.3.4/",
            "http://1.2.3.4",
            "http://1.2.3.4:123456/x",
            "http://1.2.3.4:/x",
            "http://1.2.3.4567/x",
            "http://1.2.3/x",
            "http://1.2.3.4/\n",
            " http://1.2.3.4/x",
            "HTTP://1.2.3.4/x",
        ] {
            assert!(!original_accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn our_urls_are_given_in_the_originals_form_or_not_at_all() {
        assert_eq!(
            original_url("ws://127.0.0.1:7070/dandelion/ws").as_deref(),
            Some("http://127.0.0.1:7070/dandelion/ws/")
        );
        assert_eq!(
            original_url("wss://203.0.113.9/dandelion/ws/").as_deref(),
            Some("https://203.0.113.9/dandelion/ws/")
        );
        assert_eq!(
            original_url("WSS://LOCALHOST:7070/dandelion/ws").as_deref(),
            Some("https://localhost:7070/dandelion/ws/")
        );
        for left_out in [
            "wss://entrance.example.org/dandelion/ws",
            "ws://[2001:db8::1]:7070/dandelion/ws",
            "ws://127.0.0.1:99999/dandelion/ws",
            "ftp://127.0.0.1/x",
            "ws://127.0.0.1:7070",
            "not a url",
        ] {
            assert_eq!(original_url(left_out), None, "{left_out}");
        }
        assert_eq!(
            original_urls([
                "ws://10.0.0.1/dandelion/ws",
                "http://10.0.0.1/dandelion/ws/",
                "wss://e.example/x"
            ]),
            ["http://10.0.0.1/dandelion/ws/"]
        );
    }

    fn exchange(connect_ws: &str) -> Exchange {
        let text = format!(
            r#"{{"ID": "box-b1c394d6e16244c8950fa7ee24dfd7d6", "IP": "127.0.0.1", "PORT": 17270,
                "TYPE": "BOX", "COMMAND": "EXCHANGE", "CONNECT_WS": "{connect_ws}",
                "CPU-NUM": "2", "LOADAVG-1": 4.34, "FLAG": true, "NOTHING": null,
                "box-b1c394d6e16244c8950fa7ee24dfd7d6:TRAFFIC_FLOW:log-1": {{"url": "/x", "status": "200", "size": "9"}},
                "LIST": ["a"], "GEOIP": {{"COUNTRY": "TW"}}}}"#
        );
        match crate::protocol::Message::decode(&text) {
            Ok(crate::protocol::Message::Exchange(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_box_entry_holds_strings_only() {
        let ws = "https://127.0.0.1:17270/dandelion/box-b1c394d6e16244c8950fa7ee24dfd7d6/ws/";
        let geo = GeoIp {
            country: Some("TW".into()),
            city: Some("Taipei".into()),
            loc: Some("25.0330,121.5654".into()),
            ..GeoIp::default()
        };
        let entry = box_entry(&exchange(ws), Some(&geo), Some("127.0.0.1")).unwrap();
        for (key, value) in &entry {
            assert!(value.is_string(), "{key}: {value}");
        }
        assert_eq!(entry["PORT"], "17270");
        assert_eq!(entry["LOADAVG-1"], "4.34");
        assert_eq!(entry["CPU-NUM"], "2");
        assert_eq!(entry["CONNECT_WS"], ws);
        assert_eq!(entry["COMMAND"], "EXCHANGE");
        assert_eq!(entry["GEOIP-CITY"], "Taipei");
        assert_eq!(entry["GEOIP-LOC"], "25.0330,121.5654");
        for gone in ["FLAG", "NOTHING", "LIST", "GEOIP", "VERSION"] {
            assert!(!entry.contains_key(gone), "{gone}");
        }
        assert!(!entry.keys().any(|k| k.contains("TRAFFIC_FLOW")));
        // A dual-stack socket's view of the same peer.
        assert!(box_entry(&exchange(ws), None, Some("::ffff:127.0.0.1")).is_some());
    }

    #[test]
    fn a_box_the_original_cannot_dial_or_that_names_another_address_is_left_out() {
        let ours = "https://127.0.0.1:17270/dandelion/box-b1/ws/";
        assert!(
            box_entry(&exchange(ours), None, None).is_none(),
            "address unknown"
        );
        assert!(box_entry(&exchange(ours), None, Some("127.0.0.2")).is_none());
        assert!(
            box_entry(
                &exchange("https://10.0.0.7:7070/x/"),
                None,
                Some("127.0.0.1")
            )
            .is_none()
        );
        assert!(
            box_entry(
                &exchange("https://localhost:7070/x/"),
                None,
                Some("127.0.0.1")
            )
            .is_some()
        );
        assert!(
            box_entry(
                &exchange("https://localhost:7070/x/"),
                None,
                Some("10.0.0.1")
            )
            .is_none()
        );
        // The original's own box without a proxy port: `…:None/…`.
        assert!(
            box_entry(
                &exchange("https://127.0.0.1:None/dandelion/box-b1/ws/"),
                None,
                Some("127.0.0.1")
            )
            .is_none()
        );
        assert!(
            box_entry(
                &exchange("wss://127.0.0.1:7070/x/"),
                None,
                Some("127.0.0.1")
            )
            .is_none()
        );
    }

    #[test]
    fn a_search_answer_has_the_originals_keys() {
        let id = crate::ids::NodeId::parse("entrance-0123456789abcdef0123456789abcdef").unwrap();
        let reply = search_reply(&Header::new(id), []);
        assert_eq!(reply["COMMAND"], "SEARCH");
        assert_eq!(reply["BOX_SET"], serde_json::json!({}));
        assert!(reply.get("ENTRANCE_URLS").is_none());
        assert!(matches!(
            crate::protocol::Message::from_value(reply),
            Ok(crate::protocol::Message::SearchReply(_))
        ));
    }
}
