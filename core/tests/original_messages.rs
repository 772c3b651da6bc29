//! Every message captured from the original 2017 Dandelion decodes, with the
//! values the capture holds. One test per fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use dandelion_core::ids::Role;
use dandelion_core::protocol::records::{ProcessedFile, QueuedFile};
use dandelion_core::protocol::{Message, SearchReply};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/original-messages/", $name))
    };
}

fn decode(text: &str) -> Message {
    Message::decode(text).unwrap_or_else(|e| panic!("does not decode: {e}\n{text}"))
}

const BOX_B1: &str = "box-b1c394d6e16244c8950fa7ee24dfd7d6";
const BOX_F4: &str = "box-f4090467bdc047eb9c35080fa9ed6291";

#[test]
fn fixture_01_box_to_entrance_exchange() {
    let Message::Exchange(m) = decode(fixture!("01-box-to-entrance-EXCHANGE.json")) else {
        panic!("not an EXCHANGE")
    };
    assert_eq!(m.header.id.as_str(), BOX_B1);
    assert_eq!(m.header.role, Role::Box);
    assert_eq!(m.header.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(m.header.port, Some(17270), "PORT sent as a string");
    assert!(m.header.is_legacy());
    assert_eq!(
        m.connect_ws.as_deref(),
        Some("https://127.0.0.1:17270/dandelion/box-b1c394d6e16244c8950fa7ee24dfd7d6/ws/")
    );
    assert_eq!(m.extra["CPU-NUM"], "2");
    assert_eq!(m.extra["DISK-TOTAL"], "251.9722785949707");
    assert_eq!(
        m.extra.len(),
        16,
        "all flat system fields kept: {:?}",
        m.extra.keys()
    );
}

#[test]
fn fixture_02_exchange_with_traffic_flow() {
    let Message::Exchange(m) = decode(fixture!(
        "02-box-to-entrance-EXCHANGE-with-TRAFFIC_FLOW.json"
    )) else {
        panic!("not an EXCHANGE")
    };
    let key =
        "box-b1c394d6e16244c8950fa7ee24dfd7d6:TRAFFIC_FLOW:log-759c01d26745449296dfb1c8d774c31e";
    let log = &m.extra[key];
    assert_eq!(
        log["url"],
        "/publisher-01f8a4f9aa4d4404a81a37de08ff8c67/srv/video/hls/w7.ts"
    );
    assert_eq!(log["status"], "200");
    assert_eq!(log["size"], "295");
    // Re-encoding keeps the nested object that the original entrance choked on.
    let again = decode(&Message::Exchange(m.clone()).encode());
    assert_eq!(again, Message::Exchange(m));
}

#[test]
fn fixture_03_entrance_to_box_accepted() {
    let Message::ExchangeReply(m) = decode(fixture!("03-entrance-to-box-EXCHANGE-ACCEPTED.json"))
    else {
        panic!("not an EXCHANGE reply")
    };
    assert_eq!(
        m.header.id.as_str(),
        "entrance-3eb958e0f96b4464b0341a714ed0c5bc"
    );
    assert_eq!(m.header.role, Role::Entrance);
    assert_eq!(m.header.port, Some(17071));
    assert_eq!(m.entrance_urls, ["http://127.0.0.1:17071/dandelion/ws/"]);
}

#[test]
fn fixture_04_accepted_with_other_entrances() {
    let Message::ExchangeReply(m) = decode(fixture!(
        "04-entrance-to-box-EXCHANGE-ACCEPTED-other-entrances.json"
    )) else {
        panic!("not an EXCHANGE reply")
    };
    assert_eq!(
        m.entrance_urls,
        [
            "http://127.0.0.1:17072/dandelion/ws/",
            "https://127.0.0.1:17170/dandelion/ws/",
            "http://127.0.0.1:17071/dandelion/ws/"
        ]
    );
}

#[test]
fn fixture_05_publisher_to_entrance_search() {
    let Message::Search(m) = decode(fixture!("05-publisher-to-entrance-SEARCH.json")) else {
        panic!("not a SEARCH")
    };
    assert_eq!(
        m.header.id.as_str(),
        "publisher-a44279a3521240d7913ddc4aef3dcc0b"
    );
    assert_eq!(m.header.role, Role::Publisher);
    assert_eq!(m.header.port, None, "the original publisher sent no PORT");
    assert_eq!(m.count, None);
}

#[test]
fn fixture_06_entrance_to_publisher_search() {
    let Message::SearchReply(m) = decode(fixture!("06-entrance-to-publisher-SEARCH.json")) else {
        panic!("not a SEARCH reply")
    };
    let ids: Vec<_> = m.boxes.iter().map(|b| b.header.id.as_str()).collect();
    assert_eq!(ids, [BOX_B1, BOX_F4]);
    assert!(m.undecodable.is_empty());
    let f4 = &m.boxes[1];
    assert_eq!(f4.header.port, Some(17170));
    assert_eq!(f4.extra["CPU-USR"], "100.0");
    assert!(
        !f4.extra.contains_key("COMMAND"),
        "the relayed COMMAND is not a box field"
    );
}

#[test]
fn fixture_07_search_empty() {
    let Message::SearchReply(SearchReply {
        boxes, undecodable, ..
    }) = decode(fixture!("07-entrance-to-publisher-SEARCH-empty.json"))
    else {
        panic!("not a SEARCH reply")
    };
    assert!(boxes.is_empty() && undecodable.is_empty());
}

#[test]
fn fixture_08_entrance_error() {
    let Message::Error(m) = decode(fixture!("08-entrance-ERROR-wrong-format.json")) else {
        panic!("not an ERROR")
    };
    assert_eq!(m.header.role, Role::Entrance);
    assert!(
        m.error
            .starts_with("Wrong format in your message. Your message: {'ID': 'box-x'")
    );
    assert_eq!(
        m.entrance_urls.as_deref(),
        Some(&["http://127.0.0.1:17071/dandelion/ws/".to_string()][..])
    );
    assert_eq!(m.command, None);
}

#[test]
fn fixture_09_publisher_to_box_publish() {
    let Message::Publish(m) = decode(fixture!("09-publisher-to-box-PUBLISH.json")) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        m.header.id.as_str(),
        "publisher-a44279a3521240d7913ddc4aef3dcc0b"
    );
    assert_eq!(m.header.ip.as_deref(), Some("127.0.0.1"));
    assert!(m.extra.is_empty());
}

