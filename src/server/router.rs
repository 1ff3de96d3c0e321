//! Routes a request to its service by the service name in its path.
//!
//! A `match` on a handful of names instead of tonic's axum-based router: nothing to build
//! per request, and no axum in the binary.

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
};

use http::{Request, Response};
use tonic::{
    Status, body::Body, codec::CompressionEncoding, codegen::BoxFuture, server::NamedService,
};
use tower::{Service, util::BoxCloneSyncService};

use crate::{
    proto::{
        echo::echo_server::EchoServer, health::health_server::HealthServer,
        metrics::metrics_server::MetricsServer,
    },
    service::{self, echo::EchoService, health::HealthService, metrics::MetricsService},
};

type Reflection = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The services a listener offers.
#[derive(Clone)]
pub struct Router {
    health: HealthServer<HealthService>,
    full: Option<Full>,
}

#[derive(Clone)]
struct Full {
    echo: EchoServer<EchoService>,
    metrics: MetricsServer<MetricsService>,
    reflection: Arc<Reflections>,
}

/// The reflection services, built on their first call: decoded and indexed, the descriptor
/// set is ~200 KiB of heap that nothing needs until a tool such as grpcurl asks (the idle
/// daemon's anonymous memory went from 0.86 to 0.66 MiB).
#[derive(Default)]
struct Reflections {
    v1: OnceLock<Reflection>,
    v1alpha: OnceLock<Reflection>,
}

impl Reflections {
    fn v1(&self) -> Reflection {
        let build = || reflection().build_v1().map(BoxCloneSyncService::new);
        self.v1.get_or_init(|| build().expect(VALID)).clone()
    }

    fn v1alpha(&self) -> Reflection {
        let build = || reflection().build_v1alpha().map(BoxCloneSyncService::new);
        self.v1alpha.get_or_init(|| build().expect(VALID)).clone()
    }
}

const VALID: &str = "the embedded descriptor set is valid (router::tests)";

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
}

/// Accepts gzip and zstd requests, answers compressed when the client asks, and bounds
/// message sizes both ways.
macro_rules! configure {
    ($server:expr, $max:expr) => {
        $server
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size($max)
            .max_encoding_message_size($max)
    };
}

impl Router {
    /// Health only, for the plaintext probe listener.
    pub fn health_only(health: HealthService, max_message_bytes: usize) -> Router {
        Router {
            health: configure!(HealthServer::new(health), max_message_bytes),
            full: None,
        }
    }

    /// Health, echo, metrics and reflection (v1 and v1alpha).
    pub fn full(
        health: HealthService,
        echo: EchoService,
        metrics: MetricsService,
        max_message_bytes: usize,
    ) -> Router {
        Router {
            health: configure!(HealthServer::new(health), max_message_bytes),
            full: Some(Full {
                echo: configure!(EchoServer::new(echo), max_message_bytes),
                metrics: configure!(MetricsServer::new(metrics), max_message_bytes),
                reflection: Arc::default(),
            }),
        }
    }

    /// Whether a service of this router answers `path` (else the answer is UNIMPLEMENTED).
    pub fn serves(&self, path: &str) -> bool {
        let name = service_of(path);
        name == HealthServer::<HealthService>::NAME
            || (self.full.is_some()
                && [
                    service::ECHO,
                    service::METRICS,
                    service::REFLECTION_V1,
                    service::REFLECTION_V1ALPHA,
                ]
                .contains(&name))
    }

    pub fn call(&mut self, request: Request<Body>) -> BoxFuture<Response<Body>, Infallible> {
        let name = service_of(request.uri().path());
        match (name, &mut self.full) {
            (HealthServer::<HealthService>::NAME, _) => self.health.call(request),
            (service::ECHO, Some(full)) => full.echo.call(request),
            (service::METRICS, Some(full)) => full.metrics.call(request),
            (service::REFLECTION_V1, Some(full)) => full.reflection.v1().call(request),
            (service::REFLECTION_V1ALPHA, Some(full)) => full.reflection.v1alpha().call(request),
            _ => {
                let status = Status::unimplemented(format!("no service `{name}` here"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// `pkg.Service` of `/pkg.Service/Method`.
fn service_of(path: &str) -> &str {
    path.strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// The descriptor set compiled in builds both reflection services (they are built on
    /// the first call, so a bad set would otherwise show only then).
    #[test]
    fn embedded_descriptor_set_is_valid() {
        super::reflection().build_v1().unwrap();
        super::reflection().build_v1alpha().unwrap();
    }
}
