//! What happens around every call, in one place: the request gets its id and trace context
//! and the peer, the authorization policy decides it, the deadline is capped and enforced,
//! a panicking handler becomes INTERNAL for that call only, the call is counted while it
//! runs and recorded when its response ends (status code and latency), and the request id
//! and any trailers a handler asked for are added to the response.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tonic::{Code, Status};
use tracing::Instrument;

use super::{Live, Shared, body::RequestBody};
use crate::{
    auth::{Auditor, Decision},
    context::{Peer, RequestContext, Routes, Trailers, X_REQUEST_ID},
    methods,
    rpc_stats::RpcStats,
    swap::Swap,
};

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The tower service a connection calls for each request.
#[derive(Clone)]
pub struct Calls {
    /// The services of this connection's listener, as of the connection's start.
    pub(super) routes: Arc<dyn Routes>,
    /// What a reload replaces: the policy is read from it per call, so a changed ACL
    /// applies to open connections too.
    pub(super) live: Swap<Live>,
    pub(super) stats: Arc<RpcStats>,
    pub(super) auditor: Arc<Auditor>,
    pub(super) max_deadline: Duration,
    /// How long a streaming call may take to send its first message.
    pub(super) first_message_timeout: Duration,
    /// `server.max_request_buffer`.
    pub(super) max_request_buffer: usize,
    pub(super) peer: Peer,
    pub(super) activity: Option<Arc<Activity>>,
    pub(super) in_flight: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) max_calls: usize,
    /// The connection's pages in flight (`slots.rs`).
    pub(super) pages: Arc<super::slots::ConnPages>,
}

impl Calls {
    /// The calls of one connection, of `peer`, to `routes`, under `limits`.
    pub(super) fn new(
        routes: Arc<dyn Routes>,
        shared: &Shared,
        limits: &crate::config::Server,
        peer: Peer,
        activity: Option<Arc<Activity>>,
    ) -> Calls {
        Calls {
            routes,
            live: shared.live.clone(),
            stats: shared.stats.clone(),
            auditor: shared.auditor.clone(),
            max_deadline: limits.max_deadline,
            first_message_timeout: limits.first_message_timeout,
            max_request_buffer: limits.max_request_buffer,
            peer,
            activity,
            in_flight: shared.in_flight.clone(),
            max_calls: limits.max_calls,
            pages: Arc::default(),
        }
    }
}

pub type CallFuture =
    Pin<Box<dyn Future<Output = Result<Response<CallBody>, Infallible>> + Send + 'static>>;

