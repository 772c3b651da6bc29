//! The registry as kept in the store: every box's last exchange
//! (`{NS}:EXCHANGE:<id>`), the entrance's view of it (`{NS}:BOX_INFO:<id>`), the
//! expiry index (`{NS}:BOX_SET`, score = expiry time) and the bans
//! (`{NS}:BANNED`, score = end of the ban).
//!
//! All registry state lives here, none in memory, so that entrances sharing a
//! namespace on one Redis agree, and a restarted entrance has its boxes back.
//! Each attribute is its own hash field so that concurrent writers (a heartbeat
//! and a reachability result) update fields, not whole records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dandelion_core::protocol::{Exchange, GeoIp};
use dandelion_core::store::{Batch, Keys, Order, Store, StoreError};
use serde_json::{Map, Value};

use super::registry::{BoxInfo, BoxState, Tally};

/// Unix time in seconds, the unit of every score and timestamp here.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

mod field {
    pub const STATE: &str = "STATE";
    pub const SINCE: &str = "SINCE";
    pub const REASON: &str = "REASON";
    pub const LEGACY: &str = "LEGACY";
    pub const FIRST_SEEN: &str = "FIRST_SEEN";
    pub const LAST_HEARTBEAT: &str = "LAST_HEARTBEAT";
    pub const OBSERVED_IP: &str = "OBSERVED_IP";
    pub const PUBLIC_KEY: &str = "PUBLIC_KEY";
    pub const GEO: &str = "GEO";
    pub const GEO_SOURCE: &str = "GEO_SOURCE";
    pub const GEO_OVERRIDE: &str = "GEO_OVERRIDE";
    pub const BAN_UNTIL: &str = "BAN_UNTIL";
    /// The data URL the last passed reachability check called: the only URL
    /// publishers are handed for the box (see `BoxInfo::verified_for`).
    pub const VERIFIED_URL: &str = "VERIFIED_URL";
    /// Changed by every write of the record, so that one guard on it tells a
    /// heartbeat whether the record is still the one it last saw.
    pub const REV: &str = "REV";
}

/// What a box session last stored: the box's record and exchange as they stand
/// after its write, the record's [`field::REV`] included.
///
/// A session hands it to its next [`Book::check`] instead of reading the store
/// again; the write that follows is guarded on the revision, so if anyone else
/// wrote the record meanwhile (an eviction, an expiry, a reachability verdict)
/// the write fails and the heartbeat is decided again from a fresh read. In the
/// steady state a heartbeat therefore reads nothing: on the embedded store a
/// read can wait behind a commit that is writing out its pages.
///
/// Only a store no other process writes ([`Store::shared`] false) is trusted
/// this way. Those writers are then all in this process, and an eviction also
/// reaches the box's session directly; an eviction made by another entrance on
/// a shared Redis would only be noticed at the write, after the box had been
/// told ACCEPTED. Redis reads are cheap, so there every heartbeat reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memo {
    record: BTreeMap<String, String>,
    exchange: BTreeMap<String, String>,
}

/// A heartbeat as [`Book::check`] judged it.
#[derive(Debug)]
pub enum Checked {
    /// It may be stored, with these writes.
    Accepted(Pending),
    /// Refused: the box is banned until `until` (Unix seconds) for `reason`.
    Banned { until: f64, reason: String },
}

/// The writes of an accepted heartbeat, for [`Book::store`].
#[derive(Debug)]
pub struct Pending {
    batch: Batch,
    /// Whether the box was not in the registry before.
    pub new: bool,
    /// The box's record and exchange once the batch is written.
    after: Memo,
}

/// What became of a heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub enum Beat {
    /// Stored; `new` when the box was not in the registry before. `memo` is
    /// what the next heartbeat of the same session can be checked against.
    Recorded { new: bool, memo: Memo },
    /// Refused: the box is banned until `until` (Unix seconds) for `reason`.
    Banned { until: f64, reason: String },
}

/// The ban a box's record holds at `now`: its end and the eviction reason.
///
/// The record is the ban's authority (`{NS}:BANNED` only orders bans by their
/// end, for the sweep that forgets them), so one read tells a heartbeat both
/// whether it may be stored and what to keep of the record.
fn ban_in(record: &BTreeMap<String, String>, now: f64) -> Option<(f64, String)> {
    if record.get(field::STATE).map(String::as_str) != Some("evicted") {
        return None;
    }
    let until = record.get(field::BAN_UNTIL)?.parse::<f64>().ok()?;
    (until > now).then(|| {
        (
            until,
            record.get(field::REASON).cloned().unwrap_or_default(),
        )
    })
}

/// One heartbeat's worth of facts about a box.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub exchange: &'a Exchange,
    pub legacy: bool,
    pub observed_ip: Option<String>,
    pub public_key: Option<&'a str>,
    /// Location from the database, or the box's own when the database has none.
    pub geo: GeoIp,
    pub geo_source: &'static str,
    pub expires_at: f64,
    pub now: f64,
}

/// A box as listed: its id, the entrance's view, and its last exchange.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub info: BoxInfo,
    pub exchange: Option<Exchange>,
    pub expires_at: Option<f64>,
}

