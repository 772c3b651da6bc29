//! The files a package installs that the build machine makes: man pages and
//! completion scripts from the command-line definitions (a cross build's
//! binary cannot run where it is built, so they cannot come from it), and the
//! systemd units as the package installs them.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::CommandFactory;
use dandelion_daemons::cli::{BoxCli, Cli, Shell, write_completions};

/// Writes every man page (one per command and subcommand, `dandelion-push.1`)
/// and the completion scripts under `dir`, under the names the shells look
/// for; returns what it wrote.
pub fn assets(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // `dandelion box` and the `dandelion-box` binary are one daemon with the
    // same flags: the binary's page, written last, is `dandelion-box(1)`.
    for command in [
        Cli::command(),
        BoxCli::command(),
        dandelion_console::cli::Cli::command(),
    ] {
        clap_mangen::generate_to(command, &man)
            .with_context(|| format!("cannot write man pages into {}", man.display()))?;
    }
    for (shell, file) in [
        (Shell::Bash, "dandelion"),
        (Shell::Zsh, "_dandelion"),
        (Shell::Fish, "dandelion.fish"),
    ] {
        let path = completions.join(file);
        let mut out =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        write_completions(shell, &mut Cli::command(), "dandelion", &mut out);
    }
    let units = dir.join("systemd");
    std::fs::create_dir_all(&units)
        .with_context(|| format!("cannot create {}", units.display()))?;
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    for role in ["entrance", "box", "publisher"] {
        let name = format!("dandelion-{role}.service");
        let text = std::fs::read_to_string(from.join(&name))
            .with_context(|| format!("cannot read deploy/systemd/{name}"))?;
        std::fs::write(units.join(&name), packaged_unit(&text)?)
            .with_context(|| format!("cannot write {}", units.join(&name).display()))?;
    }
    let mut written = Vec::new();
    for d in [&man, &completions, &units] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        written.extend(files);
    }
    Ok(written)
}

/// A unit of deploy/systemd as the package installs it: the binaries are in
/// /usr/bin there, where deploy/systemd (for a hand install) says /usr/local/bin.
fn packaged_unit(text: &str) -> anyhow::Result<String> {
    const HAND: &str = "ExecStart=/usr/local/bin/";
    if !text.contains(HAND) {
        bail!("a unit in deploy/systemd no longer starts its binary from /usr/local/bin/");
    }
    Ok(text.replace(HAND, "ExecStart=/usr/bin/"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_command_gets_a_man_page_and_every_shell_a_script() {
        let dir = tempfile::tempdir().unwrap();
        let written = assets(dir.path()).unwrap();
        let man = |name: &str| std::fs::read_to_string(dir.path().join("man").join(name)).unwrap();
        let page = man("dandelion.1");
        assert!(
            page.starts_with(".ie") || page.contains(".TH dandelion 1"),
            "{page}"
        );
        for sub in ["up", "entrance", "box", "publisher", "push", "completions"] {
            let page = man(&format!("dandelion-{sub}.1"));
            assert!(page.contains(".TH"), "dandelion-{sub}.1: {page}");
        }
        assert!(man("dandelion-push.1").contains("\\-\\-replicas"));
        assert!(man("dandelion-box.1").contains(".TH"));
        let script = |name: &str| {
            std::fs::read_to_string(dir.path().join("completions").join(name)).unwrap()
        };
        assert!(script("dandelion").contains("_dandelion()"));
        assert!(script("_dandelion").starts_with("#compdef dandelion"));
        assert!(script("dandelion.fish").contains("complete -c dandelion"));
        assert!(man("dandelion-console.1").contains("\\-\\-context"));
        let unit =
            std::fs::read_to_string(dir.path().join("systemd/dandelion-box.service")).unwrap();
        assert!(
            unit.contains("\nExecStart=/usr/bin/dandelion-box "),
            "{unit}"
        );
        assert!(!unit.contains("/usr/local/"), "{unit}");
        assert!(written.len() > 15, "{written:?}");
    }
}
