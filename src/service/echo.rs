//! `vitals.echo.v1.Echo`: echoes `echo_message`, with diagnostic knobs for testing clients.
//!
//! The delay is a plain sleep: the server's call layer ends it at the call's deadline with
//! DEADLINE_EXCEEDED, and hyper drops it when the client cancels, so it honours both without
//! code here.

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataMap};

use super::{TaskStream, task_stream};
use crate::{
    context::{Peer, RequestContext, Trailers},
    proto::echo::{EchoRequest, EchoResponse, echo_server},
};

/// The request header the gRPC retry design (A6) uses to count earlier attempts.
const PREVIOUS_ATTEMPTS: HeaderName = HeaderName::from_static("grpc-previous-rpc-attempts");
/// Room left in a message for the fields around the payload.
const ENVELOPE: usize = 1024;

pub struct EchoService {
    max_message_size: usize,
    allow_panic: bool,
    shutdown: CancellationToken,
}

impl EchoService {
    pub fn new(
        max_message_size: usize,
        allow_panic: bool,
        shutdown: CancellationToken,
    ) -> EchoService {
        EchoService {
            max_message_size,
            allow_panic,
            shutdown,
        }
    }

    fn payload(&self, size: u32) -> Result<Vec<u8>, Status> {
        let size = size as usize;
        let max = self.max_message_size.saturating_sub(ENVELOPE);
        if size > max {
            return Err(Status::out_of_range(format!(
                "response_size {size} is above this server's limit of {max} bytes"
            )));
        }
        Ok(vec![b'x'; size])
    }
}

/// Copies the values of `keys` from the request metadata; refuses names that are not
/// metadata keys or that belong to the protocol.
fn pick(metadata: &MetadataMap, keys: &[String]) -> Result<HeaderMap, Status> {
    let mut picked = HeaderMap::new();
    if keys.is_empty() {
        return Ok(picked);
    }
    let headers = metadata.as_ref();
    for key in keys {
        let name = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
            .map_err(|_| Status::invalid_argument(format!("`{key}` is not a metadata key")))?;
        let reserved = name.as_str().starts_with("grpc-")
            || matches!(
                name.as_str(),
                "content-type" | "te" | "content-length" | "transfer-encoding" | "connection"
            );
        if reserved {
            return Err(Status::invalid_argument(format!(
                "`{key}` is reserved by the protocol and cannot be echoed"
            )));
        }
        for value in headers.get_all(&name) {
            picked.append(name.clone(), value.clone());
        }
    }
    Ok(picked)
}

fn previous_attempts(metadata: &MetadataMap) -> u32 {
    metadata
        .as_ref()
        .get(PREVIOUS_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl echo_server::Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let peer_identity = Peer::identity_of(request.extensions());
        let context = request
            .extensions()
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_default();
        let attempts = previous_attempts(request.metadata());
        let headers = pick(request.metadata(), &request.get_ref().echo_headers)?;
        let trailers = pick(request.metadata(), &request.get_ref().echo_trailers)?;
        let req = request.into_inner();

        if req.panic {
            if !self.allow_panic {
                return Err(Status::failed_precondition(
                    "the panic knob is off (echo.allow_panic)",
                ));
            }
            panic!("the echo panic knob was set");
        }
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        if req.status_code != 0 && (req.fail_attempts == 0 || attempts < req.fail_attempts) {
            let code = match req.status_code {
                1..=16 => Code::from(req.status_code),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "status_code {other} is not a gRPC status code (0 to 16)"
                    )));
                }
            };
            let mut metadata = MetadataMap::from_headers(trailers);
            if req.retry_pushback_ms > 0 {
                metadata.insert(
                    "grpc-retry-pushback-ms",
                    req.retry_pushback_ms.to_string().parse().expect("digits"),
                );
            }
            return Err(Status::with_metadata(code, req.status_message, metadata));
        }
        let mut response = Response::new(EchoResponse {
            payload: self.payload(req.response_size)?,
            echo_message: req.echo_message,
            peer_identity,
            request_id: context.request_id.clone(),
            trace_id: context.trace_id.clone(),
            span_id: context.span_id.clone(),
        });
        *response.metadata_mut() = MetadataMap::from_headers(headers);
        if !trailers.is_empty() {
            response.extensions_mut().insert(Trailers(trailers));
        }
        Ok(response)
    }

    type EchoStreamStream = TaskStream<EchoResponse>;

    async fn echo_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        let peer_identity = Peer::identity_of(request.extensions());
        let context = request
            .extensions()
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let shutdown = self.shutdown.clone();
        let max = self.max_message_size;
        Ok(Response::new(task_stream(|tx| async move {
            let this = EchoService::new(max, false, shutdown.clone());
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                        return;
                    }
                };
                let reply = match next {
                    Ok(Some(req)) => this.payload(req.response_size).map(|payload| EchoResponse {
                        echo_message: req.echo_message,
                        payload,
                        peer_identity: peer_identity.clone(),
                        request_id: context.request_id.clone(),
                        trace_id: context.trace_id.clone(),
                        span_id: context.span_id.clone(),
                    }),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        })))
    }
}
