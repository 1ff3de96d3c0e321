//! One connection's life: TLS handshake under a timeout (and its place in the handshake
//! table), HTTP/2 with keepalive pings, stream limits and the frame limits of `frames.rs`,
//! and gRPC connection management (proposal A9): a GOAWAY after max idle, after max age
//! (±10% jitter, then a grace period), when the peer's certificate expires or a reload
//! refuses it, and at shutdown. A GOAWAY lets the RPCs in flight finish; only the grace
//! period, once passed, closes hard. A flood gets GOAWAY ENHANCE_YOUR_CALM and is closed.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    time::{Instant, sleep, sleep_until},
};

use rustls::pki_types::CertificateDer;

use super::{
    Shared,
    call::{Activity, Calls},
    frames, handshakes, http1,
    io::{self, Io},
    pages, registry,
};
use crate::{
    config,
    context::{Peer, PeerAddr, Routes},
    tls,
};

/// Why a handshake failed, as `Snapshot.server.handshakes_refused` counts it; `None` for
/// failures that are not about a certificate (scanners hanging up mid-handshake).
fn refusal_reason(err: &std::io::Error) -> Option<&'static str> {
    use rustls::{CertificateError as C, Error as E};
    let err = err.get_ref()?.downcast_ref::<E>()?;
    Some(match err {
        E::NoCertificatesPresented => "no certificate",
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "unknown CA",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not yet valid",
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => "wrong EKU",
        E::InvalidCertificate(C::Revoked) => "revoked",
        E::InvalidCertificate(_) | E::AlertReceived(_) => "other",
        _ => return None,
    })
}

/// Completes the TLS handshake within the limit (unless a smaller source evicts it), then
/// serves the connection.
pub(super) async fn serve_tls(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handshake: handshakes::Slot,
) {
    let live = shared.live.current();
    let limits = &live.limits;
    let stats = &shared.stats.server;
    let acceptor = tokio_rustls::TlsAcceptor::from(live.tls.clone());
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(handshake.timeout, acceptor.accept(tcp)) => Some(accepted),
        _ = handshake.evicted.cancelled() => None,
    };
    stats.handshakes.fetch_sub(1, Ordering::Relaxed);
    let refused = |reason| stats.handshakes_refused.add(reason);
    let stream = match accepted {
        Some(Ok(Ok(stream))) => stream,
        Some(Ok(Err(err))) => {
            let reason = refusal_reason(&err);
            refused(reason.unwrap_or("other"));
            // Scanners and probes hang up mid-handshake all the time: only a refused
            // certificate is worth an operator's attention, at the pace of one line a
            // second whoever opens the handshakes, with what was held back by reason.
            match reason.map(|r| (r, shared.refusal_log.allow(r))) {
                Some((_, Some(held))) => tracing::info!(
                    %addr,
                    reason = %err,
                    suppressed = held.total(),
                    suppressed_reasons = %held,
                    "TLS handshake refused"
                ),
                Some((_, None)) => {}
                None => tracing::debug!(%addr, reason = %err, "TLS handshake failed"),
            }
            return;
        }
        Some(Err(_)) => {
            refused("timeout");
            tracing::debug!(%addr, timeout_ms = handshake.timeout.as_millis() as u64, "TLS handshake timed out");
            return;
        }
        None => {
            // Evicted for a handshake from a source holding fewer.
            refused("evicted");
            return;
        }
    };
    drop(handshake);
    let chain: Option<Arc<[CertificateDer<'static>]>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
    let leaf = chain.as_ref().and_then(|c| c.first());
    let not_after = leaf.and_then(tls::not_after);
    // A full handshake has just verified the chain; a resumed one carries the chain of an
    // earlier full handshake, whose certificate may have expired since.
    if not_after.is_some_and(|t| t <= SystemTime::now()) {
        refused("expired");
        tracing::debug!(%addr, "a resumed session's client certificate has expired; closing");
        return;
    }
    let credentials = Credentials {
        not_after,
        registered: chain.clone().map(|c| shared.registry.register(c)),
    };
    let peer = Peer {
        addr: PeerAddr::Tcp(addr),
        identity: leaf.and_then(tls::identity).map(Arc::from),
    };
    let on = On {
        routes: live.routes.clone(),
        limits,
        plaintext: false,
        credentials,
    };
    // HTTP/1.1 is for the pages (http1.rs): ALPN http/1.1, or no ALPN and no HTTP/2
    // preface (Go's HTTP/1-only client, which is how Prometheus scrapes by default).
    match stream.get_ref().1.alpn_protocol() {
        Some(tls::ALPN_H2) => serve_http2(stream, peer, on, &shared).await,
        Some(_) => serve_http1(Box::new(stream), peer, on, &shared).await,
        None => match io::sniff(stream, limits.handshake_timeout).await {
            // Boxed, as the plaintext streams are: no other instance of serve_http2.
            Some((true, stream)) => {
                let io: Box<dyn Io> = Box::new(stream);
                serve_http2(io, peer, on, &shared).await
            }
            Some((false, stream)) => serve_http1(Box::new(stream), peer, on, &shared).await,
            None => {}
        },
    }
}

/// Serves HTTP/1.1 until the peer closes, or its certificate expires or a reload refuses it.
async fn serve_http1(io: Box<dyn Io>, peer: Peer, on: On<'_>, shared: &Shared) {
    let ended = credentials_end(&on.credentials);
    http1::serve(io, peer, on.routes, shared, on.limits, ended).await;
}

