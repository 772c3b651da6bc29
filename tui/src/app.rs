//! The console's state and the only place it changes: [`App::update`] takes an
//! [`Input`] (a key's action, a daemon's update, a tick, an action's result)
//! and returns the [`Effect`]s the shell must carry out (connect, evict, push,
//! quit). Nothing here draws or does network I/O, so it is tested as plain data.

pub mod entrance;
pub mod picker;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use dandelion_core::console::{BoxNodeView, BoxState, Event, Hello, Level, PublisherView, Update};

use crate::input::{Action, SortKey};
use entrance::EntranceData;
use picker::Picker;

/// Events kept per daemon for the log pane.
pub const EVENTS_KEPT: usize = 500;
/// Rows a page-up/down moves.
pub const PAGE: usize = 10;

/// Something the shell must do for the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Attach tab `tab` to `url` (and keep it attached).
    Connect {
        tab: usize,
        url: String,
        token: Option<String>,
    },
    Evict {
        tab: usize,
        url: String,
        token: Option<String>,
        box_id: String,
        reason: String,
    },
    Push {
        tab: usize,
        url: String,
        token: Option<String>,
        path: PathBuf,
        name: String,
    },
    /// Close every tab and open the daemons of this context
    /// ([`App::open_context`] once the shell has read it).
    SwitchContext(String),
    /// Cut every tab's feed: the tabs were renumbered (one closed), and the
    /// `Connect`s that follow attach each again under its new number.
    Rewire,
    Quit,
}

/// What a daemon's feed task reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Net {
    Connecting,
    Update(Update),
    /// The feed is down; the task tries again at `retry_at` (local Unix seconds).
    Down {
        error: String,
        retry_at: f64,
    },
}

/// Everything the state changes on.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Action(Action),
    Net {
        tab: usize,
        net: Net,
    },
    /// The local clock, in Unix seconds.
    Tick(f64),
    /// An eviction or push finished: a message for the status line.
    Done {
        tab: usize,
        result: Result<String, String>,
    },
    /// A push from the picker moved on.
    Uploading {
        tab: usize,
        name: String,
        sent: u64,
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Conn {
    Connecting,
    Live,
    Down { error: String, retry_at: f64 },
}

/// The role data a tab shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Unknown,
    Entrance(EntranceData),
    Publisher(PublisherView),
    BoxNode(BoxData),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BoxData {
    pub view: BoxNodeView,
    /// Upload rate once a second, oldest first.
    pub rate: VecDeque<u64>,
}

/// Which pane of a tab is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Boxes,
    Geo,
    Files,
    Ranking,
    Stored,
    Events,
}

impl View {
    pub fn title(self) -> &'static str {
        match self {
            View::Boxes => "Boxes",
            View::Geo => "Geo",
            View::Files => "Queue & placements",
            View::Ranking => "Ranking",
            View::Stored => "Files",
            View::Events => "Events",
        }
    }
}

/// A push started from this console, until the publisher acknowledged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub name: String,
    pub sent: u64,
    pub size: u64,
}

/// One attached daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Tab {
    pub url: String,
    pub token: Option<String>,
    pub conn: Conn,
    pub hello: Option<Hello>,
    /// The daemon's clock minus ours, from its hello.
    pub offset: f64,
    pub data: Data,
    /// When the current publisher or box view arrived (local clock): TTLs count
    /// down from there.
    pub received_at: f64,
    pub view: usize,
    pub selected: usize,
    pub filter: String,
    pub sort: SortKey,
    pub descending: bool,
    /// Newest first.
    pub events: VecDeque<Event>,
    pub level: Level,
    pub uploads: Vec<Upload>,
}

impl Tab {
    fn new(url: String, token: Option<String>) -> Tab {
        Tab {
            url,
            token,
            conn: Conn::Connecting,
            hello: None,
            offset: 0.0,
            data: Data::Unknown,
            received_at: 0.0,
            view: 0,
            selected: 0,
            filter: String::new(),
            sort: SortKey::Id,
            descending: false,
            events: VecDeque::new(),
            level: Level::Info,
            uploads: Vec::new(),
        }
    }

