//! Byte ranges of a file the publisher answers from memory: a small file kept
//! in its store. Players ask for ranges: Safari starts an MP4 with
//! `Range: bytes=0-1` and will not play one answered whole. Files on disk are
//! answered by tower-http's `ServeFile`, which does ranges itself; this decides
//! ranges the way it does, with the same parser (http-range-header), so both
//! kinds of file answer a range alike.

use std::ops::RangeInclusive;

use axum::http::{HeaderMap, header};

/// What a request's `Range` asks of a body of a known length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// The whole body, `200`: no `Range`; several ranges (`ServeFile` here
    /// answers those whole too, rather than as multipart); or an `If-Range`,
    /// whose validator cannot match since these answers carry none (RFC 9110
    /// 13.1.5: the range is then ignored).
    Whole,
    /// One part, `206`, first and last byte included.
    Part(RangeInclusive<u64>),
    /// `416`: a range that does not parse or lies past the end.
    Unsatisfiable,
}

/// Decides what to send of a body `len` bytes long for `headers`.
pub fn ranged(headers: &HeaderMap, len: u64) -> Ranged {
    let Some(range) = headers.get(header::RANGE) else {
        return Ranged::Whole;
    };
    if headers.contains_key(header::IF_RANGE) {
        return Ranged::Whole;
    }
    let Ok(parsed) = range
        .to_str()
        .map_err(|_| ())
        .and_then(|text| http_range_header::parse_range_header(text).map_err(|_| ()))
    else {
        return Ranged::Unsatisfiable;
    };
    if parsed.ranges.len() > 1 {
        return Ranged::Whole;
    }
    match parsed.validate(len).map(|mut ranges| ranges.pop()) {
        // An empty body has no byte for any range to name.
        Ok(Some(part)) if len > 0 && part.start() <= part.end() => Ranged::Part(part),
        _ => Ranged::Unsatisfiable,
    }
}

/// The `Content-Range` of an answer: the part sent, or `*` on a `416`.
pub fn content_range(part: Option<&RangeInclusive<u64>>, len: u64) -> String {
    match part {
        Some(part) => format!("bytes {}-{}/{len}", part.start(), part.end()),
        None => format!("bytes */{len}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{Ranged, content_range, ranged};

    fn asking(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn one_range_is_a_part_of_the_body() {
        assert_eq!(ranged(&asking("bytes=0-1"), 100), Ranged::Part(0..=1));
        assert_eq!(ranged(&asking("bytes=90-"), 100), Ranged::Part(90..=99));
        assert_eq!(ranged(&asking("bytes=-10"), 100), Ranged::Part(90..=99));
        // A last byte past the end is cut to the end.
        assert_eq!(ranged(&asking("bytes=50-500"), 100), Ranged::Part(50..=99));
        assert_eq!(content_range(Some(&(50..=99)), 100), "bytes 50-99/100");
    }

    #[test]
    fn no_range_several_ranges_or_an_if_range_get_the_whole_body() {
        assert_eq!(ranged(&HeaderMap::new(), 100), Ranged::Whole);
        assert_eq!(ranged(&asking("bytes=0-1, 5-6"), 100), Ranged::Whole);
        let mut h = asking("bytes=0-1");
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"abc\""));
        assert_eq!(ranged(&h, 100), Ranged::Whole);
    }

    #[test]
    fn ranges_past_the_end_or_not_ranges_are_unsatisfiable() {
        for bad in [
            "bytes=100-",
            "bytes=200-300",
            "bytes=5-2",
            "items=0-1",
            "bytes=x-y",
            "bytes=",
        ] {
            assert_eq!(ranged(&asking(bad), 100), Ranged::Unsatisfiable, "{bad}");
        }
        assert_eq!(ranged(&asking("bytes=0-0"), 0), Ranged::Unsatisfiable);
        assert_eq!(content_range(None, 100), "bytes */100");
    }
}
