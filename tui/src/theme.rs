//! Themes: a palette of named colours, then roles mapped onto it, read from TOML
//! over the embedded default and resolved once into styles with role-named
//! accessors. Drawing code asks for a role, never for a colour.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dandelion_core::console::{BoxState, Level};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

pub const DARK: &str = include_str!("../../themes/dark.toml");
pub const LIGHT: &str = include_str!("../../themes/light.toml");

#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    #[error("cannot read the theme {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("theme {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    palette: BTreeMap<String, String>,
    #[serde(default)]
    roles: Roles,
}

/// Every role the console draws with; a file may name any subset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Roles {
    text: Option<String>,
    dim: Option<String>,
    title: Option<String>,
    border: Option<String>,
    border_focused: Option<String>,
    header: Option<String>,
    selection_bg: Option<String>,
    tab_active: Option<String>,
    box_active: Option<String>,
    box_stale: Option<String>,
    box_unreachable: Option<String>,
    box_evicted: Option<String>,
    box_legacy: Option<String>,
    log_info: Option<String>,
    log_warn: Option<String>,
    log_error: Option<String>,
    banner: Option<String>,
    map_land: Option<String>,
    spark: Option<String>,
    ok: Option<String>,
    bad: Option<String>,
}

/// Resolved colours, by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    colour: bool,
    text: Color,
    dim: Color,
    title: Color,
    border: Color,
    border_focused: Color,
    header: Color,
    selection_bg: Color,
    tab_active: Color,
    box_active: Color,
    box_stale: Color,
    box_unreachable: Color,
    box_evicted: Color,
    box_legacy: Color,
    log_info: Color,
    log_warn: Color,
    log_error: Color,
    banner: Color,
    map_land: Color,
    spark: Color,
    ok: Color,
    bad: Color,
}

fn parse_file(text: &str, origin: &str) -> Result<ThemeFile, ThemeError> {
    toml::from_str(text).map_err(|e| ThemeError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string().trim().to_owned(),
    })
}

fn parse_colour(text: &str) -> Option<Color> {
    let text = text.trim();
    if let Some(hex) = text.strip_prefix('#') {
        if hex.len() != 6 {
            return None;
        }
        let v = u32::from_str_radix(hex, 16).ok()?;
        #[allow(clippy::cast_possible_truncation)] // masked to a byte each
        return Some(Color::Rgb((v >> 16) as u8, (v >> 8) as u8, v as u8));
    }
    text.replace('_', " ").parse().ok()
}

impl Theme {
    /// An embedded theme by name (`dark`, `light`), or a file.
    pub fn load(spec: &str, no_color: bool) -> Result<Theme, ThemeError> {
        let (text, origin) = match spec {
            "dark" | "" => (DARK.to_owned(), "dark (embedded)".to_owned()),
            "light" => (LIGHT.to_owned(), "light (embedded)".to_owned()),
            path => {
                let path = Path::new(path);
                let text = std::fs::read_to_string(path).map_err(|cause| ThemeError::Read {
                    path: path.to_owned(),
                    cause,
                })?;
                (text, path.display().to_string())
            }
        };
        Theme::from_toml(&text, &origin, no_color)
    }

    /// A theme from TOML, read over the embedded dark one.
    pub fn from_toml(text: &str, origin: &str, no_color: bool) -> Result<Theme, ThemeError> {
        let base = parse_file(DARK, "dark (embedded)")?;
        let file = parse_file(text, origin)?;
        let mut palette = base.palette;
        palette.extend(file.palette);
        let invalid = |message: String| ThemeError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        // A role names a palette entry, or a colour directly.
        let resolve = |role: &str, given: &Option<String>, fallback: &Option<String>| {
            let name = given
                .as_ref()
                .or(fallback.as_ref())
                .ok_or_else(|| invalid(format!("role `{role}` is not set")))?;
            let value = palette.get(name).map_or(name.as_str(), String::as_str);
            parse_colour(value).ok_or_else(|| {
                invalid(format!(
                    "role `{role}`: `{name}` is neither a palette entry nor a colour \
                     (\"#rrggbb\" or a name such as \"red\")"
                ))
            })
        };
        let (r, b) = (&file.roles, &base.roles);
        Ok(Theme {
            name: file.name.or(base.name).unwrap_or_else(|| "custom".into()),
            colour: !no_color,
            text: resolve("text", &r.text, &b.text)?,
            dim: resolve("dim", &r.dim, &b.dim)?,
            title: resolve("title", &r.title, &b.title)?,
            border: resolve("border", &r.border, &b.border)?,
            border_focused: resolve("border_focused", &r.border_focused, &b.border_focused)?,
            header: resolve("header", &r.header, &b.header)?,
            selection_bg: resolve("selection_bg", &r.selection_bg, &b.selection_bg)?,
            tab_active: resolve("tab_active", &r.tab_active, &b.tab_active)?,
            box_active: resolve("box_active", &r.box_active, &b.box_active)?,
            box_stale: resolve("box_stale", &r.box_stale, &b.box_stale)?,
            box_unreachable: resolve("box_unreachable", &r.box_unreachable, &b.box_unreachable)?,
            box_evicted: resolve("box_evicted", &r.box_evicted, &b.box_evicted)?,
            box_legacy: resolve("box_legacy", &r.box_legacy, &b.box_legacy)?,
            log_info: resolve("log_info", &r.log_info, &b.log_info)?,
            log_warn: resolve("log_warn", &r.log_warn, &b.log_warn)?,
            log_error: resolve("log_error", &r.log_error, &b.log_error)?,
            banner: resolve("banner", &r.banner, &b.banner)?,
            map_land: resolve("map_land", &r.map_land, &b.map_land)?,
            spark: resolve("spark", &r.spark, &b.spark)?,
            ok: resolve("ok", &r.ok, &b.ok)?,
            bad: resolve("bad", &r.bad, &b.bad)?,
        })
    }

