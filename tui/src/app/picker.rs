//! The keyboard file picker for pushes: one directory at a time, folders
//! first, `..` to go up. Reading a local directory is quick and cannot hang on
//! the network, so it happens right in the update.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub dir: bool,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    pub selected: usize,
    /// Why the directory could not be read, if it could not.
    pub error: Option<String>,
}

impl Picker {
    pub fn open(dir: &Path) -> Picker {
        let mut p = Picker {
            dir: dir.to_owned(),
            entries: Vec::new(),
            selected: 0,
            error: None,
        };
        p.read();
        p
    }

    fn read(&mut self) {
        self.entries.clear();
        self.selected = 0;
        self.error = None;
        if self.dir.parent().is_some() {
            self.entries.push(Entry {
                name: "..".into(),
                dir: true,
                size: 0,
            });
        }
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(l) => l,
            Err(e) => {
                self.error = Some(format!("cannot read {}: {e}", self.dir.display()));
                return;
            }
        };
        let mut found: Vec<Entry> = listing
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let name = e.file_name().into_string().ok()?;
                (!name.starts_with('.')).then_some(Entry {
                    name,
                    dir: meta.is_dir(),
                    size: meta.len(),
                })
            })
            .collect();
        found.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
        self.entries.extend(found);
    }

    pub fn move_by(&mut self, delta: isize) {
        let last = self.entries.len().saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(delta).min(last);
    }

    /// Enter: goes into a folder (or up), or returns the chosen file.
    pub fn enter(&mut self) -> Option<PathBuf> {
        let entry = self.entries.get(self.selected)?.clone();
        if entry.name == ".." {
            if let Some(parent) = self.dir.parent() {
                self.dir = parent.to_owned();
                self.read();
            }
            return None;
        }
        let path = self.dir.join(&entry.name);
        if entry.dir {
            self.dir = path;
            self.read();
            None
        } else {
            Some(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_first_then_files_and_enter_walks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("live")).unwrap();
        std::fs::write(root.path().join("b.ts"), b"12").unwrap();
        std::fs::write(root.path().join("a.ts"), b"1").unwrap();
        std::fs::write(root.path().join(".hidden"), b"").unwrap();
        std::fs::write(root.path().join("live/seg0.ts"), b"xyz").unwrap();
        let mut p = Picker::open(root.path());
        let names: Vec<_> = p.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["..", "live", "a.ts", "b.ts"]);
        p.move_by(1);
        assert_eq!(p.enter(), None);
        assert_eq!(p.dir, root.path().join("live"));
        p.move_by(1);
        assert_eq!(p.enter(), Some(root.path().join("live/seg0.ts")));
        p.move_by(-5);
        assert_eq!(p.enter(), None);
        assert_eq!(p.dir, root.path());
    }

    #[test]
    fn an_unreadable_folder_says_why() {
        let p = Picker::open(Path::new("/nonexistent/dir"));
        assert!(p.error.as_deref().unwrap().contains("/nonexistent/dir"));
    }
}
