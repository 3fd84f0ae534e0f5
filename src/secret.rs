//! Secrets on disk (the admin token, the TLS key) must be private to their
//! owner: like ssh with a private key, vpcbox refuses to start with one that
//! its group or others can access, rather than run with a secret that leaks.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why the existing file at `path` is too open, if it is: the mode has a
/// group or other bit set. Missing files are not this check's concern.
pub fn too_open(path: &Path) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "has mode {mode:04o}: its group or others can access it; \
             make it private to its owner (chmod 600)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_or_other_bits_are_too_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "x").unwrap();
        for (mode, open) in [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o604, true),
            (0o620, true),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(too_open(&p).is_some(), open, "{mode:o}");
        }
        assert!(too_open(&p).unwrap().contains("mode 0620"));
        assert_eq!(too_open(&dir.path().join("none")), None);
    }
}
