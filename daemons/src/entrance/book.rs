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
use std::time::{SystemTime, UNIX_EPOCH};

use dandelion_core::protocol::{Exchange, GeoIp};
use dandelion_core::store::{Batch, Keys, Order, Store, StoreError};
use serde_json::{Map, Value};

use super::registry::{BoxInfo, BoxState};

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

/// Handle on the registry in the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Book {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl Book {
    pub fn new(store: Arc<dyn Store>, namespace: &str) -> Book {
        Book {
            store,
            keys: Keys::new(namespace),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Records a heartbeat. Returns whether the box was new to the registry.
    ///
    /// One read (the box's record, for what a heartbeat must not overwrite and
    /// need not rewrite) and one atomic batch: the exchange, the record and the expiry score change
    /// together, so a listing never shows a box whose exchange is half replaced,
    /// and on the embedded store a heartbeat waits for one commit, not four.
    pub async fn heartbeat(&self, hb: Heartbeat<'_>) -> Result<bool, StoreError> {
        let id = hb.exchange.header.id.as_str();
        let info_key = self.keys.box_info(id);
        let existing = self.store.hgetall(&info_key).await?;
        let now = hb.now.to_string();
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
        let is_new = !existing.contains_key(field::STATE);
        let was_evicted = existing.get(field::STATE).map(String::as_str) == Some("evicted");
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
        let mut batch = Batch::new();
        save_exchange(&mut batch, &self.keys, hb.exchange);
        batch.hset(&info_key, &fields);
        if was_evicted {
            batch.hdel(&info_key, &[field::BAN_UNTIL]);
        }
        batch.zadd(&self.keys.box_set(), id, hb.expires_at);
        self.store.apply(&batch).await?;
        Ok(is_new)
    }

    pub async fn load_exchange(&self, id: &str) -> Result<Option<Exchange>, StoreError> {
        let hash = self.store.hgetall(&self.keys.exchange(id)).await?;
        if hash.is_empty() {
            return Ok(None);
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
        Ok(serde_json::from_value(Value::Object(map)).ok())
    }

    pub async fn load_info(&self, id: &str) -> Result<Option<BoxInfo>, StoreError> {
        let hash = self.store.hgetall(&self.keys.box_info(id)).await?;
        Ok(parse_info(&hash))
    }

    /// Sets a stored state, keeping the time of change when the state is unchanged.
    pub async fn set_state(
        &self,
        id: &str,
        state: BoxState,
        reason: &str,
        now: f64,
    ) -> Result<(), StoreError> {
        let key = self.keys.box_info(id);
        let current = self.store.hget(&key, field::STATE).await?;
        if current.is_none() {
            return Ok(()); // gone meanwhile (goodbye, expiry)
        }
        let since = now.to_string();
        let mut fields = vec![(field::REASON, reason)];
        if current.as_deref() != Some(state.as_str()) {
            fields.push((field::STATE, state.as_str()));
            fields.push((field::SINCE, &since));
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
        match self.store.zscore(&self.keys.banned(), id).await? {
            Some(until) if until > now => {
                let reason = self
                    .store
                    .hget(&self.keys.box_info(id), field::REASON)
                    .await?
                    .unwrap_or_default();
                Ok(Some((until, reason)))
            }
            _ => Ok(None),
        }
    }

    /// Sets an operator's location for a box. Returns whether the box is known.
    pub async fn set_location(&self, id: &str, geo: &GeoIp) -> Result<bool, StoreError> {
        let key = self.keys.box_info(id);
        if !self.store.exists(&key).await? {
            return Ok(false);
        }
        let json = serde_json::to_string(geo).unwrap_or_default();
        self.store
            .hset(
                &key,
                &[
                    (field::GEO_OVERRIDE, &json),
                    (field::GEO, &json),
                    (field::GEO_SOURCE, "override"),
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
            let key = self.keys.box_info(id);
            if self.store.hget(&key, field::STATE).await?.as_deref() == Some("evicted") {
                self.store.del(&[&key]).await?;
            }
        }
        Ok(popped.len())
    }

    /// One box as [`Book::list`] would give it.
    pub async fn listed(&self, id: &str) -> Result<Option<Listed>, StoreError> {
        let Some(info) = self.load_info(id).await? else {
            return Ok(None);
        };
        Ok(Some(Listed {
            id: id.to_owned(),
            info,
            exchange: self.load_exchange(id).await?,
            expires_at: self.store.zscore(&self.keys.box_set(), id).await?,
        }))
    }

    /// Every box the entrance knows: the live set and the evicted.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        for (id, expires) in self.members().await? {
            if let Some(info) = self.load_info(&id).await? {
                let exchange = self.load_exchange(&id).await?;
                out.push(Listed {
                    id,
                    info,
                    exchange,
                    expires_at: Some(expires),
                });
            }
        }
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
        for (id, _) in banned {
            if let Some(info) = self.load_info(&id).await? {
                out.push(Listed {
                    id,
                    info,
                    exchange: None,
                    expires_at: None,
                });
            }
        }
        Ok(out)
    }
}

/// Replaces an exchange with `exchange`, as a flat hash: strings as they are,
/// nested values and numbers as JSON text (the original's HMSET refused nested
/// values and lost the whole heartbeat). The old hash is deleted first so that a
/// field the box stopped sending does not linger.
fn save_exchange(batch: &mut Batch, keys: &Keys, exchange: &Exchange) {
    let Ok(Value::Object(map)) = serde_json::to_value(exchange) else {
        return;
    };
    let flat: Vec<(String, String)> = map
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    let fields: Vec<(&str, &str)> = flat.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = keys.exchange(exchange.header.id.as_str());
    batch.del(&key).hset(&key, &fields);
}

fn parse_info(hash: &BTreeMap<String, String>) -> Option<BoxInfo> {
    let num = |f: &str| hash.get(f).and_then(|v| v.parse::<f64>().ok());
    let state = BoxState::parse(hash.get(field::STATE)?)?;
    Some(BoxInfo {
        state,
        since: num(field::SINCE).unwrap_or(0.0),
        reason: hash.get(field::REASON).cloned().unwrap_or_default(),
        legacy: hash.get(field::LEGACY).map(String::as_str) == Some("1"),
        first_seen: num(field::FIRST_SEEN).unwrap_or(0.0),
        last_heartbeat: num(field::LAST_HEARTBEAT).unwrap_or(0.0),
        observed_ip: hash.get(field::OBSERVED_IP).cloned(),
        public_key: hash.get(field::PUBLIC_KEY).cloned(),
        geo: hash
            .get(field::GEO)
            .and_then(|g| serde_json::from_str(g).ok())
            .unwrap_or_default(),
        geo_source: hash.get(field::GEO_SOURCE).cloned().unwrap_or_default(),
        ban_until: num(field::BAN_UNTIL),
    })
}