#[test]
fn fixture_10_box_publish_accepted() {
    let Message::PublishReply(m) = decode(fixture!("10-box-to-publisher-PUBLISH-ACCEPTED.json"))
    else {
        panic!("not a PUBLISH reply")
    };
    assert_eq!(m.header.id.as_str(), BOX_F4);
    assert_eq!(m.header.ip.as_deref(), Some("0.0.0.0"));
    assert_eq!(
        m.header.port,
        Some(17170),
        "PORT sent as a JSON number here"
    );
}

#[test]
fn fixture_11_box_error() {
    let Message::Error(m) = decode(fixture!("11-box-ERROR-wrong-format.json")) else {
        panic!("not an ERROR")
    };
    assert_eq!(m.header.id.as_str(), BOX_F4);
    assert_eq!(m.header.port, Some(17170));
    assert!(m.error.contains("'ID': 'publisher-probe'"));
    assert_eq!(m.entrance_urls, None);
}

#[test]
fn fixture_14_box_reply_to_peer_exchange() {
    let Message::Exchange(m) = decode(fixture!("14-box-reply-to-peer-EXCHANGE.json")) else {
        panic!("not an EXCHANGE")
    };
    assert_eq!(m.header.id.as_str(), BOX_F4);
    assert_eq!(m.extra["MEM-AVAIL"], "942.9");
}

#[test]
fn fixture_15_sending_queue_entry() {
    let q: QueuedFile = serde_json::from_str(fixture!(
        "15-redis-publisher-FILES_SENDING_QUEUE-entry.json"
    ))
    .unwrap();
    assert_eq!(q.file_path, "/tmp/hls/output/demo/index7.ts");
    assert_eq!(q.ttl, Some(60));
    assert!(q.extra.is_empty());
}

#[test]
fn fixture_16_processed_files_hash() {
    let p: ProcessedFile =
        serde_json::from_str(fixture!("16-redis-publisher-PROCESSED_FILES-hash.json")).unwrap();
    assert_eq!(p.box_id, BOX_F4);
    assert_eq!(p.msg, "Success");
    assert_eq!(p.file_path, "/srv/video/hls/ask1.ts");
    assert_eq!(p.ttl, Some(60), "TTL sent as a string");
}

#[test]
fn fixture_17_file_manager_ask_answer() {
    let p: ProcessedFile =
        serde_json::from_str(fixture!("17-FileManager-ask-answer.json")).unwrap();
    assert_eq!(p.box_id, BOX_F4);
    assert_eq!(p.port, Some(17170));
    assert_eq!(
        p.connect_ws.as_deref(),
        Some("https://127.0.0.1:17170/dandelion/box-f4090467bdc047eb9c35080fa9ed6291/ws/")
    );
    assert_eq!(p.extra["CPU-SIRQ"], "20.0");
}
