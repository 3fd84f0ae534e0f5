//! The admin token: read from `[gateway] admin_token_file`, or created there
//! (32 random bytes, hex, mode 0600) on first start so a development run
//! is never left without authentication. Packaged installs generate it at
//! install time; this only fills the gap when the file is absent.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin token file '{path}' cannot be read: {reason}")]
    Read { path: String, reason: String },
    #[error("admin token file '{path}' cannot be created: {reason}")]
    Create { path: String, reason: String },
    #[error("admin token file '{path}' is empty")]
    Empty { path: String },
}

/// Reads the token (surrounding whitespace trimmed), creating the file
/// with a fresh random token if it does not exist. Blocking; call at start.
pub fn load_or_create(path: &Path) -> Result<Arc<str>, TokenError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(TokenError::Empty { path: shown }),
        Ok(text) => Ok(Arc::from(text.trim())),
        Err(e) if e.kind() == ErrorKind::NotFound => create(path),
        Err(e) => Err(TokenError::Read {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

fn create(path: &Path) -> Result<Arc<str>, TokenError> {
    let err = |e: std::io::Error| TokenError::Create {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let token = random_hex(32).map_err(err)?;
    // create_new: never clobber a token another process just wrote.
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return load_or_create(path),
        Err(e) => return Err(err(e)),
    };
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    tracing::info!(path = %path.display(), "created a new admin token");
    Ok(Arc::from(token.as_str()))
}

fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_then_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let a = load_or_create(&path).unwrap();
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap(), a);
        std::fs::write(&path, "  given \n").unwrap();
        assert_eq!(&*load_or_create(&path).unwrap(), "given");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(TokenError::Empty { .. })
        ));
    }
}
