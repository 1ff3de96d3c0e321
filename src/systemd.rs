//! The systemd service protocol: sd_notify messages, the watchdog, and socket activation.
//!
//! Notifications are best effort: when `$NOTIFY_SOCKET` is absent or unreachable the daemon
//! runs as it would anywhere else, so a failed send is logged at debug level and dropped.
//!
//! Why not the `sd-notify` crate: its 0.5.0 `notify` connects to `$NOTIFY_SOCKET` as a
//! path, so an abstract address (`@name`, which systemd itself hands out in containers
//! and to `systemd-run --user` services) fails, and readiness would never be said. The
//! protocol is one datagram of `KEY=value` lines, so the send below is the whole of it;
//! the message's text is ours and nothing here parses outside input.

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

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The name a socket unit gives (`FileDescriptorName=health`) to a plaintext health listener;
/// every other passed socket is a mutual-TLS gRPC listener.
pub const HEALTH_FD_NAME: &str = "health";

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("$LISTEN_FDS is `{0}`, not a number of sockets")]
    Count(String),
    #[error("socket {fd} passed by systemd is not a listening stream socket ({reason})")]
    NotListener { fd: i32, reason: String },
}

/// A listening socket passed by systemd: TCP, or (for the plaintext health listener) unix.
#[derive(Debug)]
pub enum Socket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// A listener passed by systemd socket activation.
#[derive(Debug)]
pub struct Passed {
    pub listener: Socket,
    /// Its `FileDescriptorName=`, or "unknown".
    pub name: String,
}

/// The listeners systemd passed (`$LISTEN_FDS`, for this process per `$LISTEN_PID`);
/// empty when the daemon was not socket-activated.
pub fn listeners() -> Result<Vec<Passed>, ActivationError> {
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let Some(count) = std::env::var("LISTEN_FDS").ok().filter(|_| pid_matches) else {
        return Ok(Vec::new());
    };
    let count: i32 = count
        .parse()
        .ok()
        .filter(|n| (0..1024).contains(n))
        .ok_or(ActivationError::Count(count))?;
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|fd| {
            let name = names.next().filter(|n| !n.is_empty()).unwrap_or("unknown");
            Ok(Passed {
                listener: adopt(fd)?,
                name: name.to_string(),
            })
        })
        .collect()
}

/// Takes ownership of a descriptor systemd passed and checks it is a listening stream
/// socket, TCP or unix.
#[allow(unsafe_code)]
fn adopt(fd: i32) -> Result<Socket, ActivationError> {
    use std::os::fd::FromRawFd;
    let bad = |reason: String| ActivationError::NotListener { fd, reason };
    // SAFETY: systemd passes descriptors LISTEN_FDS_START..+LISTEN_FDS to this process (we
    // checked LISTEN_PID) and nothing else in the process owns them; each is adopted once.
    let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
    let kind = socket.r#type().map_err(|e| bad(e.to_string()))?;
    let listening = socket.is_listener().map_err(|e| bad(e.to_string()))?;
    let domain = socket.domain().map_err(|e| bad(e.to_string()))?;
    let unix = domain == socket2::Domain::UNIX;
    let inet = domain == socket2::Domain::IPV4 || domain == socket2::Domain::IPV6;
    if kind != socket2::Type::STREAM || !listening || !(inet || unix) {
        return Err(bad(
            "a socket unit needs ListenStream= with an IP address and port, or a unix socket path"
                .into(),
        ));
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| bad(e.to_string()))?;
    // systemd passes them inheritable; no child of ours (the statfs worker) should hold a
    // listener after the daemon is gone.
    socket.set_cloexec(true).map_err(|e| bad(e.to_string()))?;
    socket.set_cloexec(true).map_err(|e| bad(e.to_string()))?;
    Ok(if unix {
        Socket::Unix(socket.into())
    } else {
        Socket::Tcp(socket.into())
    })
}
