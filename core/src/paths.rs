//! Which file paths arriving from the network a box agrees to store, and where; the
//! publisher applies the same text rules to the names users publish under.
//!
//! A path arrives from the network and becomes a file name on a household device,
//! so it is checked twice: as text here (no way out of the publisher's directory,
//! nothing a shell, a log or a browser would show misleadingly), and against the
//! disk just before the file is created and renamed ([`check_on_disk`]), because a
//! symbolic link in an existing directory would lead out of the directory as well.

use std::path::{Component, Path, PathBuf};

use unicode_normalization::is_nfc;

/// Longest stored path in bytes, after the leading `/` is removed.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path component in bytes: what ext4 and most filesystems allow.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Why a path is refused; each has a stable code for the `REFUSED` reply and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("FILE_PATH is empty")]
    Empty,
    #[error("FILE_PATH is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("a FILE_PATH component is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("FILE_PATH contains a NUL byte")]
    Nul,
    #[error("FILE_PATH contains a backslash")]
    Backslash,
    #[error("FILE_PATH contains a control character")]
    ControlChar,
    #[error("FILE_PATH is not in Unicode normal form C")]
    NotNfc,
    #[error("FILE_PATH contains an invisible or direction-changing character")]
    OddUnicode,
    #[error("FILE_PATH is still absolute after its leading `/` is removed")]
    Absolute,
    #[error("FILE_PATH has an empty, `.` or `..` component")]
    DotOrEmptyComponent,
    #[error("FILE_PATH leads through a symbolic link")]
    Symlink,
    #[error("FILE_PATH leads through something that is not a directory")]
    NotADirectory,
    #[error("FILE_PATH names a directory")]
    IsADirectory,
}

impl PathRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            PathRefusal::Empty => "path_empty",
            PathRefusal::TooLong => "path_too_long",
            PathRefusal::ComponentTooLong => "path_component_too_long",
            PathRefusal::Nul => "path_nul",
            PathRefusal::Backslash => "path_backslash",
            PathRefusal::ControlChar => "path_control_char",
            PathRefusal::NotNfc => "path_not_nfc",
            PathRefusal::OddUnicode => "path_odd_unicode",
            PathRefusal::Absolute => "path_absolute",
            PathRefusal::DotOrEmptyComponent => "path_dot_component",
            PathRefusal::Symlink => "path_symlink",
            PathRefusal::NotADirectory => "path_not_a_directory",
            PathRefusal::IsADirectory => "path_is_a_directory",
        }
    }
}

/// Turns a `FILE_PATH` as sent into the relative path it is stored under (one
/// leading `/` removed, as the original did), or says why not.
pub fn relative_path(file_path: &str) -> Result<String, PathRefusal> {
    let rel = file_path.strip_prefix('/').unwrap_or(file_path);
    if rel.is_empty() {
        return Err(PathRefusal::Empty);
    }
    if rel.len() > MAX_PATH_BYTES {
        return Err(PathRefusal::TooLong);
    }
    if rel.contains('\0') {
        return Err(PathRefusal::Nul);
    }
    if rel.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    if rel.chars().any(char::is_control) {
        return Err(PathRefusal::ControlChar);
    }
    if rel.chars().any(is_odd) {
        return Err(PathRefusal::OddUnicode);
    }
    if !is_nfc(rel) {
        return Err(PathRefusal::NotNfc);
    }
    if rel.starts_with('/') {
        return Err(PathRefusal::Absolute);
    }
    for component in rel.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(PathRefusal::DotOrEmptyComponent);
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(PathRefusal::ComponentTooLong);
        }
    }
    // Belt and braces: whatever the rules above missed, std's own reading of the
    // path must consist of plain names only.
    if !Path::new(rel)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(PathRefusal::DotOrEmptyComponent);
    }
    Ok(rel.to_owned())
}

/// Characters that render as nothing or reorder text: a name containing them can
/// look like another file's name in a listing or a log.
fn is_odd(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                    // soft hyphen
        | '\u{061C}'                  // Arabic letter mark
        | '\u{180E}'                  // Mongolian vowel separator
        | '\u{200B}'..='\u{200F}'     // zero-width space/joiners, LRM, RLM
        | '\u{2028}'..='\u{202E}'     // line/paragraph separators, bidi embeddings
        | '\u{2060}'..='\u{206F}'     // word joiner, bidi isolates, invisible operators
        | '\u{FEFF}'                  // byte-order mark
        | '\u{FFF9}'..='\u{FFFB}'     // interlinear annotations
        | '\u{E000}'..='\u{F8FF}'     // private use
        | '\u{F0000}'..='\u{10FFFF}'  // supplementary private use
    )
}

