//! The transport: accept loops on bound listeners, a connection cap, per-connection HTTP/2
//! (or HTTP/1.1 for the plain pages) and the per-call layer. It knows no service by name: a
//! connection hands its calls to the [`Routes`] of its listener, which the daemon builds.
//!
//! The library never binds a port itself (`Listeners::bind` is called by the binary, or
//! listeners come from systemd), so tests and socket activation hand listeners in.
//!
//! - `mod.rs`: listeners (TCP and unix), the caps of each listener, the accept loop,
//!   [`Live`] and [`Shared`], housekeeping (malloc trims, summaries of held-back lines)
//! - `handshakes.rs`: the TLS handshakes in progress, shared fairly between sources
//! - `conn.rs`: one connection: TLS, HTTP/2, A9 management, credential expiry
//! - `http1.rs`: HTTP/1.1 connections (hyper's http1) for the pages, and the bounds on them
//! - `pages.rs`: the plain pages (`GET /metrics`), on HTTP/2 and on HTTP/1.1
//! - `slots.rs`: the pages in flight, across the server, per identity and per connection
//! - `io.rs`: the stream trait object, ALPN-less sniffing, a write deadline, lingering close
//! - `authority.rs`: unix-socket requests' `:authority` (a socket path) made one h2 accepts
//! - `frames.rs`: the frames through a connection: flood limits, silence deadlines
//! - `registry.rs`: open mTLS connections and their peer chains, verified again on reload
//! - `call.rs`: the per-call layer; `body.rs`: request bodies against the memory budget

mod authority;
#[cfg(fuzzing)]
pub use authority::rewritten as authority_rewritten;
mod body;
mod call;
mod conn;
mod frames;
#[cfg(fuzzing)]
pub use frames::frame_headers;
mod handshakes;
mod http1;
mod io;
mod pages;
mod registry;
mod slots;

use std::{
    net::SocketAddr,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::PathBuf,
    sync::{Arc, atomic::AtomicUsize},
    time::Duration,
};

use rustls::server::danger::ClientCertVerifier;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{Auditor, Policy},
    config::{self, ListenAddr},
    context::{PeerAddr, Routes},
    rpc_stats::RpcStats,
    swap::Swap,
    throttle::Throttle,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets the server accepts on.
pub struct Listeners {
    /// The mutual-TLS gRPC port(s).
    pub tls: Vec<TcpListener>,
    /// Plaintext health-only listeners.
    pub plaintext: Vec<Plain>,
}

