//! Several writes that take effect together or not at all: [`Batch`], applied with
//! [`Store::apply`](super::Store::apply).
//!
//! Domain records often span keys — a publisher's job state and its placements, a
//! heartbeat's exchange, box record and expiry score — and a reader that sees one
//! half without the other reports something that never was. A batch is applied in
//! one redb write transaction on the embedded store and in one server-side script
//! on Redis, so a reader sees all of it or none of it.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Result, StoreError};

/// The type a key holds, as far as a batch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Hash,
    Set,
    ZSet,
    List,
    /// A value of bytes (a Redis string).
    Blob,
}

impl KeyType {
    /// The name Redis's `TYPE` command answers with.
    #[cfg(feature = "redis")]
    pub(crate) fn redis_name(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Set => "set",
            Self::ZSet => "zset",
            Self::List => "list",
            Self::Blob => "string",
        }
    }
}

/// One write of a [`Batch`]. Each follows the [`Store`](super::Store) method of the
/// same name.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Sets fields of a hash.
    Hset {
        key: String,
        fields: Vec<(String, String)>,
    },
    /// Removes fields of a hash.
    Hdel { key: String, fields: Vec<String> },
    /// Adds a member to a sorted set or updates its score.
    Zadd {
        key: String,
        member: String,
        score: f64,
    },
    /// Removes members of a sorted set.
    Zrem { key: String, members: Vec<String> },
    /// Adds members to a set.
    Sadd { key: String, members: Vec<String> },
    /// Removes members of a set.
    Srem { key: String, members: Vec<String> },
    /// Appends values to a list.
    Rpush { key: String, values: Vec<String> },
    /// Removes `count` items equal to `value` from a list (from the tail when
    /// negative, every one when 0).
    Lrem {
        key: String,
        count: i64,
        value: String,
    },
    /// Sets a key to a value of bytes, replacing the value it held.
    Set { key: String, value: Bytes },
    /// Deletes a key of any type.
    Del { key: String },
    /// Publishes `message` on the channel `key` (not a key: nothing is kept).
    Publish { key: String, message: String },
}

impl Write {
    /// The key the write changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Hset { key, .. }
            | Self::Hdel { key, .. }
            | Self::Zadd { key, .. }
            | Self::Zrem { key, .. }
            | Self::Sadd { key, .. }
            | Self::Srem { key, .. }
            | Self::Rpush { key, .. }
            | Self::Lrem { key, .. }
            | Self::Set { key, .. }
            | Self::Del { key }
            | Self::Publish { key, .. } => key,
        }
    }

    /// The type the key must have (or get), `None` for a `Del`.
    pub(crate) fn key_type(&self) -> Option<KeyType> {
        match self {
            Self::Hset { .. } | Self::Hdel { .. } => Some(KeyType::Hash),
            Self::Zadd { .. } | Self::Zrem { .. } => Some(KeyType::ZSet),
            Self::Sadd { .. } | Self::Srem { .. } => Some(KeyType::Set),
            Self::Rpush { .. } | Self::Lrem { .. } => Some(KeyType::List),
            Self::Set { .. } => Some(KeyType::Blob),
            Self::Del { .. } | Self::Publish { .. } => None,
        }
    }

    /// Whether the write leaves the key existing, with its type.
    fn adds(&self) -> bool {
        matches!(
            self,
            Self::Hset { .. }
                | Self::Zadd { .. }
                | Self::Sadd { .. }
                | Self::Rpush { .. }
                | Self::Set { .. }
        )
    }

    /// Whether the write has nothing to do (an empty slice of fields, members or
    /// values), like the [`Store`](super::Store) methods called with one.
    fn is_noop(&self) -> bool {
        match self {
            Self::Hset { fields, .. } => fields.is_empty(),
            Self::Hdel { fields, .. } => fields.is_empty(),
            Self::Zrem { members, .. }
            | Self::Sadd { members, .. }
            | Self::Srem { members, .. } => members.is_empty(),
            Self::Rpush { values, .. } => values.is_empty(),
            Self::Zadd { .. }
            | Self::Lrem { .. }
            | Self::Set { .. }
            | Self::Del { .. }
            | Self::Publish { .. } => false,
        }
    }
}