/// Checks what already exists on disk along `rel` under `base`: every existing
/// directory on the way must be a real directory (not a symbolic link), and the
/// file itself, if it exists, a regular file (it will be replaced). Returns the
/// full target path.
pub fn check_on_disk(base: &Path, rel: &str) -> Result<PathBuf, PathRefusal> {
    let mut path = base.to_owned();
    let mut components = rel.split('/').peekable();
    while let Some(component) = components.next() {
        path.push(component);
        let last = components.peek().is_none();
        match std::fs::symlink_metadata(&path) {
            Err(_) => {
                // Nothing there yet: nothing below it can exist either.
                return Ok(base.join(rel));
            }
            Ok(meta) if meta.file_type().is_symlink() => return Err(PathRefusal::Symlink),
            Ok(meta) if last && meta.is_dir() => return Err(PathRefusal::IsADirectory),
            Ok(meta) if !last && !meta.is_dir() => return Err(PathRefusal::NotADirectory),
            Ok(_) => {}
        }
    }
    Ok(path)
}

/// The stream a file belongs to, for the offload ledger: its name up to the
/// last `/` (`live/seg7.ts` → `live`), or `""` for a name without one. The
/// segments and playlist of one HLS stream share a directory, so the
/// directory is the stream.
pub fn stream_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Percent-encodes what a URL path cannot carry as is; `/` stays a separator.
pub fn url_path(member: &str) -> String {
    let mut out = String::with_capacity(member.len());
    for b in member.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where viewers fetch a stored file: the box's data URL, then the file's member
/// name `<publisher-id>/<path>`, as the original's nginx served it. The one
/// spelling of that URL: the box writes it in its confirmation, and the publisher
/// derives it from the box's verified data URL and records only its own.
pub fn file_url(data_url: &str, member: &str) -> String {
    format!("{}/{}", data_url.trim_end_matches('/'), url_path(member))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_files_stream_is_its_directory() {
        assert_eq!(stream_of("live/seg7.ts"), "live");
        assert_eq!(stream_of("a/b/index.m3u8"), "a/b");
        assert_eq!(stream_of("top.bin"), "");
    }

    #[test]
    fn the_originals_absolute_paths_become_relative() {
        assert_eq!(
            relative_path("/tmp/hls/output/demo/seg1.ts").unwrap(),
            "tmp/hls/output/demo/seg1.ts"
        );
        assert_eq!(relative_path("live/a.m3u8").unwrap(), "live/a.m3u8");
        assert_eq!(
            relative_path("/ünïcode/видео.ts").unwrap(),
            "ünïcode/видео.ts"
        );
    }

    #[test]
    fn every_kind_of_bad_path_is_refused() {
        let long_component = format!("/{}", "a".repeat(256));
        let long_path = format!("/{}", "abcdefghi/".repeat(103));
        let cases: &[(&str, PathRefusal)] = &[
            ("", PathRefusal::Empty),
            ("/", PathRefusal::Empty),
            ("//etc/passwd", PathRefusal::Absolute),
            ("/a/../../etc/passwd", PathRefusal::DotOrEmptyComponent),
            ("/..", PathRefusal::DotOrEmptyComponent),
            ("/a/./b", PathRefusal::DotOrEmptyComponent),
            ("/a//b", PathRefusal::DotOrEmptyComponent),
            ("/a/b/", PathRefusal::DotOrEmptyComponent),
            ("/a\0b", PathRefusal::Nul),
            ("/a\\..\\b", PathRefusal::Backslash),
            ("/a\nb", PathRefusal::ControlChar),
            ("/a\u{7f}b", PathRefusal::ControlChar),
            ("/cafe\u{0301}.ts", PathRefusal::NotNfc),
            ("/evil\u{202E}st.ts", PathRefusal::OddUnicode),
            ("/zero\u{200B}width", PathRefusal::OddUnicode),
            (&long_component, PathRefusal::ComponentTooLong),
            (&long_path, PathRefusal::TooLong),
        ];
        for (path, expected) in cases {
            assert_eq!(relative_path(path).as_ref(), Err(expected), "{path:?}");
        }
        // A 255-byte component is fine.
        assert!(relative_path(&format!("/{}", "a".repeat(255))).is_ok());
    }

    #[test]
    fn symlinks_and_files_on_the_way_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::fs::write(base.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", base.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", base.join("real/passwd")).unwrap();
        assert_eq!(
            check_on_disk(base, "link/passwd"),
            Err(PathRefusal::Symlink)
        );
        assert_eq!(
            check_on_disk(base, "real/passwd"),
            Err(PathRefusal::Symlink)
        );
        assert_eq!(
            check_on_disk(base, "file/x"),
            Err(PathRefusal::NotADirectory)
        );
        assert_eq!(check_on_disk(base, "real"), Err(PathRefusal::IsADirectory));
        assert_eq!(
            check_on_disk(base, "real/new.ts"),
            Ok(base.join("real/new.ts"))
        );
        assert_eq!(check_on_disk(base, "file"), Ok(base.join("file")));
        assert_eq!(check_on_disk(base, "a/b/c"), Ok(base.join("a/b/c")));
    }
}