    /// The panes this daemon's role has.
    pub fn views(&self) -> &'static [View] {
        match self.data {
            Data::Entrance(_) => &[View::Boxes, View::Geo, View::Events],
            Data::Publisher(_) => &[View::Files, View::Ranking, View::Events],
            Data::BoxNode(_) => &[View::Stored, View::Events],
            Data::Unknown => &[View::Events],
        }
    }

    pub fn current_view(&self) -> View {
        let views = self.views();
        views[self.view.min(views.len() - 1)]
    }

    /// A short name for the tab bar.
    pub fn label(&self) -> String {
        match &self.hello {
            Some(h) => {
                let short: String = h.id.chars().take(h.role.len() + 9).collect();
                short
            }
            None => self.url.trim_start_matches("http://").to_owned(),
        }
    }

    /// The entrance's boxes as currently shown (filtered, sorted).
    pub fn box_rows(&self) -> Vec<&entrance::BoxEntry> {
        match &self.data {
            Data::Entrance(e) => e.rows(&self.filter, self.sort, self.descending),
            _ => Vec::new(),
        }
    }

    /// The publisher's files as currently shown.
    pub fn file_rows(&self) -> Vec<&dandelion_core::console::FileView> {
        let Data::Publisher(p) = &self.data else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<_> = p
            .files
            .iter()
            .filter(|f| needle.is_empty() || f.name.to_lowercase().contains(&needle))
            .collect();
        match self.sort {
            SortKey::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            SortKey::Size => rows.sort_by_key(|f| f.size),
            SortKey::Ttl => rows.sort_by_key(|f| f.ttl_left),
            _ => {}
        }
        if self.descending {
            rows.reverse();
        }
        rows
    }

    /// The box's stored files as currently shown.
    pub fn stored_rows(&self) -> Vec<&dandelion_core::console::StoredFile> {
        let Data::BoxNode(b) = &self.data else {
            return Vec::new();
        };
        let needle = self.filter.to_lowercase();
        b.view
            .files
            .iter()
            .filter(|f| needle.is_empty() || f.path.to_lowercase().contains(&needle))
            .collect()
    }

    /// Events at or above the chosen level, matching the filter, newest first.
    pub fn event_rows(&self) -> Vec<&Event> {
        let needle = self.filter.to_lowercase();
        self.events
            .iter()
            .filter(|e| e.level >= self.level)
            .filter(|e| needle.is_empty() || e.text.to_lowercase().contains(&needle))
            .collect()
    }

    fn row_count(&self) -> usize {
        match self.current_view() {
            View::Boxes => self.box_rows().len(),
            View::Geo => match &self.data {
                Data::Entrance(e) => e.geo(&self.filter).len(),
                _ => 0,
            },
            View::Files => self.file_rows().len(),
            View::Ranking => match &self.data {
                Data::Publisher(p) => p.ranking.len(),
                _ => 0,
            },
            View::Stored => self.stored_rows().len(),
            View::Events => self.event_rows().len(),
        }
    }

    /// The selected row, clamped to what is there now.
    pub fn selected_row(&self) -> usize {
        self.selected.min(self.row_count().saturating_sub(1))
    }

    /// Seconds a TTL received with the current view has left `now`.
    pub fn ttl_now(&self, ttl_left: u64, now: f64) -> u64 {
        let elapsed = (now - self.received_at).max(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped ≥ 0
        let elapsed = elapsed as u64;
        ttl_left.saturating_sub(elapsed)
    }

    fn apply(&mut self, update: Update, now: f64) {
        match update {
            Update::Hello(h) => {
                self.offset = h.now - now;
                self.hello = Some(h);
                self.conn = Conn::Live;
            }
            Update::Entrance(view) => {
                self.data = Data::Entrance(EntranceData::new(view));
            }
            Update::EntranceStatus(s) => {
                if let Data::Entrance(e) = &mut self.data {
                    e.status = s;
                }
            }
            Update::BoxRow(b) => {
                if let Data::Entrance(e) = &mut self.data {
                    e.upsert(*b);
                }
            }
            Update::BoxGone { id, .. } => {
                if let Data::Entrance(e) = &mut self.data {
                    e.remove(&id);
                }
            }
            Update::Publisher(view) => {
                for f in &view.files {
                    self.uploads.retain(|u| u.name != f.name);
                }
                self.data = Data::Publisher(view);
                self.received_at = now;
            }
            Update::BoxNode(view) => {
                let mut rate = match &self.data {
                    Data::BoxNode(b) => b.rate.clone(),
                    _ => VecDeque::new(),
                };
                if rate.len() == entrance::HISTORY * 2 {
                    rate.pop_front();
                }
                rate.push_back(view.upload_rate);
                self.data = Data::BoxNode(BoxData { view, rate });
                self.received_at = now;
            }
            Update::Event(e) => {
                if self.events.len() == EVENTS_KEPT {
                    self.events.pop_back();
                }
                self.events.push_front(e);
            }
        }
    }
}

