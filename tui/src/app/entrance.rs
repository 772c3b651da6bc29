//! What the console knows of an entrance: its boxes with a short upload
//! history each, and the geo-distribution derived from them.

use std::collections::{BTreeMap, VecDeque};

use dandelion_core::console::{BoxState, BoxView, EntranceStatus, EntranceView};

use crate::input::SortKey;

/// Upload readings kept per box for its sparkline.
pub const HISTORY: usize = 24;

#[derive(Debug, Clone, PartialEq)]
pub struct BoxEntry {
    pub view: BoxView,
    /// Upload rate at each heartbeat, oldest first.
    pub upload: VecDeque<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntranceData {
    pub status: EntranceStatus,
    pub boxes: BTreeMap<String, BoxEntry>,
}

impl EntranceData {
    pub fn new(view: EntranceView) -> EntranceData {
        let mut data = EntranceData {
            status: view.status,
            boxes: BTreeMap::new(),
        };
        for b in view.boxes {
            data.upsert(b);
        }
        data
    }

    /// A box's row changed; a new heartbeat adds to its history.
    pub fn upsert(&mut self, view: BoxView) {
        match self.boxes.get_mut(&view.id) {
            Some(entry) => {
                if view.last_heartbeat > entry.view.last_heartbeat {
                    push(&mut entry.upload, view.upload_rate.unwrap_or(0));
                }
                entry.view = view;
            }
            None => {
                let mut upload = VecDeque::with_capacity(HISTORY);
                push(&mut upload, view.upload_rate.unwrap_or(0));
                self.boxes
                    .insert(view.id.clone(), BoxEntry { view, upload });
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        self.boxes.remove(id);
    }

    /// The boxes matching `filter`, in the chosen order.
    pub fn rows(&self, filter: &str, sort: SortKey, descending: bool) -> Vec<&BoxEntry> {
        let needle = filter.to_lowercase();
        let mut rows: Vec<&BoxEntry> = self
            .boxes
            .values()
            .filter(|b| needle.is_empty() || matches(&b.view, &needle))
            .collect();
        rows.sort_by(|a, b| {
            let (a, b) = (&a.view, &b.view);
            let order = match sort {
                SortKey::State => a.state.cmp(&b.state),
                SortKey::Location => location(a).cmp(&location(b)),
                SortKey::Upload => a.upload_rate.cmp(&b.upload_rate),
                SortKey::Free => a.free_storage.cmp(&b.free_storage),
                SortKey::Heartbeat => a.last_heartbeat.total_cmp(&b.last_heartbeat),
                _ => std::cmp::Ordering::Equal,
            };
            let order = if descending { order.reverse() } else { order };
            order.then_with(|| a.id.cmp(&b.id))
        });
        rows
    }

    /// Boxes per country, region and city, with their spare upload and free storage.
    pub fn geo(&self) -> Vec<GeoRow> {
        let mut tree: BTreeMap<String, BTreeMap<String, BTreeMap<String, Totals>>> =
            BTreeMap::new();
        for b in self.boxes.values().map(|b| &b.view) {
            if b.state == BoxState::Evicted {
                continue;
            }
            let g = &b.geo;
            let t = tree
                .entry(g.country.clone().unwrap_or_else(|| "?".into()))
                .or_default()
                .entry(g.region.clone().unwrap_or_else(|| "?".into()))
                .or_default()
                .entry(g.city.clone().unwrap_or_else(|| "?".into()))
                .or_default();
            t.add(b);
        }
        let mut rows = Vec::new();
        for (country, regions) in tree {
            let mut c = Totals::default();
            let mut under = Vec::new();
            for (region, cities) in regions {
                let mut r = Totals::default();
                let mut city_rows = Vec::new();
                for (city, t) in cities {
                    r.merge(&t);
                    city_rows.push(GeoRow::new(2, city, &t));
                }
                c.merge(&r);
                under.push(GeoRow::new(1, region, &r));
                under.extend(city_rows);
            }
            rows.push(GeoRow::new(0, country, &c));
            rows.extend(under);
        }
        rows
    }
}

fn push(history: &mut VecDeque<u64>, value: u64) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(value);
}

/// "City, CC" as far as it is known.
pub fn location(b: &BoxView) -> String {
    match (&b.geo.city, &b.geo.country) {
        (Some(c), Some(k)) => format!("{c}, {k}"),
        (Some(c), None) => c.clone(),
        (None, Some(k)) => k.clone(),
        (None, None) => "-".into(),
    }
}

fn matches(b: &BoxView, needle: &str) -> bool {
    [
        Some(b.id.as_str()),
        Some(b.state.as_str()),
        Some(b.reason.as_str()),
        b.geo.city.as_deref(),
        b.geo.country.as_deref(),
        b.geo.region.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|field| field.to_lowercase().contains(needle))
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub boxes: usize,
    pub active: usize,
    /// Active boxes that published an upload cap, so spare upload is known.
    pub capped: usize,
    pub spare_upload: u64,
    pub free_storage: u64,
}

impl Totals {
    fn add(&mut self, b: &BoxView) {
        self.boxes += 1;
        if b.state == BoxState::Active {
            self.active += 1;
            self.capped += usize::from(b.upload_cap.is_some());
            self.spare_upload += b.spare_upload().unwrap_or(0);
            self.free_storage += b.free_storage.unwrap_or(0);
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.boxes += o.boxes;
        self.active += o.active;
        self.capped += o.capped;
        self.spare_upload += o.spare_upload;
        self.free_storage += o.free_storage;
    }
}

/// One line of the geo-distribution table: a country (depth 0), a region (1)
/// or a city (2).
#[derive(Debug, Clone, PartialEq)]
pub struct GeoRow {
    pub depth: u8,
    pub label: String,
    pub totals: Totals,
}

impl GeoRow {
    fn new(depth: u8, label: String, totals: &Totals) -> GeoRow {
        GeoRow {
            depth,
            label,
            totals: *totals,
        }
    }
}
