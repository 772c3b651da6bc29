//! `cargo xtask assets DIR`: the man pages and shell completion scripts of
//! `dandelion` and `dandelion-box`, made from their command-line definitions on
//! the build machine. A cross build for the boxes' ARM boards gets them too,
//! since the target's binary cannot run where it is built; the `.deb` installs
//! them from here.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::CommandFactory;
use dandelion_daemons::cli::{BoxCli, Cli, Shell, write_completions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["assets", dir] => {
            for path in assets(Path::new(dir))? {
                println!("{}", path.display());
            }
            Ok(())
        }
        _ => bail!(
            "usage: cargo xtask assets DIR   (man pages into DIR/man, completion scripts into DIR/completions)"
        ),
    }
}

/// Writes every man page (one per command and subcommand, `dandelion-push.1`)
/// and the completion scripts under `dir`, under the names the shells look
/// for; returns what it wrote.
fn assets(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // `dandelion box` and the `dandelion-box` binary are one daemon with the
    // same flags: the binary's page, written last, is `dandelion-box(1)`.
    for command in [Cli::command(), BoxCli::command()] {
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
    let mut written = Vec::new();
    for d in [&man, &completions] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(d)
            .with_context(|| format!("cannot read {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        written.extend(files);
    }
    Ok(written)
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
        assert!(written.len() > 15, "{written:?}");
    }
}