/// What the keyboard is doing right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help,
    Filter(String),
    Command(String),
    /// Evicting `box_id`: the operator types the reason.
    Confirm {
        box_id: String,
        reason: String,
    },
    Picker(Picker),
}

/// Where tokens for daemons come from: one given on the command line, or each
/// daemon's own file from the local network's description.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    pub given: Option<String>,
    pub by_url: BTreeMap<String, String>,
}

impl Tokens {
    /// The token for a URL the operator named (command line, `:connect`).
    pub fn for_url(&self, url: &str) -> Option<String> {
        self.given.clone().or_else(|| self.own(url))
    }

    /// The token for a URL a daemon advertised (a box's data URL): only that
    /// daemon's own, from the local network. The token the operator gave is
    /// for the daemons they named; a box owner can advertise any URL, and must
    /// not collect it.
    pub fn own(&self, url: &str) -> Option<String> {
        self.by_url.get(url.trim_end_matches('/')).cloned()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub tabs: Vec<Tab>,
    pub active: usize,
    pub mode: Mode,
    /// A message for the status line, and whether it is an error.
    pub status: Option<(String, bool)>,
    pub now: f64,
    pub tokens: Tokens,
    /// Where the file picker starts.
    pub start_dir: PathBuf,
}

impl App {
    pub fn new(tokens: Tokens, start_dir: &Path, now: f64) -> App {
        App {
            tabs: Vec::new(),
            active: 0,
            mode: Mode::Normal,
            status: None,
            now,
            tokens,
            start_dir: start_dir.to_owned(),
        }
    }

    /// Adds a tab for `url`, a URL the operator named (or switches to it if
    /// it is there already).
    /// Replaces every tab with the daemons of context `name`, each with its
    /// own token. The shell has already cut the old tabs' feeds off.
    pub fn open_context(&mut self, name: &str, urls: &[String], tokens: Tokens) -> Vec<Effect> {
        self.tabs.clear();
        self.mode = Mode::Normal;
        self.tokens = tokens;
        let mut effects = Vec::new();
        for url in urls {
            effects.extend(self.attach(url));
        }
        self.active = 0;
        self.status = Some((format!("context {name}: {} daemon(s)", urls.len()), false));
        effects
    }

