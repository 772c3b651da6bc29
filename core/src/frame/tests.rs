#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::*;

const FIXTURE_12: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/original-messages/12-publisher-to-box-file-frame.bin"
));
const FIXTURE_13: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/original-messages/13-publisher-to-box-file-frame-extra-header.bin"
));

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn message(header: &str, payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(START_MARKER);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(END_MARKER);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

fn decode(header: &str, payload: &[u8]) -> Result<Frame, FrameError> {
    Frame::decode(message(header, payload), &Limits::default())
}

fn decode_err(header: &str) -> FrameError {
    decode(header, b"").unwrap_err()
}

fn start(transfer: TransferId, data: &[u8], first: usize) -> Frame {
    Frame {
        header: FrameHeader::Start(StartHeader {
            path: "/f".into(),
            ttl: None,
            chunked: Some(ChunkedStart {
                transfer,
                size: data.len() as u64,
                sha256: Some(sha(data)),
            }),
            extra: Map::new(),
        }),
        payload: Bytes::copy_from_slice(&data[..first]),
    }
}

fn cont(transfer: TransferId, offset: u64, payload: &[u8]) -> Frame {
    Frame {
        header: FrameHeader::Continue { transfer, offset },
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A `dandelion/2` start frame: no `SHA256`, which comes in the final frame.
fn start_deferred(transfer: TransferId, size: u64, first: &[u8]) -> Frame {
    Frame {
        header: FrameHeader::Start(StartHeader {
            path: "/f".into(),
            ttl: None,
            chunked: Some(ChunkedStart {
                transfer,
                size,
                sha256: None,
            }),
            extra: Map::new(),
        }),
        payload: Bytes::copy_from_slice(first),
    }
}

fn finish(transfer: TransferId, offset: u64, payload: &[u8], sha256: &str) -> Frame {
    Frame {
        header: FrameHeader::Finish {
            transfer,
            offset,
            sha256: sha256.to_owned(),
        },
        payload: Bytes::copy_from_slice(payload),
    }
}

fn start_header(frame: &Frame) -> &StartHeader {
    match &frame.header {
        FrameHeader::Start(start) => start,
        other => panic!("not a start frame: {other:?}"),
    }
}

// ---------------------------------------------------------------- captured fixtures

#[test]
fn fixture_12_plain_frame_decodes() {
    let frame = Frame::decode(Bytes::from_static(FIXTURE_12), &Limits::default()).unwrap();
    let header = start_header(&frame);
    assert_eq!(header.path, "/srv/video/hls/plain3.ts");
    assert_eq!(header.ttl, Some(60));
    assert_eq!(header.chunked, None);
    assert!(header.extra.is_empty());
    assert_eq!(&frame.payload[..], b"#EXTM3U segment bytes 3\n");

    let event = Transfers::new(Limits::default()).accept(frame).unwrap();
    assert_eq!(event.transfer, None);
    let started = event.started.unwrap();
    assert_eq!(started.size, 24);
    assert_eq!(started.expected_sha256, None);
    assert_eq!(event.data.unwrap().bytes, &b"#EXTM3U segment bytes 3\n"[..]);
    let completed = event.completed.unwrap();
    assert_eq!(completed.sha256, sha(b"#EXTM3U segment bytes 3\n"));
    assert!(!completed.verified);
}

#[test]
fn fixture_13_extra_header_decodes() {
    let frame = Frame::decode(Bytes::from_static(FIXTURE_13), &Limits::default()).unwrap();
    let header = start_header(&frame);
    assert_eq!(header.path, "/srv/video/hls/cap5.ts");
    assert_eq!(header.ttl, Some(20));
    assert_eq!(header.chunked, None);
    assert_eq!(
        Value::Object(header.extra.clone()),
        json!({"STREAM": "demo"})
    );
    assert_eq!(&frame.payload[..], b"segment 5 payload\n");
}

#[test]
fn payload_is_a_zero_copy_slice_of_the_message() {
    let msg = Bytes::from_static(FIXTURE_12);
    let frame = Frame::decode(msg.clone(), &Limits::default()).unwrap();
    let offset = frame.payload.as_ptr() as usize - msg.as_ptr() as usize;
    assert_eq!(offset, msg.len() - frame.payload.len());
}

#[test]
fn fixture_frames_reencode_to_equivalent_frames() {
    for fixture in [FIXTURE_12, FIXTURE_13] {
        let frame = Frame::decode(Bytes::from_static(fixture), &Limits::default()).unwrap();
        let again = Frame::decode(frame.encode(), &Limits::default()).unwrap();
        assert_eq!(frame, again);
    }
}

// ---------------------------------------------------------------- accepted shapes

#[test]
fn ttl_accepts_numbers_numeric_strings_and_absence() {
    let ttl = |h: &str| start_header(&decode(h, b"").unwrap()).ttl;
    assert_eq!(ttl(r#"{"FILE_PATH":"/a","TTL":60}"#), Some(60));
    assert_eq!(ttl(r#"{"FILE_PATH":"/a","TTL":"60"}"#), Some(60));
    assert_eq!(ttl(r#"{"FILE_PATH":"/a","TTL":" 30 "}"#), Some(30));
    assert_eq!(ttl(r#"{"FILE_PATH":"/a","TTL":60.0}"#), Some(60));
    assert_eq!(ttl(r#"{"FILE_PATH":"/a","TTL":0}"#), Some(0));
    assert_eq!(ttl(r#"{"FILE_PATH":"/a"}"#), None);
    assert_eq!(
        ttl(&format!(r#"{{"FILE_PATH":"/a","TTL":{MAX_TTL_SECS}}}"#)),
        Some(MAX_TTL_SECS)
    );
}

#[test]
fn chunked_start_fields_decode_from_numbers_and_strings() {
    let upper = sha(b"abc").to_uppercase();
    let frame = decode(
        &format!(r#"{{"FILE_PATH":"/a","SIZE":"3","SHA256":"{upper}","TRANSFER":"7","X":1}}"#),
        b"ab",
    )
    .unwrap();
    let header = start_header(&frame);
    assert_eq!(
        header.chunked,
        Some(ChunkedStart {
            transfer: 7,
            size: 3,
            sha256: Some(sha(b"abc")),
        })
    );
    assert_eq!(Value::Object(header.extra.clone()), json!({"X": 1}));
}

#[test]
fn extra_headers_keep_their_order() {
    let frame = decode(r#"{"Z":1,"FILE_PATH":"/a","A":2,"TTL":5,"M":3}"#, b"").unwrap();
    let keys: Vec<_> = start_header(&frame).extra.keys().cloned().collect();
    assert_eq!(keys, ["Z", "A", "M"]);
    let again = Frame::decode(frame.encode(), &Limits::default()).unwrap();
    let keys: Vec<_> = start_header(&again).extra.keys().cloned().collect();
    assert_eq!(keys, ["Z", "A", "M"]);
}

#[test]
fn extra_header_numbers_survive_reencoding_exactly() {
    // Found by the fuzzer: without serde_json's float_roundtrip, this number came back as
    // 1.8446744073709446e73 after encode + decode.
    let big = format!("18446744073709{}551616", "4".repeat(54));
    let frame = decode(&format!(r#"{{"FILE_PATH":"/x","N":{big},"F":0.1}}"#), b"").unwrap();
    let again = Frame::decode(frame.encode(), &Limits::default()).unwrap();
    assert_eq!(again, frame);
}

#[test]
fn continue_frame_decodes_and_ignores_unknown_keys() {
    let frame = decode(r#"{"TRANSFER":"9","OFFSET":4096,"NOTE":"x"}"#, b"xyz").unwrap();
    assert_eq!(
        frame.header,
        FrameHeader::Continue {
            transfer: 9,
            offset: 4096
        }
    );
    assert_eq!(&frame.payload[..], b"xyz");
}

#[test]
fn encoder_writes_numbers_and_escapes_markers_inside_headers() {
    let mut extra = Map::new();
    extra.insert("NOTE".into(), json!("</Dandelion><Dandelion>"));
    extra.insert("TTL".into(), json!("shadow"));
    let frame = Frame {
        header: FrameHeader::Start(StartHeader {
            path: "/x/</Dandelion>".into(),
            ttl: Some(60),
            chunked: Some(ChunkedStart {
                transfer: 3,
                size: 10,
                sha256: Some(sha(b"0123456789")),
            }),
            extra,
        }),
        payload: Bytes::from_static(b"01234"),
    };
    let encoded = frame.encode();
    let text = String::from_utf8_lossy(&encoded);
    assert!(text.starts_with(
        r#"<Dandelion>{"FILE_PATH":"/x/\u003c/Dandelion>","TTL":60,"SIZE":10,"SHA256":""#
    ));
    assert!(text.contains(r#""TRANSFER":3"#));
    let decoded = Frame::decode(encoded, &Limits::default()).unwrap();
    let header = start_header(&decoded);
    assert_eq!(header.path, "/x/</Dandelion>");
    assert_eq!(header.ttl, Some(60));
    // A reserved key in `extra` is not written, so it cannot shadow the real TTL.
    assert_eq!(
        Value::Object(header.extra.clone()),
        json!({"NOTE": "</Dandelion><Dandelion>"})
    );
    assert_eq!(&decoded.payload[..], b"01234");

    let cont = cont(3, 5, b"56789");
    assert_eq!(
        &cont.encode()[..],
        &b"<Dandelion>{\"TRANSFER\":3,\"OFFSET\":5}</Dandelion>56789"[..]
    );
}

#[test]
fn header_of_exactly_the_limit_is_accepted() {
    let limits = Limits {
        max_header_bytes: 40,
        ..Limits::default()
    };
    let header = format!(r#"{{"FILE_PATH":"/{}"}}"#, "a".repeat(40 - 17));
    assert_eq!(header.len(), 40);
    Frame::decode(message(&header, b"data"), &limits).unwrap();
    let header = format!(r#"{{"FILE_PATH":"/{}"}}"#, "a".repeat(41 - 17));
    assert_eq!(
        Frame::decode(message(&header, b"data"), &limits).unwrap_err(),
        FrameError::HeaderTooLarge { max: 40 }
    );
}

// ---------------------------------------------------------------- framing errors

#[test]
fn missing_start_marker() {
    for msg in [
        &b""[..],
        b"<Dandel",
        b"hello",
        b" <Dandelion>{}</Dandelion>",
    ] {
        assert_eq!(
            Frame::decode(Bytes::copy_from_slice(msg), &Limits::default()).unwrap_err(),
            FrameError::MissingStartMarker
        );
    }
}

#[test]
fn missing_end_marker() {
    for msg in [
        &b"<Dandelion>"[..],
        b"<Dandelion>{\"FILE_PATH\":\"/a\"}",
        b"<Dandelion>{\"FILE_PATH\":\"/a\"}</Dandelion",
    ] {
        assert_eq!(
            Frame::decode(Bytes::copy_from_slice(msg), &Limits::default()).unwrap_err(),
            FrameError::MissingEndMarker
        );
    }
}

#[test]
fn repeated_start_marker() {
    let msg = Bytes::from_static(b"<Dandelion><Dandelion>{\"FILE_PATH\":\"/a\"}</Dandelion>x");
    assert_eq!(
        Frame::decode(msg, &Limits::default()).unwrap_err(),
        FrameError::RepeatedStartMarker
    );
    // Raw (unescaped) marker inside a header string, which the original would misread too.
    assert_eq!(
        decode_err(r#"{"FILE_PATH":"/<Dandelion>"}"#),
        FrameError::RepeatedStartMarker
    );
}

#[test]
fn header_too_large_with_and_without_end_marker() {
    let limits = Limits {
        max_header_bytes: 32,
        ..Limits::default()
    };
    let long = format!(r#"{{"FILE_PATH":"/{}"}}"#, "a".repeat(100));
    assert_eq!(
        Frame::decode(message(&long, b""), &limits).unwrap_err(),
        FrameError::HeaderTooLarge { max: 32 }
    );
    // No end marker, but more bytes than a header may have: refused without scanning them all.
    let mut msg = START_MARKER.to_vec();
    msg.extend(std::iter::repeat_n(b'x', 10_000));
    assert_eq!(
        Frame::decode(Bytes::from(msg), &limits).unwrap_err(),
        FrameError::HeaderTooLarge { max: 32 }
    );
}

#[test]
fn header_not_utf8() {
    let mut msg = START_MARKER.to_vec();
    msg.extend_from_slice(b"{\"FILE_PATH\":\"/\xff\"}");
    msg.extend_from_slice(END_MARKER);
    assert_eq!(
        Frame::decode(Bytes::from(msg), &Limits::default()).unwrap_err(),
        FrameError::HeaderNotUtf8
    );
}

#[test]
fn header_not_json() {
    for header in [
        "",
        "{",
        r#"{"FILE_PATH": }"#,
        r#"{"FILE_PATH":"/a"} x"#,
        "{'a':1}",
    ] {
        let error = decode_err(header);
        assert_eq!(error.reason_code(), "header_not_json", "{header}");
        assert!(
            error
                .to_string()
                .starts_with("file frame header is not valid JSON")
        );
    }
}

#[test]
fn header_not_object() {
    for (header, found) in [
        ("[1]", "array"),
        ("\"x\"", "string"),
        ("null", "null"),
        ("60", "number"),
    ] {
        assert_eq!(decode_err(header), FrameError::HeaderNotObject { found });
    }
}

// ---------------------------------------------------------------- field errors

#[test]
fn missing_fields_are_named() {
    let sha = sha(b"");
    for (header, field) in [
        ("{}".to_owned(), FILE_PATH),
        (r#"{"TTL":60,"STREAM":"x"}"#.to_owned(), FILE_PATH),
        (r#"{"OFFSET":0}"#.to_owned(), TRANSFER),
        (r#"{"TRANSFER":1}"#.to_owned(), OFFSET),
        (
            format!(r#"{{"FILE_PATH":"/a","SHA256":"{sha}","TRANSFER":1}}"#),
            SIZE,
        ),
        (r#"{"FILE_PATH":"/a","SIZE":0}"#.to_owned(), TRANSFER),
        (r#"{"ABORT":"x"}"#.to_owned(), TRANSFER),
        (
            format!(r#"{{"FILE_PATH":"/a","SIZE":0,"SHA256":"{sha}"}}"#),
            TRANSFER,
        ),
        (r#"{"FILE_PATH":"/a","TRANSFER":1}"#.to_owned(), SIZE),
    ] {
        let error = decode_err(&header);
        assert_eq!(error, FrameError::MissingField(field), "{header}");
        assert!(error.to_string().contains(field));
    }
}

#[test]
fn offset_is_unexpected_in_a_start_frame() {
    assert_eq!(
        decode_err(r#"{"FILE_PATH":"/a","OFFSET":0}"#),
        FrameError::UnexpectedField { field: OFFSET }
    );
}

#[test]
fn wrong_types() {
    for (header, field) in [
        (r#"{"FILE_PATH":5}"#, FILE_PATH),
        (r#"{"FILE_PATH":null}"#, FILE_PATH),
        (r#"{"FILE_PATH":"/a","TTL":true}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":null}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":"soon"}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":""}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":"inf"}"#, TTL),
        (
            r#"{"FILE_PATH":"/a","SIZE":[],"SHA256":"","TRANSFER":1}"#,
            SIZE,
        ),
        (
            r#"{"FILE_PATH":"/a","SIZE":1,"SHA256":5,"TRANSFER":1}"#,
            SHA256,
        ),
        (r#"{"TRANSFER":{},"OFFSET":0}"#, TRANSFER),
        (r#"{"TRANSFER":1,"OFFSET":"zero"}"#, OFFSET),
    ] {
        let error = decode_err(header);
        assert!(
            matches!(error, FrameError::WrongType { field: f, .. } if f == field),
            "{header}: {error:?}"
        );
    }
}

#[test]
fn negative_numbers() {
    for (header, field) in [
        (r#"{"FILE_PATH":"/a","TTL":-1}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":"-5"}"#, TTL),
        (r#"{"FILE_PATH":"/a","TTL":-1.5}"#, TTL),
        (
            r#"{"FILE_PATH":"/a","SIZE":-1,"SHA256":"","TRANSFER":1}"#,
            SIZE,
        ),
        (r#"{"TRANSFER":1,"OFFSET":-3}"#, OFFSET),
        (r#"{"TRANSFER":"-1","OFFSET":0}"#, TRANSFER),
    ] {
        let error = decode_err(header);
        assert!(
            matches!(&error, FrameError::Negative { field: f, .. } if *f == field),
            "{header}: {error:?}"
        );
    }
}

#[test]
fn fractions_are_not_integers() {
    for header in [
        r#"{"FILE_PATH":"/a","TTL":"1.5"}"#,
        r#"{"FILE_PATH":"/a","TTL":1.5}"#,
        r#"{"FILE_PATH":"/a","TTL":"60.0"}"#,
        r#"{"FILE_PATH":"/a","TTL":"1e3"}"#,
    ] {
        let error = decode_err(header);
        assert!(
            matches!(&error, FrameError::NotInteger { field: TTL, .. }),
            "{header}: {error:?}"
        );
    }
}

#[test]
fn absurd_numbers_are_out_of_range() {
    let cases = [
        (
            format!(r#"{{"FILE_PATH":"/a","TTL":{}}}"#, MAX_TTL_SECS + 1),
            TTL,
        ),
        (
            r#"{"FILE_PATH":"/a","TTL":"99999999999999999999999"}"#.to_owned(),
            TTL,
        ),
        (r#"{"FILE_PATH":"/a","TTL":1e300}"#.to_owned(), TTL),
        (
            r#"{"TRANSFER":18446744073709551616,"OFFSET":0}"#.to_owned(),
            TRANSFER,
        ),
        (r#"{"TRANSFER":1,"OFFSET":1e19}"#.to_owned(), OFFSET),
    ];
    for (header, field) in cases {
        let error = decode_err(&header);
        assert!(
            matches!(&error, FrameError::OutOfRange { field: f, .. } if *f == field),
            "{header}: {error:?}"
        );
    }
}

#[test]
fn file_too_large() {
    let sha = sha(b"");
    assert_eq!(
        decode_err(&format!(
            r#"{{"FILE_PATH":"/a","SIZE":4294967297,"SHA256":"{sha}","TRANSFER":1}}"#
        )),
        FrameError::FileTooLarge {
            size: 4_294_967_297,
            max: 4 * 1024 * 1024 * 1024
        }
    );
    let limits = Limits {
        max_file_size: 3,
        ..Limits::default()
    };
    assert_eq!(
        Frame::decode(message(r#"{"FILE_PATH":"/a"}"#, b"abcd"), &limits).unwrap_err(),
        FrameError::FileTooLarge { size: 4, max: 3 }
    );
}

#[test]
fn bad_sha256() {
    let good = sha(b"");
    for bad in [
        String::new(),
        "abc".to_owned(),
        format!("{good}0"),
        good.replacen('e', "g", 1),
        format!(" {}", &good[1..]),
    ] {
        let header = format!(r#"{{"FILE_PATH":"/a","SIZE":0,"SHA256":"{bad}","TRANSFER":1}}"#);
        assert_eq!(decode_err(&header).reason_code(), "bad_sha256", "{header}");
    }
    // A hand-built frame must use the decoder's lower case.
    let mut frame = start(1, b"", 0);
    if let FrameHeader::Start(StartHeader {
        chunked: Some(chunked),
        ..
    }) = &mut frame.header
    {
        chunked.sha256 = chunked.sha256.as_deref().map(str::to_uppercase);
    }
    assert_eq!(
        frame
            .validate(&Limits::default())
            .unwrap_err()
            .reason_code(),
        "bad_sha256"
    );
}

#[test]
fn empty_path_and_nul_in_path() {
    assert_eq!(decode_err(r#"{"FILE_PATH":""}"#), FrameError::EmptyPath);
    assert_eq!(
        decode_err(r#"{"FILE_PATH":"/a\u0000b"}"#),
        FrameError::PathContainsNul
    );
}

#[test]
fn payload_too_large() {
    let limits = Limits {
        max_chunk_bytes: 4,
        max_oneshot_bytes: 6,
        ..Limits::default()
    };
    assert_eq!(
        Frame::decode(message(r#"{"TRANSFER":2,"OFFSET":0}"#, b"12345"), &limits).unwrap_err(),
        FrameError::PayloadTooLarge {
            transfer: Some(2),
            len: 5,
            max: 4
        }
    );
    let sha = sha(b"1234567890");
    let header = format!(r#"{{"FILE_PATH":"/a","SIZE":10,"SHA256":"{sha}","TRANSFER":1}}"#);
    assert_eq!(
        Frame::decode(message(&header, b"12345"), &limits).unwrap_err(),
        FrameError::PayloadTooLarge {
            transfer: None,
            len: 5,
            max: 4
        }
    );
    // The one-shot frame has its own, larger limit.
    Frame::decode(message(r#"{"FILE_PATH":"/a"}"#, b"123456"), &limits).unwrap();
    assert_eq!(
        Frame::decode(message(r#"{"FILE_PATH":"/a"}"#, b"1234567"), &limits).unwrap_err(),
        FrameError::PayloadTooLarge {
            transfer: None,
            len: 7,
            max: 6
        }
    );
    // Transfers checks hand-built frames too.
    let mut transfers = Transfers::new(limits);
    transfers.accept(start(2, b"12345678", 4)).unwrap();
    assert_eq!(
        transfers
            .accept(cont(2, 4, b"5678x"))
            .unwrap_err()
            .transfer(),
        Some(2)
    );
    assert!(transfers.is_empty());
}

// ---------------------------------------------------------------- transfer errors

#[test]
fn payload_past_size() {
    let mut transfers = Transfers::new(Limits::default());
    let mut frame = start(1, b"abc", 3);
    frame.payload = Bytes::from_static(b"abcd");
    assert_eq!(
        transfers.accept(frame).unwrap_err(),
        FrameError::PayloadPastSize {
            transfer: 1,
            end: 4,
            size: 3
        }
    );
    transfers.accept(start(2, b"abcdef", 2)).unwrap();
    assert_eq!(
        transfers.accept(cont(2, 2, b"cdefg")).unwrap_err(),
        FrameError::PayloadPastSize {
            transfer: 2,
            end: 7,
            size: 6
        }
    );
    assert!(transfers.is_empty());
}

#[test]
fn offsets_must_continue_where_the_previous_chunk_ended() {
    let data = b"0123456789";
    for (offset, expected) in [(6, 4), (2, 4), (0, 4)] {
        // gap, overlap, replay
        let mut transfers = Transfers::new(Limits::default());
        transfers.accept(start(5, data, 2)).unwrap();
        transfers.accept(cont(5, 2, &data[2..4])).unwrap();
        assert_eq!(
            transfers.accept(cont(5, offset, b"x")).unwrap_err(),
            FrameError::OffsetMismatch {
                transfer: 5,
                offset,
                expected
            }
        );
        // The transfer is closed after the error.
        assert_eq!(
            transfers.accept(cont(5, 4, &data[4..])).unwrap_err(),
            FrameError::UnknownTransfer { transfer: 5 }
        );
    }
}

#[test]
fn offset_past_size() {
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start(1, b"abc", 0)).unwrap();
    assert_eq!(
        transfers.accept(cont(1, 4, b"")).unwrap_err(),
        FrameError::OffsetPastSize {
            transfer: 1,
            offset: 4,
            size: 3
        }
    );
}

#[test]
fn chunk_for_unknown_or_finished_transfer() {
    let mut transfers = Transfers::new(Limits::default());
    assert_eq!(
        transfers.accept(cont(9, 0, b"x")).unwrap_err(),
        FrameError::UnknownTransfer { transfer: 9 }
    );
    let event = transfers.accept(start(9, b"ab", 2)).unwrap();
    assert!(event.completed.is_some());
    assert_eq!(
        transfers.accept(cont(9, 2, b"")).unwrap_err(),
        FrameError::UnknownTransfer { transfer: 9 }
    );
}

#[test]
fn duplicate_transfer_closes_both() {
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start(4, b"abcdef", 1)).unwrap();
    assert_eq!(
        transfers.accept(start(4, b"xyz", 1)).unwrap_err(),
        FrameError::DuplicateTransfer { transfer: 4 }
    );
    assert!(transfers.active().is_empty());
}

#[test]
fn too_many_concurrent_transfers() {
    let mut transfers = Transfers::new(Limits {
        max_concurrent_transfers: 2,
        ..Limits::default()
    });
    transfers.accept(start(1, b"ab", 1)).unwrap();
    transfers.accept(start(2, b"ab", 1)).unwrap();
    assert_eq!(
        transfers.accept(start(3, b"ab", 1)).unwrap_err(),
        FrameError::TooManyTransfers { max: 2 }
    );
    // The refusal did not disturb the open ones, and one-shot frames need no slot.
    assert_eq!(transfers.len(), 2);
    transfers
        .accept(Frame::decode(Bytes::from_static(FIXTURE_12), transfers.limits()).unwrap())
        .unwrap();
    transfers.accept(cont(1, 1, b"b")).unwrap();
    transfers.accept(start(3, b"ab", 1)).unwrap();
}

#[test]
fn hash_mismatch_at_completion() {
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start(1, b"abcd", 2)).unwrap();
    let error = transfers.accept(cont(1, 2, b"cX")).unwrap_err();
    assert_eq!(
        error,
        FrameError::HashMismatch {
            transfer: 1,
            expected: sha(b"abcd"),
            actual: sha(b"abcX"),
        }
    );
    assert!(transfers.is_empty());
    // Also when the start frame carries the whole file.
    let mut frame = start(2, b"abcd", 4);
    frame.payload = Bytes::from_static(b"abcX");
    assert_eq!(
        transfers.accept(frame).unwrap_err().reason_code(),
        "hash_mismatch"
    );
}

// ---------------------------------------------------------------- transfer life cycle

#[test]
fn chunked_transfer_reports_start_data_and_completion() {
    let data = b"hello, dandelion";
    let mut transfers = Transfers::new(Limits::default());
    let event = transfers.accept(start(3, data, 5)).unwrap();
    assert_eq!(event.transfer, Some(3));
    let started = event.started.unwrap();
    assert_eq!((started.path.as_str(), started.size), ("/f", 16));
    assert_eq!(started.expected_sha256, Some(sha(data)));
    assert_eq!(event.data.unwrap().bytes, &data[..5]);
    assert_eq!(event.completed, None);
    assert_eq!(
        transfers.active(),
        [ActiveTransfer {
            transfer: 3,
            path: "/f".into(),
            size: 16,
            received: 5
        }]
    );

    let event = transfers.accept(cont(3, 5, b"")).unwrap();
    assert_eq!(
        (event.started, event.data, event.completed),
        (None, None, None)
    );

    let event = transfers.accept(cont(3, 5, &data[5..])).unwrap();
    let chunk = event.data.unwrap();
    assert_eq!((chunk.offset, &chunk.bytes[..]), (5, &data[5..]));
    assert_eq!(
        event.completed,
        Some(Completed {
            size: 16,
            sha256: sha(data),
            verified: true
        })
    );
    assert!(transfers.is_empty());
}

#[test]
fn empty_chunked_file_completes_at_start() {
    let mut transfers = Transfers::new(Limits::default());
    let event = transfers.accept(start(1, b"", 0)).unwrap();
    assert_eq!(event.data, None);
    assert_eq!(event.completed.unwrap().sha256, sha(b""));
    assert!(transfers.is_empty());
}

#[test]
fn abort_and_abort_all_return_open_transfers() {
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start(1, b"abc", 1)).unwrap();
    transfers.accept(start(2, b"abc", 2)).unwrap();
    transfers.accept(start(3, b"abc", 0)).unwrap();
    assert_eq!(transfers.abort(2).map(|t| t.received), Some(2));
    assert_eq!(transfers.abort(2), None);
    let ids: Vec<_> = transfers.abort_all().iter().map(|t| t.transfer).collect();
    assert_eq!(ids, [1, 3]);
    assert!(transfers.is_empty());
}

#[test]
fn errors_have_unique_snake_case_reason_codes_and_messages() {
    let errors = [
        FrameError::MissingStartMarker,
        FrameError::MissingEndMarker,
        FrameError::RepeatedStartMarker,
        FrameError::HeaderTooLarge { max: 1 },
        FrameError::HeaderNotUtf8,
        FrameError::HeaderNotJson("x".into()),
        FrameError::HeaderNotObject { found: "array" },
        FrameError::MissingField(FILE_PATH),
        FrameError::UnexpectedField { field: OFFSET },
        FrameError::WrongType {
            field: TTL,
            expected: "x",
            found: "y",
        },
        FrameError::Negative {
            field: TTL,
            value: "-1".into(),
        },
        FrameError::NotInteger {
            field: TTL,
            value: "1.5".into(),
        },
        FrameError::OutOfRange {
            field: TTL,
            value: "1".into(),
            max: 0,
        },
        FrameError::FileTooLarge { size: 2, max: 1 },
        FrameError::BadSha256 { value: "x".into() },
        FrameError::EmptyPath,
        FrameError::PathContainsNul,
        FrameError::PayloadTooLarge {
            transfer: Some(1),
            len: 2,
            max: 1,
        },
        FrameError::PayloadPastSize {
            transfer: 1,
            end: 2,
            size: 1,
        },
        FrameError::OffsetMismatch {
            transfer: 1,
            offset: 2,
            expected: 1,
        },
        FrameError::OffsetPastSize {
            transfer: 1,
            offset: 2,
            size: 1,
        },
        FrameError::UnknownTransfer { transfer: 1 },
        FrameError::DuplicateTransfer { transfer: 1 },
        FrameError::TooManyTransfers { max: 1 },
        FrameError::HashMismatch {
            transfer: 1,
            expected: "a".into(),
            actual: "b".into(),
        },
    ];
    let mut codes = std::collections::BTreeSet::new();
    for error in &errors {
        let code = error.reason_code();
        assert!(
            code.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{code}"
        );
        assert!(codes.insert(code), "duplicate code {code}");
        assert!(!error.to_string().is_empty());
    }
    assert_eq!(
        FrameError::PayloadTooLarge {
            transfer: Some(7),
            len: 2,
            max: 1
        }
        .to_string(),
        "transfer 7: file frame payload of 2 bytes is larger than the 1-byte limit"
    );
}

#[test]
fn error_values_are_shortened() {
    let long = "9".repeat(1000);
    let error = decode_err(&format!(r#"{{"FILE_PATH":"/a","TTL":"-{long}"}}"#));
    assert!(error.to_string().len() < 200, "{error}");
}

// ---------------------------------------------------------------- dandelion/2: the hash comes last

#[test]
fn a_hash_in_the_final_frame_completes_the_transfer_only_there() {
    let data = b"0123456789abcdef";
    let mut transfers = Transfers::new(Limits::default());
    let event = transfers.accept(start_deferred(4, 16, &data[..6])).unwrap();
    assert_eq!(event.started.unwrap().expected_sha256, None);
    assert_eq!(event.completed, None);
    // Every byte in, but no hash yet: still open.
    let event = transfers.accept(cont(4, 6, &data[6..])).unwrap();
    assert_eq!(event.completed, None);
    assert_eq!(transfers.len(), 1);
    // The final frame, empty, at SIZE.
    let event = transfers.accept(finish(4, 16, b"", &sha(data))).unwrap();
    assert_eq!((event.data, event.aborted), (None, None));
    assert_eq!(
        event.completed,
        Some(Completed {
            size: 16,
            sha256: sha(data),
            verified: true
        })
    );
    assert!(transfers.is_empty());

    // The final frame may carry the last bytes too, and a whole file.
    let event = transfers
        .accept(start_deferred(5, 16, &data[..10]))
        .unwrap();
    assert_eq!(event.completed, None);
    let event = transfers
        .accept(finish(5, 10, &data[10..], &sha(data)))
        .unwrap();
    assert_eq!(event.data.unwrap().offset, 10);
    assert!(event.completed.unwrap().verified);
    transfers.accept(start_deferred(6, 0, b"")).unwrap();
    let event = transfers.accept(finish(6, 0, b"", &sha(b""))).unwrap();
    assert_eq!(event.completed.unwrap().size, 0);
    assert!(transfers.is_empty());
}

#[test]
fn a_final_frame_is_refused_with_a_wrong_hash_too_early_or_twice() {
    let data = b"0123456789";
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start_deferred(1, 10, data)).unwrap();
    let error = transfers
        .accept(finish(1, 10, b"", &sha(b"other")))
        .unwrap_err();
    assert_eq!(
        (error.reason_code(), error.transfer()),
        ("hash_mismatch", Some(1))
    );
    assert!(transfers.is_empty(), "a refused transfer is closed");

    transfers.accept(start_deferred(2, 10, &data[..4])).unwrap();
    let error = transfers
        .accept(finish(2, 4, &data[4..8], &sha(data)))
        .unwrap_err();
    assert_eq!(
        error,
        FrameError::HashBeforeEnd {
            transfer: 2,
            end: 8,
            size: 10
        }
    );
    assert!(transfers.is_empty());

    // A dandelion/1 start frame already named the hash: a second one is refused, not compared.
    transfers.accept(start(3, data, 4)).unwrap();
    let error = transfers
        .accept(finish(3, 4, &data[4..], &sha(data)))
        .unwrap_err();
    assert_eq!(error, FrameError::HashGivenTwice { transfer: 3 });
    assert!(transfers.is_empty());

    // No final frame for a transfer that is not open.
    let error = transfers.accept(finish(9, 0, b"", &sha(b""))).unwrap_err();
    assert_eq!(error, FrameError::UnknownTransfer { transfer: 9 });
}

#[test]
fn an_abort_frame_closes_one_transfer_and_leaves_the_others() {
    let mut transfers = Transfers::new(Limits::default());
    transfers.accept(start_deferred(1, 10, b"0123")).unwrap();
    transfers.accept(start(2, b"0123456789", 4)).unwrap();
    let frame = Frame::decode(
        message(r#"{"TRANSFER":1,"ABORT":"the upload was cut off"}"#, b""),
        &Limits::default(),
    )
    .unwrap();
    let event = transfers.accept(frame).unwrap();
    assert_eq!(event.transfer, Some(1));
    assert_eq!(event.aborted.as_deref(), Some("the upload was cut off"));
    assert_eq!(
        (event.started, event.data, event.completed),
        (None, None, None)
    );
    assert_eq!(transfers.active().len(), 1);
    assert_eq!(
        transfers.accept(cont(1, 4, b"45")).unwrap_err(),
        FrameError::UnknownTransfer { transfer: 1 }
    );
    assert!(
        transfers
            .accept(cont(2, 4, b"456789"))
            .unwrap()
            .completed
            .is_some()
    );

    // Reasons of any type and length are kept short; an abort carries no bytes.
    let long = "x".repeat(5000);
    let frame = decode(&format!(r#"{{"TRANSFER":7,"ABORT":"{long}"}}"#), b"").unwrap();
    let FrameHeader::Abort { reason, .. } = frame.header else {
        panic!("not an abort: {frame:?}");
    };
    assert!(reason.chars().count() < 300);
    assert!(decode(r#"{"TRANSFER":7,"ABORT":1}"#, b"").is_ok());
    assert_eq!(
        decode(r#"{"TRANSFER":7,"ABORT":"x"}"#, b"junk")
            .unwrap_err()
            .reason_code(),
        "payload_too_large"
    );
    // In a start frame ABORT means nothing and is refused rather than kept as metadata.
    assert_eq!(
        decode_err(r#"{"FILE_PATH":"/a","ABORT":"x"}"#),
        FrameError::UnexpectedField { field: ABORT }
    );
}

#[test]
fn final_and_abort_frames_round_trip_and_keep_the_original_number_styles() {
    let hash = sha(b"abc");
    for frame in [
        finish(3, 7, b"xyz", &hash),
        Frame {
            header: FrameHeader::Abort {
                transfer: 3,
                reason: "gone".into(),
            },
            payload: Bytes::new(),
        },
        start_deferred(3, 7, b"abc"),
    ] {
        assert_eq!(
            Frame::decode(frame.encode(), &Limits::default()).unwrap(),
            frame
        );
    }
    let upper = hash.to_uppercase();
    let frame = decode(
        &format!(r#"{{"TRANSFER":"3","OFFSET":"7","SHA256":"{upper}"}}"#),
        b"",
    )
    .unwrap();
    assert_eq!(frame.header, finish(3, 7, b"", &hash).header);
    assert_eq!(
        decode_err(r#"{"TRANSFER":3,"OFFSET":7,"SHA256":"nope"}"#).reason_code(),
        "bad_sha256"
    );
}

// ---------------------------------------------------------------- properties

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(Value::from),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-zA-Z0-9._/ -]{1,40}",
        "[^\u{0}]{1,20}",
        Just("/x/</Dandelion>/<Dandelion>".to_owned()),
    ]
}

proptest! {
    #[test]
    fn chunked_round_trip_reassembles_the_file(
        path in path(),
        ttl in prop::option::of(0..=MAX_TTL_SECS),
        extra in prop::collection::vec(("[A-Za-z_<>]{1,10}", json_value()), 0..5),
        data in prop::collection::vec(any::<u8>(), 0..3000),
        first in 0usize..3000,
        // At least one byte per frame: a cycle of empty frames would never end.
        chunk_sizes in prop::collection::vec(1usize..700, 1..20),
        transfer in any::<u64>(),
        string_numbers in any::<bool>(),
        hash_last in any::<bool>(),
    ) {
        let extra: Map<String, Value> = extra
            .into_iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .collect();
        let limits = Limits { max_chunk_bytes: 3000, ..Limits::default() };
        let first = first.min(data.len());
        let header = StartHeader {
            path: path.clone(),
            ttl,
            chunked: Some(ChunkedStart {
                transfer,
                size: data.len() as u64,
                sha256: (!hash_last).then(|| sha(&data)),
            }),
            extra: extra.clone(),
        };
        let mut messages = vec![Frame {
            header: FrameHeader::Start(header.clone()),
            payload: Bytes::copy_from_slice(&data[..first]),
        }.encode()];
        let mut offset = first;
        let mut sizes = chunk_sizes.iter().cycle();
        while offset < data.len() {
            let len = (*sizes.next().unwrap()).min(data.len() - offset);
            let frame = cont(transfer, offset as u64, &data[offset..offset + len]);
            let msg = if string_numbers {
                // The original's style: numbers as strings.
                message(&format!(r#"{{"TRANSFER":"{transfer}","OFFSET":"{offset}"}}"#), &frame.payload)
            } else {
                frame.encode()
            };
            messages.push(msg);
            offset += len;
        }
        if hash_last {
            messages.push(finish(transfer, offset as u64, b"", &sha(&data)).encode());
        }

        let mut transfers = Transfers::new(limits.clone());
        let mut file = vec![0u8; data.len()];
        let mut completed = None;
        for (i, msg) in messages.into_iter().enumerate() {
            let frame = Frame::decode(msg, &limits).unwrap();
            if i == 0 {
                prop_assert_eq!(&frame.header, &FrameHeader::Start(header.clone()));
            }
            let event = transfers.accept(frame).unwrap();
            prop_assert_eq!(event.transfer, Some(transfer));
            prop_assert_eq!(event.started.is_some(), i == 0);
            if let Some(started) = &event.started {
                prop_assert_eq!(&started.path, &path);
                prop_assert_eq!(started.ttl, ttl);
                prop_assert_eq!(&started.extra, &extra);
            }
            if let Some(chunk) = event.data {
                let at = chunk.offset as usize;
                file[at..at + chunk.bytes.len()].copy_from_slice(&chunk.bytes);
            }
            prop_assert!(completed.is_none());
            completed = event.completed;
        }
        prop_assert_eq!(&file, &data);
        prop_assert_eq!(completed, Some(Completed { size: data.len() as u64, sha256: sha(&data), verified: true }));
        prop_assert!(transfers.is_empty());
    }

    #[test]
    fn oneshot_round_trip(
        path in path(),
        ttl in prop::option::of(0..=MAX_TTL_SECS),
        extra in prop::collection::vec(("[A-Za-z_]{1,10}", json_value()), 0..5),
        data in prop::collection::vec(any::<u8>(), 0..2000),
    ) {
        let extra: Map<String, Value> = extra
            .into_iter()
            .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
            .collect();
        let frame = Frame {
            header: FrameHeader::Start(StartHeader { path, ttl, chunked: None, extra }),
            payload: Bytes::from(data.clone()),
        };
        let decoded = Frame::decode(frame.encode(), &Limits::default()).unwrap();
        prop_assert_eq!(&decoded, &frame);
        let event = Transfers::new(Limits::default()).accept(decoded).unwrap();
        prop_assert_eq!(event.completed.unwrap().sha256, sha(&data));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        messages in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                // Past the start marker, so the header parser gets exercised too.
                (prop::collection::vec(any::<u8>(), 0..100), prop::collection::vec(any::<u8>(), 0..50))
                    .prop_map(|(header, payload)| {
                        let mut msg = START_MARKER.to_vec();
                        msg.extend(header);
                        msg.extend_from_slice(END_MARKER);
                        msg.extend(payload);
                        msg
                    }),
                // A plausible header with random field values.
                (json_value(), json_value(), json_value(), prop::collection::vec(any::<u8>(), 0..20))
                    .prop_map(|(a, b, c, payload)| {
                        let header = json!({"FILE_PATH": a, "SIZE": b, "SHA256": sha(&payload), "TRANSFER": c});
                        message(&header.to_string(), &payload).to_vec()
                    }),
                (json_value(), json_value(), prop::collection::vec(any::<u8>(), 0..20))
                    .prop_map(|(a, b, payload)| {
                        message(&json!({"TRANSFER": a, "OFFSET": b}).to_string(), &payload).to_vec()
                    }),
            ],
            0..20,
        ),
    ) {
        let limits = Limits {
            max_header_bytes: 64,
            max_chunk_bytes: 16,
            max_oneshot_bytes: 32,
            max_file_size: 100,
            max_concurrent_transfers: 2,
        };
        let mut transfers = Transfers::new(limits.clone());
        for msg in messages {
            match Frame::decode(Bytes::from(msg), &limits) {
                Ok(frame) => {
                    let result = transfers.accept(frame);
                    if let Err(error) = result {
                        prop_assert!(!error.reason_code().is_empty());
                    }
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
            prop_assert!(transfers.len() <= 2);
        }
    }
}
