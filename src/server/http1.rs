//! Plain HTTP on the mutual-TLS port: the pages a listener's [`Routes`] offer (`GET
//! /metrics`), on HTTP/2 beside the gRPC calls and on HTTP/1.1 connections (ALPN
//! `http/1.1`), which Prometheus and `curl --cert` use by default.
//!
//! A page is authorized by its path like a method (the same policy, bearer tokens and
//! audit lines), so a client without the grant gets 403. gRPC stays HTTP/2 only: a gRPC
//! path asked for over HTTP/1.1 gets 505 saying so, and any other path 404.
//!
//! An HTTP/1.1 connection is bounded like any other: the connection cap and the handshake
//! budget before it, a header buffer of `server.max_header_list_size`, a header read
//! timeout that also ends idle keep-alive connections, and a GOAWAY-like close (the
//! current response finishes) at shutdown.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    Shared,
    call::{CallBody, Calls},
};
use crate::{
    auth::{self, Decision},
    config,
    context::{Peer, RequestContext, Routes},
};

/// How long an HTTP/1.1 connection may take to send a request's headers, counted from
/// when it is ready for the next request: long enough to keep a connection across
/// Prometheus' default 1m scrape interval, short enough that a client sending half a
/// header holds its slot (bounded by the connection cap) for 90 s at most.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(90);

/// hyper's smallest read buffer; the header limit is raised to it when set lower.
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

/// Answers a request for a page the routes have: authorized by its path as a method is,
/// `GET` and `HEAD` only.
fn answer_page(
    calls: &Calls,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<Bytes>> {
    let page = calls.routes.page(path)?;
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(response);
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
    auth::audit(&decision, path, identity, &context.request_id);
    let mut response = match decision {
        Decision::Allow { .. } => page.get(headers),
        Decision::Deny { code, reason } => {
            let status = match code {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                _ => StatusCode::FORBIDDEN,
            };
            plain(status, &reason)
        }
    };
    if method == Method::HEAD {
        *response.body_mut() = Bytes::new();
    }
    Some(response)
}

/// The HTTP/2 connection's service: pages answered here, every other request handed to
/// the gRPC call layer as before.
#[derive(Clone)]
pub(super) struct WithPages(pub(super) Calls);

type Body2 = Either<CallBody, Full<Bytes>>;
type Future2 = Pin<Box<dyn Future<Output = Result<Response<Body2>, Infallible>> + Send + 'static>>;

impl<B> tower::Service<Request<B>> for WithPages
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
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
            Some(response) => {
                let response = response.map(|b| Either::Right(Full::new(b)));
                Box::pin(std::future::ready(Ok(response)))
            }
            None => {
                let call = self.0.call(request);
                Box::pin(async move { call.await.map(|r| r.map(Either::Left)) })
            }
        }
    }
}

/// The HTTP/1.1 connection's service: pages, and a clear refusal for anything else.
#[derive(Clone)]
struct Http1(Calls);

impl<B: Send + 'static> tower::Service<Request<B>> for Http1 {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        let response = answer_page(&self.0, path, request.method(), request.headers())
            .unwrap_or_else(|| {
                if self.0.routes.serves(path) {
                    plain(
                        StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                        "gRPC needs HTTP/2: connect with ALPN h2",
                    )
                } else {
                    plain(StatusCode::NOT_FOUND, "no such page")
                }
            });
        std::future::ready(Ok(response.map(Full::new)))
    }
}

/// Serves an HTTP/1.1 connection until the peer closes it, it idles past the header read
/// timeout, or the server shuts down (the response in progress finishes first).
pub(super) async fn serve<I>(
    mut io: I,
    peer: Peer,
    routes: Arc<dyn Routes>,
    shared: &Shared,
    limits: &config::Server,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    tracing::debug!(addr = %peer.addr, peer = peer.identity.as_deref().unwrap_or("-"), "HTTP/1.1 connection open");
    let addr = peer.addr;
    let service = Http1(Calls {
        routes,
        live: shared.live.clone(),
        stats: shared.stats.clone(),
        max_deadline: limits.max_deadline,
        peer,
        activity: None,
        in_flight: shared.in_flight.clone(),
        max_calls: limits.max_calls,
    });
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size((limits.max_header_list_size as usize).max(MIN_BUF))
        .keep_alive(true);
    let conn = http1.serve_connection(TokioIo::new(&mut io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = shared.shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    match result {
        Ok(()) => {
            tracing::debug!(%addr, "HTTP/1.1 connection closed");
            let _ = tokio::time::timeout(LINGER, async {
                let _ = io.shutdown().await;
                let mut sink = [0u8; 1024];
                while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        Err(err) => tracing::debug!(%addr, reason = %err, "HTTP/1.1 connection ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusals say what they are, in text.
    #[test]
    fn refusals_are_plain_text() {
        let response = plain(StatusCode::NOT_FOUND, "no such page");
        assert_eq!(response.status(), 404);
        assert_eq!(response.body().as_ref(), b"no such page\n");
    }
}
