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
    /// `view.lat_lon()`, parsed once when the view arrives rather than every frame.
    pub lat_lon: Option<(f64, f64)>,
}

/// Where a box is: country, region, city (`?` where unknown).
type Place = (String, String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct EntranceData {
    pub status: EntranceStatus,
    pub boxes: BTreeMap<String, BoxEntry>,
    /// The totals of every city with a box that is not evicted, kept up to date
    /// as boxes change, so a frame does not re-aggregate the whole fleet.
    places: BTreeMap<Place, Totals>,
}

impl EntranceData {
    pub fn new(view: EntranceView) -> EntranceData {
        let mut data = EntranceData {
            status: view.status,
            boxes: BTreeMap::new(),
            places: BTreeMap::new(),
        };
        for b in view.boxes {
            data.upsert(b);
        }
        data
    }

    /// A box's row changed; a new heartbeat adds to its history.
    pub fn upsert(&mut self, view: BoxView) {
        count(&mut self.places, &view, true);
        match self.boxes.get_mut(&view.id) {
            Some(entry) => {
                if view.last_heartbeat > entry.view.last_heartbeat {
                    push(&mut entry.upload, view.upload_rate.unwrap_or(0));
                }
                entry.lat_lon = view.lat_lon();
                let old = std::mem::replace(&mut entry.view, view);
                count(&mut self.places, &old, false);
            }
            None => {
                let mut upload = VecDeque::with_capacity(HISTORY);
                push(&mut upload, view.upload_rate.unwrap_or(0));
                let lat_lon = view.lat_lon();
                self.boxes.insert(
                    view.id.clone(),
                    BoxEntry {
                        view,
                        upload,
                        lat_lon,
                    },
                );
            }
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(gone) = self.boxes.remove(id) {
            count(&mut self.places, &gone.view, false);
        }
    }

    /// The boxes matching `filter`, in the chosen order.
    pub fn rows(&self, filter: &str, sort: SortKey, descending: bool) -> Vec<&BoxEntry> {
        let needle = filter.to_lowercase();
        let rows = self
            .boxes
            .values()
            .filter(|b| needle.is_empty() || matches(&b.view, &needle));
        if sort == SortKey::Location {
            // The location is a formatted string: made once per box, not per comparison.
            let mut keyed: Vec<(String, &BoxEntry)> =
                rows.map(|b| (location(&b.view), b)).collect();
            keyed.sort_by(|(ka, a), (kb, b)| {
                let order = if descending { kb.cmp(ka) } else { ka.cmp(kb) };
                order.then_with(|| a.view.id.cmp(&b.view.id))
            });
            return keyed.into_iter().map(|(_, b)| b).collect();
        }
        let mut rows: Vec<&BoxEntry> = rows.collect();
        if matches!(
            sort,
            SortKey::Id | SortKey::Name | SortKey::Size | SortKey::Ttl
        ) {
            // The map is in ID order already, and no other key applies to boxes.
            if descending {
                rows.reverse();
            }
            return rows;
        }
        rows.sort_by(|a, b| {
            let (a, b) = (&a.view, &b.view);
            let order = match sort {
                SortKey::State => a.state.cmp(&b.state),
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
    /// The geography table of the boxes matching `filter` (as the Boxes view
    /// filters: ID, state, reason, city, region, country).
    pub fn geo(&self, filter: &str) -> Vec<GeoRow> {
        if filter.is_empty() {
            return geo_rows(&self.places);
        }
        let needle = filter.to_lowercase();
        let mut places = BTreeMap::new();
        for b in self.boxes.values().filter(|b| matches(&b.view, &needle)) {
            count(&mut places, &b.view, true);
        }
        geo_rows(&places)
    }

    /// The boxes matching `filter` that have a location, for the map.
    pub fn located<'a>(&'a self, filter: &str) -> impl Iterator<Item = &'a BoxEntry> + 'a {
        let needle = filter.to_lowercase();
        self.boxes.values().filter(move |b| {
            b.lat_lon.is_some() && (needle.is_empty() || matches(&b.view, &needle))
        })
    }
}

/// The geography table of `places`, in (country, region, city) order: each
/// country's and region's rows are its cities' totals, summed as they go by.
fn geo_rows(places: &BTreeMap<Place, Totals>) -> Vec<GeoRow> {
    let mut rows = Vec::new();
    let mut places = places.iter().peekable();
    while let Some(((country, _, _), _)) = places.peek() {
        let country = country.clone();
        let country_at = rows.len();
        rows.push(GeoRow::new(0, country.clone(), &Totals::default()));
        let mut c = Totals::default();
        while let Some(((_, region, _), _)) = places.peek().filter(|((k, _, _), _)| *k == country) {
            let region = region.clone();
            let region_at = rows.len();
            rows.push(GeoRow::new(1, region.clone(), &Totals::default()));
            let mut r = Totals::default();
            while let Some(((_, _, city), t)) =
                places.next_if(|((k, g, _), _)| *k == country && *g == region)
            {
                r.merge(t);
                rows.push(GeoRow::new(2, city.clone(), t));
            }
            c.merge(&r);
            rows[region_at].totals = r;
        }
        rows[country_at].totals = c;
    }
    rows
}

/// Adds a box to the totals of its city, or takes it away again.
fn count(places: &mut BTreeMap<Place, Totals>, b: &BoxView, add: bool) {
    if b.state == BoxState::Evicted {
        return;
    }
    let g = &b.geo;
    let name = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".into());
    let place = (name(&g.country), name(&g.region), name(&g.city));
    if add {
        places.entry(place).or_default().add(b);
    } else if let Some(t) = places.get_mut(&place) {
        t.take(b);
        if t.boxes == 0 {
            places.remove(&place);
        }
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

    /// Undoes [`Totals::add`] of the same view.
    fn take(&mut self, b: &BoxView) {
        self.boxes = self.boxes.saturating_sub(1);
        if b.state == BoxState::Active {
            self.active = self.active.saturating_sub(1);
            self.spare_upload = self
                .spare_upload
                .saturating_sub(b.spare_upload().unwrap_or(0));
            self.free_storage = self
                .free_storage
                .saturating_sub(b.free_storage.unwrap_or(0));
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