/// Makes [`field::REV`] values: unique to this process (a random prefix) and to
/// each write (a counter), so that no two writers — here or in another entrance
/// on the same store — ever write the same revision.
#[derive(Debug)]
struct Revisions {
    prefix: u64,
    next: AtomicU64,
}

impl Revisions {
    fn new() -> Revisions {
        Revisions {
            // Without randomness two entrances could share a prefix; their
            // counters would then have to meet on one box's record at the same
            // count, and the cost is one heartbeat stored over a newer write.
            prefix: getrandom::u64()
                .unwrap_or_else(|_| u64::from(std::process::id()) ^ now().to_bits()),
            next: AtomicU64::new(0),
        }
    }

    fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:x}.{n:x}", self.prefix)
    }
}

/// Boxes read per store call by [`Book::list`] and [`Book::tallies`]: one read
/// each for a few hundred boxes, so listing 20 000 is tens of reads, not tens
/// of thousands, and no single one holds a reader for long.
pub(super) const LIST_CHUNK: usize = 256;

/// Handle on the registry in the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Book {
    store: Arc<dyn Store>,
    keys: Keys,
    revisions: Arc<Revisions>,
}

impl Book {
    pub fn new(store: Arc<dyn Store>, namespace: &str) -> Book {
        Book {
            store,
            keys: Keys::new(namespace),
            revisions: Arc::new(Revisions::new()),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Records a heartbeat, unless the box is banned: [`Book::check`], then
    /// [`Book::store`].
    pub async fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<Beat, StoreError> {
        match self.check(hb, None).await? {
            Checked::Accepted(pending) => self.store(hb, pending).await,
            Checked::Banned { until, reason } => Ok(Beat::Banned { until, reason }),
        }
    }

    /// Decides what to do with a heartbeat, without writing anything.
    ///
    /// The decision needs the box's record (its ban, and what a heartbeat must
    /// not overwrite and need not rewrite) and its stored exchange (to write only
    /// what changed): `known`, what this session stored last, or else one read.
    /// A session can answer the box from this alone and store the heartbeat
    /// behind its reply: on the embedded store the write may wait for a
    /// once-a-second fsync, which would otherwise hold every reply of that
    /// moment back.
    pub async fn check(
        &self,
        hb: &Heartbeat<'_>,
        known: Option<Memo>,
    ) -> Result<Checked, StoreError> {
        let id = hb.exchange.header.id.as_str();
        let info_key = self.keys.box_info(id);
        let exchange_key = self.keys.exchange(id);
        let Memo { record, exchange } = match known.filter(|_| !self.store.shared()) {
            Some(memo) => memo,
            None => {
                let [record, exchange] =
                    <[_; 2]>::try_from(self.store.hgetall_many(&[&info_key, &exchange_key]).await?)
                        .unwrap_or_default();
                Memo { record, exchange }
            }
        };
        if let Some((until, reason)) = ban_in(&record, hb.now) {
            return Ok(Checked::Banned { until, reason });
        }
        let (mut batch, new, record) = self.beat_batch(hb, &info_key, record);
        let exchange = save_exchange(&mut batch, &exchange_key, hb.exchange, &exchange);
        Ok(Checked::Accepted(Pending {
            batch,
            new,
            after: Memo { record, exchange },
        }))
    }

    /// Stores a heartbeat [`Book::check`] accepted.
    ///
    /// One atomic batch: the exchange, the record and the expiry score change
    /// together, so a listing never shows a box whose exchange is half replaced,
    /// and on the embedded store a heartbeat waits for one commit, not four. The
    /// batch is soft — a heartbeat lost in a crash is said again within one
    /// interval — and guarded on the revision of the record it was decided on:
    /// an eviction, an expiry or a reachability verdict that lands between the
    /// check and the write makes it check again from a fresh read, so a
    /// heartbeat in flight never brings an evicted or expired box back.
    pub async fn store(&self, hb: &Heartbeat<'_>, pending: Pending) -> Result<Beat, StoreError> {
        let mut pending = pending;
        let mut attempts = 0;
        loop {
            match self.store.apply(&pending.batch).await {
                Ok(()) => {
                    return Ok(Beat::Recorded {
                        new: pending.new,
                        memo: pending.after,
                    });
                }
                Err(StoreError::Conflict { .. }) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
            match self.check(hb, None).await? {
                Checked::Accepted(again) => pending = again,
                Checked::Banned { until, reason } => return Ok(Beat::Banned { until, reason }),
            }
        }
    }

    /// The writes of one heartbeat on a box whose record is `existing`, whether
    /// the box is new to the registry, and the record once they are written.
    fn beat_batch(
        &self,
        hb: &Heartbeat<'_>,
        info_key: &str,
        mut existing: BTreeMap<String, String>,
    ) -> (Batch, bool, BTreeMap<String, String>) {
        let now = hb.now.to_string();
        let rev = self.revisions.make();
        let legacy = if hb.legacy { "1" } else { "0" };
        let geo = serde_json::to_string(&hb.geo).unwrap_or_default();
        let mut fields: Vec<(&str, &str)> =
            vec![(field::LAST_HEARTBEAT, &now), (field::LEGACY, legacy)];
        if let Some(ip) = &hb.observed_ip {
            fields.push((field::OBSERVED_IP, ip));
        }
        if let Some(key) = hb.public_key {
            fields.push((field::PUBLIC_KEY, key));
        }
        // An operator's location override outlives heartbeats.
        if !existing.contains_key(field::GEO_OVERRIDE) {
            fields.push((field::GEO, &geo));
            fields.push((field::GEO_SOURCE, hb.geo_source));
        }
        let state = existing.get(field::STATE).cloned();
        let state = state.as_deref();
        let is_new = state.is_none();
        let was_evicted = state == Some("evicted");
        if is_new {
            fields.push((field::FIRST_SEEN, &now));
        }
        if is_new || was_evicted {
            fields.push((field::STATE, BoxState::Active.as_str()));
            fields.push((field::SINCE, &now));
            fields.push((
                field::REASON,
                if was_evicted {
                    "registered again after its ban"
                } else {
                    "registered"
                },
            ));
        }
        // Most of a record stays as it was from one heartbeat to the next; writing
        // only what changed keeps the single writer's work per heartbeat small.
        fields.retain(|(f, v)| existing.get(*f).map(String::as_str) != Some(*v));
        fields.push((field::REV, &rev));
        let mut batch = Batch::new();
        let seen = existing.get(field::REV).map(String::as_str);
        batch.only_if(info_key, field::REV, seen).soft();
        batch.hset(info_key, &fields);
        if was_evicted {
            batch.hdel(info_key, &[field::BAN_UNTIL]);
        }
        let id = hb.exchange.header.id.as_str();
        batch.zadd(&self.keys.box_set(), id, hb.expires_at);
        for (f, v) in fields {
            existing.insert(f.to_owned(), v.to_owned());
        }
        if was_evicted {
            existing.remove(field::BAN_UNTIL);
        }
        (batch, is_new, existing)
    }

    pub async fn load_exchange(&self, id: &str) -> Result<Option<Exchange>, StoreError> {
        let hash = self.store.hgetall(&self.keys.exchange(id)).await?;
        Ok(exchange_from_hash(hash))
    }

    pub async fn load_info(&self, id: &str) -> Result<Option<BoxInfo>, StoreError> {
        let hash = self.store.hgetall(&self.keys.box_info(id)).await?;
        Ok(parse_info(&hash))
    }

    /// Sets a stored state, keeping the time of change when the state is
    /// unchanged, and writing nothing when the reason is too: a periodic
    /// reachability check that finds what it found before must not make every
    /// box's next heartbeat read its record again (see [`Memo`]).
    /// `verified_url`, when given, is recorded as the data URL a reachability
    /// check just passed at.
    pub async fn set_state(
        &self,
        id: &str,
        state: BoxState,
        reason: &str,
        verified_url: Option<&str>,
        now: f64,
    ) -> Result<(), StoreError> {
        let key = self.keys.box_info(id);
        let record = self.store.hgetall(&key).await?;
        let Some(current) = record.get(field::STATE) else {
            return Ok(()); // gone meanwhile (goodbye, expiry)
        };
        let same_state = current == state.as_str();
        let same_url = verified_url
            .is_none_or(|url| record.get(field::VERIFIED_URL).map(String::as_str) == Some(url));
        if same_state && same_url && record.get(field::REASON).map(String::as_str) == Some(reason) {
            return Ok(());
        }
        let (since, rev) = (now.to_string(), self.revisions.make());
        let mut fields = vec![(field::REASON, reason), (field::REV, &rev)];
        if !same_state {
            fields.push((field::STATE, state.as_str()));
            fields.push((field::SINCE, &since));
        }
        if let Some(url) = verified_url {
            fields.push((field::VERIFIED_URL, url));
        }
        self.store.hset(&key, &fields).await?;
        Ok(())
    }

    /// Forgets a box entirely (goodbye, expiry).
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.store.zrem(&self.keys.box_set(), &[id]).await?;
        self.store
            .del(&[&self.keys.exchange(id), &self.keys.box_info(id)])
            .await?;
        Ok(removed > 0)
    }

    /// Removes a box from the live set and bans it until `until`. Returns whether
    /// the box was known.
    pub async fn evict(
        &self,
        id: &str,
        reason: &str,
        until: f64,
        now: f64,
    ) -> Result<bool, StoreError> {
        let info_key = self.keys.box_info(id);
        let known = self.store.exists(&info_key).await?;
        let (now, until_text) = (now.to_string(), until.to_string());
        let rev = self.revisions.make();
        // One batch: no listing shows the box banned yet still live, or gone
        // from the live set without its ban.
        let mut batch = Batch::new();
        batch
            .zadd(&self.keys.banned(), id, until)
            .zrem(&self.keys.box_set(), &[id])
            .del(&self.keys.exchange(id))
            .hset(
                &info_key,
                &[
                    (field::STATE, BoxState::Evicted.as_str()),
                    (field::SINCE, &now),
                    (field::REASON, reason),
                    (field::BAN_UNTIL, &until_text),
                    (field::REV, &rev),
                ],
            );
        if !known {
            batch.hset(
                &info_key,
                &[(field::FIRST_SEEN, &now), (field::LAST_HEARTBEAT, &now)],
            );
        }
        self.store.apply(&batch).await?;
        Ok(known)
    }

    /// The ban on a box: its end and the eviction reason, if it is still banned.
    pub async fn ban(&self, id: &str, now: f64) -> Result<Option<(f64, String)>, StoreError> {
        let record = self.store.hgetall(&self.keys.box_info(id)).await?;
        Ok(ban_in(&record, now))
    }

    /// Sets an operator's location for a box. Returns whether the box is known.
    pub async fn set_location(&self, id: &str, geo: &GeoIp) -> Result<bool, StoreError> {
        let key = self.keys.box_info(id);
        if !self.store.exists(&key).await? {
            return Ok(false);
        }
        let json = serde_json::to_string(geo).unwrap_or_default();
        let rev = self.revisions.make();
        self.store
            .hset(
                &key,
                &[
                    (field::GEO_OVERRIDE, &json),
                    (field::GEO, &json),
                    (field::GEO_SOURCE, "override"),
                    (field::REV, &rev),
                ],
            )
            .await?;
        Ok(true)
    }

    /// Live-set members, freshest first, with their expiry times.
    pub async fn members(&self) -> Result<Vec<(String, f64)>, StoreError> {
        self.store
            .zrange_by_score(
                &self.keys.box_set(),
                f64::NEG_INFINITY,
                f64::INFINITY,
                Order::Desc,
                None,
            )
            .await
    }

    /// How many live-set members and how many of them expire at or before `by`.
    pub async fn count_expiring(&self, by: f64) -> Result<(u64, u64), StoreError> {
        let total = self.store.zcard(&self.keys.box_set()).await?;
        let silent = self
            .store
            .zrange_by_score(
                &self.keys.box_set(),
                f64::NEG_INFINITY,
                by,
                Order::Asc,
                None,
            )
            .await?
            .len() as u64;
        Ok((total, silent))
    }

    /// Atomically takes the boxes whose expiry time has passed.
    pub async fn pop_expired(&self, now: f64, limit: usize) -> Result<Vec<String>, StoreError> {
        let popped = self
            .store
            .zpop_by_score(&self.keys.box_set(), now, Some(limit))
            .await?;
        // One commit for the whole lot: a mass expiry (an uplink went down) must
        // not cost one fsync per box.
        let mut batch = Batch::new();
        for (id, _) in &popped {
            batch
                .del(&self.keys.exchange(id))
                .del(&self.keys.box_info(id));
        }
        self.store.apply(&batch).await?;
        Ok(popped.into_iter().map(|(id, _)| id).collect())
    }

    /// Takes bans that ended, forgetting the evicted boxes' records.
    pub async fn pop_ended_bans(&self, now: f64, limit: usize) -> Result<usize, StoreError> {
        let popped = self
            .store
            .zpop_by_score(&self.keys.banned(), now, Some(limit))
            .await?;
        for (id, _) in &popped {
            // Only a record still evicted is forgotten: a box that registered
            // again once its ban ended, even between this pop and this write,
            // keeps its new record.
            let key = self.keys.box_info(id);
            let mut batch = Batch::new();
            batch.only_if(&key, field::STATE, Some("evicted")).del(&key);
            match self.store.apply(&batch).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(popped.len())
    }

    /// One box as [`Book::list`] would give it.
    pub async fn listed(&self, id: &str) -> Result<Option<Listed>, StoreError> {
        let Some((Some(info), exchange)) = self.records(&[id], true).await?.pop() else {
            return Ok(None);
        };
        Ok(Some(Listed {
            id: id.to_owned(),
            info,
            exchange,
            expires_at: self.store.zscore(&self.keys.box_set(), id).await?,
        }))
    }

    /// Every box the entrance knows: the live set and the evicted.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for chunk in self.members().await?.chunks(LIST_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
            let read = self.records(&ids, true).await?;
            for ((id, expires), (info, exchange)) in chunk.iter().zip(read) {
                if let Some(info) = info {
                    out.push(Listed {
                        id: id.clone(),
                        info,
                        exchange,
                        expires_at: Some(*expires),
                    });
                }
            }
            between_chunks().await;
        }
        for chunk in self.banned().await?.chunks(LIST_CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for (id, (info, _)) in chunk.iter().zip(self.records(&ids, false).await?) {
                if let Some(info) = info {
                    out.push(Listed {
                        id: id.clone(),
                        info,
                        exchange: None,
                        expires_at: None,
                    });
                }
            }
            between_chunks().await;
        }
        Ok(out)
    }

    /// A [`Tally`] of every box the entrance knows, the live set and the
    /// evicted: what the `boxes` gauge counts every few seconds. Only the
    /// fields that count are parsed.
    pub async fn tallies(&self) -> Result<Vec<Tally>, StoreError> {
        let mut ids: Vec<String> = self
            .members()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.extend(self.banned().await?);
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LIST_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.box_info(id)).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            out.extend(
                self.store
                    .hgetall_many(&keys)
                    .await?
                    .iter()
                    .filter_map(parse_tally),
            );
            between_chunks().await;
        }
        Ok(out)
    }

    /// Evicted boxes, latest ban end first.
    async fn banned(&self) -> Result<Vec<String>, StoreError> {
        let banned = self
            .store
            .zrange_by_score(
                &self.keys.banned(),
                f64::NEG_INFINITY,
                f64::INFINITY,
                Order::Desc,
                None,
            )
            .await?;
        Ok(banned.into_iter().map(|(id, _)| id).collect())
    }

    /// The records of `ids` (`None` for one that is gone), and with
    /// `exchanges` their exchanges, in one read.
    async fn records(
        &self,
        ids: &[&str],
        exchanges: bool,
    ) -> Result<Vec<(Option<BoxInfo>, Option<Exchange>)>, StoreError> {
        let mut keys = Vec::with_capacity(ids.len() * 2);
        for id in ids {
            keys.push(self.keys.box_info(id));
            if exchanges {
                keys.push(self.keys.exchange(id));
            }
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut hashes = self.store.hgetall_many(&keys).await?.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        while let Some(info) = hashes.next() {
            let exchange = if exchanges {
                hashes.next().and_then(exchange_from_hash)
            } else {
                None
            };
            out.push((parse_info(&info), exchange));
        }
        Ok(out)
    }
}