    /// `:close`: the active tab goes, the others keep their state and are
    /// attached again under their new numbers. The last tab stays (`:q` quits).
    fn close_tab(&mut self) -> Vec<Effect> {
        if self.tabs.len() <= 1 {
            self.say_error("this is the only tab: :q quits");
            return Vec::new();
        }
        let gone = self.tabs.remove(self.active.min(self.tabs.len() - 1));
        self.active = self.active.min(self.tabs.len() - 1);
        self.mode = Mode::Normal;
        self.status = Some((format!("closed {}", gone.url), false));
        let mut effects = vec![Effect::Rewire];
        for (tab, t) in self.tabs.iter_mut().enumerate() {
            t.conn = Conn::Connecting;
            effects.push(Effect::Connect {
                tab,
                url: t.url.clone(),
                token: t.token.clone(),
            });
        }
        effects
    }

    pub fn attach(&mut self, url: &str) -> Vec<Effect> {
        let token = self.tokens.for_url(url.trim().trim_end_matches('/'));
        self.attach_with(url, token)
    }

    fn attach_with(&mut self, url: &str, token: Option<String>) -> Vec<Effect> {
        let url = url.trim().trim_end_matches('/').to_owned();
        if let Some(i) = self.tabs.iter().position(|t| t.url == url) {
            self.active = i;
            return Vec::new();
        }
        self.tabs.push(Tab::new(url.clone(), token.clone()));
        self.active = self.tabs.len() - 1;
        vec![Effect::Connect {
            tab: self.active,
            url,
            token,
        }]
    }

    pub fn tab(&self) -> Option<&Tab> {
        self.tabs.get(self.active)
    }

    fn tab_mut(&mut self) -> Option<&mut Tab> {
        self.tabs.get_mut(self.active)
    }

    /// The one way the state changes.
    pub fn update(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Tick(now) => {
                self.now = now;
                for tab in &mut self.tabs {
                    if let Data::BoxNode(b) = &mut tab.data
                        && now - tab.received_at >= 1.5
                    {
                        // No new view: the box served nothing new this second.
                        if b.rate.len() == entrance::HISTORY * 2 {
                            b.rate.pop_front();
                        }
                        b.rate.push_back(0);
                    }
                }
                Vec::new()
            }
            Input::Net { tab, net } => {
                let now = self.now;
                if let Some(t) = self.tabs.get_mut(tab) {
                    match net {
                        Net::Connecting => {
                            if !matches!(t.conn, Conn::Live) {
                                t.conn = Conn::Connecting;
                            }
                        }
                        Net::Down { error, retry_at } => t.conn = Conn::Down { error, retry_at },
                        Net::Update(u) => t.apply(u, now),
                    }
                }
                Vec::new()
            }
            Input::Done { tab, result } => {
                if let Some(t) = self.tabs.get_mut(tab)
                    && result.is_err()
                {
                    t.uploads.clear();
                }
                self.status = Some(match result {
                    Ok(text) => (text, false),
                    Err(text) => (text, true),
                });
                Vec::new()
            }
            Input::Uploading {
                tab,
                name,
                sent,
                size,
            } => {
                if let Some(t) = self.tabs.get_mut(tab) {
                    match t.uploads.iter_mut().find(|u| u.name == name) {
                        Some(u) => u.sent = sent,
                        None => t.uploads.push(Upload { name, sent, size }),
                    }
                }
                Vec::new()
            }
            Input::Action(action) => self.act(action),
        }
    }

