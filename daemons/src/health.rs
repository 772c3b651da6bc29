//! What `/healthz` says beyond "the process answers": whether the daemon can
//! do its work, and why not when it cannot.
//!
//! A daemon is `degraded` while something it depends on does not answer: its
//! store (a shared Redis), or an entrance it keeps a session with or searches.
//! It still serves what it can from memory meanwhile (a publisher's redirects,
//! a box's files), so `/healthz` answers `200` with the reasons rather than an
//! error that a load balancer would act on by taking a working front end out.
//!
//! `/healthz` must answer at once when the store is frozen: it never asks the
//! store itself. [`watch_store`] asks in the background and records the
//! answer here; the handlers only read what is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dandelion_core::store::{Store, StoreError};
use serde::Serialize;

use crate::shutdown::Shutdown;

/// What depends on what, by part ("store", "entrance ws://…"), with the
/// problem of each part that has one.
#[derive(Debug, Default)]
pub struct Health {
    problems: Mutex<BTreeMap<String, String>>,
}

/// The part of `/healthz` every role shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `ok`, or `degraded` while any part has a problem.
    pub status: &'static str,
    /// `part: problem`, one per part that has one.
    pub problems: Vec<String>,
}

impl Health {
    /// Records that `part` works (`None`) or what is wrong with it; whether
    /// that changed what was recorded, for the caller to log a change once
    /// rather than at every check.
    pub fn set(&self, part: &str, problem: Option<String>) -> bool {
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(problem) if problems.get(part) != Some(&problem) => {
                problems.insert(part.to_owned(), problem);
                true
            }
            Some(_) => false,
            None => problems.remove(part).is_some(),
        }
    }

    /// Forgets a part that is no longer depended on.
    pub fn forget(&self, part: &str) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(part);
    }

    pub fn report(&self) -> Report {
        let problems: Vec<String> = self
            .problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(part, problem)| format!("{part}: {problem}"))
            .collect();
        Report {
            status: if problems.is_empty() {
                "ok"
            } else {
                "degraded"
            },
            problems,
        }
    }

    /// Whether `part` has a problem now.
    pub fn failing(&self, part: &str) -> bool {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(part)
    }
}

/// The part name of the store.
pub const STORE: &str = "store";

/// How often the store is asked whether it answers.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long it has to answer: a frozen store shows in `/healthz` within
/// [`STORE_CHECK_EVERY`] plus this.
const STORE_CHECK_WITHIN: Duration = Duration::from_millis(800);

/// Asks `store` whether it answers every second until shutdown, recording the
/// answer in `health`. Only a shared store can stop answering while this
/// process runs; the embedded one is not watched.
pub async fn watch_store(store: Arc<dyn Store>, health: Arc<Health>, shutdown: Shutdown) {
    loop {
        let outcome = tokio::time::timeout(STORE_CHECK_WITHIN, store.ping())
            .await
            .ok();
        let (problem, detail) = store_problem(outcome);
        if health.set(STORE, problem.clone()) {
            match problem {
                Some(problem) => tracing::warn!(
                    "the store does not answer: {problem}{}",
                    detail.map(|d| format!(": {d}")).unwrap_or_default()
                ),
                None => tracing::info!("the store answers again"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(STORE_CHECK_EVERY) => {}
        }
    }
}

/// What `/healthz` says of a store check (`None`: it timed out), and the
/// error's own text for the log only: it names the store's host and port, and
/// `/healthz` answers anyone.
fn store_problem(outcome: Option<Result<(), StoreError>>) -> (Option<String>, Option<String>) {
    match outcome {
        Some(Ok(())) => (None, None),
        Some(Err(e)) => (
            Some("the store failed a PING (the log says why)".to_owned()),
            Some(e.to_string()),
        ),
        None => (
            Some(format!(
                "no answer within {} ms",
                STORE_CHECK_WITHIN.as_millis()
            )),
            None,
        ),
    }
}

/// The part name of one entrance, by its URL.
pub fn entrance(url: &str) -> String {
    format!("entrance {url}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_report_does_not_name_the_store() {
        let failed = StoreError::Corrupt {
            key: "PING on redis://:***@10.1.2.3:6379/".into(),
            detail: "connection refused".into(),
        };
        let (public, log) = store_problem(Some(Err(failed)));
        let public = public.unwrap();
        assert!(!public.contains("10.1.2.3"), "{public}");
        assert!(log.unwrap().contains("10.1.2.3:6379"));
        let (timeout, _) = store_problem(None);
        assert!(timeout.unwrap().contains("no answer"));
        assert_eq!(store_problem(Some(Ok(()))), (None, None));
    }

    #[test]
    fn degraded_while_any_part_has_a_problem_and_ok_once_none_has() {
        let health = Health::default();
        assert_eq!(health.report().status, "ok");
        health.set(STORE, Some("no answer within 800 ms".into()));
        health.set(&entrance("ws://e1"), Some("connection refused".into()));
        let report = health.report();
        assert_eq!(report.status, "degraded");
        assert_eq!(
            report.problems,
            [
                "entrance ws://e1: connection refused",
                "store: no answer within 800 ms"
            ]
        );
        health.set(STORE, None);
        assert!(!health.failing(STORE));
        assert_eq!(health.report().status, "degraded");
        health.forget(&entrance("ws://e1"));
        assert_eq!(
            health.report(),
            Report {
                status: "ok",
                problems: Vec::new()
            }
        );
    }
}
