//! `cargo xtask native`: every crate in the tree that compiles native code is
//! one we know cross-compiles for the boxes' boards, and why.
//!
//! A crate compiles C or assembly through a build-dependency on a build tool
//! (`cc` above all). Each such crate needs the target's C toolchain in a cross
//! build; a new one can need more (a system library, cmake, a code generator)
//! and would break the aarch64 build docs/operations.md describes without
//! anyone noticing here. So a new one fails this check until it is added to
//! [`ALLOWED`] with the reason it cross-compiles.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Crates allowed to build native code, and why each cross-compiles.
pub const ALLOWED: &[(&str, &str)] = &[
    (
        "ring",
        "rustls' cryptography: C and assembly built by `cc`, which uses \
         CC_aarch64_unknown_linux_gnu (aarch64-linux-gnu-gcc); ring ships \
         aarch64 Linux assembly and is built that way by its own CI",
    ),
    (
        "libmimalloc-sys",
        "mimalloc's C, built by `cc` with the same cross compiler; only the \
         `dandelion` binary links it (the default `mimalloc` feature), never \
         `dandelion-box`",
    ),
];

/// Build tools whose users compile or link native code.
const TOOLS: &[&str] = &["cc", "cmake", "pkg-config", "bindgen", "nasm-rs", "vcpkg"];

/// Targets the release is built for: the servers' and the boxes'.
const TARGETS: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut found: Vec<String> = Vec::new();
    for target in TARGETS {
        for tool in TOOLS {
            for user in users(root, tool, target)? {
                if !found.contains(&user) {
                    found.push(user);
                }
            }
        }
    }
    found.sort();
    let unknown: Vec<&String> = found
        .iter()
        .filter(|c| !ALLOWED.iter().any(|(name, _)| name == c))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "crates that build native code and are not on the allow-list in xtask/src/native.rs: {}\n\
             Check that each cross-compiles for aarch64-unknown-linux-gnu (docs/operations.md, \
             \"Packages\"), then add it with the reason.",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (name, why) in ALLOWED {
        let state = if found.iter().any(|f| f == name) {
            "in the tree"
        } else {
            "allowed, not in the tree"
        };
        eprintln!("{name} ({state}): {why}");
    }
    Ok(())
}

/// The crates that have `tool` as a direct build-dependency when building for
/// `target`; none when `tool` is not in the tree.
fn users(root: &Path, tool: &str, target: &str) -> anyhow::Result<Vec<String>> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args([
            "tree",
            "--workspace",
            "--locked",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args(["--depth", "1", "--target", target, "-i", tool])
        .output()
        .context("cannot run cargo tree")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("did not match any packages") {
            return Ok(Vec::new());
        }
        bail!("cargo tree -i {tool} --target {target} failed: {stderr}");
    }
    let found = dependents(&String::from_utf8_lossy(&out.stdout));
    // The tool is in the tree, so something uses it: an empty answer means
    // the query went wrong, and passing on it would check nothing.
    if found.is_empty() {
        bail!("cargo tree -i {tool} --target {target} named no crate using it: {stderr}");
    }
    Ok(found)
}

/// The crate names of an inverted `cargo tree --prefix none --depth 1`: every
/// line after the first (the tool itself), deduplicated.
fn dependents(tree: &str) -> Vec<String> {
    let mut names: Vec<String> = tree
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_users_are_the_lines_after_the_tool() {
        let tree = "cc v1.11.3\nlibmimalloc-sys v0.1.49\nring v0.17.14\nring v0.17.14\n";
        assert_eq!(dependents(tree), vec!["libmimalloc-sys", "ring"]);
        assert!(dependents("cc v1.11.3\n").is_empty());
    }
}
