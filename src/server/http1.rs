//! Plain HTTP on the mutual-TLS port: the pages a listener's [`Routes`] offer (`GET
//! /metrics`), on HTTP/2 beside the gRPC calls and on HTTP/1.1 connections (ALPN
//! `http/1.1`), which Prometheus and `curl --cert` use by default.
//!
//! A page is authorized by its path like a method (the same policy, bearer tokens and
//! audit lines), so a client without the grant gets 403. gRPC stays HTTP/2 only: a gRPC
//! path asked for over HTTP/1.1 gets 505 saying so, and any other path 404.
//!
//! An HTTP/1.1 connection (the wire format is [`crate::http1`]'s) is bounded like any
//! other: the connection cap and the handshake budget before it, a head of at most
//! `server.max_header_list_size` (431 beyond), a header read timeout that also ends idle
//! keep-alive connections, a write timeout for readers that do not read, at most
//! [`MAX_PAGES_IN_FLIGHT`] pages rendered or being sent across the server (503 beyond), and
//! a close after the current response at shutdown.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Either;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::codegen::BoxFuture;

use super::{
    Shared,
    call::{CallBody, Calls},
    conn::Io,
};
use crate::{
    auth::Decision,
    config,
    context::{Peer, RequestContext, Routes},
    http1 as wire,
};

/// How long an HTTP/1.1 connection may take to send a request's headers, counted from
/// when it is ready for the next request: long enough to keep a connection across
/// Prometheus' default 1m scrape interval, short enough that a client sending half a
/// header holds its slot (bounded by the connection cap) for 90 s at most.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(90);

/// The smallest head limit: `server.max_header_list_size` is raised to it when set lower
/// (the request line comes on top of the headers).
const MIN_BUF: usize = 8192;

/// How long a closing connection may take to say goodbye (as conn.rs's LINGER).
const LINGER: Duration = Duration::from_secs(1);

