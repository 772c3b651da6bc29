//! The entrance's console feed: its boxes as rows, kept current by a row per
//! heartbeat and a removal per box gone, plus what time alone changes (a silent
//! box turning stale, self-preservation switching), so a console never needs
//! to re-read the fleet.

use std::sync::Arc;

use async_trait::async_trait;
use dandelion_core::console::{BoxView, EntranceStatus, EntranceView, Level, Update};

use super::Shared;
use super::api::box_view;
use super::book::now;
use super::registry::gone_stale;
use crate::console::{Source, Told};

/// The entrance as a console [`Source`].
#[derive(Debug)]
pub struct Feed(pub Arc<Shared>);

impl Feed {
    fn status(&self) -> EntranceStatus {
        EntranceStatus {
            self_preservation: self.0.preservation(),
            heartbeat_interval: self.0.config.heartbeat_interval.as_secs_f64(),
        }
    }
}

#[async_trait]
impl Source for Feed {
    async fn view(&self) -> Result<Update, String> {
        let listed = self.0.book.list().await.map_err(|e| e.to_string())?;
        let now = now();
        let boxes = listed
            .into_iter()
            .map(|l| box_view(l, now, self.0.config.heartbeat_interval))
            .collect();
        Ok(Update::Entrance(EntranceView {
            status: self.status(),
            boxes,
        }))
    }

    fn resend_whole(&self) -> bool {
        false
    }

    fn due(&self, told: &Told, now: f64) -> Vec<Update> {
        let mut due = Vec::new();
        let status = self.status();
        if told.status.as_ref() != Some(&status) {
            due.push(Update::EntranceStatus(status));
        }
        let heartbeat = self.0.config.heartbeat_interval;
        due.extend(told.boxes.values().filter_map(|b| {
            let stale = gone_stale(b.state, b.last_heartbeat, now, heartbeat)?;
            Some(Update::BoxRow(Box::new(BoxView {
                state: stale.state,
                since: stale.since,
                reason: stale.reason,
                ..b.clone()
            })))
        }));
        due
    }
}

/// After a stored heartbeat: the box's row to attached consoles, and a line in
/// the event log when the box is new.
pub async fn heartbeat(shared: &Shared, id: &str, new: bool) {
    let hub = &shared.common.console;
    if !hub.watched() && !new {
        return;
    }
    let Ok(Some(listed)) = shared.book.listed(id).await else {
        return;
    };
    let row = box_view(listed, now(), shared.config.heartbeat_interval);
    if new {
        let place = [row.geo.city.as_deref(), row.geo.country.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        let from = if place.is_empty() {
            String::new()
        } else {
            format!(" in {place}")
        };
        hub.event(Level::Info, format!("{id} registered{from}"));
    }
    hub.send(Update::BoxRow(Box::new(row)));
}

/// A box left the registry (expired, said goodbye).
pub fn gone(shared: &Shared, id: &str, level: Level, reason: &str) {
    let hub = &shared.common.console;
    hub.event(level, format!("{id} {reason}"));
    hub.send(Update::BoxGone {
        id: id.to_owned(),
        reason: reason.to_owned(),
    });
}

/// A box's state changed in place (evicted, found unreachable): its new row.
pub async fn changed(shared: &Shared, id: &str, level: Level, text: String) {
    shared.common.console.event(level, text);
    heartbeat(shared, id, false).await;
}
