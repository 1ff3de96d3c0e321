//! The transport: accept loops on bound listeners, a connection cap, per-connection HTTP/2
//! (or HTTP/1.1 for the plain pages, http1.rs) and the per-call layer. It knows no service by name: a connection hands its calls to
//! the [`Routes`] of its listener, which the daemon builds.
//!
//! The library never binds a port itself (`Listeners::bind` is called by the binary, or
//! listeners come from systemd), so tests and socket activation hand listeners in.

mod call;
mod conn;
mod http1;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{auth::Policy, config, context::Routes, rpc_stats::RpcStats, swap::Swap};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets the server accepts on.
pub struct Listeners {
    /// The mutual-TLS gRPC port(s).
    pub tls: Vec<TcpListener>,
    /// Plaintext health-only port(s).
    pub plaintext: Vec<TcpListener>,
}

impl Listeners {
    /// Binds every configured address.
    pub async fn bind(tls: &[SocketAddr], plaintext: &[SocketAddr]) -> Result<Listeners, Error> {
        async fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, Error> {
            let mut listeners = Vec::new();
            for &addr in addrs {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind { addr, source })?;
                listeners.push(listener);
            }
            Ok(listeners)
        }
        Ok(Listeners {
            tls: bind_all(tls).await?,
            plaintext: bind_all(plaintext).await?,
        })
    }

    /// Listeners passed by systemd: those named [`systemd::HEALTH_FD_NAME`] serve plaintext
    /// health, the others mutual TLS.
    pub fn from_std(passed: Vec<crate::systemd::Passed>) -> std::io::Result<Listeners> {
        let mut listeners = Listeners {
            tls: Vec::new(),
            plaintext: Vec::new(),
        };
        for p in passed {
            let listener = TcpListener::from_std(p.listener)?;
            if p.name == crate::systemd::HEALTH_FD_NAME {
                listeners.plaintext.push(listener);
            } else {
                listeners.tls.push(listener);
            }
        }
        Ok(listeners)
    }

    /// The addresses actually bound (useful with port 0).
    pub fn addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let addrs = |ls: &[TcpListener]| ls.iter().filter_map(|l| l.local_addr().ok()).collect();
        (addrs(&self.tls), addrs(&self.plaintext))
    }
}

/// Everything a reload replaces, swapped in one step. A new connection reads it once for
/// its certificate, limits and routes; every call reads the policy in force.
pub struct Live {
    /// The server's certificate, key and client CA.
    pub tls: Arc<rustls::ServerConfig>,
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
    handshakes: Arc<Semaphore>,
    refusal_log: RateLimit,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    tcp_keepalive: Option<Duration>,
    cap_log: RateLimit,
}

impl Shared {
    pub fn new(live: Live, stats: Arc<RpcStats>, shutdown: CancellationToken) -> Arc<Shared> {
        let server = &live.limits;
        Arc::new(Shared {
            in_flight: Arc::new(AtomicUsize::new(0)),
            handshakes: Arc::new(Semaphore::new(server.max_handshakes)),
            refusal_log: RateLimit::every(1),
            slots: Arc::new(Semaphore::new(server.max_connections)),
            tcp_keepalive: server.tcp_keepalive,
            live: Swap::new(live),
            stats,
            shutdown,
            tracker: TaskTracker::new(),
            cap_log: RateLimit::every(60),
        })
    }

    /// Replaces what a reload changes: new connections get its certificate, limits and
    /// routes; calls on every connection get its policy.
    pub fn reload(&self, live: Live) {
        self.live.replace(live);
    }

    /// Connections open now (TLS handshakes included).
    pub fn connections(&self) -> usize {
        self.tracker.len()
    }

    /// Says, at most once a minute, that the connection cap turned connections away.
    fn warn_cap(&self) {
        if let Some(suppressed) = self.cap_log.allow() {
            tracing::warn!(
                suppressed,
                "connection cap reached (or server.max_handshakes); closing new connections until some end"
            );
        }
    }
}

/// Lets a log line through at most once per `every_secs`, counting the ones it held back.
/// Lines that the network's pace decides (refused handshakes, a full connection cap) go
/// through one of these.
pub(crate) struct RateLimit {
    every_secs: u64,
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub(crate) fn every(every_secs: u64) -> RateLimit {
        RateLimit {
            every_secs,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(how many were suppressed since the last one)` when a line may be written now.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last.load(Ordering::Relaxed);
        if now >= last + self.every_secs
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Which kind of port a listener is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tls,
    Plaintext,
}

/// Accepts on every listener until shutdown is signalled, then waits for the open
/// connections to drain (each has been sent a GOAWAY) for at most `drain_timeout`.
/// Returns how many connections were still open when it gave up waiting.
pub async fn serve(listeners: Listeners, shared: Arc<Shared>, drain_timeout: Duration) -> usize {
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners.tls {
        loops.spawn(accept(listener, shared.clone(), Kind::Tls));
    }
    for listener in listeners.plaintext {
        loops.spawn(accept(listener, shared.clone(), Kind::Plaintext));
    }
    while loops.join_next().await.is_some() {}
    // Every accept loop has stopped and dropped its listener.
    shared.tracker.close();
    let open = shared.tracker.len();
    if open > 0 {
        tracing::info!(connections = open, "draining open connections");
    }
    match tokio::time::timeout(drain_timeout, shared.tracker.wait()).await {
        Ok(()) => 0,
        Err(_) => shared.tracker.len(),
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, kind: Kind) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(reason = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            shared.warn_cap();
            drop(tcp);
            continue;
        };
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_nodelay(true);
        if let Some(idle) = shared.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(idle)
                .with_interval(idle / 4)
                .with_retries(4);
            let _ = sock.set_tcp_keepalive(&keepalive);
        }
        let handshake_slot = match kind {
            Kind::Tls => match shared.handshakes.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    // Unfinished handshakes have their own, smaller budget.
                    shared.warn_cap();
                    continue;
                }
            },
            Kind::Plaintext => None,
        };
        let conn_shared = shared.clone();
        shared.tracker.spawn(async move {
            let _slot = slot;
            match kind {
                Kind::Tls => {
                    let handshake_slot = handshake_slot.expect("taken for TLS");
                    conn::serve_tls(tcp, addr, conn_shared, handshake_slot).await
                }
                Kind::Plaintext => conn::serve_plaintext(tcp, addr, conn_shared).await,
            }
        });
    }
}