/// A plaintext health listener: TCP, or a unix socket.
pub enum Plain {
    Tcp(TcpListener),
    /// With the socket file it made, if it made one: held, never read, so the file is
    /// removed when the accept loop drops its listener.
    Unix(UnixListener, #[allow(dead_code)] Option<SocketFile>),
}

/// A unix socket file this daemon bound, removed when dropped (at stop).
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds a unix socket at `path`, mode 0660: a stale socket file (a daemon that died) is
/// replaced; a socket something still answers on, or a file that is not a socket, is not.
fn bind_unix(path: &std::path::Path) -> std::io::Result<(UnixListener, SocketFile)> {
    use std::io::{Error, ErrorKind};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "a file that is not a socket is there",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::new(
                ErrorKind::AddrInUse,
                "another process serves on it",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok((listener, file))
}

/// How many connections the kernel queues for `accept`. tokio's `bind` (mio) asks for
/// 128; a burst larger than that while the accept loop is busy overflows the queue, and
/// the kernel drops the client's final handshake ACK, which costs that client a 1 s SYN-ACK
/// retransmission (`hostile::connections::random_bytes` closed late 1 run in 3). The kernel
/// caps it at `net.core.somaxconn` (4096 on current kernels).
const BACKLOG: u32 = 1024;

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn bind_abstract(name: &str) -> std::io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

impl Listeners {
    /// Binds every configured address.
    pub async fn bind(tls: &[SocketAddr], plaintext: &[ListenAddr]) -> Result<Listeners, Error> {
        let bind_err = |addr: &dyn std::fmt::Display| {
            let addr = addr.to_string();
            move |source| Error::Bind { addr, source }
        };
        let mut listeners = Listeners {
            tls: Vec::new(),
            plaintext: Vec::new(),
        };
        for &addr in tls {
            let listener = bind_tcp(addr).map_err(bind_err(&addr))?;
            listeners.tls.push(listener);
        }
        for addr in plaintext {
            let plain = match addr {
                ListenAddr::Tcp(tcp) => Plain::Tcp(bind_tcp(*tcp).map_err(bind_err(addr))?),
                ListenAddr::Unix(path) => {
                    let (listener, file) = bind_unix(path).map_err(bind_err(addr))?;
                    Plain::Unix(listener, Some(file))
                }
                ListenAddr::UnixAbstract(name) => {
                    Plain::Unix(bind_abstract(name).map_err(bind_err(addr))?, None)
                }
            };
            listeners.plaintext.push(plain);
        }
        Ok(listeners)
    }

    /// Listeners passed by systemd: those named [`crate::systemd::HEALTH_FD_NAME`] (and every
    /// unix socket) serve plaintext health, the others mutual TLS.
    pub fn from_std(passed: Vec<crate::systemd::Passed>) -> std::io::Result<Listeners> {
        use crate::systemd::Socket;
        let mut listeners = Listeners {
            tls: Vec::new(),
            plaintext: Vec::new(),
        };
        for p in passed {
            match p.listener {
                Socket::Tcp(tcp) if p.name == crate::systemd::HEALTH_FD_NAME => {
                    listeners
                        .plaintext
                        .push(Plain::Tcp(TcpListener::from_std(tcp)?));
                }
                Socket::Tcp(tcp) => listeners.tls.push(TcpListener::from_std(tcp)?),
                // systemd made the file and removes it.
                Socket::Unix(unix) => listeners
                    .plaintext
                    .push(Plain::Unix(UnixListener::from_std(unix)?, None)),
            }
        }
        Ok(listeners)
    }

    /// The addresses actually bound (useful with port 0): the TLS ones, and the plaintext
    /// ones as the config spells them.
    pub fn addrs(&self) -> (Vec<SocketAddr>, Vec<String>) {
        let tls = self
            .tls
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let plain = self
            .plaintext
            .iter()
            .filter_map(|p| match p {
                Plain::Tcp(l) => l.local_addr().ok().map(|a| a.to_string()),
                Plain::Unix(l, _) => {
                    let addr = l.local_addr().ok()?;
                    match (addr.as_pathname(), addr.as_abstract_name()) {
                        (Some(path), _) => Some(format!("unix:{}", path.display())),
                        (_, Some(name)) => {
                            Some(format!("unix-abstract:{}", String::from_utf8_lossy(name)))
                        }
                        _ => None,
                    }
                }
            })
            .collect();
        (tls, plain)
    }

    /// Plaintext listeners on an address other hosts can reach (not loopback, not unix).
    pub fn exposed_plaintext(&self) -> Vec<SocketAddr> {
        self.plaintext
            .iter()
            .filter_map(|p| match p {
                Plain::Tcp(l) => l.local_addr().ok().filter(|a| !a.ip().is_loopback()),
                Plain::Unix(..) => None,
            })
            .collect()
    }
}

/// Everything a reload replaces, swapped in one step. A new connection reads it once for
/// its certificate, limits and routes; every call reads the policy in force.
pub struct Live {
    /// The server's certificate, key and client CA.
    pub tls: Arc<rustls::ServerConfig>,
    /// The client certificate verifier in `tls`, which open connections are checked with
    /// again after a reload.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// Who may call what.
    pub policy: Policy,
    /// `[server]`: how new connections and their calls are run. The restart-only keys in it
    /// (`max_connections`, `max_handshakes`, `tcp_keepalive`) are read once, at start.
    pub limits: config::Server,
    /// The services of the mutual-TLS listeners.
    pub routes: Arc<dyn Routes>,
    /// The services of the plaintext health listeners.
    pub health_routes: Arc<dyn Routes>,
}

/// What every connection shares.
pub struct Shared {
    pub live: Swap<Live>,
    /// Calls in flight across all connections (bounded by `server.max_calls`).
    pub in_flight: Arc<AtomicUsize>,
    pub stats: Arc<RpcStats>,
    pub shutdown: CancellationToken,
    /// Denial lines, rate-limited per identity.
    pub auditor: Arc<Auditor>,
    handshakes: Arc<handshakes::Handshakes>,
    registry: Arc<registry::Registry>,
    /// Refused handshakes, floods, full caps: one line a second at most for each.
    refusal_log: Throttle,
    flood_log: Throttle,
    cap_log: Throttle,
    tracker: TaskTracker,
    tls_slots: Arc<Semaphore>,
    plaintext_slots: Arc<Semaphore>,
    tcp_keepalive: Option<Duration>,
    /// Told when a connection ends, so freed memory goes back to the kernel.
    closed: Notify,
}

impl Shared {
    pub fn new(
        live: Live,
        plaintext_max_connections: usize,
        stats: Arc<RpcStats>,
        shutdown: CancellationToken,
    ) -> Arc<Shared> {
        let server = &live.limits;
        Arc::new(Shared {
            in_flight: Arc::new(AtomicUsize::new(0)),
            auditor: Arc::new(Auditor::new(stats.clone())),
            handshakes: handshakes::Handshakes::new(server.max_handshakes),
            registry: Arc::default(),
            refusal_log: Throttle::every(Duration::from_secs(1)),
            flood_log: Throttle::every(Duration::from_secs(10)),
            cap_log: Throttle::every(Duration::from_secs(60)),
            tls_slots: Arc::new(Semaphore::new(server.max_connections)),
            plaintext_slots: Arc::new(Semaphore::new(plaintext_max_connections)),
            tcp_keepalive: server.tcp_keepalive,
            live: Swap::new(live),
            stats,
            shutdown,
            tracker: TaskTracker::new(),
            closed: Notify::new(),
        })
    }

    /// Replaces what a reload changes: new connections get its certificate, limits and
    /// routes; calls on every connection get its policy.
    pub fn reload(&self, live: Live) {
        self.live.replace(live);
    }

    /// Verifies the client certificate of every open connection with the verifier in
    /// force (after a reload changed the client CA or the CRLs); those refused get a
    /// graceful GOAWAY. Returns how many. A signature check each: run it off the runtime.
    pub fn reverify(&self) -> usize {
        let verifier = self.live.current().verifier.clone();
        // Each connection counts itself in `credential_closes` as it closes.
        self.registry.reverify(verifier.as_ref())
    }

    /// Connections open now (TLS handshakes included).
    pub fn connections(&self) -> usize {
        self.tracker.len()
    }

    /// Says, at most once a minute, that a cap turned connections away, and counts it.
    fn refuse(&self, cap: &'static str) {
        self.stats.server.connections_refused.add(cap);
        if let Some(held) = self.cap_log.allow(cap) {
            tracing::warn!(
                cap,
                suppressed = held.total(),
                suppressed_reasons = %held,
                "connection cap reached (tls: server.max_connections, plaintext: health.plaintext_max_connections, handshakes: server.max_handshakes); closing new connections until some end"
            );
        }
    }

    /// A place under the cap of `kind`'s listeners, counted as open while held.
    fn slot(self: &Arc<Self>, kind: Kind) -> Option<Slot> {
        let slots = match kind {
            Kind::Tls => &self.tls_slots,
            Kind::Plaintext => &self.plaintext_slots,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            self.refuse(kind.name());
            return None;
        };
        kind.gauge(&self.stats)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Slot {
            _permit: permit,
            shared: self.clone(),
            kind,
        })
    }
}

/// A connection's place under its listener's cap.
struct Slot {
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kind
            .gauge(&self.shared.stats)
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.shared.closed.notify_one();
    }
}