impl<B> tower::Service<Request<B>> for Calls
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Response = Response<CallBody>;
    type Error = Infallible;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> CallFuture {
        let path = request.uri().path();
        let method = methods::index(path);
        let client_deadline = grpc_timeout(request.headers());
        let unary = method.is_none_or(|i| !methods::ALL[i].streams_responses());
        let deadline = deadline(client_deadline, unary, self.max_deadline);
        let context = RequestContext::from_headers(request.headers());
        let mut record = Record::start(self, method, context.clone());
        let identity = self.peer.identity.as_deref();
        // A path no service here answers gets UNIMPLEMENTED from the router, not a denial.
        let decision = if self.routes.serves(path) {
            self.live.current().policy.decide(
                path,
                identity,
                request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
                std::time::SystemTime::now(),
            )
        } else {
            Decision::Allow { audit: false }
        };
        self.auditor
            .record(&decision, record.path, identity, &context.request_id);
        // Never indexed: a value unique to each response would only churn the connection's
        // HPACK table (and evict the headers that do repeat).
        let request_id = HeaderValue::from_str(&context.request_id)
            .ok()
            .map(|mut id| {
                id.set_sensitive(true);
                id
            });
        let span = tracing::info_span!(
            "call",
            request_id = %context.request_id,
            trace_id = %context.trace_id,
            span_id = %context.span_id,
        );
        let over_budget = record.over_budget;
        let started = record.started;
        let refuse = |status: Status| futures_util::future::ready(Ok(status.into_http())).boxed();
        let response = match decision {
            Decision::Deny { code, reason } => refuse(Status::new(code, reason)),
            // A deadline that has passed already: the handler would only do work nobody waits for.
            Decision::Allow { .. } if client_deadline == Some(Duration::ZERO) => refuse(
                Status::deadline_exceeded("the call's deadline (0) has passed"),
            ),
            Decision::Allow { .. } if over_budget => refuse(Status::resource_exhausted(
                "too many calls in flight on this server (server.max_calls)",
            )),
            Decision::Allow { .. } => {
                request.extensions_mut().insert(self.peer.clone());
                request.extensions_mut().insert(context);
                let first_message = (!unary).then_some(self.first_message_timeout);
                let (stats, limit) = (self.stats.clone(), self.max_request_buffer);
                let body = request.map(|body| {
                    tonic::body::Body::new(RequestBody::new(body, stats, limit, first_message))
                });
                self.routes.call(body)
            }
        };
        Box::pin(
            async move {
                let response = std::panic::AssertUnwindSafe(async move {
                    match deadline {
                        None => response.await,
                        Some(limit) => {
                            match tokio::time::timeout_at((started + limit).into(), response).await
                            {
                                Ok(response) => response,
                                Err(_) => Ok(Status::deadline_exceeded(format!(
                                    "deadline of {}ms exceeded",
                                    limit.as_millis()
                                ))
                                .into_http()),
                            }
                        }
                    }
                })
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    // The panic hook has logged it, with its location and this call's span.
                    record.panicked();
                    Ok(Status::internal("the server failed while handling this call").into_http())
                });
                let (mut parts, body) = match response {
                    Ok(response) => response.into_parts(),
                    Err(never) => match never {},
                };
                correct_status(&mut parts.headers);
                record.code = status_code(&parts.headers);
                record.trailers = parts.extensions.remove::<Trailers>().map(|t| t.0);
                if let Some(id) = request_id {
                    parts.headers.insert(X_REQUEST_ID, id);
                }
                Ok(Response::from_parts(
                    parts,
                    CallBody {
                        inner: body,
                        record,
                    },
                ))
            }
            .instrument(span),
        )
    }
}

/// The deadline a call runs under: the client's, capped for unary calls, and the cap
/// itself for unary calls that bring none. Streams run until the client's own deadline.
fn deadline(client: Option<Duration>, unary: bool, cap: Duration) -> Option<Duration> {
    match (client, unary) {
        (Some(d), true) => Some(d.min(cap)),
        (None, true) => Some(cap),
        (_, false) => None,
    }
}

/// Parses `grpc-timeout`: up to eight digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// tonic answers a message above the size limit with OUT_OF_RANGE; the gRPC spec says
/// RESOURCE_EXHAUSTED, which is what clients (and retry policies) expect.
fn correct_status(headers: &mut HeaderMap) {
    const TOO_LARGE: &[&[u8]] = &[
        b"Error, decoded message length too large",
        b"Error,%20decoded%20message%20length%20too%20large",
    ];
    let too_large = headers.get(GRPC_STATUS).is_some_and(|s| s == "11")
        && headers
            .get(GRPC_MESSAGE)
            .is_some_and(|m| TOO_LARGE.iter().any(|p| m.as_bytes().starts_with(p)));
    if too_large {
        headers.insert(GRPC_STATUS, http::HeaderValue::from_static("8"));
    }
}

fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    value.parse::<i32>().ok().map(Code::from)
}

/// One call's bookkeeping; recorded when dropped, which is when the response body ends or
/// the call is abandoned (then as CANCELLED unless a status was already seen).
struct Record {
    stats: Arc<RpcStats>,
    path: &'static str,
    /// Where this method's counters are in `stats`, found once at the start.
    index: usize,
    started: Instant,
    code: Option<Code>,
    trailers: Option<HeaderMap>,
    activity: Option<Arc<Activity>>,
    peer: Peer,
    context: RequestContext,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// More calls were in flight than `server.max_calls` when this one came.
    over_budget: bool,
}

