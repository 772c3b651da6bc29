//! `cargo xtask deb`: the Debian package, built with cargo-deb from the
//! `[package.metadata.deb]` of daemons/Cargo.toml, then checked with
//! `dpkg-deb` for what an operator relies on: the binaries, the units as
//! installed, the sysusers.d file, the configs as conffiles, man pages,
//! completions, and the maintainer script that creates the user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Every file the package must install (paths as `dpkg-deb --contents` shows
/// them, without the leading `.`).
const FILES: &[&str] = &[
    "/usr/bin/dandelion",
    "/usr/bin/dandelion-box",
    "/usr/bin/dandelion-console",
    "/etc/dandelion/entrance.toml",
    "/etc/dandelion/box.toml",
    "/etc/dandelion/publisher.toml",
    "/usr/lib/systemd/system/dandelion-entrance.service",
    "/usr/lib/systemd/system/dandelion-box.service",
    "/usr/lib/systemd/system/dandelion-publisher.service",
    "/usr/lib/sysusers.d/dandelion.conf",
    "/usr/share/man/man1/dandelion.1.gz",
    "/usr/share/man/man1/dandelion-push.1.gz",
    "/usr/share/man/man1/dandelion-box.1.gz",
    "/usr/share/man/man1/dandelion-console.1.gz",
    "/usr/share/bash-completion/completions/dandelion",
    "/usr/share/zsh/vendor-completions/_dandelion",
    "/usr/share/fish/vendor_completions.d/dandelion.fish",
    "/usr/share/doc/dandelion/operations.md",
    "/usr/share/doc/dandelion/copyright",
];

/// The configs an upgrade must not overwrite once an operator edited them.
const CONFFILES: &[&str] = &[
    "/etc/dandelion/entrance.toml",
    "/etc/dandelion/box.toml",
    "/etc/dandelion/publisher.toml",
];

/// Builds the package for `target` (the host when `None`) and checks it.
pub fn build(root: &Path, target: Option<&str>) -> anyhow::Result<()> {
    // Not under target/release/: cargo-deb takes what is there for build
    // output, which it neither globs nor compresses (man pages must be
    // gzipped). It warns that these paths "will not be built": they are not.
    let assets = root.join("target/assets");
    crate::assets::assets(&assets)?;
    eprintln!("== assets in {}", assets.display());
    let with_target = |c: &mut Command| {
        if let Some(t) = target {
            c.args(["--target", t]);
        }
    };
    // cargo-deb builds the binaries of the package it packages; the console
    // is another package of the workspace.
    let mut console = cargo(root);
    console.args(["build", "--release", "--locked", "-p", "dandelion-console"]);
    with_target(&mut console);
    run(&mut console)?;
    let mut deb = cargo(root);
    deb.args(["deb", "--locked", "-p", "dandelion-daemons", "--output"])
        .arg(root.join("target/debian"));
    with_target(&mut deb);
    let out =
        output(&mut deb).context("is cargo-deb installed? cargo install cargo-deb --locked")?;
    let path = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb did not say which .deb it wrote")?;
    check(&path)?;
    println!("{}", path.display());
    Ok(())
}

/// Checks a built package with `dpkg-deb`; every shortfall in one error.
pub fn check(deb: &Path) -> anyhow::Result<()> {
    let dpkg = |args: &[&str]| output(Command::new("dpkg-deb").args(args).arg(deb));
    let mut wrong = missing(FILES, &dpkg(&["--contents"])?);
    let info = |member: &str| output(Command::new("dpkg-deb").arg("--info").arg(deb).arg(member));
    match info("conffiles") {
        Ok(listed) => {
            for f in CONFFILES {
                if !listed.lines().any(|l| l.trim() == *f) {
                    wrong.push(format!("{f} is not a conffile"));
                }
            }
        }
        Err(e) => wrong.push(format!("no conffiles: {e:#}")),
    }
    match info("postinst") {
        Ok(script) if script.contains("systemd-sysusers") => {}
        Ok(_) => wrong.push("the postinst does not create the dandelion user".into()),
        Err(e) => wrong.push(format!("no postinst: {e:#}")),
    }
    // The units as installed start the binaries where the package puts them.
    let extracted = deb.with_extension("contents");
    let _ = std::fs::remove_dir_all(&extracted);
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&extracted))?;
    for role in ["entrance", "box", "publisher"] {
        let unit = extracted.join(format!("usr/lib/systemd/system/dandelion-{role}.service"));
        let text = std::fs::read_to_string(&unit).unwrap_or_default();
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or("");
        let binary = exec
            .trim_start_matches("ExecStart=")
            .split_whitespace()
            .next()
            .unwrap_or("");
        let exists = binary
            .strip_prefix('/')
            .is_some_and(|b| extracted.join(b).is_file());
        if !exists {
            wrong.push(format!(
                "dandelion-{role}.service starts `{binary}`, which the package does not install"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&extracted);
    let fields = output(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Depends"]),
    )?;
    if !fields.contains("Package: dandelion") {
        wrong.push(format!("not the dandelion package: {fields}"));
    }
    if !wrong.is_empty() {
        bail!("{} is not right:\n  {}", deb.display(), wrong.join("\n  "));
    }
    eprintln!(
        "== {}: {} files, conffiles and units checked",
        deb.display(),
        FILES.len()
    );
    Ok(())
}

/// What of `expected` a `dpkg-deb --contents` listing lacks.
fn missing(expected: &[&str], listing: &str) -> Vec<String> {
    let present: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    expected
        .iter()
        .filter(|f| !present.contains(f))
        .map(|f| format!("{f} is missing"))
        .collect()
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

fn run(c: &mut Command) -> anyhow::Result<()> {
    let status = c.status().with_context(|| format!("cannot run {c:?}"))?;
    if !status.success() {
        bail!("{c:?} failed ({status})");
    }
    Ok(())
}

/// The command's stdout; its stderr goes to ours.
fn output(c: &mut Command) -> anyhow::Result<String> {
    let out = c
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_read_by_its_last_column() {
        let listing = "\
drwxr-xr-x 0/0               0 2026-12-07 15:00 ./usr/bin/
-rwxr-xr-x 0/0         9000000 2026-12-07 15:00 ./usr/bin/dandelion
-rw-r--r-- 0/0             300 2026-12-07 15:00 ./etc/dandelion/box.toml
";
        assert_eq!(
            missing(
                &[
                    "/usr/bin/dandelion",
                    "/etc/dandelion/box.toml",
                    "/usr/bin/dandelion-box"
                ],
                listing
            ),
            vec!["/usr/bin/dandelion-box is missing".to_owned()]
        );
    }
}