/// Which kind of port a listener is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tls,
    Plaintext,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Tls => "tls",
            Kind::Plaintext => "plaintext",
        }
    }

    fn gauge(self, stats: &RpcStats) -> &std::sync::atomic::AtomicU64 {
        match self {
            Kind::Tls => &stats.server.tls_connections,
            Kind::Plaintext => &stats.server.plaintext_connections,
        }
    }
}

/// Accepts on every listener until shutdown is signalled, then waits for the open
/// connections to drain (each has been sent a GOAWAY) for at most `drain_timeout`.
/// Returns how many connections were still open when it gave up waiting.
pub async fn serve(listeners: Listeners, shared: Arc<Shared>, drain_timeout: Duration) -> usize {
    let mut loops = tokio::task::JoinSet::new();
    let tls = listeners
        .tls
        .into_iter()
        .map(Plain::Tcp)
        .map(|l| (l, Kind::Tls));
    let plain = listeners
        .plaintext
        .into_iter()
        .map(|l| (l, Kind::Plaintext));
    for (listener, kind) in tls.chain(plain) {
        loops.spawn(accept(listener, shared.clone(), kind));
    }
    let housekeeping = tokio::spawn(housekeeping(shared.clone()));
    while loops.join_next().await.is_some() {}
    // Every accept loop has stopped and dropped its listener.
    shared.tracker.close();
    let open = shared.tracker.len();
    if open > 0 {
        tracing::info!(connections = open, "draining open connections");
    }
    let left = match tokio::time::timeout(drain_timeout, shared.tracker.wait()).await {
        Ok(()) => 0,
        Err(_) => shared.tracker.len(),
    };
    housekeeping.abort();
    left
}

