//! Parsing the JSON header of a frame into a [`FrameHeader`].

use serde_json::{Map, Number, Value};

use super::{
    ABORT, ChunkedStart, FILE_PATH, FrameError, FrameHeader, MAX_TTL_SECS, OFFSET, SHA256, SIZE,
    StartHeader, TRANSFER, TTL,
};

/// Longest `ABORT` reason kept: it only goes to the box's log.
const MAX_ABORT_REASON_CHARS: usize = 200;

/// What a count field must look like, for error messages.
const COUNT: &str = "a non-negative integer (number or numeric string)";

/// Longest piece of a peer's value repeated in an error message, so that a 16 KiB header
/// cannot turn into a 16 KiB log line.
const SNIPPET_CHARS: usize = 80;

/// Parses the bytes between the markers.
pub(super) fn parse(raw: &[u8]) -> Result<FrameHeader, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::HeaderNotUtf8)?;
    // serde_json bounds nesting depth (128), so deeply nested metadata cannot overflow the stack.
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::HeaderNotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(FrameError::HeaderNotObject {
            found: type_name(&value),
        });
    };
    from_object(object)
}

fn from_object(object: Map<String, Value>) -> Result<FrameHeader, FrameError> {
    let mut path = None;
    let mut ttl = None;
    let mut size = None;
    let mut sha256 = None;
    let mut transfer = None;
    let mut offset = None;
    let mut abort = None;
    let mut extra = Map::new();
    // Iterating (rather than removing the known keys) keeps the extra keys in the order the
    // publisher sent them.
    for (key, value) in object {
        match key.as_str() {
            FILE_PATH => path = Some(value),
            TTL => ttl = Some(value),
            SIZE => size = Some(value),
            SHA256 => sha256 = Some(value),
            TRANSFER => transfer = Some(value),
            OFFSET => offset = Some(value),
            ABORT => abort = Some(value),
            _ => {
                extra.insert(key, value);
            }
        }
    }

    let Some(path) = path else {
        // A continue, final or abort frame. Other keys are ignored: room for
        // later extensions.
        if transfer.is_none() && offset.is_none() && abort.is_none() {
            // Neither kind of frame: name the field the original always required.
            return Err(FrameError::MissingField(FILE_PATH));
        }
        let transfer = count(
            TRANSFER,
            &transfer.ok_or(FrameError::MissingField(TRANSFER))?,
        )?;
        if let Some(reason) = abort {
            let reason = match reason {
                Value::String(text) => text,
                other => other.to_string(),
            };
            return Ok(FrameHeader::Abort {
                transfer,
                reason: snippet_of(&reason, MAX_ABORT_REASON_CHARS),
            });
        }
        let offset = count(OFFSET, &offset.ok_or(FrameError::MissingField(OFFSET))?)?;
        return Ok(match sha256 {
            None => FrameHeader::Continue { transfer, offset },
            Some(sha256) => FrameHeader::Finish {
                transfer,
                offset,
                sha256: parse_sha256(&sha256)?,
            },
        });
    };

    if offset.is_some() {
        return Err(FrameError::UnexpectedField { field: OFFSET });
    }
    if abort.is_some() {
        return Err(FrameError::UnexpectedField { field: ABORT });
    }
    let path = match path {
        Value::String(path) => path,
        other => {
            return Err(FrameError::WrongType {
                field: FILE_PATH,
                expected: "a string",
                found: type_name(&other),
            });
        }
    };
    check_path(&path)?;
    let ttl = match ttl {
        None => None,
        Some(value) => {
            let ttl = count(TTL, &value)?;
            check_ttl(ttl)?;
            Some(ttl)
        }
    };
    let chunked = match (size, sha256, transfer) {
        (None, None, None) => None,
        // Without SHA256 the hash comes in the final frame (dandelion/2).
        (Some(size), sha256, Some(transfer)) => Some(ChunkedStart {
            transfer: count(TRANSFER, &transfer)?,
            size: count(SIZE, &size)?,
            sha256: sha256.as_ref().map(parse_sha256).transpose()?,
        }),
        (size, _, _) => {
            let missing = if size.is_none() { SIZE } else { TRANSFER };
            return Err(FrameError::MissingField(missing));
        }
    };
    Ok(FrameHeader::Start(StartHeader {
        path,
        ttl,
        chunked,
        extra,
    }))
}