/// Replaces the exchange stored at `key` (now `stored`) with `exchange`, as a
/// flat hash: strings as they are, nested values and numbers as JSON text (the
/// original's HMSET refused nested values and lost the whole heartbeat).
///
/// Only fields that changed are written and fields the box stopped sending are
/// removed: from one heartbeat to the next most of an exchange (ID, URLs) stays
/// the same, and each field written is work for the single writer. Returns the
/// hash as it stands once the batch is written.
fn save_exchange(
    batch: &mut Batch,
    key: &str,
    exchange: &Exchange,
    stored: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Some(flat) = flat_exchange(exchange) else {
        return stored.clone();
    };
    let changed: Vec<(&str, &str)> = flat
        .iter()
        .filter(|(k, v)| stored.get(*k) != Some(*v))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gone: Vec<&str> = stored
        .keys()
        .filter(|k| !flat.contains_key(*k))
        .map(String::as_str)
        .collect();
    batch.hdel(key, &gone).hset(key, &changed);
    flat
}

/// `exchange` as one hash: its top-level fields, strings as they are and
/// anything else as compact JSON, absent and null fields left out.
///
/// Each typed field is written straight to its text rather than through a
/// `serde_json::Value` of the whole exchange: this runs for every heartbeat, and
/// the tree of maps the generic way builds (the system information's dozen
/// fields, the traffic counters) was most of a heartbeat's allocations. The
/// result is the same text field for field; a test holds the two together.
/// `None` only if a field cannot be serialized.
fn flat_exchange(exchange: &Exchange) -> Option<BTreeMap<String, String>> {
    // Destructured whole, so that a field added to `Exchange` does not compile
    // until it is stored here too.
    let Exchange {
        header,
        connect_ws,
        data_url,
        system_info,
        geoip,
        traffic_flow,
        extra,
    } = exchange;
    let Ok(Value::Object(head)) = serde_json::to_value(header) else {
        return None;
    };
    let mut flat = BTreeMap::new();
    let mut put = |key: &str, value: Value| match value {
        Value::Null => {}
        Value::String(s) => {
            flat.insert(key.to_owned(), s);
        }
        other => {
            flat.insert(key.to_owned(), other.to_string());
        }
    };
    for (key, value) in head {
        put(&key, value);
    }
    let mut text = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            flat.insert(key.to_owned(), value);
        }
    };
    text("CONNECT_WS", connect_ws.clone());
    text("DATA_URL", data_url.clone());
    text("SYSTEM_INFO", json(system_info.as_deref())?);
    text("GEOIP", json(geoip.as_ref())?);
    text("TRAFFIC_FLOW", json(traffic_flow.as_ref())?);
    for (key, value) in extra {
        match value {
            Value::Null => None,
            Value::String(s) => flat.insert(key.clone(), s.clone()),
            other => flat.insert(key.clone(), other.to_string()),
        };
    }
    Some(flat)
}

