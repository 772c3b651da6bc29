//! Feeds a sequence of WebSocket binary messages through `Frame::decode` and one connection's
//! `Transfers`, as a box does.
//!
//! Input layout: repeated `[len: u16 little-endian][len bytes of message]`; a short last
//! record takes what is left. The limits are small so that every limit is reachable.
#![no_main]

use bytes::Bytes;
use dandelion_core::frame::{Frame, Limits, Transfers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 256,
        max_chunk_bytes: 64,
        max_oneshot_bytes: 128,
        max_file_size: 1024,
        max_concurrent_transfers: 3,
    };
    // Re-encoding escapes `<` as `\u003c`, so a re-encoded header may be longer than the
    // original one.
    let roomy = Limits {
        max_header_bytes: limits.max_header_bytes * 8,
        ..limits.clone()
    };
    let mut transfers = Transfers::new(limits.clone());
    let mut rest = data;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (msg, next) = tail.split_at(len);
        rest = next;
        let Ok(frame) = Frame::decode(Bytes::copy_from_slice(msg), &limits) else {
            continue;
        };
        // Whatever decodes must survive encode + decode unchanged.
        let again = Frame::decode(frame.encode(), &roomy);
        assert_eq!(again.as_ref().ok(), Some(&frame), "round trip: {again:?}");
        let _ = transfers.accept(frame);
        assert!(transfers.len() <= limits.max_concurrent_transfers);
    }
    // What a box does when the connection ends.
    let _ = transfers.abort_all();
    assert!(transfers.is_empty());
});
