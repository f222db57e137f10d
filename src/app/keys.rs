//! The Gemini API key saved by `configure_gemini_token {persist: true}`:
//! where it lives, how it is written (0600, atomically) and read (refused
//! when others can read it).

use std::path::{Path, PathBuf};

use crate::secret::Secret;

/// Where a persisted API key lives: `$XDG_CONFIG_HOME/nano-banana-mcp/gemini-api-key`.
pub fn key_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("nano-banana-mcp").join("gemini-api-key"))
}

/// The key to use: the configured one, else the saved one.
pub fn resolve(configured: Option<&Secret>) -> Option<Secret> {
    configured
        .filter(|k| !k.is_empty())
        .cloned()
        .or_else(|| key_file().and_then(|p| load_persisted_key(&p)))
}

/// Save the key readable by the owner only (0600), replacing atomically.
pub fn persist_key(path: &Path, key: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Read a persisted key, refusing files others can read.
pub fn load_persisted_key(path: &Path) -> Option<Secret> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "ignoring saved API key: the file is readable by others (chmod 600 it)");
        return None;
    }
    let key = std::fs::read_to_string(path).ok()?;
    let key = key.trim();
    (!key.is_empty()).then(|| Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("a/key");
        persist_key(&p, "AIzaTEST").expect("persist");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_persisted_key(&p).expect("load").expose(), "AIzaTEST");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(load_persisted_key(&p).is_none());
    }
}