/// `value` as compact JSON; `Some(None)` when absent, `None` if it cannot be
/// serialized.
fn json<T: serde::Serialize>(value: Option<&T>) -> Option<Option<String>> {
    match value {
        None => Some(None),
        Some(v) => serde_json::to_string(v).ok().map(Some),
    }
}

/// An exchange as [`save_exchange`] stored it; `None` if there is none, or it
/// no longer decodes.
fn exchange_from_hash(hash: BTreeMap<String, String>) -> Option<Exchange> {
    if hash.is_empty() {
        return None;
    }
    let map: Map<String, Value> = hash
        .into_iter()
        .map(|(k, v)| {
            let value = if v.starts_with('{') || v.starts_with('[') {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            (k, value)
        })
        .collect();
    serde_json::from_value(Value::Object(map)).ok()
}

/// Lets the runtime's other tasks run between two chunks of a scan. On the
/// embedded store a chunk is read in place, on the worker that asked, and a
/// scan of every box (tens of thousands of records) done in one go held that
/// worker, and every heartbeat session waiting on it, for hundreds of ms.
pub(super) async fn between_chunks() {
    tokio::task::yield_now().await;
}

fn parse_tally(hash: &BTreeMap<String, String>) -> Option<Tally> {
    Some(Tally {
        state: BoxState::parse(hash.get(field::STATE)?)?,
        last_heartbeat: hash
            .get(field::LAST_HEARTBEAT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        legacy: hash.get(field::LEGACY).map(String::as_str) == Some("1"),
    })
}

fn parse_info(hash: &BTreeMap<String, String>) -> Option<BoxInfo> {
    let num = |f: &str| hash.get(f).and_then(|v| v.parse::<f64>().ok());
    let Tally {
        state,
        last_heartbeat,
        legacy,
    } = parse_tally(hash)?;
    Some(BoxInfo {
        state,
        since: num(field::SINCE).unwrap_or(0.0),
        reason: hash.get(field::REASON).cloned().unwrap_or_default(),
        legacy,
        first_seen: num(field::FIRST_SEEN).unwrap_or(0.0),
        last_heartbeat,
        observed_ip: hash.get(field::OBSERVED_IP).cloned(),
        public_key: hash.get(field::PUBLIC_KEY).cloned(),
        geo: hash
            .get(field::GEO)
            .and_then(|g| serde_json::from_str(g).ok())
            .unwrap_or_default(),
        geo_source: hash.get(field::GEO_SOURCE).cloned().unwrap_or_default(),
        ban_until: num(field::BAN_UNTIL),
        verified_url: hash.get(field::VERIFIED_URL).cloned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use dandelion_core::identity::Identity;
    use dandelion_core::ids::Role;
    use dandelion_core::protocol::{Exchange, GeoIp, Header};
    use dandelion_core::store::{EmbeddedStore, Store, StoreError};

    use super::super::registry::{BoxState, Tally};
    use super::{Beat, Book, Checked, Heartbeat, Memo};

    fn exchange(connect_ws: Option<&str>, data_url: &str) -> Exchange {
        let id = Identity::generate(Role::Box).unwrap().id().clone();
        Exchange {
            header: Header::new(id),
            connect_ws: connect_ws.map(str::to_owned),
            data_url: Some(data_url.to_owned()),
            system_info: None,
            geoip: None,
            traffic_flow: None,
            extra: Default::default(),
        }
    }

    fn beat(exchange: &Exchange, now: f64) -> Heartbeat<'_> {
        Heartbeat {
            exchange,
            legacy: false,
            observed_ip: Some("127.0.0.2".to_owned()),
            public_key: None,
            geo: GeoIp::default(),
            geo_source: "none",
            expires_at: now + 120.0,
            now,
        }
    }

    fn book() -> (Book, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        (Book::new(Arc::clone(&store), "e"), store, dir)
    }

    /// The typed flattening must store what the generic one (through a
    /// `Value` of the whole exchange) stored: hashes written by earlier builds
    /// are compared field by field with the next heartbeat's, and read back by
    /// `exchange_from_hash`.
    #[test]
    fn an_exchange_is_flattened_as_the_generic_way_flattens_it() {
        use dandelion_core::protocol::Message;
        let id = Identity::generate(Role::Box).unwrap().id().to_string();
        let text = format!(
            r#"{{"COMMAND":"EXCHANGE","ID":"{id}","TYPE":"BOX","IP":"10.0.0.5","PORT":"7071",
            "VERSION":"2","CONNECT_WS":"ws://10.0.0.5:7071/ws","DATA_URL":"http://10.0.0.5:7071",
            "SYSTEM_INFO":{{"CPU_CORES":4,"CPU_USAGE":12.5,"LOAD_AVG":[0.1,0.25,1e-7],
              "MEM_TOTAL":8000000000,"NEW_FIELD":{{"nested":["x\"y",null]}}}},
            "GEOIP":{{"COUNTRY":"TW","CITY":"Taipei","LOC":"25.03,121.56"}},
            "TRAFFIC_FLOW":{{"BYTES_SERVED":123456789,"REQUESTS":42,"PEAK":1.5}},
            "CPU-USR":"100.0","MEM-TOTAL":"2048","NOTHING":null,"COUNT":7,
            "{id}:TRAFFIC_FLOW:log-1":{{"IN":1,"OUT":2.25}},"ÜNICODE \u00e9":"é\n"}}"#
        );
        let Message::Exchange(exchange) = Message::decode(&text).unwrap() else {
            panic!("not an exchange");
        };
        let serde_json::Value::Object(map) = serde_json::to_value(&exchange).unwrap() else {
            panic!("not an object");
        };
        let generic: std::collections::BTreeMap<String, String> = map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        assert_eq!(super::flat_exchange(&exchange).unwrap(), generic);
        assert!(generic.contains_key("SYSTEM_INFO") && generic.contains_key("CPU-USR"));
        assert!(!generic.contains_key("NOTHING"));
        let mut bare = exchange;
        (bare.system_info, bare.geoip, bare.traffic_flow) = (None, None, None);
        bare.extra.clear();
        let flat = super::flat_exchange(&bare).unwrap();
        assert_eq!(
            flat.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "CONNECT_WS",
                "DATA_URL",
                "ID",
                "IP",
                "PORT",
                "TYPE",
                "VERSION"
            ]
        );
    }

    #[tokio::test]
    async fn a_heartbeat_stores_what_the_box_sends_now_and_nothing_it_stopped_sending() {
        let (book, store, _dir) = book();
        let first = exchange(Some("ws://b/ws"), "http://b/");
        let id = first.header.id.to_string();
        assert!(matches!(
            book.heartbeat(&beat(&first, 100.0)).await.unwrap(),
            Beat::Recorded { new: true, .. }
        ));
        let mut second = first.clone();
        second.connect_ws = None;
        second.data_url = Some("http://b2/".to_owned());
        assert!(matches!(
            book.heartbeat(&beat(&second, 105.0)).await.unwrap(),
            Beat::Recorded { new: false, .. }
        ));
        let stored = store.hgetall(&book.keys().exchange(&id)).await.unwrap();
        assert_eq!(
            stored.get("DATA_URL").map(String::as_str),
            Some("http://b2/")
        );
        assert!(!stored.contains_key("CONNECT_WS"), "{stored:?}");
        assert_eq!(book.load_exchange(&id).await.unwrap(), Some(second));
        let listed = book.listed(&id).await.unwrap().unwrap();
        assert_eq!(listed.expires_at, Some(225.0));
        assert!((listed.info.last_heartbeat - 105.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_banned_box_is_refused_until_its_ban_ends() {
        let (book, _store, _dir) = book();
        let ex = exchange(None, "http://b/");
        let id = ex.header.id.to_string();
        book.heartbeat(&beat(&ex, 100.0)).await.unwrap();
        book.evict(&id, "abuse", 200.0, 101.0).await.unwrap();
        assert_eq!(
            book.heartbeat(&beat(&ex, 150.0)).await.unwrap(),
            Beat::Banned {
                until: 200.0,
                reason: "abuse".to_owned()
            }
        );
        assert!(book.members().await.unwrap().is_empty());
        assert!(matches!(
            book.heartbeat(&beat(&ex, 201.0)).await.unwrap(),
            Beat::Recorded { new: false, .. }
        ));
        let info = book.load_info(&id).await.unwrap().unwrap();
        assert_eq!(info.state.as_str(), "active");
        assert_eq!(info.ban_until, None);
    }

    /// The race of a heartbeat read before an eviction and written after it: the
    /// guard makes the write fail instead of putting the box back in BOX_SET.
    #[tokio::test]
    async fn a_heartbeat_decided_before_an_eviction_does_not_bring_the_box_back() {
        let (book, store, _dir) = book();
        let ex = exchange(None, "http://b/");
        let id = ex.header.id.to_string();
        book.heartbeat(&beat(&ex, 100.0)).await.unwrap();
        let info_key = book.keys().box_info(&id);
        let read_before = store.hgetall(&info_key).await.unwrap();
        book.evict(&id, "abuse", 200.0, 101.0).await.unwrap();
        let (batch, _, _) = book.beat_batch(&beat(&ex, 102.0), &info_key, read_before);
        assert!(matches!(
            store.apply(&batch).await,
            Err(StoreError::Conflict { .. })
        ));
        assert!(book.members().await.unwrap().is_empty());
        // And read again, the heartbeat is refused.
        assert!(matches!(
            book.heartbeat(&beat(&ex, 102.0)).await.unwrap(),
            Beat::Banned { .. }
        ));
    }

    /// A session's heartbeat decided from what it stored last, no read: `memo`.
    async fn beat_on(book: &Book, hb: &Heartbeat<'_>, memo: Memo) -> Beat {
        match book.check(hb, Some(memo)).await.unwrap() {
            Checked::Accepted(pending) => book.store(hb, pending).await.unwrap(),
            Checked::Banned { until, reason } => Beat::Banned { until, reason },
        }
    }

    fn memo_of(beat: Beat) -> Memo {
        match beat {
            Beat::Recorded { memo, .. } => memo,
            other => panic!("not recorded: {other:?}"),
        }
    }

    /// The memo a session keeps must be exactly what the store holds, or the
    /// next heartbeat would skip a write the store needs.
    #[tokio::test]
    async fn a_memo_is_what_the_store_holds_after_each_heartbeat() {
        let (book, store, _dir) = book();
        let mut ex = exchange(Some("ws://b/ws"), "http://b/");
        let id = ex.header.id.to_string();
        let mut memo = memo_of(book.heartbeat(&beat(&ex, 100.0)).await.unwrap());
        for (n, now) in [105.0, 110.0, 115.0].into_iter().enumerate() {
            ex.data_url = Some(format!("http://b{n}/"));
            ex.connect_ws = None;
            memo = memo_of(beat_on(&book, &beat(&ex, now), memo).await);
            let record = store.hgetall(&book.keys().box_info(&id)).await.unwrap();
            let stored = store.hgetall(&book.keys().exchange(&id)).await.unwrap();
            assert_eq!(memo.record, record);
            assert_eq!(memo.exchange, stored);
        }
        assert_eq!(book.load_exchange(&id).await.unwrap(), Some(ex));
    }

    /// Whatever another writer does to the record between two heartbeats — here
    /// another entrance on the same store, with its own revisions — the next
    /// heartbeat of a session sees it, though it read nothing before deciding.
    #[tokio::test]
    async fn a_heartbeat_from_a_memo_sees_what_others_wrote_meanwhile() {
        let (book, store, _dir) = book();
        let other = Book::new(Arc::clone(&store), "e");
        let ex = exchange(None, "http://b/");
        let id = ex.header.id.to_string();
        let memo = memo_of(book.heartbeat(&beat(&ex, 100.0)).await.unwrap());

        // An operator's location override is kept.
        let paris = GeoIp {
            city: Some("Paris".to_owned()),
            ..GeoIp::default()
        };
        assert!(other.set_location(&id, &paris).await.unwrap());
        let memo = memo_of(beat_on(&book, &beat(&ex, 105.0), memo).await);
        let info = book.load_info(&id).await.unwrap().unwrap();
        assert_eq!(info.geo.city.as_deref(), Some("Paris"));
        assert_eq!(info.geo_source, "override");

        // An expiry makes the next heartbeat a registration.
        let expired = other.pop_expired(1_000.0, 10).await.unwrap();
        assert_eq!(expired, vec![id.clone()]);
        let memo = match beat_on(&book, &beat(&ex, 110.0), memo).await {
            Beat::Recorded { new: true, memo } => memo,
            other => panic!("not a registration: {other:?}"),
        };
        assert_eq!(book.members().await.unwrap().len(), 1);

        // An eviction refuses it and keeps the box out.
        other.evict(&id, "abuse", 500.0, 111.0).await.unwrap();
        assert_eq!(
            beat_on(&book, &beat(&ex, 115.0), memo).await,
            Beat::Banned {
                until: 500.0,
                reason: "abuse".to_owned()
            }
        );
        assert!(book.members().await.unwrap().is_empty());
    }

    /// A verdict that changes nothing writes nothing, so it costs the box's next
    /// heartbeat no read.
    #[tokio::test]
    async fn an_unchanged_state_leaves_the_record_untouched() {
        let (book, store, _dir) = book();
        let ex = exchange(None, "http://b/");
        let id = ex.header.id.to_string();
        book.heartbeat(&beat(&ex, 100.0)).await.unwrap();
        let state = BoxState::Unreachable;
        book.set_state(&id, state, "no answer", None, 101.0)
            .await
            .unwrap();
        let before = store.hgetall(&book.keys().box_info(&id)).await.unwrap();
        book.set_state(&id, state, "no answer", None, 102.0)
            .await
            .unwrap();
        let after = store.hgetall(&book.keys().box_info(&id)).await.unwrap();
        assert_eq!(before, after);
        assert_eq!(after.get("STATE").map(String::as_str), Some("unreachable"));
    }

    /// Listing reads boxes a chunk at a time; every box must come back once,
    /// with its own record and exchange, across chunk boundaries.
    #[tokio::test]
    async fn listing_gives_every_box_once_across_chunks() {
        let (book, _store, _dir) = book();
        let n = super::LIST_CHUNK + 3;
        let mut ids = Vec::new();
        for i in 0..n {
            let ex = exchange(None, &format!("http://b{i}/"));
            #[allow(clippy::cast_precision_loss)] // small
            let now = 100.0 + i as f64;
            book.heartbeat(&beat(&ex, now)).await.unwrap();
            ids.push((ex.header.id.to_string(), format!("http://b{i}/")));
        }
        book.evict(&ids[0].0, "abuse", 9_999.0, 500.0)
            .await
            .unwrap();
        let listed = book.list().await.unwrap();
        assert_eq!(listed.len(), n);
        for (id, url) in &ids[1..] {
            let l = listed.iter().find(|l| &l.id == id).unwrap();
            assert_eq!(l.info.state, BoxState::Active);
            assert_eq!(l.exchange.as_ref().unwrap().data_url.as_ref(), Some(url));
        }
        let evicted = listed.iter().find(|l| l.id == ids[0].0).unwrap();
        assert_eq!(evicted.info.state, BoxState::Evicted);
        assert!(evicted.exchange.is_none());
        let tallies = book.tallies().await.unwrap();
        assert_eq!(tallies.len(), n);
        for l in &listed {
            let tally = Tally {
                state: l.info.state,
                last_heartbeat: l.info.last_heartbeat,
                legacy: l.info.legacy,
            };
            assert_eq!(tallies.iter().filter(|s| **s == tally).count(), 1);
        }
    }

    /// An ended ban forgets the evicted record, and only that: a box that has
    /// registered again since keeps its new one.
    #[tokio::test]
    async fn an_ended_ban_forgets_only_a_record_still_evicted() {
        let (book, store, _dir) = book();
        let (gone, back) = (exchange(None, "http://a/"), exchange(None, "http://b/"));
        for ex in [&gone, &back] {
            let id = ex.header.id.to_string();
            book.heartbeat(&beat(ex, 100.0)).await.unwrap();
            book.evict(&id, "abuse", 200.0, 101.0).await.unwrap();
        }
        book.heartbeat(&beat(&back, 201.0)).await.unwrap();
        assert_eq!(book.pop_ended_bans(202.0, 10).await.unwrap(), 2);
        let info = |ex: &Exchange| book.keys().box_info(ex.header.id.as_str());
        assert!(!store.exists(&info(&gone)).await.unwrap());
        let kept = book
            .load_info(back.header.id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.state, BoxState::Active);
    }
}