    fn act(&mut self, action: Action) -> Vec<Effect> {
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal(action),
            Mode::Help => {
                if action == Action::Quit {
                    return vec![Effect::Quit];
                }
                Vec::new()
            }
            Mode::Filter(text) => self.typing(action, text, Mode::Filter, |app, text| {
                if let Some(t) = app.tab_mut() {
                    t.filter = text;
                    t.selected = 0;
                }
                Vec::new()
            }),
            Mode::Command(text) => self.typing(action, text, Mode::Command, App::command),
            Mode::Confirm { box_id, reason } => {
                let id = box_id.clone();
                self.typing(
                    action,
                    reason,
                    move |reason| Mode::Confirm {
                        box_id: id.clone(),
                        reason,
                    },
                    move |app, reason| app.evict(&box_id, reason),
                )
            }
            Mode::Picker(picker) => self.picking(action, picker),
        }
    }

    /// A text field: characters edit it, Enter submits, Esc cancels.
    fn typing(
        &mut self,
        action: Action,
        mut text: String,
        keep: impl Fn(String) -> Mode,
        submit: impl FnOnce(&mut App, String) -> Vec<Effect>,
    ) -> Vec<Effect> {
        match action {
            Action::Char(c) => {
                text.push(c);
                self.mode = keep(text);
            }
            Action::Backspace => {
                text.pop();
                self.mode = keep(text);
            }
            Action::Submit => return submit(self, text),
            Action::Quit => return vec![Effect::Quit],
            _ => {} // Cancel: back to normal
        }
        Vec::new()
    }

    fn normal(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Quit => return vec![Effect::Quit],
            Action::Help => self.mode = Mode::Help,
            Action::Filter => {
                let current = self.tab().map(|t| t.filter.clone()).unwrap_or_default();
                self.mode = Mode::Filter(current);
            }
            Action::Command => self.mode = Mode::Command(String::new()),
            Action::Back => {
                self.status = None;
                if let Some(t) = self.tab_mut() {
                    t.filter.clear();
                }
            }
            Action::NextTab | Action::PrevTab | Action::GoTab(_) => {
                let n = self.tabs.len();
                if n > 0 {
                    self.active = match action {
                        Action::NextTab => (self.active + 1) % n,
                        Action::PrevTab => (self.active + n - 1) % n,
                        Action::GoTab(i) if i < n => i,
                        _ => self.active,
                    };
                }
            }
            Action::NextView | Action::PrevView => {
                if let Some(t) = self.tab_mut() {
                    let n = t.views().len();
                    t.view = if action == Action::NextView {
                        (t.view + 1) % n
                    } else {
                        (t.view + n - 1) % n
                    };
                    t.selected = 0;
                }
            }
            Action::Up | Action::Down | Action::PageUp | Action::PageDown => {
                if let Some(t) = self.tab_mut() {
                    let last = t.row_count().saturating_sub(1);
                    let at = t.selected_row();
                    t.selected = match action {
                        Action::Up => at.saturating_sub(1),
                        Action::Down => (at + 1).min(last),
                        Action::PageUp => at.saturating_sub(PAGE),
                        _ => (at + PAGE).min(last),
                    };
                }
            }
            Action::Top => {
                if let Some(t) = self.tab_mut() {
                    t.selected = 0;
                }
            }
            Action::Bottom => {
                if let Some(t) = self.tab_mut() {
                    t.selected = t.row_count().saturating_sub(1);
                }
            }
            Action::Sort(key) => {
                if let Some(t) = self.tab_mut() {
                    if t.sort == key {
                        t.descending = !t.descending;
                    } else {
                        t.sort = key;
                        t.descending = false;
                    }
                }
            }
            Action::Level => {
                if let Some(t) = self.tab_mut() {
                    t.level = match t.level {
                        Level::Info => Level::Warn,
                        Level::Warn => Level::Error,
                        Level::Error => Level::Info,
                    };
                    t.selected = 0;
                }
            }
            Action::Open => return self.open_box(),
            Action::Evict => self.ask_evict(),
            Action::Push => match self.tab().map(|t| &t.data) {
                Some(Data::Publisher(_)) => self.mode = Mode::Picker(Picker::open(&self.start_dir)),
                _ => self.say_error("push works on a publisher's tab"),
            },
            Action::Char(_) | Action::Backspace | Action::Submit | Action::Cancel => {}
        }
        Vec::new()
    }

    /// Says on the status line that something failed.
    pub fn say_error(&mut self, text: &str) {
        self.status = Some((text.to_owned(), true));
    }

    /// The box selected in the entrance's boxes table.
    pub fn selected_box(&self) -> Option<&dandelion_core::console::BoxView> {
        let t = self.tab()?;
        if t.current_view() != View::Boxes {
            return None;
        }
        t.box_rows().get(t.selected_row()).map(|b| &b.view)
    }

    fn open_box(&mut self) -> Vec<Effect> {
        let Some(url) = self.selected_box().map(|b| b.data_url.clone()) else {
            return Vec::new();
        };
        match url {
            Some(url) => {
                let token = self.tokens.own(&url);
                self.attach_with(&url, token)
            }
            None => {
                self.say_error("this box has not said where it can be reached");
                Vec::new()
            }
        }
    }

    fn ask_evict(&mut self) {
        match self.selected_box() {
            Some(b) if b.state == BoxState::Evicted => {
                let text = format!("{} is already evicted", b.id);
                self.say_error(&text);
            }
            Some(b) => {
                self.mode = Mode::Confirm {
                    box_id: b.id.clone(),
                    reason: String::new(),
                };
            }
            None => self.say_error("select a box in an entrance's Boxes view to evict it"),
        }
    }

    fn evict(&mut self, box_id: &str, reason: String) -> Vec<Effect> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() {
            self.say_error("an eviction needs a reason; nothing was evicted");
            return Vec::new();
        }
        let Some((url, token)) = self.tab().map(|t| (t.url.clone(), t.token.clone())) else {
            return Vec::new();
        };
        self.status = Some((format!("evicting {box_id}…"), false));
        vec![Effect::Evict {
            tab: self.active,
            url,
            token,
            box_id: box_id.to_owned(),
            reason,
        }]
    }

    fn picking(&mut self, action: Action, mut picker: Picker) -> Vec<Effect> {
        match action {
            Action::Up => picker.move_by(-1),
            Action::Down => picker.move_by(1),
            Action::PageUp => picker.move_by(-(PAGE as isize)),
            Action::PageDown => picker.move_by(PAGE as isize),
            Action::Top => picker.move_by(isize::MIN),
            Action::Bottom => picker.move_by(isize::MAX),
            Action::Back | Action::Quit => return Vec::new(),
            Action::Open => {
                if let Some(path) = picker.enter() {
                    return self.push(path);
                }
            }
            _ => {}
        }
        self.mode = Mode::Picker(picker);
        Vec::new()
    }

    fn push(&mut self, path: PathBuf) -> Vec<Effect> {
        let Some((url, token)) = self.tab().map(|t| (t.url.clone(), t.token.clone())) else {
            return Vec::new();
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        self.status = Some((format!("pushing {name}…"), false));
        vec![Effect::Push {
            tab: self.active,
            url,
            token,
            path,
            name,
        }]
    }

    fn command(&mut self, text: String) -> Vec<Effect> {
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some("q" | "quit"), _) => vec![Effect::Quit],
            (Some("connect" | "c"), Some(url)) => self.attach(url),
            (Some("connect" | "c"), None) => {
                self.say_error(":connect needs a URL, e.g. :connect http://10.0.0.5:7071");
                Vec::new()
            }
            (Some("close"), _) => self.close_tab(),
            (Some("context"), Some(name)) => vec![Effect::SwitchContext(name.to_owned())],
            (Some("context"), None) => {
                self.say_error(":context needs a name, e.g. :context prod");
                Vec::new()
            }
            (Some("level"), Some(level)) => {
                let level = match level {
                    "info" => Some(Level::Info),
                    "warn" => Some(Level::Warn),
                    "error" => Some(Level::Error),
                    _ => None,
                };
                match (level, self.tab_mut()) {
                    (Some(l), Some(t)) => t.level = l,
                    _ => self.say_error(":level takes info, warn or error"),
                }
                Vec::new()
            }
            (None, _) => Vec::new(),
            (Some(other), _) => {
                let text = format!(
                    "unknown command `{other}`: try :connect URL, :close, :context NAME, :level warn, :q"
                );
                self.say_error(&text);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests;