/// What a key must hold before a batch for the batch to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requirement {
    /// Nothing, or a value of this type.
    AbsentOr(KeyType),
    /// Nothing at all: the batch uses the key as two types.
    Absent,
}

impl Requirement {
    /// Whether a key that holds `actual` (`None`: does not exist) meets this.
    pub(crate) fn allows(self, actual: Option<KeyType>) -> bool {
        match (self, actual) {
            (_, None) => true,
            (Self::AbsentOr(want), Some(actual)) => want == actual,
            (Self::Absent, Some(_)) => false,
        }
    }
}

/// The type checks a backend must make before applying a batch, from
/// [`Batch::plan`]: one requirement per key, in the order the keys first appear.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) checks: Vec<(String, Requirement)>,
}

/// Writes applied together, all or nothing, by [`Store::apply`](super::Store::apply).
///
/// Built with chained calls; writes with an empty slice are dropped, as the single
/// methods ignore them:
///
/// ```
/// # use dandelion_core::store::Batch;
/// let mut batch = Batch::new();
/// batch
///     .hset("{p}:FILE:JOBS", &[("a.ts", "{…}")])
///     .hdel("{p}:FILE:PROCESSED_FILES", &["a.ts"]);
/// assert_eq!(batch.len(), 2);
/// ```
///
/// For Redis Cluster, every key of one batch must have the same hash tag (the
/// daemon's `{ID}`, as [`Keys`](super::Keys) builds them): a script may only touch
/// keys of one slot.
///
/// # Type checks, the same on both backends
///
/// Redis has no rollback: neither `EXEC` nor a script undoes the commands before
/// the one that failed with `WRONGTYPE`. So a batch is checked before anything is
/// written, and the check is worked out once, here, for both backends: the writes
/// are walked in order, tracking what each key is known to hold, and every use of
/// a key whose type the batch cannot know by itself becomes a requirement on the
/// key's type *before* the batch. The backend compares those requirements with
/// the stored types, and only then applies the writes.
///
/// The rule: every write must fit its key's type as it was before the batch, as
/// changed by the batch's own earlier writes — a `del` makes the key absent, a
/// write that adds something gives it its type, and a removal never changes the
/// type, even when it empties the key. That last point is stricter than running
/// the commands one by one (in Redis an `HDEL` of the last field deletes the key,
/// so a later `ZADD` would succeed); it keeps the check independent of the keys'
/// contents. A batch that means to change a key's type says so with `del`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    guards: Vec<Guard>,
    writes: Vec<Write>,
    soft: bool,
}

/// A condition of a [`Batch`], from [`Batch::only_if`]: the hash field `field` of
/// `key` holds `value` (`None`: the field or the key is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub key: String,
    pub field: String,
    pub value: Option<String>,
}

impl Batch {
    /// An empty batch; applying it does nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write, unless it has nothing to do.
    pub fn push(&mut self, write: Write) -> &mut Self {
        if !write.is_noop() {
            self.writes.push(write);
        }
        self
    }

