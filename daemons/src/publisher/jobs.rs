//! What the publisher remembers about each published name: the job (size, hash,
//! TTL, replicas, state, failures) and its placements (which boxes confirmed the
//! exact bytes, and why each won).
//!
//! Both live in the store as JSON, one hash field per name: jobs in
//! `{ID}:FILE:JOBS`, placements in `{ID}:FILE:PROCESSED_FILES` — the original's
//! key, which it wrote before a box had stored anything; ours is written only
//! after the box confirmed size and SHA-256.

use std::collections::BTreeMap;
use std::sync::Arc;

use dandelion_core::store::keys::Keys;
use dandelion_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted and durable, waiting for (more) boxes.
    Queued,
    /// On as many boxes as asked for.
    Placed,
    /// Given up after too many failures; `failures` says why.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Placed => "placed",
            JobState::Failed => "failed",
        }
    }
}

/// One failed attempt to place a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub box_id: Option<String>,
    pub reason: String,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub ttl: u64,
    pub replicas: u32,
    /// When the push was acknowledged (Unix seconds); the TTL counts from here.
    pub accepted_at: u64,
    pub state: JobState,
    pub attempts: u32,
    #[serde(default)]
    pub failures: Vec<Failure>,
}

impl Job {
    pub fn expires_at(&self) -> u64 {
        self.accepted_at.saturating_add(self.ttl)
    }

    /// TTL left for a box that stores the file `now`: a copy must not outlive the job.
    pub fn ttl_left(&self, now: u64) -> u64 {
        self.expires_at().saturating_sub(now)
    }
}

/// A box that confirmed it holds the exact bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub box_id: String,
    /// Where viewers fetch the copy.
    pub url: String,
    pub stored_at: u64,
    pub expires_at: u64,
    /// Why this box was chosen, and which came next.
    pub trace: String,
    /// Frame header keys the box echoed back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, serde_json::Value>,
}

/// Job and placement records on the store.
#[derive(Debug, Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    jobs: String,
    placements: String,
    // Placement lists are read, changed and written back by the senders and the
    // re-placement sweep; one lock for all names is enough at their rate and keeps
    // two writers from losing each other's update.
    placement_lock: Arc<tokio::sync::Mutex<()>>,
}

fn corrupt(key: &str, name: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: format!("{key} {name}"),
        detail: e.to_string(),
    }
}

impl Records {
    pub fn new(store: Arc<dyn Store>, keys: &Keys) -> Records {
        Records {
            store,
            jobs: format!("{}:FILE:JOBS", keys.prefix()),
            placements: keys.processed_files(),
            placement_lock: Arc::default(),
        }
    }

    pub async fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        match self.store.hget(&self.jobs, name).await? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| corrupt(&self.jobs, name, e)),
        }
    }

    pub async fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        let text = serde_json::to_string(job).map_err(|e| corrupt(&self.jobs, &job.name, e))?;
        self.store
            .hset(&self.jobs, &[(&job.name, &text)])
            .await
            .map(drop)
    }

    pub async fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let all = self.store.hgetall(&self.jobs).await?;
        all.iter()
            .map(|(name, text)| {
                serde_json::from_str(text).map_err(|e| corrupt(&self.jobs, name, e))
            })
            .collect()
    }

    /// Forgets a name entirely (its TTL ran out).
    pub async fn forget(&self, name: &str) -> Result<(), StoreError> {
        self.store.hdel(&self.jobs, &[name]).await?;
        self.store.hdel(&self.placements, &[name]).await.map(drop)
    }

    pub async fn placements(&self, name: &str) -> Result<Vec<Placement>, StoreError> {
        match self.store.hget(&self.placements, name).await? {
            None => Ok(Vec::new()),
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| corrupt(&self.placements, name, e))
            }
        }
    }

    /// Reads a name's placements, lets `change` edit them, and writes them back,
    /// with no other update in between. Returns the list as written.
    pub async fn update_placements(
        &self,
        name: &str,
        change: impl FnOnce(&mut Vec<Placement>),
    ) -> Result<Vec<Placement>, StoreError> {
        let _guard = self.placement_lock.lock().await;
        let mut placements = self.placements(name).await?;
        change(&mut placements);
        self.put_placements(name, &placements).await?;
        Ok(placements)
    }

    async fn put_placements(&self, name: &str, placements: &[Placement]) -> Result<(), StoreError> {
        if placements.is_empty() {
            return self.store.hdel(&self.placements, &[name]).await.map(drop);
        }
        let text =
            serde_json::to_string(placements).map_err(|e| corrupt(&self.placements, name, e))?;
        self.store
            .hset(&self.placements, &[(name, &text)])
            .await
            .map(drop)
    }

    pub async fn all_placements(&self) -> Result<BTreeMap<String, Vec<Placement>>, StoreError> {
        let all = self.store.hgetall(&self.placements).await?;
        all.iter()
            .map(|(name, text)| {
                serde_json::from_str(text)
                    .map(|p| (name.clone(), p))
                    .map_err(|e| corrupt(&self.placements, name, e))
            })
            .collect()
    }
}