impl Record {
    /// `method` is the call's place in [`methods::ALL`], `None` for a path not routed.
    fn start(calls: &Calls, method: Option<usize>, context: RequestContext) -> Record {
        let index = calls.stats.index_of(method);
        let method = calls.stats.at(index);
        method.start();
        if let Some(activity) = &calls.activity {
            activity.enter();
        }
        Record {
            stats: calls.stats.clone(),
            path: method.name(),
            index,
            started: Instant::now(),
            code: None,
            trailers: None,
            activity: calls.activity.clone(),
            peer: calls.peer.clone(),
            context,
            over_budget: calls
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                >= calls.max_calls,
            in_flight: calls.in_flight.clone(),
        }
    }

    fn panicked(&mut self) {
        self.stats.at(self.index).panicked();
        self.code = Some(Code::Internal);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        self.in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let code = self.code.unwrap_or(Code::Cancelled);
        let latency = self.started.elapsed();
        self.stats.at(self.index).finish(code, latency);
        if let Some(activity) = &self.activity {
            activity.leave();
        }
        tracing::info!(
            target: "vitals::access",
            grpc_method = self.path,
            peer = self.peer.identity.as_deref().unwrap_or("-"),
            peer_addr = %self.peer.addr,
            grpc_code = crate::rpc_stats::code_name(code),
            latency_us = latency.as_micros() as u64,
            request_id = self.context.request_id.as_str(),
            "call"
        );
    }
}

/// The response body, watched for the status in its trailers.
pub struct CallBody {
    inner: tonic::body::Body,
    record: Record,
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let frame = match frame.into_trailers() {
            Ok(mut trailers) => {
                correct_status(&mut trailers);
                if let Some(code) = status_code(&trailers) {
                    this.record.code = Some(code);
                }
                if let Some(extra) = this.record.trailers.take() {
                    for (name, value) in extra.iter() {
                        trailers.append(name.clone(), value.clone());
                    }
                }
                Frame::trailers(trailers)
            }
            Err(frame) => frame,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How many calls a connection has running, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    active: std::sync::atomic::AtomicUsize,
    idle_since: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            active: std::sync::atomic::AtomicUsize::new(0),
            idle_since: tokio::sync::watch::channel(Some(tokio::time::Instant::now())).0,
        }
    }

    pub fn enter(&self) {
        if self
            .active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            == 0
        {
            self.idle_since.send_replace(None);
        }
    }

    pub fn leave(&self) {
        if self
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.idle_since
                .send_replace(Some(tokio::time::Instant::now()));
        }
    }

    /// Resolves once the connection has had no call for `max`.
    pub(super) async fn idle_for(&self, max: Duration) {
        let mut rx = self.idle_since.subscribe();
        loop {
            let since = *rx.borrow_and_update();
            match since {
                Some(since) => tokio::select! {
                    _ = tokio::time::sleep_until(since + max) => {
                        // enter() and leave() race only in whom they notify last; the count decides.
                        if self.active.load(std::sync::atomic::Ordering::Acquire) == 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(timeout: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", timeout.parse().unwrap());
        h
    }

    /// grpc-timeout values of every unit parse; malformed ones are ignored.
    #[test]
    fn parses_grpc_timeout() {
        assert_eq!(
            grpc_timeout(&headers("1H")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            grpc_timeout(&headers("250m")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            grpc_timeout(&headers("99999999n")),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(grpc_timeout(&headers("0m")), Some(Duration::ZERO));
        for bad in ["", "5", "m", "123456789S", "-1S", "1x", "1.5S"] {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(grpc_timeout(&h), None, "{bad:?}");
        }
    }

    /// Unary calls get the cap at most, and the cap when they bring no deadline; streams
    /// are left to the client.
    #[test]
    fn caps_unary_deadlines_only() {
        let cap = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert_eq!(deadline(Some(ms(50)), true, cap), Some(ms(50)));
        assert_eq!(deadline(Some(ms(50_000)), true, cap), Some(cap));
        assert_eq!(deadline(None, true, cap), Some(cap));
        assert_eq!(deadline(Some(ms(50)), false, cap), None);
        assert_eq!(deadline(None, false, cap), None);
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
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        activity.leave();
        let left = tokio::time::Instant::now();
        idle.await;
        assert_eq!(left.elapsed(), Duration::from_secs(5));
    }
}