    /// [`Store::hset`](super::Store::hset) as part of the batch.
    pub fn hset(&mut self, key: &str, fields: &[(&str, &str)]) -> &mut Self {
        self.push(Write::Hset {
            key: key.to_owned(),
            fields: fields
                .iter()
                .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// [`Store::hdel`](super::Store::hdel) as part of the batch.
    pub fn hdel(&mut self, key: &str, fields: &[&str]) -> &mut Self {
        self.push(Write::Hdel {
            key: key.to_owned(),
            fields: owned(fields),
        })
    }

    /// [`Store::zadd`](super::Store::zadd) as part of the batch. A NaN score makes
    /// the whole batch fail with [`StoreError::InvalidScore`].
    pub fn zadd(&mut self, key: &str, member: &str, score: f64) -> &mut Self {
        self.push(Write::Zadd {
            key: key.to_owned(),
            member: member.to_owned(),
            score,
        })
    }

    /// [`Store::zrem`](super::Store::zrem) as part of the batch.
    pub fn zrem(&mut self, key: &str, members: &[&str]) -> &mut Self {
        self.push(Write::Zrem {
            key: key.to_owned(),
            members: owned(members),
        })
    }

    /// [`Store::sadd`](super::Store::sadd) as part of the batch.
    pub fn sadd(&mut self, key: &str, members: &[&str]) -> &mut Self {
        self.push(Write::Sadd {
            key: key.to_owned(),
            members: owned(members),
        })
    }

    /// [`Store::srem`](super::Store::srem) as part of the batch.
    pub fn srem(&mut self, key: &str, members: &[&str]) -> &mut Self {
        self.push(Write::Srem {
            key: key.to_owned(),
            members: owned(members),
        })
    }

    /// [`Store::rpush`](super::Store::rpush) as part of the batch.
    pub fn rpush(&mut self, key: &str, values: &[&str]) -> &mut Self {
        self.push(Write::Rpush {
            key: key.to_owned(),
            values: owned(values),
        })
    }

    /// [`Store::lrem`](super::Store::lrem) as part of the batch.
    pub fn lrem(&mut self, key: &str, count: i64, value: &str) -> &mut Self {
        self.push(Write::Lrem {
            key: key.to_owned(),
            count,
            value: value.to_owned(),
        })
    }

    /// Sets `key` to `value` (read back with [`Store::get`](super::Store::get)). A
    /// key that holds a value already gets the new one; a key of another type
    /// fails the batch, as elsewhere: `del` it first.
    pub fn set(&mut self, key: &str, value: Bytes) -> &mut Self {
        self.push(Write::Set {
            key: key.to_owned(),
            value,
        })
    }

    /// Publishes `message` on `channel` as the batch applies, in the same
    /// atomic step: a subscriber ([`Store::subscribe`](super::Store::subscribe))
    /// that receives it finds the batch's writes in the store. The embedded
    /// store, which no other process reads, publishes nowhere.
    pub fn publish(&mut self, channel: &str, message: &str) -> &mut Self {
        self.push(Write::Publish {
            key: channel.to_owned(),
            message: message.to_owned(),
        })
    }

    /// [`Store::del`](super::Store::del) of one key as part of the batch.
    pub fn del(&mut self, key: &str) -> &mut Self {
        self.push(Write::Del {
            key: key.to_owned(),
        })
    }

    /// Applies the batch only if the hash field `field` of `key` holds `value`
    /// (`None`: the field, or the whole key, is absent) just before it; otherwise
    /// nothing of it is written and [`Store::apply`](super::Store::apply) fails
    /// with [`StoreError::Conflict`].
    ///
    /// For read-then-write updates from several tasks or entrances: the writer
    /// guards on what it based its decision on, and on a conflict reads again
    /// and decides again (optimistic concurrency). `key` must be absent or a
    /// hash, like a key the batch writes as one.
    pub fn only_if(&mut self, key: &str, field: &str, value: Option<&str>) -> &mut Self {
        self.guards.push(Guard {
            key: key.to_owned(),
            field: field.to_owned(),
            value: value.map(str::to_owned),
        });
        self
    }

    /// The conditions of [`Batch::only_if`], in the order they were added.
    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// Marks the batch as soft state, which the embedded store may acknowledge
    /// before it is on disk: a crash (power loss, `kill -9`) less than
    /// [`SOFT_SYNC_WITHIN`](super::SOFT_SYNC_WITHIN) after it was acknowledged can
    /// lose it, whole (never half of it). Readers see it at once all the same.
    ///
    /// For what is said again every few seconds anyway — a heartbeat — where an
    /// fsync per commit would cost more than the write (a heartbeat storm on an SD
    /// card). Redis ignores it: its durability is the server's configuration.
    pub fn soft(&mut self) -> &mut Self {
        self.soft = true;
        self
    }

    /// Whether [`Batch::soft`] was called.
    pub fn is_soft(&self) -> bool {
        self.soft
    }

    /// The writes, in the order they are applied.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether the batch has no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether the batch appends to a list (a blocked pop may then succeed).
    pub(crate) fn pushes(&self) -> bool {
        self.writes.iter().any(|w| matches!(w, Write::Rpush { .. }))
    }

    /// Checks what can be checked without the store and lists what the stored
    /// types must be (see the module documentation for the rule).
    ///
    /// Fails with [`StoreError::InvalidScore`] for a NaN score, and with
    /// [`StoreError::WrongType`] when the batch itself uses a key as another type
    /// than it just gave it (`hset k …` then `zadd k …`).
    pub(crate) fn plan(&self) -> Result<Plan> {
        if self
            .writes
            .iter()
            .any(|w| matches!(w, Write::Zadd { score, .. } if score.is_nan()))
        {
            return Err(StoreError::InvalidScore);
        }
        let mut checks: Vec<(String, Requirement)> = Vec::new();
        let mut check_of: HashMap<&str, usize> = HashMap::new();
        // A guard reads its key as a hash, before any write.
        for guard in &self.guards {
            if !check_of.contains_key(guard.key.as_str()) {
                check_of.insert(&guard.key, checks.len());
                checks.push((guard.key.clone(), Requirement::AbsentOr(KeyType::Hash)));
            }
        }
        // What the batch's own writes left in a key: nothing, or a value of a type.
        // A key not in here still holds whatever it held before the batch.
        let mut now: HashMap<&str, Option<KeyType>> = HashMap::new();
        for write in &self.writes {
            if matches!(write, Write::Publish { .. }) {
                // A channel, not a key: no type to check or to change.
                continue;
            }
            let key = write.key();
            let Some(want) = write.key_type() else {
                now.insert(key, None);
                continue;
            };
            match now.get(key) {
                Some(Some(have)) if *have != want => {
                    return Err(StoreError::WrongType {
                        key: key.to_owned(),
                    });
                }
                Some(_) => {}
                None => match check_of.get(key) {
                    None => {
                        check_of.insert(key, checks.len());
                        checks.push((key.to_owned(), Requirement::AbsentOr(want)));
                    }
                    Some(&i) => {
                        if checks[i].1 != Requirement::AbsentOr(want) {
                            checks[i].1 = Requirement::Absent;
                        }
                    }
                },
            }
            if write.adds() {
                now.insert(key, Some(want));
            }
        }
        Ok(Plan { checks })
    }
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::{Batch, KeyType, Requirement};
    use crate::store::StoreError;

    #[test]
    fn only_keys_the_batch_cannot_know_are_checked() {
        let mut batch = Batch::new();
        batch
            .hdel("a", &["f"])
            .del("b")
            .zadd("b", "m", 1.0)
            .srem("c", &["m"])
            .sadd("c", &["m"])
            .srem("c", &["m"]);
        let plan = batch.plan().unwrap_or_default();
        assert_eq!(
            plan.checks,
            [
                ("a".to_owned(), Requirement::AbsentOr(KeyType::Hash)),
                ("c".to_owned(), Requirement::AbsentOr(KeyType::Set)),
            ]
        );
    }

    #[test]
    fn a_key_used_as_two_types_must_be_absent_or_is_refused_at_once() {
        let mut batch = Batch::new();
        batch.hdel("a", &["f"]).zrem("a", &["m"]);
        let plan = batch.plan().unwrap_or_default();
        assert_eq!(plan.checks, [("a".to_owned(), Requirement::Absent)]);
        assert!(Requirement::Absent.allows(None));
        assert!(!Requirement::Absent.allows(Some(KeyType::Hash)));

        let mut batch = Batch::new();
        batch.rpush("l", &["v"]).sadd("l", &["m"]);
        assert!(matches!(batch.plan(), Err(StoreError::WrongType { key }) if key == "l"));
    }
}
