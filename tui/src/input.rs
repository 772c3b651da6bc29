//! Keys → [`Action`]s, through one keymap table. The footer hints and the `?`
//! overlay are built from the same table, so they cannot go stale.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key asks for. Text modes (filter, command, reason) take characters
/// as [`Action::Char`] instead of looking them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Filter,
    Command,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextView,
    PrevView,
    NextTab,
    PrevTab,
    GoTab(usize),
    Open,
    Back,
    Sort(SortKey),
    Evict,
    Push,
    Level,
    Char(char),
    Backspace,
    Submit,
    Cancel,
}

/// Columns a table can be sorted by (Shift + the letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortKey {
    Id,
    State,
    Location,
    Upload,
    Free,
    Heartbeat,
    Size,
    Ttl,
    Name,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everywhere,
    Entrance,
    Publisher,
    Tables,
    Events,
}

/// A key the keymap names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Tab,
    BackTab,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    End,
    Backspace,
    CtrlC,
}

#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are written in hints and help.
    pub label: &'static str,
    pub action: Action,
    pub description: &'static str,
    /// Changes the network; always asks before it acts.
    pub dangerous: bool,
    pub scope: Scope,
    /// What the footer says for it; bindings without one are only in `?`.
    pub hint: Option<&'static str>,
}

const fn bind(
    keys: &'static [Key],
    label: &'static str,
    action: Action,
    description: &'static str,
    scope: Scope,
    hint: Option<&'static str>,
) -> Binding {
    Binding {
        keys,
        label,
        action,
        description,
        dangerous: false,
        scope,
        hint,
    }
}

const fn danger(b: Binding) -> Binding {
    Binding {
        dangerous: true,
        ..b
    }
}

use Key as K;
use Scope as S;

/// Every key the console answers, in the order `?` lists them.
pub const KEYMAP: &[Binding] = &[
    bind(
        &[K::Char('?')],
        "?",
        Action::Help,
        "help",
        S::Everywhere,
        Some("help"),
    ),
    bind(
        &[K::Char('q'), K::CtrlC],
        "q",
        Action::Quit,
        "quit",
        S::Everywhere,
        Some("quit"),
    ),
    bind(
        &[K::Char('/')],
        "/",
        Action::Filter,
        "filter",
        S::Tables,
        Some("filter"),
    ),
    bind(
        &[K::Char(':')],
        ":",
        Action::Command,
        ":connect URL, :close, :context, :level, :q",
        S::Everywhere,
        Some("command"),
    ),
    bind(
        &[K::Tab],
        "Tab",
        Action::NextView,
        "next view",
        S::Everywhere,
        Some("view"),
    ),
    bind(
        &[K::BackTab],
        "S-Tab",
        Action::PrevView,
        "previous view",
        S::Everywhere,
        None,
    ),
    bind(
        &[K::Char(']')],
        "]",
        Action::NextTab,
        "next daemon",
        S::Everywhere,
        None,
    ),
    bind(
        &[K::Char('[')],
        "[",
        Action::PrevTab,
        "previous daemon",
        S::Everywhere,
        None,
    ),
    bind(
        &[
            K::Char('1'),
            K::Char('2'),
            K::Char('3'),
            K::Char('4'),
            K::Char('5'),
            K::Char('6'),
            K::Char('7'),
            K::Char('8'),
            K::Char('9'),
        ],
        "1-9",
        Action::GoTab(0),
        "daemon tab N",
        S::Everywhere,
        Some("daemon"),
    ),
    bind(
        &[K::Char('j'), K::Down],
        "j/↓",
        Action::Down,
        "down",
        S::Tables,
        None,
    ),
    bind(
        &[K::Char('k'), K::Up],
        "k/↑",
        Action::Up,
        "up",
        S::Tables,
        None,
    ),
    bind(
        &[K::PageDown, K::Char(' ')],
        "PgDn",
        Action::PageDown,
        "page down",
        S::Tables,
        None,
    ),
    bind(
        &[K::PageUp],
        "PgUp",
        Action::PageUp,
        "page up",
        S::Tables,
        None,
    ),
    bind(
        &[K::Home, K::Char('g')],
        "g",
        Action::Top,
        "first row",
        S::Tables,
        None,
    ),
    bind(
        &[K::End, K::Char('G')],
        "G",
        Action::Bottom,
        "last row",
        S::Tables,
        None,
    ),
    bind(
        &[K::Enter],
        "Enter",
        Action::Open,
        "open the box's own tab",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Esc],
        "Esc",
        Action::Back,
        "back / clear filter",
        S::Everywhere,
        None,
    ),
    bind(
        &[K::Char('S')],
        "S",
        Action::Sort(SortKey::State),
        "sort by state",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('I')],
        "I",
        Action::Sort(SortKey::Id),
        "sort by ID",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('L')],
        "L",
        Action::Sort(SortKey::Location),
        "sort by location",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('U')],
        "U",
        Action::Sort(SortKey::Upload),
        "sort by upload",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('F')],
        "F",
        Action::Sort(SortKey::Free),
        "sort by free storage",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('H')],
        "H",
        Action::Sort(SortKey::Heartbeat),
        "sort by last heartbeat",
        S::Entrance,
        None,
    ),
    bind(
        &[K::Char('N')],
        "N",
        Action::Sort(SortKey::Name),
        "sort files by name",
        S::Publisher,
        None,
    ),
    bind(
        &[K::Char('Z')],
        "Z",
        Action::Sort(SortKey::Size),
        "sort files by size",
        S::Publisher,
        None,
    ),
    bind(
        &[K::Char('T')],
        "T",
        Action::Sort(SortKey::Ttl),
        "sort files by TTL left",
        S::Publisher,
        None,
    ),
    danger(bind(
        &[K::Char('e')],
        "e",
        Action::Evict,
        "evict the box (asks first)",
        S::Entrance,
        Some("evict"),
    )),
    bind(
        &[K::Char('p')],
        "p",
        Action::Push,
        "push a file (picker)",
        S::Publisher,
        Some("push"),
    ),
    bind(
        &[K::Char('l')],
        "l",
        Action::Level,
        "events: lowest level shown",
        S::Events,
        Some("level"),
    ),
];

