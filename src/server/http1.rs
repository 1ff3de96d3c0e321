//! HTTP/1.1 on the mutual-TLS port (ALPN `http/1.1`, or no ALPN and no HTTP/2 preface),
//! which Prometheus and `curl --cert` use by default: the pages the listener's routes offer
//! (`pages.rs`), served by hyper's `http1` server, which parses and frames the messages.
//! gRPC stays HTTP/2 only: a gRPC path asked for over HTTP/1.1 gets 505 saying so, and any
//! other path 404.
//!
//! What is ours is the policy around hyper, each bound where the request enters:
//! - the connection cap and the handshake budget before it (`mod.rs`, `conn.rs`);
//! - a head of at most `server.max_header_list_size` (8 KiB at least) and
//!   [`MAX_HEADERS`] fields, 431 beyond;
//! - [`HEADER_READ_TIMEOUT`] for each request's head, which also ends idle keep-alive
//!   connections;
//! - a request body is never waited for (no page takes one): the answer goes out at once
//!   and, unless the body had already arrived, the connection closes after it; one declared
//!   larger than [`MAX_REQUEST_BODY`] gets 413; `Expect: 100-continue` gets the final status;
//! - exactly one `Host` on HTTP/1.1 (RFC 9112 §3.2), at most one on HTTP/1.0, else 400;
//! - [`WRITE_TIMEOUT`] for readers that do not read, and a close when a page is not taken
//!   within `slots::PAGE_TIMEOUT`;
//! - at shutdown, or when the peer's certificate stops being good, the answer in progress
//!   finishes and the connection closes, within [`CLOSING_GRACE`] at most.

use std::{
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::Body as _;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::{Instant, sleep_until};

use super::{
    Shared,
    call::Calls,
    io::{Io, WriteDeadline},
    pages::{self, PageBody},
};
use crate::{
    config,
    context::{Peer, Routes},
};

/// How long an HTTP/1.1 connection may take to send a request's head, counted from when it
/// is ready for the next request: long enough to keep a connection across Prometheus'
/// default 1m scrape interval, short enough that a client sending half a head holds its
/// slot (bounded by the connection cap) for 90 s at most.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a write may wait for the peer to take bytes.
const WRITE_TIMEOUT: Duration = Duration::from_secs(90);

/// The smallest head limit: `server.max_header_list_size` is raised to it when set lower
/// (the request line comes on top of the headers).
const MIN_HEAD: usize = 8192;

/// Header fields in one request head (hyper's default; a scraper sends fewer than ten).
const MAX_HEADERS: usize = 100;

/// The largest request body declared: no page takes one, so it is never read.
const MAX_REQUEST_BODY: u64 = 64 << 10;

/// How long a connection told to close may take to finish the answer in progress.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

/// Serves an HTTP/1.1 connection until the peer closes it, it idles past the header read
/// timeout, the server shuts down, or `ended` says the peer's certificate is no longer good
/// (expired, or refused by a reload). Requests are answered in order, pipelined ones too.
pub(super) async fn serve(
    mut io: Box<dyn Io>,
    peer: Peer,
    routes: Arc<dyn Routes>,
    shared: &Shared,
    limits: &config::Server,
    ended: impl Future<Output = &'static str>,
) {
    tracing::debug!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), "HTTP/1.1 connection open");
    let calls = Calls::new(routes, shared, limits, peer.clone(), None);
    let pages = calls.pages.clone();
    let max_head = (limits.max_header_list_size as usize).max(MIN_HEAD);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(max_head)
        // Pipelined requests past this wait in the socket, not in memory.
        .max_buf_size(max_head + MIN_HEAD)
        .max_headers(MAX_HEADERS)
        .auto_date_header(false);
    let service = service_fn(move |request| {
        let calls = calls.clone();
        async move { Ok::<_, Infallible>(respond(&calls, request).await) }
    });
    let graceful = {
        let conn = http1.serve_connection(
            TokioIo::new(WriteDeadline::new(&mut io, WRITE_TIMEOUT)),
            service,
        );
        tokio::pin!(conn);
        tokio::pin!(ended);
        let mut closing: Option<Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = &result {
                        tracing::debug!(addr = %peer.addr, reason = %err, "HTTP/1.1 connection ended");
                    }
                    break result.is_ok();
                }
                _ = shared.shutdown.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSING_GRACE);
                }
                why = &mut ended, if closing.is_none() => {
                    shared.stats.server.credential_closes.add(why);
                    tracing::info!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), why, "the peer's certificate is no longer valid; closing its HTTP/1.1 connection");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + CLOSING_GRACE);
                }
                _ = pages.stuck() => {
                    shared.stats.server.page_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(addr = %peer.addr, "a page was not taken in time; closing the HTTP/1.1 connection");
                    break false;
                }
                _ = async { sleep_until(closing.expect("guarded")).await }, if closing.is_some() => {
                    tracing::debug!(addr = %peer.addr, "the closing HTTP/1.1 connection took too long; dropping it");
                    break false;
                }
            }
        }
    };
    if graceful {
        super::io::linger(&mut io).await;
    }
}

/// Answers one request (hyper has parsed and bounded it).
async fn respond(calls: &Calls, request: Request<Incoming>) -> Response<PageBody> {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    let one_host = match request.version() {
        Version::HTTP_11 => hosts == 1,
        _ => hosts <= 1,
    };
    if !one_host {
        return refuse(
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host header",
        );
    }
    if request
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_REQUEST_BODY)
    {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "no page takes a request body; this one is larger than 64 KiB",
        );
    }
    let (path, method) = (request.uri().path(), request.method());
    let answer = pages::answer_page(calls, path, method, request.headers()).unwrap_or_else(|| {
        pages::ready(if calls.routes.serves(path) {
            pages::plain(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2: connect with ALPN h2",
            )
        } else {
            pages::plain(StatusCode::NOT_FOUND, "no such page")
        })
    });
    // The request (and its body, unread) is dropped before the page is awaited: hyper
    // takes what of the body has arrived and otherwise closes after the answer.
    drop(request);
    let Ok(response) = answer.await;
    response
}

/// A refusal after which the connection closes.
fn refuse(status: StatusCode, why: &str) -> Response<PageBody> {
    let mut response = pages::plain(status, why);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response.map(PageBody::whole)
}
