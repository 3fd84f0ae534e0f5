//! The admin bearer token: read from `[gateway] admin_token_file`, or
//! generated (32 random bytes, hex) into it with mode 0600 on first start.
//! The package's postinst creates it vpcbox:vpcbox 0600 instead. An existing
//! file that its group or others can access is refused (exit 69).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::exit::Exit;

pub fn load_or_create(path: &Path) -> Result<Arc<str>, Exit> {
    let unavailable =
        |why: String| Exit::unavailable(format!("admin token file '{}' {why}", path.display()));
    if let Some(why) = crate::secret::too_open(path) {
        return Err(unavailable(why));
    }
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 16 => return Ok(Arc::from(t.trim())),
        Ok(_) => {
            return Err(unavailable(
                "holds no token of at least 16 characters".into(),
            ))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(unavailable(format!("cannot be read: {e}")))
        }
        Err(_) => {}
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| unavailable(format!("cannot be generated: getrandom: {e}")))?;
    let token = hex::encode(raw);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot be created: {e}")))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()))
        .map_err(|e| unavailable(format!("cannot be created: {e}")))?;
    tracing::info!(path = %path.display(), "generated a new admin token");
    Ok(Arc::from(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let t1 = load_or_create(&path).unwrap();
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&path).unwrap(), t1);
        std::fs::write(&path, "short").unwrap();
        assert_eq!(
            load_or_create(&path).unwrap_err().code,
            crate::exit::UNAVAILABLE
        );
    }
}
