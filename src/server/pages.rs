//! The plain pages a listener's [`Routes`] offer (`GET /metrics`), on HTTP/2 beside the
//! gRPC calls and on HTTP/1.1 connections (`http1.rs`).
//!
//! A page is authorized by its path like a method (the same policy, bearer tokens and
//! audit lines), so a client without the grant gets 403. A page holds one of the slots of
//! `slots.rs` until its last byte is handed over (503 when none is free), and a connection
//! whose page is not taken within `slots::PAGE_TIMEOUT` is closed.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Either;
use tonic::codegen::BoxFuture;

use super::{
    call::{CallBody, Calls},
    slots::{Busy, Slot},
};
use crate::{auth::Decision, context::RequestContext};

/// The response a page request gets: the whole body at once.
pub(super) fn plain(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A page's body, sent in pieces of [`PIECE`]; it keeps its [`Slot`] until the last piece
/// is taken, or it is dropped.
pub(super) struct PageBody {
    data: Option<Bytes>,
    _slot: Option<Slot>,
}

impl PageBody {
    /// A body sent at once, holding no slot.
    pub(super) fn whole(data: Bytes) -> PageBody {
        PageBody {
            data: Some(data),
            _slot: None,
        }
    }
}

/// The most of a page handed to the connection at once: the connection takes the next
/// piece only once it has written most of the last, so the rest of a page a reader does not
/// read stays here, holding its slot, until the page timeout closes the connection.
const PIECE: usize = 16 << 10;

impl http_body::Body for PageBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let Some(data) = self.data.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = if data.len() > PIECE {
            data.split_to(PIECE)
        } else {
            self.data.take().unwrap_or_default()
        };
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

pub(super) type PageFuture = BoxFuture<Response<PageBody>, Infallible>;

pub(super) fn ready(response: Response<Bytes>) -> PageFuture {
    Box::pin(std::future::ready(Ok(response.map(PageBody::whole))))
}

/// Answers a request for a page the routes have: authorized by its path as a method is,
/// `GET`, or `HEAD` (the same answer without its body, as node_exporter's server gives).
pub(super) fn answer_page(
    calls: &Calls,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Option<PageFuture> {
    let page = calls.routes.page(path)?;
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
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
        Decision::Allow { .. } => match Slot::take(calls.peer.identity.as_ref(), &calls.pages) {
            Ok(slot) => {
                let rendering = page.get(headers);
                Box::pin(async move {
                    // A page that panics is a 500 for its request, logged and counted.
                    let mut response = match crate::supervise::once("scrape", rendering).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the page could not be written",
                        ),
                    };
                    if head {
                        // The GET answer's headers, its length among them, and no body.
                        let length = HeaderValue::from(response.body().len());
                        response
                            .headers_mut()
                            .insert(header::CONTENT_LENGTH, length);
                        *response.body_mut() = Bytes::new();
                    }
                    Ok(response.map(|data| PageBody {
                        data: Some(data),
                        _slot: Some(slot),
                    }))
                })
            }
            Err(why) => {
                let mut busy = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    match why {
                        Busy::Server => "too many scrapes in flight; try again",
                        Busy::Identity => "this identity has too many scrapes in flight; try again",
                        Busy::Connection => {
                            "this connection has too many scrapes in flight; try again"
                        }
                    },
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
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        match page {
            Some(response) => Box::pin(async move {
                let response = response.await?;
                Ok(response.map(Either::Right))
            }),
            // Neither a page nor a gRPC call: what a web server says, not a gRPC status.
            None if !grpc => {
                let response = plain(StatusCode::NOT_FOUND, "no such page");
                Box::pin(async move { Ok(response.map(|b| Either::Right(PageBody::whole(b)))) })
            }
            None => {
                let call = self.0.call(request);
                Box::pin(async move { call.await.map(|r| r.map(Either::Left)) })
            }
        }
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