/// A terminal key as the keymap names it; `None` for keys it has no name for.
pub fn key_of(event: &KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
    Some(match event.code {
        KeyCode::Char('c') if ctrl => Key::CtrlC,
        KeyCode::Char(c) if !ctrl => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        KeyCode::End => Key::End,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// What `key` does: in a text field every character is text; elsewhere the
/// keymap decides.
pub fn action(key: Key, typing: bool) -> Option<Action> {
    if typing {
        return match key {
            Key::Char(c) => Some(Action::Char(c)),
            Key::Backspace => Some(Action::Backspace),
            Key::Enter => Some(Action::Submit),
            Key::Esc => Some(Action::Cancel),
            Key::CtrlC => Some(Action::Quit),
            _ => None,
        };
    }
    if let Key::Char(c @ '1'..='9') = key {
        return Some(Action::GoTab(usize::from(c as u8 - b'1')));
    }
    KEYMAP
        .iter()
        .find(|b| b.keys.contains(&key))
        .map(|b| b.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for b in KEYMAP {
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} is bound twice");
                seen.push(*k);
            }
        }
    }

    #[test]
    fn typing_takes_letters_that_are_commands_elsewhere() {
        assert_eq!(action(Key::Char('q'), false), Some(Action::Quit));
        assert_eq!(action(Key::Char('q'), true), Some(Action::Char('q')));
        assert_eq!(action(Key::Esc, true), Some(Action::Cancel));
        assert_eq!(action(Key::Char('3'), false), Some(Action::GoTab(2)));
        assert_eq!(
            action(Key::Char('S'), false),
            Some(Action::Sort(SortKey::State))
        );
    }

    #[test]
    fn the_only_dangerous_key_is_eviction() {
        let dangerous: Vec<_> = KEYMAP
            .iter()
            .filter(|b| b.dangerous)
            .map(|b| b.action)
            .collect();
        assert_eq!(dangerous, [Action::Evict]);
    }
}
