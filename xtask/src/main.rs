//! `cargo xtask`: build chores run on the build machine.
//!
//! - `assets DIR`: man pages, completion scripts and the packaged systemd units
//!   ([`assets`]);
//! - `deb [--target TRIPLE]`: the `.deb`, built and then checked ([`deb`]);
//! - `native`: every crate that compiles native code is on the allow-list that
//!   says why it cross-compiles ([`native`]).

mod assets;
mod deb;
mod native;

use std::path::{Path, PathBuf};

use anyhow::bail;

const USAGE: &str = "usage: cargo xtask assets DIR | deb [--target TRIPLE] | native
  assets DIR              man pages into DIR/man, completion scripts into DIR/completions,
                          the packaged systemd units into DIR/systemd
  deb [--target TRIPLE]   build target/debian/dandelion_<version>-1_<arch>.deb and check it
                          (needs cargo-deb; a cross build: docs/operations.md, \"Packages\")
  native                  check that every crate with native code is on the allow-list";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["assets", dir] => {
            for path in assets::assets(Path::new(dir))? {
                println!("{}", path.display());
            }
            Ok(())
        }
        ["deb"] => deb::build(&root(), None),
        ["deb", "--target", target] => deb::build(&root(), Some(target)),
        ["native"] => native::check(&root()),
        _ => bail!("{USAGE}"),
    }
}

/// The workspace's root directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