/// What the transport does besides serving, in one task:
/// - once connections have closed and none has for a second (or ten seconds have passed
///   since the first), gives freed memory back to the kernel ([`crate::malloc::trim`]), so
///   after a storm of connections RSS returns near where it was, however the daemon was
///   started;
/// - every five seconds, writes what the throttled lines held back when no later line came
///   to carry the count (an attack that stopped): refused handshakes, floods, full caps,
///   and each identity's denials.
async fn housekeeping(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    let mut trim_at: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    loop {
        let due = trim_at.map(|(quiet, latest)| quiet.min(latest));
        tokio::select! {
            _ = shared.closed.notified() => {
                let now = tokio::time::Instant::now();
                let latest = trim_at.map_or(now + Duration::from_secs(10), |(_, l)| l);
                trim_at = Some((now + Duration::from_secs(1), latest));
            }
            _ = async { tokio::time::sleep_until(due.expect("guarded")).await }, if due.is_some() => {
                trim_at = None;
                crate::malloc::trim();
            }
            _ = every.tick() => {
                for (log, what) in [
                    (&shared.refusal_log, "TLS handshakes refused"),
                    (&shared.flood_log, "HTTP/2 floods"),
                    (&shared.cap_log, "connections refused at a cap"),
                ] {
                    if let Some(held) = log.flush() {
                        tracing::info!(suppressed = held.total(), suppressed_reasons = %held, "{what}: {} more since the last line", held.total());
                    }
                }
                shared.auditor.flush();
            }
        }
    }
}

/// A connection just accepted.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

/// Accepts on one listener until shutdown. Accept errors (out of descriptors or memory)
/// back off instead of spinning.
async fn accept(listener: Plain, shared: Arc<Shared>, kind: Kind) {
    loop {
        let accepted = tokio::select! {
            accepted = async {
                match &listener {
                    Plain::Tcp(l) => l.accept().await.map(|(tcp, addr)| Accepted::Tcp(tcp, addr)),
                    Plain::Unix(l, _) => l.accept().await.map(|(unix, _)| Accepted::Unix(unix)),
                }
            } => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(reason = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = shared.slot(kind) else {
            continue;
        };
        let (io, addr): (Box<dyn io::Io>, PeerAddr) = match accepted {
            Accepted::Tcp(tcp, addr) => {
                let sock = socket2::SockRef::from(&tcp);
                let _ = sock.set_tcp_nodelay(true);
                if let Some(idle) = shared.tcp_keepalive {
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(idle)
                        .with_interval(idle / 4)
                        .with_retries(4);
                    let _ = sock.set_tcp_keepalive(&keepalive);
                }
                if let Kind::Tls = kind {
                    tls(tcp, addr, slot, &shared);
                    continue;
                }
                (Box::new(tcp), PeerAddr::Tcp(addr))
            }
            // gRPC C-core and Java clients name the socket path as the authority.
            Accepted::Unix(unix) => (Box::new(authority::Rewrite::new(unix)), PeerAddr::Unix),
        };
        let conn_shared = shared.clone();
        shared.tracker.spawn(async move {
            let _slot = slot;
            conn::serve_plaintext(io, addr, conn_shared).await
        });
    }
}

/// Finds the connection a place in the handshake table, and serves it.
fn tls(tcp: tokio::net::TcpStream, addr: SocketAddr, slot: Slot, shared: &Arc<Shared>) {
    let timeout = shared.live.current().limits.handshake_timeout;
    let handshake = match shared.handshakes.admit(addr.ip(), timeout) {
        handshakes::Admission::Admitted { slot, evicted } => {
            if evicted {
                (shared.stats.server.handshakes_evicted)
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            slot
        }
        handshakes::Admission::Refused => {
            // This source holds the most of a full table already.
            shared.refuse("handshakes");
            return;
        }
    };
    let conn_shared = shared.clone();
    shared.tracker.spawn(async move {
        let _slot = slot;
        conn::serve_tls(tcp, addr, conn_shared, handshake).await
    });
}
