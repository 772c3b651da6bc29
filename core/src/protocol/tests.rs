//! Round trips, and messages shaped exactly like the original document's lists.

use serde_json::json;

use super::*;
use crate::ids::{NodeId, Role};

fn id(s: &str) -> NodeId {
    NodeId::parse(s).unwrap()
}

const BOX: &str = "box-f4090467bdc047eb9c35080fa9ed6291";
const ENTRANCE: &str = "entrance-3eb958e0f96b4464b0341a714ed0c5bc";
const PUBLISHER: &str = "publisher-a44279a3521240d7913ddc4aef3dcc0b";

fn round_trip(m: Message) {
    let text = m.encode();
    let back = Message::decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(back, m, "{text}");
}

fn geo() -> GeoIp {
    GeoIp {
        ip: Some("203.0.113.7".into()),
        hostname: Some("pi.example.net".into()),
        country: Some("TW".into()),
        city: Some("Taipei".into()),
        region: Some("Taipei City".into()),
        org: Some("AS3462 Chunghwa Telecom".into()),
        loc: Some("25.0330,121.5654".into()),
    }
}

fn exchange() -> Exchange {
    Exchange {
        header: Header::new(id(BOX)).with_address("203.0.113.7", 7071),
        connect_ws: Some(format!("ws://203.0.113.7:7071/dandelion/{BOX}/ws")),
        data_url: Some("http://203.0.113.7:7071/".into()),
        system_info: Some(Box::new(SystemInfo {
            cpu_cores: Some(4),
            cpu_usage: Some(12.5),
            load_avg: Some([0.5, 0.25, 0.125]),
            mem_total: Some(4 << 30),
            disk_available: Some(20 << 30),
            upload_cap: Some(2_000_000),
            ..SystemInfo::default()
        })),
        geoip: Some(geo()),
        traffic_flow: Some(TrafficFlow {
            bytes_served: Some(1234),
            requests: Some(5),
            ..TrafficFlow::default()
        }),
        extra: Default::default(),
    }
}

#[test]
fn every_message_kind_round_trips() {
    round_trip(Message::Exchange(exchange()));
    round_trip(Message::ExchangeReply(ExchangeReply {
        header: Header::new(id(ENTRANCE)).with_address("127.0.0.1", 7070),
        entrance_urls: vec!["ws://127.0.0.1:7070/dandelion/ws".into()],
        entrances: Some(vec![format!("ws://127.0.0.1:7070/dandelion/ws#{ENTRANCE}")]),
        publisher_keys: Some(vec!["ab".repeat(32)]),
        heartbeat_interval: Some(5),
        extra: Default::default(),
    }));
    round_trip(Message::Search(Search {
        header: Header::new(id(PUBLISHER)),
        geoip: Some(geo()),
        count: Some(20),
        order: Some(SearchOrder::Nearest),
        unverified: Some(false),
        watch: Some(true),
        extra: Default::default(),
    }));
    round_trip(Message::Traffic(TrafficQuery {
        header: Header::new(id(PUBLISHER)),
    }));
    round_trip(Message::TrafficReply(TrafficReply {
        header: Header::new(id(BOX)),
        since: 1_700_000_000,
        streams: [(
            "live".to_owned(),
            ServedCount {
                bytes: 1 << 20,
                requests: 3,
            },
        )]
        .into(),
    }));
    round_trip(Message::BoxState(BoxState {
        header: Header::new(id(ENTRANCE)),
        box_id: id(BOX),
        state: "disconnected".into(),
        reason: Some("its session ended".into()),
    }));
    round_trip(Message::SearchReply(SearchReply {
        header: Header::new(id(ENTRANCE)),
        boxes: vec![exchange()],
        entrance_urls: Some(vec!["ws://127.0.0.1:7070/dandelion/ws".into()]),
        entrances: Some(vec![format!("ws://127.0.0.1:7070/dandelion/ws#{ENTRANCE}")]),
        undecodable: vec![],
        extra: Default::default(),
    }));
    round_trip(Message::Goodbye(Goodbye {
        header: Header::new(id(BOX)),
        reason: Some("shutting down".into()),
    }));
    round_trip(Message::Publish(Publish {
        header: Header::new(id(PUBLISHER)),
        extra: Default::default(),
    }));
    round_trip(Message::PublishReply(PublishReply {
        header: Header::new(id(BOX)).with_address("0.0.0.0", 7071),
        data_url: Some(format!("http://127.0.0.1:7071/{PUBLISHER}/")),
        max_file_size: Some(1 << 30),
        max_frame: Some(1 << 20),
        quota_free: Some(5 << 30),
        extra: Default::default(),
    }));
    let mut headers = serde_json::Map::new();
    headers.insert("STREAM".into(), json!("demo"));
    round_trip(Message::Transfer(TransferResult {
        header: Header::new(id(BOX)),
        transfer: Some(7),
        file_path: "/live/seg1.ts".into(),
        outcome: TransferOutcome::Stored {
            size: 3,
            sha256: "ab".repeat(32),
            url: format!("http://127.0.0.1:7071/{PUBLISHER}/live/seg1.ts"),
        },
        headers,
    }));
    round_trip(Message::Transfer(TransferResult {
        header: Header::new(id(BOX)),
        transfer: None,
        file_path: "/../etc/passwd".into(),
        outcome: TransferOutcome::Refused {
            reason: "path leaves the publisher's directory".into(),
            code: "unsafe_path".into(),
        },
        headers: Default::default(),
    }));
    round_trip(Message::Error(ErrorReply {
        header: Header::new(id(ENTRANCE)),
        error: "missing field `TYPE`".into(),
        code: Some("missing_field".into()),
        command: Some("EXCHANGE".into()),
        entrance_urls: None,
    }));
}

