//! Real processes of the workspace's binaries, killed and reaped when dropped so a
//! failing test never leaves a daemon behind.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Path of a workspace binary (`dandelion`, `dandelion-console`) in the target
/// directory the running test was built into.
///
/// `cargo test --workspace` builds every package's binaries before any test runs,
/// because each binary's package has integration tests of its own; this only has
/// to find them next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot locate the test executable: {e}"));
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the whole suite with `cargo test --workspace`",
        path.display()
    );
    path
}

/// Runs a binary to completion and returns its output.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// A running child process, killed on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Running { child }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
