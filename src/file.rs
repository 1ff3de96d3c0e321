//! A file the daemon was pointed at (TLS material, a CA bundle, CRLs, secrets, config, its
//! own state), read so that the file cannot cost more than an error: opened without
//! blocking, refused unless it is a regular file, and read up to a cap that each caller
//! documents. A FIFO, a device, a symlink to `/dev/zero` or a gigabyte-sized file is
//! refused with its path and the reason, never a hung thread or a gigabyte of memory.
//!
//! Symlinks are followed (Kubernetes' atomic writer and certbot's `live/` are links); what
//! they point at is what is judged.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Certificates, keys and the files holding both: a chain of a few certificates is a few
/// KiB.
pub const PEM_MAX: u64 = 1 << 20;
/// A CA bundle (the Mozilla bundle is ~220 KiB) or a certificate revocation list.
pub const BUNDLE_MAX: u64 = 16 << 20;
/// A config file or drop-in.
pub const CONFIG_MAX: u64 = 1 << 20;
/// A secret: a token, a key, a password.
pub const SECRET_MAX: u64 = 1 << 20;

/// Opens `path` for reading without blocking (a FIFO with no writer would hold the open
/// forever) and checks that it is a regular file; its handle and size.
pub fn open(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = match meta.file_type() {
            t if t.is_dir() => "a directory",
            t if std::os::unix::fs::FileTypeExt::is_fifo(&t) => "a FIFO",
            t if std::os::unix::fs::FileTypeExt::is_char_device(&t) => "a character device",
            t if std::os::unix::fs::FileTypeExt::is_block_device(&t) => "a block device",
            t if std::os::unix::fs::FileTypeExt::is_socket(&t) => "a socket",
            _ => "not a regular file",
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind}, not a regular file"),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads what `file` holds (of `size` bytes, as [`open`] said), refusing more than `cap`
/// bytes, also when the file grows while it is read.
pub fn read_opened(mut file: File, size: u64, cap: u64) -> io::Result<Vec<u8>> {
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {cap} bytes allowed"),
        )
    };
    if size > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.by_ref().take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads the regular file `path`, of at most `cap` bytes.
pub fn read(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let (file, size) = open(path)?;
    read_opened(file, size, cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO, a device, a symlink to one and a directory are refused at once, saying what
    /// they are; a file over the cap is refused; a symlink to a regular file is read.
    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let started = std::time::Instant::now();
        for (path, said) in [
            (fifo.as_path(), "a FIFO"),
            (zero.as_path(), "a character device"),
            (Path::new("/dev/null"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            let err = read(path, 1024).unwrap_err();
            assert!(
                err.to_string().starts_with(said),
                "{}: {err}",
                path.display()
            );
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "nothing blocked"
        );

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        let err = read(&big, 1024).unwrap_err();
        assert!(
            err.to_string().contains("larger than the 1024 bytes"),
            "{err}"
        );
        assert_eq!(read(&big, 2048).unwrap().len(), 2048);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&big, &link).unwrap();
        assert_eq!(read(&link, 4096).unwrap().len(), 2048);
    }
}
