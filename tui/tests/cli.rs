//! `dandelion-console --help` already documents how operators will attach.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn help_names_urls_token_and_theme() {
    let out = Command::new(env!("CARGO_BIN_EXE_dandelion-console"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "[URL]...",
        "--token",
        "--token-file",
        "--theme",
        "DANDELION_ADMIN_TOKEN",
        "? help, q quit",
    ] {
        assert!(help.contains(needle), "`{needle}` missing:\n{help}");
    }
}
