//! Files that are not what a file should be, where the daemon reads one: a FIFO, a device
//! behind a symlink, a file far over its size cap. Each is refused with its path and why:
//! exit 78 at start, a rejected reload with the running material kept; nothing blocks, and
//! nothing is read past the cap.

use std::{path::Path, time::Duration};

use crate::support::{TestDaemon, TestPki, run_vitalsd, write_config};

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}

/// A client CA, a drop-in or a secret that is a FIFO, a symlink to `/dev/zero`, or 64 MiB
/// of text: the daemon exits 78 (the config points at a wrong file) within seconds, naming
/// the file and what it is.
#[tokio::test]
async fn bad_files_at_start_exit_with_the_reason() {
    let pki = TestPki::new();
    let scratch = tempfile::tempdir().unwrap();
    let fifo = scratch.path().join("ca.fifo");
    mkfifo(&fifo);
    let zero = scratch.path().join("ca.zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let huge = scratch.path().join("ca.huge");
    std::fs::write(&huge, vec![b'A'; 64 << 20]).unwrap();
    for (path, said) in [
        (&fifo, "a FIFO, not a regular file"),
        (&zero, "a character device, not a regular file"),
        (&huge, "larger than the 16777216 bytes allowed"),
    ] {
        let dir = write_config(
            &pki,
            &format!("[tls]\nclient_ca = \"{}\"\n", path.display()),
        );
        let config = dir.path().join("vitalsd.toml");
        let started = std::time::Instant::now();
        let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
        assert_eq!(code, Some(78), "{out}");
        assert!(
            out.contains(&path.display().to_string()) && out.contains(said),
            "{said}: {out}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    let dir = write_config(&pki, "");
    mkfifo(&dir.path().join("vitalsd.d/60-fifo.toml"));
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("60-fifo.toml: a FIFO, not a regular file"),
        "{out}"
    );

    let secrets = tempfile::tempdir().unwrap();
    mkfifo(&secrets.path().join("tls_key"));
    let dir = write_config(
        &pki,
        &format!(
            "[secrets]\nstartup_timeout = \"2s\"\n[tls]\nkey = \"secret:tls_key\"\n[[secrets.sources]]\nkind = \"file\"\ndir = \"{}\"\n",
            secrets.path().display()
        ),
    );
    let config = dir.path().join("vitalsd.toml");
    let (code, out) = run_vitalsd(&["--config", config.to_str().unwrap()], &[], dir.path());
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("a FIFO, not a regular file"), "{out}");
}

/// A reload pointing the client CA at a FIFO, then at `/dev/zero`, is rejected with the
/// path and why, the running CA keeps serving, a good reload afterwards applies, and SIGTERM
/// still stops the daemon promptly.
#[tokio::test]
async fn bad_files_at_reload_keep_the_running_material() {
    let daemon = TestDaemon::start("").await;
    let scratch = tempfile::tempdir().unwrap();
    let fifo = scratch.path().join("ca.fifo");
    mkfifo(&fifo);
    let zero = scratch.path().join("ca.zero");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (n, path) in [&fifo, &zero].into_iter().enumerate() {
        daemon.rewrite_dropin(&format!("[tls]\nclient_ca = \"{}\"\n", path.display()));
        daemon.signal("HUP");
        daemon
            .wait_for_log(|l| {
                l.contains("reload rejected") && l.contains(&path.display().to_string())
            })
            .await;
        let rejected = daemon
            .logs()
            .iter()
            .filter(|l| l.contains("reload rejected"))
            .count();
        assert_eq!(rejected, n + 1);
        daemon.echo_ok().await;
    }
    daemon.rewrite_dropin("[log]\nlevel = \"debug\"\n");
    daemon.signal("HUP");
    daemon
        .wait_for_log(|l| l.contains("reloaded the config"))
        .await;
    daemon.echo_ok().await;
    let mut daemon = daemon;
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}
