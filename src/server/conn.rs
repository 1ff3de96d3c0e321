//! One connection's life: TLS handshake under a timeout, HTTP/2 with keepalive pings and
//! stream limits, and gRPC connection management (proposal A9): a GOAWAY after max idle,
//! after max age (±10% jitter, then a grace period), and at shutdown. A GOAWAY lets the
//! RPCs in flight finish; only the age grace period, once passed, closes hard.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::{Instant, sleep, sleep_until},
};

use super::{Shared, call::Calls, http1};
use crate::{
    config,
    context::{Peer, Routes},
    tls,
};

/// How many calls a connection has running, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: AtomicUsize,
    idle_since: watch::Sender<Option<Instant>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            active: AtomicUsize::new(0),
            idle_since: watch::channel(Some(Instant::now())).0,
        }
    }

    pub fn enter(&self) {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.idle_since.send_replace(None);
        }
    }

    pub fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.send_replace(Some(Instant::now()));
        }
    }

    /// Resolves once the connection has had no call for `max`.
    async fn idle_for(&self, max: Duration) {
        let mut rx = self.idle_since.subscribe();
        loop {
            let since = *rx.borrow_and_update();
            match since {
                Some(since) => tokio::select! {
                    _ = sleep_until(since + max) => {
                        // enter() and leave() race only in whom they notify last; the count decides.
                        if self.active.load(Ordering::Acquire) == 0 {
                            return;
                        }
                        let _ = rx.changed().await;
                    }
                    _ = rx.changed() => {}
                },
                None => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Completes the TLS handshake within the limit, then serves the connection.
pub(super) async fn serve_tls(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handshake_slot: tokio::sync::OwnedSemaphorePermit,
) {
    let live = shared.live.current();
    let limits = &live.limits;
    let acceptor = tokio_rustls::TlsAcceptor::from(live.tls.clone());
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            // Scanners and probes hang up mid-handshake all the time: only a refused
            // certificate is worth an operator's attention.
            let certificate_problem = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                            | rustls::Error::AlertReceived(_)
                    )
                });
            if certificate_problem {
                // Whoever can open handshakes sets this rate: one line a second at most.
                if let Some(suppressed) = shared.refusal_log.allow() {
                    tracing::info!(%addr, reason = %err, suppressed, "TLS handshake refused");
                }
            } else {
                tracing::debug!(%addr, reason = %err, "TLS handshake failed");
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, timeout_ms = limits.handshake_timeout.as_millis() as u64, "TLS handshake timed out");
            return;
        }
    };
    drop(handshake_slot);
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::identity);
    let peer = Peer {
        addr,
        identity: identity.map(Arc::from),
    };
    // Without ALPN the first bytes tell (http1.rs). Every TLS connection goes on as a
    // Replay, so the code of each protocol exists once.
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (http2, stream) = match alpn.as_deref() {
        Some(protocol) => (protocol == tls::ALPN_H2, http1::Replay::new(stream)),
        None => match http1::sniff(stream, limits.handshake_timeout).await {
            Some(sniffed) => sniffed,
            None => return,
        },
    };
    let routes = live.routes.clone();
    if http2 {
        serve_http2(stream, peer, routes, &shared, limits).await;
    } else {
        http1::serve(stream, peer, routes, &shared, limits).await;
    }
}

/// Serves a plaintext connection (the health-only listener).
pub(super) async fn serve_plaintext(tcp: TcpStream, addr: SocketAddr, shared: Arc<Shared>) {
    let live = shared.live.current();
    let peer = Peer {
        addr,
        identity: None,
    };
    serve_http2(tcp, peer, live.health_routes.clone(), &shared, &live.limits).await;
}

/// How long a closing connection may take to say goodbye (TLS close_notify, FIN, and the
/// peer's last bytes read) before it is simply dropped.
const LINGER: Duration = Duration::from_secs(1);

async fn serve_http2<I>(
    mut io: I,
    peer: Peer,
    routes: Arc<dyn Routes>,
    shared: &Shared,
    limits: &config::Server,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    if serve_http2_on(&mut io, &peer, routes, shared, limits).await == Close::Graceful {
        // Closing with the peer's bytes unread makes the kernel send a reset, which the
        // peer sees as an error. Shut down our side, then read what is left until EOF.
        let _ = tokio::time::timeout(LINGER, async {
            let _ = io.shutdown().await;
            let mut sink = [0u8; 1024];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Close {
    Graceful,
    Hard,
}

async fn serve_http2_on<I>(
    io: &mut I,
    peer: &Peer,
    routes: Arc<dyn Routes>,
    shared: &Shared,
    limits: &config::Server,
) -> Close
where
    I: AsyncRead + AsyncWrite + Send + Unpin,
{
    let activity = limits
        .max_connection_idle
        .map(|_| Arc::new(Activity::new()));
    tracing::debug!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), "connection open");
    let calls = Calls {
        routes,
        live: shared.live.clone(),
        stats: shared.stats.clone(),
        max_deadline: limits.max_deadline,
        peer: peer.clone(),
        activity: activity.clone(),
        in_flight: shared.in_flight.clone(),
        max_calls: limits.max_calls,
    };
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .auto_date_header(false);
    let calls = http1::WithPages(calls);
    let conn = http2.serve_connection(TokioIo::new(io), TowerToHyperService::new(calls));
    tokio::pin!(conn);

    let age = limits.max_connection_age.map(|age| sleep(jitter(age)));
    tokio::pin!(age);
    let idle = async {
        match (&activity, limits.max_connection_idle) {
            (Some(activity), Some(max)) => activity.idle_for(max).await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let mut closing: Option<&str> = None;
    let mut hard_close = None;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = shared.shutdown.cancelled(), if closing.is_none() => {
                closing = Some("shutdown");
                conn.as_mut().graceful_shutdown();
            }
            _ = async { age.as_mut().as_pin_mut().expect("guarded").await }, if closing.is_none() && age.is_some() => {
                closing = Some("max age");
                conn.as_mut().graceful_shutdown();
                hard_close = Some(Instant::now() + limits.max_connection_age_grace);
            }
            _ = &mut idle, if closing.is_none() => {
                closing = Some("max idle");
                conn.as_mut().graceful_shutdown();
            }
            _ = async { sleep_until(hard_close.expect("guarded")).await }, if hard_close.is_some() => {
                tracing::debug!(addr = %peer.addr, "max age grace passed; closing the connection");
                return Close::Hard;
            }
        }
    };
    match result {
        Ok(()) => {
            tracing::debug!(addr = %peer.addr, goaway = closing.unwrap_or("-"), "connection closed");
            Close::Graceful
        }
        Err(err) => {
            tracing::debug!(addr = %peer.addr, reason = %err, "connection ended");
            Close::Hard
        }
    }
}

/// `d` ± 10%, so connections made together do not all age out together.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jitter stays within ±10%.
    #[test]
    fn jitter_is_within_ten_percent() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let j = jitter(d);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }

    /// Idle time counts from the last call's end, not from the connection's start.
    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_last_call() {
        let activity = Activity::new();
        activity.enter();
        let idle = activity.idle_for(Duration::from_secs(5));
        tokio::pin!(idle);
        tokio::select! {
            _ = &mut idle => panic!("idle while a call runs"),
            _ = sleep(Duration::from_secs(60)) => {}
        }
        activity.leave();
        let left = Instant::now();
        idle.await;
        assert_eq!(left.elapsed(), Duration::from_secs(5));
    }
}