/// The original required nothing of `FILE_PATH`; the two things refused here can never name a
/// file, whatever the box makes of the rest.
pub(super) fn check_path(path: &str) -> Result<(), FrameError> {
    if path.is_empty() {
        return Err(FrameError::EmptyPath);
    }
    if path.contains('\0') {
        return Err(FrameError::PathContainsNul);
    }
    Ok(())
}

pub(super) fn check_ttl(ttl: u64) -> Result<(), FrameError> {
    if ttl > MAX_TTL_SECS {
        return Err(FrameError::OutOfRange {
            field: TTL,
            value: ttl.to_string(),
            max: MAX_TTL_SECS,
        });
    }
    Ok(())
}

/// A non-negative integer sent as a JSON number or, as the original sent every value, as a
/// string of decimal digits. The original used Python's `int()`, which refuses `"1.5"`;
/// we also refuse `1.5` as a number instead of truncating it.
fn count(field: &'static str, value: &Value) -> Result<u64, FrameError> {
    match value {
        Value::Number(number) => number_count(field, number),
        Value::String(text) => string_count(field, text),
        other => Err(FrameError::WrongType {
            field,
            expected: COUNT,
            found: type_name(other),
        }),
    }
}

fn number_count(field: &'static str, number: &Number) -> Result<u64, FrameError> {
    if let Some(n) = number.as_u64() {
        return Ok(n);
    }
    if let Some(n) = number.as_i64() {
        // as_u64 failed, so it is negative.
        return Err(FrameError::Negative {
            field,
            value: n.to_string(),
        });
    }
    // A float literal (`60.0`, `1e3`) or an integer beyond u64.
    let value = snippet(&number.to_string());
    let float = number.as_f64().unwrap_or(f64::NAN);
    // Whole floats up to 2^53 are exact; accept them, as `int(60.0)` did.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if float < 0.0 {
        Err(FrameError::Negative { field, value })
    } else if float.fract() != 0.0 {
        Err(FrameError::NotInteger { field, value })
    } else if (0.0..=EXACT).contains(&float) {
        // In range and whole, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(float as u64)
    } else {
        Err(FrameError::OutOfRange {
            field,
            value,
            max: u64::MAX,
        })
    }
}

fn string_count(field: &'static str, text: &str) -> Result<u64, FrameError> {
    // Python's int() ignores surrounding whitespace.
    let digits = text.trim_ascii();
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Only overflow can fail now.
        return digits.parse().map_err(|_| FrameError::OutOfRange {
            field,
            value: snippet(text),
            max: u64::MAX,
        });
    }
    match digits.parse::<f64>() {
        Ok(float) if float.is_finite() => {
            let value = snippet(text);
            if digits.starts_with('-') {
                Err(FrameError::Negative { field, value })
            } else {
                Err(FrameError::NotInteger { field, value })
            }
        }
        _ => Err(FrameError::WrongType {
            field,
            expected: COUNT,
            found: "string that is not a number",
        }),
    }
}

fn parse_sha256(value: &Value) -> Result<String, FrameError> {
    let Value::String(text) = value else {
        return Err(FrameError::WrongType {
            field: SHA256,
            expected: "a string of 64 hex digits",
            found: type_name(value),
        });
    };
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(FrameError::BadSha256 {
            value: snippet(text),
        })
    }
}

pub(super) fn is_lower_hex_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// At most [`SNIPPET_CHARS`] characters of a peer's value, cut on a character boundary.
pub(super) fn snippet(text: &str) -> String {
    snippet_of(text, SNIPPET_CHARS)
}

fn snippet_of(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
