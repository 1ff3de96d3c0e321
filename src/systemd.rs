//! The systemd service protocol: sd_notify messages and the watchdog.
//!
//! Notifications are best effort: when `$NOTIFY_SOCKET` is absent or unreachable the daemon
//! runs as it would anywhere else, so a failed send is logged at debug level and dropped.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

/// Sends `state` (e.g. `READY=1\nSTATUS=serving`) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send(&path, state) {
        tracing::debug!(reason = %err, "sd_notify failed");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Half the watchdog period systemd asked for, when it asked this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog from a task on the async runtime, so a wedged runtime stops the pings
/// and systemd restarts the daemon.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    tracing::debug!(
        interval_ms = interval.as_millis() as u64,
        "watchdog enabled"
    );
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            notify("WATCHDOG=1");
        }
    }))
}
