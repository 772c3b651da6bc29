//! Small secret files in a daemon's data directory: key seeds and tokens.
//!
//! They are created once, atomically and with mode 0600, and never overwritten:
//! a daemon's identity and its operators' tokens must survive restarts, and two
//! daemons started at once on the same directory must end up agreeing on one file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File mode of every secret we write.
pub const SECRET_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot create {path}: {cause}")]
    Create {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is empty or not valid UTF-8; move it away to create a new one")]
    Garbled { path: PathBuf },
    /// A file the operator provides (nothing here creates it).
    #[error("{path} is empty or not valid UTF-8: write the token into it")]
    Unusable { path: PathBuf },
    /// A file the operator provides holds a token too short to trust.
    #[error("{path}: {reason}")]
    Weak { path: PathBuf, reason: String },
    #[error("cannot gather randomness from the operating system: {0}")]
    Random(String),
}

/// The admin token file in a daemon's data directory: what the console and the
/// operator commands read when they run on the daemon's machine.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Random bytes from the operating system, as lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String, SecretError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// From now on, whatever this process creates is its user's alone: files 0600,
/// directories 0700 (umask 077), wherever the daemon runs — under systemd's
/// `UMask=` or not. Keys, tokens, logs (box addresses, viewer IPs) and stored
/// files are nobody else's business on a shared machine.
pub fn private_from_now() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Narrows `path` to `mode` when group or others may read it, saying so: what
/// an earlier run (or a umask of 022) left open is closed at start.
pub fn narrow(path: &Path, mode: u32) {
    let Ok(meta) = fs::metadata(path) else { return };
    let current = meta.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{current:o}"), "readable by others; setting mode {mode:o}");
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    }
}

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(buf)
}

/// Reads the secret at `path`, creating it with `make()` first if it does not exist.
/// Returns the trimmed contents and whether it was created now.
///
/// Creation writes a temporary file and hard-links it into place: `link` fails if
/// the name exists, so a concurrent creator loses cleanly and both read the winner.
pub fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, SecretError>,
) -> Result<(String, bool), SecretError> {
    match read_secret(path) {
        Ok(value) => return Ok((value, false)),
        Err(SecretError::Read { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = make()?;
    let create_err = |cause| SecretError::Create {
        path: path.to_owned(),
        cause,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(SECRET_MODE)
            .open(&tmp)?;
        writeln!(f, "{value}")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(create_err(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                // Make the new name itself durable, not just the file's bytes.
                let _ = fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok((value, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_secret(path).map(|v| (v, false))
        }
        Err(e) => Err(create_err(e)),
    }
}

/// Reads a token file the operator provides (a join or admin token): it must
/// exist, and hold a token [`crate::tokens::weakness`] finds no fault with.
pub fn read_token_file(path: &Path) -> Result<String, SecretError> {
    let token = read_secret(path).map_err(|e| match e {
        SecretError::Garbled { path } => SecretError::Unusable { path },
        other => other,
    })?;
    match crate::tokens::weakness(&token) {
        Some(reason) => Err(SecretError::Weak {
            path: path.to_owned(),
            reason,
        }),
        None => Ok(token),
    }
}

/// Reads an existing secret file: trimmed, not empty, valid UTF-8.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    let raw = fs::read(path).map_err(|cause| SecretError::Read {
        path: path.to_owned(),
        cause,
    })?;
    tighten_mode(path);
    let text = String::from_utf8(raw).map_err(|_| SecretError::Garbled {
        path: path.to_owned(),
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretError::Garbled {
            path: path.to_owned(),
        });
    }
    Ok(value.to_owned())
}

/// A secret readable by others is a leak waiting to happen (a copied data directory,
/// a umask of 022): narrow it rather than refuse to start, and say so.
fn tighten_mode(path: &Path) {
    narrow(path, SECRET_MODE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_mode_600_and_then_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (first, created) = load_or_create(&path, || Ok("s3cret".into())).unwrap();
        assert!(created);
        assert_eq!(first, "s3cret");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create(&path, || Ok("other".into())).unwrap();
        assert!(!created);
        assert_eq!(again, "s3cret");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "x\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        load_or_create(&path, || Ok("y".into())).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn empty_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "\n").unwrap();
        let err = load_or_create(&path, || Ok("y".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is empty or not valid UTF-8; move it away to create a new one",
                path.display()
            )
        );
    }

    #[test]
    fn random_hex_is_random() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex(16).unwrap());
    }
}