#[test]
fn encoding_keeps_the_originals_field_names_and_string_ports() {
    let value = Message::Exchange(exchange()).to_value();
    assert_eq!(value["ID"], json!(BOX));
    assert_eq!(value["TYPE"], json!("BOX"));
    assert_eq!(value["COMMAND"], json!("EXCHANGE"));
    assert_eq!(
        value["PORT"],
        json!("7071"),
        "PORT is a string, as the original sent it"
    );
    assert_eq!(value["VERSION"], json!(PROTOCOL_VERSION));
    assert_eq!(value["GEOIP"]["CITY"], json!("Taipei"));
    assert_eq!(
        value["SYSTEM_INFO"]["CPU_CORES"],
        json!(4),
        "new fields are numbers"
    );
    let reply = Message::PublishReply(PublishReply {
        header: Header::new(id(BOX)),
        data_url: None,
        max_file_size: None,
        max_frame: None,
        quota_free: None,
        extra: Default::default(),
    })
    .to_value();
    assert_eq!(reply["MESSAGE"], json!("ACCEPTED"));
    assert_eq!(reply["COMMAND"], json!("PUBLISH"));
}

/// The README's "Box to Entrance" list: ID, IP, PORT, COMMAND, TYPE, CONNECT_WS,
/// SYSTEM INFO, GEOIP with its seven fields.
#[test]
fn box_to_entrance_as_the_document_lists_it() {
    let text = json!({
        "ID": BOX, "IP": "203.0.113.7", "PORT": "7070", "COMMAND": "EXCHANGE", "TYPE": "BOX",
        "CONNECT_WS": format!("https://203.0.113.7:7070/dandelion/{BOX}/ws/"),
        "SYSTEM_INFO": {"CPU_CORES": "4", "UPLOAD_CAP": 1000, "DISK_AVAILABLE": "5368709120"},
        "GEOIP": {"IP": "203.0.113.7", "HOSTNAME": "h", "COUNTRY": "TW", "CITY": "Taipei",
                  "REGION": "Taipei City", "ORG": "AS1", "LOC": "25.03,121.56"}
    })
    .to_string();
    let Message::Exchange(m) = Message::decode(&text).unwrap() else {
        panic!("not an exchange")
    };
    assert_eq!(m.header.port, Some(7070));
    assert!(m.header.is_legacy());
    let sys = m.system_info.unwrap();
    assert_eq!(sys.cpu_cores, Some(4));
    assert_eq!(sys.disk_available, Some(5 << 30));
    assert_eq!(m.geoip.unwrap().lat_lon(), Some((25.03, 121.56)));
}

/// "Entrance to Box": ID, IP, PORT, COMMAND EXCHANGE, TYPE, ENTRANCE_URLS (README
/// casing `Entrance` included).
#[test]
fn entrance_to_box_as_the_document_lists_it() {
    let text = json!({"ID": ENTRANCE, "IP": "127.0.0.1", "PORT": "7070", "COMMAND": "EXCHANGE",
        "TYPE": "Entrance", "MESSAGE": "ACCEPTED", "ENTRANCE_URLS": ["http://127.0.0.1:7070/dandelion/ws/"]})
    .to_string();
    let Message::ExchangeReply(m) = Message::decode(&text).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(m.header.role, Role::Entrance);
    assert_eq!(m.entrance_urls, ["http://127.0.0.1:7070/dandelion/ws/"]);
}