/// Resolves with the reason when the peer's certificate expires or a reload refuses it.
fn credentials_end(credentials: &Credentials) -> impl Future<Output = &'static str> + Send {
    let expiry = credentials.not_after.map(instant_of);
    let refused = credentials.registered.as_ref().map(|r| r.refused.clone());
    async move {
        tokio::select! {
            _ = async { sleep_until(expiry.expect("guarded")).await }, if expiry.is_some() => "expired",
            _ = async { refused.as_ref().expect("guarded").cancelled().await }, if refused.is_some() => "reverified",
            else => std::future::pending().await,
        }
    }
}

/// Serves a plaintext connection (the health-only listener), TCP or unix.
pub(super) async fn serve_plaintext(io: Box<dyn Io>, addr: PeerAddr, shared: Arc<Shared>) {
    let live = shared.live.current();
    let peer = Peer {
        addr,
        identity: None,
    };
    let on = On {
        routes: live.health_routes.clone(),
        limits: &live.limits,
        plaintext: true,
        credentials: Credentials::default(),
    };
    serve_http2(io, peer, on, &shared).await;
}

/// What ends a mutual-TLS connection's right to go on: its client certificate's notAfter,
/// and a reload whose client CA or CRLs refuse it.
#[derive(Default)]
struct Credentials {
    not_after: Option<SystemTime>,
    registered: Option<registry::Registered>,
}

/// How a connection is served.
struct On<'a> {
    routes: Arc<dyn Routes>,
    limits: &'a config::Server,
    /// The plaintext health listener: small limits, and a request due at once.
    plaintext: bool,
    credentials: Credentials,
}

/// Concurrent streams on a plaintext connection (a probe needs one).
const PLAINTEXT_STREAMS: u32 = 8;
/// The largest request header list on a plaintext connection.
const PLAINTEXT_HEADER_LIST: u32 = 4096;

async fn serve_http2<I: Io + 'static>(mut io: I, peer: Peer, on: On<'_>, shared: &Shared) {
    if serve_http2_on(&mut io, &peer, on, shared).await == Close::Graceful {
        io::linger(&mut io).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Close {
    Graceful,
    Hard,
}

/// `at` as an instant of the runtime's clock (now, if it has passed).
fn instant_of(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

async fn serve_http2_on(io: &mut dyn Io, peer: &Peer, on: On<'_>, shared: &Shared) -> Close {
    let limits = on.limits;
    let activity = limits
        .max_connection_idle
        .map(|_| Arc::new(Activity::new()));
    tracing::debug!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), "connection open");
    let calls = Calls::new(on.routes, shared, limits, peer.clone(), activity.clone());
    let pages = calls.pages.clone();
    let (streams, header_list) = match on.plaintext {
        true => (
            limits.max_concurrent_streams.min(PLAINTEXT_STREAMS),
            limits.max_header_list_size.min(PLAINTEXT_HEADER_LIST),
        ),
        false => (limits.max_concurrent_streams, limits.max_header_list_size),
    };
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(streams)
        .max_header_list_size(header_list)
        .auto_date_header(false);
    let awaited = match on.plaintext {
        true => frames::Awaited::Request,
        false => frames::Awaited::Preface,
    };
    let mut watch = frames::Watch::new(awaited, limits.handshake_timeout);
    let credentials = credentials_end(&on.credentials);
    let (result, closing) = {
        let watched = frames::Watched {
            io: &mut *io,
            watch: &mut watch,
        };
        let calls = pages::WithPages(calls);
        let conn = http2.serve_connection(TokioIo::new(watched), TowerToHyperService::new(calls));
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
        tokio::pin!(credentials);
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
                why = &mut credentials, if closing.is_none() => {
                    // The peer's certificate stopped being good: its calls get the age
                    // grace period, then the connection is closed.
                    shared.stats.server.credential_closes.add(why);
                    tracing::info!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), why, "the peer's certificate is no longer valid; sending GOAWAY");
                    closing = Some(why);
                    conn.as_mut().graceful_shutdown();
                    hard_close = Some(Instant::now() + limits.max_connection_age_grace);
                }
                _ = pages.stuck(), if closing.is_none() => {
                    // A stream that does not take its page (its window kept shut): the
                    // connection's calls get the grace period, then it is closed.
                    shared.stats.server.page_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(addr = %peer.addr, "a page was not taken in time; sending GOAWAY");
                    closing = Some("page not taken");
                    conn.as_mut().graceful_shutdown();
                    hard_close = Some(Instant::now() + limits.max_connection_age_grace.min(Duration::from_secs(5)));
                }
                _ = async { sleep_until(hard_close.expect("guarded")).await }, if hard_close.is_some() => {
                    tracing::debug!(addr = %peer.addr, "grace period passed; closing the connection");
                    return Close::Hard;
                }
            }
        };
        (result, closing)
    };
    if let Some(flood) = watch.flood {
        shared.stats.server.calm_goaways.add(flood.name());
        if let Some(held) = shared.flood_log.allow(flood.name()) {
            tracing::warn!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), flood = flood.name(), suppressed = held.total(), suppressed_reasons = %held, "HTTP/2 flood: sending GOAWAY ENHANCE_YOUR_CALM and closing");
        }
        let Some(goaway) = watch.goaway() else {
            return Close::Hard;
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = io.write_all(&goaway).await;
            let _ = io.flush().await;
        })
        .await;
        return Close::Graceful;
    }
    if watch.silent {
        shared
            .stats
            .server
            .silent_closes
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(addr = %peer.addr, "no HTTP/2 preface or request in time; closing");
        return Close::Hard;
    }
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
}
