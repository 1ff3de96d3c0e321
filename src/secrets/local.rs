//! Secrets on the device itself: systemd credentials (`$CREDENTIALS_DIRECTORY/NAME`, what
//! `LoadCredential=` and `LoadCredentialEncrypted=` provide) and a directory of files.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::Secret;

pub fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from)
}

pub fn read_credential(name: &str) -> Result<Secret, String> {
    let dir = credentials_dir().ok_or("$CREDENTIALS_DIRECTORY is not set")?;
    // systemd makes credentials readable by the service only; no mode check needed.
    read(&dir.join(name), false)
}

/// `DIR/NAME`, refused when group or others can read it.
pub fn read_file(dir: &Path, name: &str) -> Result<Secret, String> {
    read(&dir.join(name), true)
}

fn read(path: &Path, private: bool) -> Result<Secret, String> {
    let failed = |e: std::io::Error| format!("reading {}: {e}", path.display());
    let (file, size) = crate::file::open(path).map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & 0o077 != 0 {
        return Err(format!(
            "{} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let bytes = crate::file::read_opened(file, size, crate::file::SECRET_MAX).map_err(failed)?;
    Ok(Secret::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::write_file;

    /// A secret file readable by others is refused without showing its content.
    #[test]
    fn open_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("tok"), "s3cr3t", 0o644).unwrap();
        let err = read_file(dir.path(), "tok").unwrap_err();
        assert!(
            err.contains("chmod 600") && !err.contains("s3cr3t"),
            "{err}"
        );
        write_file(&dir.path().join("tok"), "s3cr3t", 0o600).unwrap();
        assert_eq!(read_file(dir.path(), "tok").unwrap().expose(), b"s3cr3t");
    }
}
