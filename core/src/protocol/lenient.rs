//! Serde helpers for the original's habit of sending every value as a string.
//!
//! The original relayed messages through Redis hashes, so numbers came back as
//! strings (`"PORT": "7070"`, `"TTL": "60"`). We accept both forms everywhere, and
//! write a number as a string only in fields the original had, so old peers that
//! compare or parse strings keep working.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText<T> {
    Num(T),
    Text(String),
}

/// An optional number that may arrive as a JSON number or a numeric string.
pub fn opt_number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: Display,
{
    match Option::<NumOrText<T>>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrText::Num(v)) => Ok(Some(v)),
        Some(NumOrText::Text(s)) => s.trim().parse().map(Some).map_err(|e| {
            D::Error::custom(format!("`{}` is not a valid number: {e}", s.escape_debug()))
        }),
    }
}

/// Writes an optional number as a string, the way the original did.
pub fn opt_as_string<S, T>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    T: Display,
{
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

/// The wire `TYPE`: the original's README wrote `Entrance` where its code sent
/// `ENTRANCE`, so case is not significant.
pub fn role<'de, D>(d: D) -> Result<crate::ids::Role, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    text.parse().map_err(D::Error::custom)
}