    fn fg(&self, c: Color) -> Style {
        if self.colour {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn text(&self) -> Style {
        self.fg(self.text)
    }
    pub fn dim(&self) -> Style {
        self.fg(self.dim)
    }
    pub fn title(&self) -> Style {
        self.fg(self.title).add_modifier(Modifier::BOLD)
    }
    pub fn border(&self) -> Style {
        self.fg(self.border)
    }
    pub fn border_focused(&self) -> Style {
        self.fg(self.border_focused)
    }
    pub fn header(&self) -> Style {
        self.fg(self.header).add_modifier(Modifier::BOLD)
    }
    /// The selected row: a background colour, or reverse video without colours.
    pub fn selection(&self) -> Style {
        if self.colour {
            Style::new()
                .bg(self.selection_bg)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }
    pub fn tab_active(&self) -> Style {
        self.fg(self.tab_active)
            .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }
    /// The colour that says what state a box is in.
    pub fn box_state(&self, state: BoxState, legacy: bool) -> Style {
        if legacy && state == BoxState::Active {
            return self.fg(self.box_legacy);
        }
        let style = self.fg(match state {
            BoxState::Active => self.box_active,
            BoxState::Stale => self.box_stale,
            BoxState::Unreachable => self.box_unreachable,
            BoxState::Evicted => self.box_evicted,
        });
        if state == BoxState::Active {
            style
        } else {
            style.add_modifier(Modifier::BOLD)
        }
    }
    /// The raw colour of a state, for the map's dots.
    pub fn box_state_colour(&self, state: BoxState) -> Color {
        if !self.colour {
            return Color::Reset;
        }
        match state {
            BoxState::Active => self.box_active,
            BoxState::Stale => self.box_stale,
            BoxState::Unreachable => self.box_unreachable,
            BoxState::Evicted => self.box_evicted,
        }
    }
    pub fn level(&self, level: Level) -> Style {
        match level {
            Level::Info => self.fg(self.log_info),
            Level::Warn => self.fg(self.log_warn),
            Level::Error => self.fg(self.log_error).add_modifier(Modifier::BOLD),
        }
    }
    pub fn banner(&self) -> Style {
        if self.colour {
            Style::new()
                .fg(Color::White)
                .bg(self.banner)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    pub fn map_land(&self) -> Color {
        if self.colour {
            self.map_land
        } else {
            Color::Reset
        }
    }
    pub fn spark(&self) -> Style {
        self.fg(self.spark)
    }
    pub fn ok(&self) -> Style {
        self.fg(self.ok)
    }
    pub fn bad(&self) -> Style {
        self.fg(self.bad).add_modifier(Modifier::BOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_theme_parses() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../themes")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let t = Theme::load(path.to_str().unwrap(), false).unwrap();
                assert!(!t.name.is_empty());
            }
        }
        assert_eq!(Theme::load("light", false).unwrap().name, "light");
    }

    #[test]
    fn a_partial_theme_overrides_the_default() {
        let t = Theme::from_toml("[roles]\nbox_stale = \"#ff0000\"\n", "mine.toml", false).unwrap();
        assert_eq!(t.box_stale, Color::Rgb(255, 0, 0));
        assert_eq!(t.box_active, Theme::load("dark", false).unwrap().box_active);
    }

    #[test]
    fn bad_themes_name_the_file_and_key() {
        let e = Theme::from_toml("[roles]\nbox_stail = \"red\"\n", "mine.toml", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("theme mine.toml: ") && e.contains("box_stail"),
            "{e}"
        );
        let e = Theme::from_toml("[roles]\ntext = \"nonsense\"\n", "mine.toml", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("role `text`") && e.contains("nonsense"), "{e}");
        let e = Theme::load("/nonexistent/theme.toml", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/theme.toml"), "{e}");
    }

    #[test]
    fn no_color_drops_colours_but_keeps_selection_visible() {
        let t = Theme::load("dark", true).unwrap();
        assert_eq!(t.text(), Style::new());
        assert!(t.selection().add_modifier.contains(Modifier::REVERSED));
        assert_eq!(t.box_state(BoxState::Active, false).fg, None);
    }
}