/// "Publisher to Entrance": ID, IP, PORT, COMMAND SEARCH, TYPE PUBLISHER, GEOIP.
/// "Entrance to Publisher": ID, IP, PORT, URL, COMMAND, TYPE, BOX_SET, ENTRANCE_URL.
#[test]
fn search_and_its_answer_as_the_document_lists_them() {
    let search = json!({"ID": PUBLISHER, "IP": "127.0.0.1", "PORT": "7072", "COMMAND": "SEARCH",
        "TYPE": "PUBLISHER", "GEOIP": {"COUNTRY": "JP", "CITY": "Tokyo", "LOC": "35.68,139.69"}})
    .to_string();
    let Message::Search(s) = Message::decode(&search).unwrap() else {
        panic!("not a search")
    };
    assert_eq!(s.geoip.unwrap().city.as_deref(), Some("Tokyo"));
    assert_eq!(s.count, None);

    let answer = json!({"ID": ENTRANCE, "IP": "127.0.0.1", "PORT": "7070", "URL": "http://127.0.0.1:7070/",
        "COMMAND": "SEARCH", "TYPE": "ENTRANCE",
        "BOX_SET": {BOX: {"ID": BOX, "TYPE": "BOX", "COMMAND": "EXCHANGE", "IP": "1.2.3.4", "PORT": "7070"},
                    "box-00000000000000000000000000000000": {}},
        "ENTRANCE_URL": ["http://127.0.0.1:7070/dandelion/ws/"]})
    .to_string();
    let Message::SearchReply(r) = Message::decode(&answer).unwrap() else {
        panic!("not a reply")
    };
    assert_eq!(r.boxes.len(), 1);
    assert_eq!(r.boxes[0].header.id.as_str(), BOX);
    assert_eq!(
        r.undecodable,
        ["box-00000000000000000000000000000000"],
        "the original's `{{}}` entries are set aside"
    );
    assert!(r.extra.contains_key("URL") && r.extra.contains_key("ENTRANCE_URL"));
}

/// "Publisher to Box": ID, IP, PORT, COMMAND PUBLISH, TYPE PUBLISHER.
#[test]
fn publish_as_the_document_lists_it() {
    let text = json!({"ID": PUBLISHER, "IP": "127.0.0.1", "PORT": "7072", "COMMAND": "PUBLISH", "TYPE": "PUBLISHER"})
        .to_string();
    let Message::Publish(p) = Message::decode(&text).unwrap() else {
        panic!("not a publish")
    };
    assert_eq!(p.header.port, Some(7072));
}

#[test]
fn malformed_messages_are_typed_errors() {
    let cases: &[(&str, ProtocolError)] = &[
        (
            "{",
            ProtocolError::NotJson("EOF while parsing an object at line 1 column 1".into()),
        ),
        ("[1]", ProtocolError::NotAnObject),
        (
            r#"{"TYPE":"BOX","COMMAND":"EXCHANGE"}"#,
            ProtocolError::MissingField("ID"),
        ),
        (
            &format!(r#"{{"ID":"{BOX}","COMMAND":"EXCHANGE"}}"#),
            ProtocolError::MissingField("TYPE"),
        ),
        (
            &format!(r#"{{"ID":"{BOX}","TYPE":""}}"#),
            ProtocolError::MissingField("TYPE"),
        ),
        (
            &format!(r#"{{"ID":"{BOX}","TYPE":"BOX"}}"#),
            ProtocolError::MissingField("COMMAND"),
        ),
        (
            &format!(r#"{{"ID":"{BOX}","TYPE":"BOX","COMMAND":"DANCE"}}"#),
            ProtocolError::UnknownCommand("DANCE".into()),
        ),
    ];
    for (text, want) in cases {
        assert_eq!(&Message::decode(text).unwrap_err(), want, "{text}");
    }
    let bad_port =
        format!(r#"{{"ID":"{BOX}","TYPE":"BOX","COMMAND":"EXCHANGE","PORT":"seventy"}}"#);
    let err = Message::decode(&bad_port).unwrap_err();
    assert_eq!(err.reason_code(), "invalid_field");
    assert!(
        err.to_string().contains("`seventy` is not a valid number"),
        "{err}"
    );
    let bad_id = r#"{"ID":"box-x","TYPE":"BOX","COMMAND":"EXCHANGE"}"#;
    assert!(
        Message::decode(bad_id)
            .unwrap_err()
            .to_string()
            .contains("`box-x` is not a Dandelion ID")
    );
    let bad_type = format!(r#"{{"ID":"{BOX}","TYPE":"VIEWER","COMMAND":"EXCHANGE"}}"#);
    assert!(
        Message::decode(&bad_type)
            .unwrap_err()
            .to_string()
            .contains("unknown role `VIEWER`")
    );
    let bad_message =
        format!(r#"{{"ID":"{BOX}","TYPE":"BOX","COMMAND":"PUBLISH","MESSAGE":"MAYBE"}}"#);
    assert_eq!(
        Message::decode(&bad_message).unwrap_err().reason_code(),
        "invalid_field"
    );
}

#[test]
fn every_reason_code_is_listed_for_counting_from_the_start() {
    let all = [
        ProtocolError::NotJson(String::new()),
        ProtocolError::NotAnObject,
        ProtocolError::MissingField("COMMAND"),
        ProtocolError::UnknownCommand(String::new()),
        ProtocolError::Invalid {
            command: String::new(),
            detail: String::new(),
        },
    ];
    let codes: Vec<&str> = all.iter().map(ProtocolError::reason_code).collect();
    assert_eq!(codes, ProtocolError::REASON_CODES);
}