/// The response a page request gets: the whole body at once.
fn plain(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Page responses being rendered or sent, across the server; above this a request gets
/// 503. A scrape renders tens of KiB, and a slow reader holds its body until it is sent,
/// so this (not the connection cap times the stream limit) bounds their memory. A fleet's
/// Prometheus pair scrapes each device once per interval.
const MAX_PAGES_IN_FLIGHT: usize = 16;
static PAGES_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place among the pages in flight, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let before = PAGES_IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        if before >= MAX_PAGES_IN_FLIGHT {
            PAGES_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        PAGES_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A page's body, sent in one frame; it keeps its [`Slot`] until sent or dropped.
pub(super) struct PageBody {
    data: Option<Bytes>,
    _slot: Option<Slot>,
}

impl http_body::Body for PageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

type PageFuture = BoxFuture<Response<PageBody>, Infallible>;

fn ready(response: Response<Bytes>) -> PageFuture {
    let response = response.map(|data| PageBody {
        data: Some(data),
        _slot: None,
    });
    Box::pin(std::future::ready(Ok(response)))
}

/// Answers a request for a page the routes have: authorized by its path as a method is,
/// `GET` only.
fn answer_page(
    calls: &Calls,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<PageFuture> {
    let page = calls.routes.page(path)?;
    if method != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return Some(ready(response));
    }
    let identity = calls.peer.identity.as_deref();
    let decision = calls.live.current().policy.decide(
        path,
        identity,
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        std::time::SystemTime::now(),
    );
    let context = RequestContext::from_headers(headers);
    calls
        .auditor
        .record(&decision, path, identity, &context.request_id);
    let response = match decision {
        Decision::Allow { .. } => match Slot::take() {
            Some(slot) => {
                let rendering = page.get(headers);
                Box::pin(async move {
                    let response = rendering.await?;
                    Ok(response.map(|data| PageBody {
                        data: Some(data),
                        _slot: Some(slot),
                    }))
                })
            }
            None => {
                let mut busy = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many scrapes in flight; try again",
                );
                busy.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                ready(busy)
            }
        },
        Decision::Deny { code, reason } => {
            let status = match code {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            ready(plain(status, &reason))
        }
    };
    Some(response)
}

/// The HTTP/2 connection's service: pages answered here, every other request handed to
/// the gRPC call layer as before.
#[derive(Clone)]
pub(super) struct WithPages(pub(super) Calls);

type Body2 = Either<CallBody, PageBody>;
type Future2 = Pin<Box<dyn Future<Output = Result<Response<Body2>, Infallible>> + Send + 'static>>;

impl<B> tower::Service<Request<B>> for WithPages
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = Response<Body2>;
    type Error = Infallible;
    type Future = Future2;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Future2 {
        let page = answer_page(
            &self.0,
            request.uri().path(),
            request.method(),
            request.headers(),
        );
        match page {
            Some(response) => Box::pin(async move {
                let response = response.await?;
                Ok(response.map(Either::Right))
            }),
            None => {
                let call = self.0.call(request);
                Box::pin(async move { call.await.map(|r| r.map(Either::Left)) })
            }
        }
    }
}

/// What an HTTP/2 connection starts with.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the first bytes of a connection that negotiated no ALPN (Go's HTTP/1-only client,
/// which is Prometheus' scraper with `enable_http2: false`, offers none): whether they are
/// HTTP/2's preface, and the connection with those bytes put back. `None` when nothing
/// came within `limit`.
pub(super) async fn sniff<I: AsyncRead + Unpin>(
    mut io: I,
    limit: Duration,
) -> Option<(bool, Replay<I>)> {
    let mut prefix = vec![0u8; PREFACE.len()];
    let mut n = 0;
    let read = tokio::time::timeout(limit, async {
        // Stop at the first byte that differs from the preface: an HTTP/1 request line
        // does at once.
        while n < PREFACE.len() && prefix[..n] == PREFACE[..n] {
            match io.read(&mut prefix[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(got) => n += got,
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return None;
    }
    prefix.truncate(n);
    let http2 = prefix[..] == PREFACE[..];
    Some((
        http2,
        Replay {
            prefix,
            at: 0,
            inner: io,
        },
    ))
}

/// A connection whose first bytes, already read, are read again first.
pub(super) struct Replay<I> {
    prefix: Vec<u8>,
    at: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Replay<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replay<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves an HTTP/1.1 connection until the peer closes it, it idles past the header read
/// timeout, the server shuts down (the response in progress finishes first), or `ended`
/// says the peer's certificate is no longer good (expired, or refused by a reload).
/// Requests are answered in order (pipelined ones too); a request body (which no page
/// takes) is read and dropped up to 64 KiB, a chunked one refused.
pub(super) async fn serve(
    mut io: Box<dyn Io>,
    peer: Peer,
    routes: Arc<dyn Routes>,
    shared: &Shared,
    limits: &config::Server,
    ended: impl Future<Output = &'static str>,
) {
    tracing::debug!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), "HTTP/1.1 connection open");
    let calls = Calls {
        routes,
        live: shared.live.clone(),
        stats: shared.stats.clone(),
        auditor: shared.auditor.clone(),
        max_deadline: limits.max_deadline,
        first_message_timeout: limits.first_message_timeout,
        max_request_buffer: limits.max_request_buffer,
        peer,
        activity: None,
        in_flight: shared.in_flight.clone(),
        max_calls: limits.max_calls,
    };
    tokio::pin!(ended);
    let max_head = (limits.max_header_list_size as usize).max(MIN_BUF);
    let mut buf = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(512);
    let graceful = loop {
        let read = tokio::select! {
            read = tokio::time::timeout(HEADER_READ_TIMEOUT, wire::read_head(&mut io, &mut buf, max_head)) => read,
            _ = shared.shutdown.cancelled() => break true,
            why = &mut ended => {
                shared.stats.server.credential_closes.add(why);
                break true;
            }
        };
        let (response, keep) = match read {
            Err(_) | Ok(Err(wire::HeadError::Closed | wire::HeadError::Incomplete)) => break true,
            Ok(Err(wire::HeadError::Io(_))) => break false,
            Ok(Err(wire::HeadError::TooLarge)) => (
                ready(plain(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "the request head is larger than server.max_header_list_size",
                )),
                false,
            ),
            Ok(Ok(len)) => {
                let parsed = wire::parse_head(&buf[..len]);
                buf.drain(..len);
                match request(&calls, parsed, &mut io, &mut buf).await {
                    Ok(answer) => answer,
                    Err(refusal) => (ready(refusal), false),
                }
            }
        };
        let keep = keep && !shared.shutdown.is_cancelled();
        let Ok(mut response) = response.await;
        let body = response.body_mut().data.take().unwrap_or_default();
        if !keep {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        out.clear();
        let status = response.status();
        let start = format!(
            "HTTP/1.1 {} {}",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        );
        wire::write_head(&mut out, &start, response.headers(), body.len());
        // A reader too slow to take an answer within the header timeout is gone.
        let written = tokio::time::timeout(HEADER_READ_TIMEOUT, async {
            io.write_all(&out).await?;
            io.write_all(&body).await?;
            io.flush().await
        })
        .await;
        // The page's slot is held until here.
        drop(response);
        if !matches!(written, Ok(Ok(()))) {
            break false;
        }
        if !keep {
            break true;
        }
    };
    if graceful {
        let _ = tokio::time::timeout(LINGER, async {
            let _ = io.shutdown().await;
            let mut sink = [0u8; 1024];
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Largest request body read (and dropped): no page takes one.
const MAX_REQUEST_BODY: usize = 64 << 10;

/// Answers one parsed request: the response to come, and whether the connection may
/// carry another. `Err` is a refusal after which the connection closes.
async fn request<I: AsyncRead + Unpin>(
    calls: &Calls,
    parsed: Result<wire::Head, &'static str>,
    io: &mut I,
    buf: &mut Vec<u8>,
) -> Result<(PageFuture, bool), Response<Bytes>> {
    let bad = |why: &str| plain(StatusCode::BAD_REQUEST, why);
    let head = parsed.map_err(bad)?;
    let [method, target, version] = &head.start;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "HTTP/1.0 and HTTP/1.1 only",
        ));
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| bad("a malformed method"))?;
    match wire::body_length(&head.headers).map_err(bad)? {
        None | Some(wire::Length::Exactly(0)) => {}
        Some(wire::Length::Chunked) => return Err(bad("no page takes a chunked body")),
        Some(length) => {
            wire::read_body(io, buf, length, MAX_REQUEST_BODY)
                .await
                .map_err(bad)?;
        }
    }
    // The origin form (`/metrics?x`): no proxy stands between a scraper and the device.
    let path = target.split('?').next().unwrap_or_default();
    let keep = wire::keeps_alive(version, &head.headers);
    let response = answer_page(calls, path, &method, &head.headers).unwrap_or_else(|| {
        ready(if calls.routes.serves(path) {
            plain(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC needs HTTP/2: connect with ALPN h2",
            )
        } else {
            plain(StatusCode::NOT_FOUND, "no such page")
        })
    });
    Ok((response, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection without ALPN is HTTP/2 when it starts with the preface, HTTP/1
    /// otherwise, and the bytes read to tell are read again; a silent one is given up.
    #[tokio::test]
    async fn sniffing_tells_http2_from_http1_and_replays() {
        use tokio::io::AsyncReadExt;
        for (sent, http2) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"[..], true),
            (b"GET /metrics HTTP/1.1\r\n\r\n", false),
            (b"POST / HTTP/1.1\r\n\r\n", false),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(sent).await.unwrap();
            drop(client);
            let (is_http2, mut replay) = sniff(server, Duration::from_secs(1)).await.unwrap();
            assert_eq!(is_http2, http2, "{sent:?}");
            let mut again = Vec::new();
            replay.read_to_end(&mut again).await.unwrap();
            assert_eq!(again, sent, "every byte is read again");
        }
        let (_client, server) = tokio::io::duplex(64);
        assert!(
            sniff(server, Duration::from_millis(10)).await.is_none(),
            "silence"
        );
    }

    /// The refusals say what they are, in text.
    #[test]
    fn refusals_are_plain_text() {
        let response = plain(StatusCode::NOT_FOUND, "no such page");
        assert_eq!(response.status(), 404);
        assert_eq!(response.body().as_ref(), b"no such page\n");
    }
}
