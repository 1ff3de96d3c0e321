//! Routes a request to its service by the service name in its path, and a plain HTTP
//! request to its page (`/metrics`).
//!
//! A `match` on a handful of names instead of tonic's axum-based router: nothing to build
//! per request, and no axum in the binary.

use std::{
    convert::Infallible,
    sync::{Arc, OnceLock},
};

use http::{Request, Response};
use tonic::{Status, body::Body, codec::CompressionEncoding, codegen::BoxFuture};
use tower::{Service, util::BoxCloneSyncService};

use super::{
    admin::AdminService, echo::EchoService, health::HealthService, metrics::MetricsService,
    scrape::ScrapeService,
};
use crate::{
    context::{Page, Routes},
    methods::{
        self, ADMIN, ECHO, HEALTH, METRICS, METRICS_PAGE, REFLECTION_V1, REFLECTION_V1ALPHA,
        SMALL_REQUEST,
    },
    proto::{
        admin::admin_server::AdminServer, echo::echo_server::EchoServer,
        health::health_server::HealthServer, metrics::metrics_server::MetricsServer,
    },
};

type Reflection = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The services a listener offers.
pub struct Router {
    health: HealthServer<HealthService>,
    full: Option<Full>,
}

struct Full {
    echo: EchoServer<EchoService>,
    metrics: MetricsServer<MetricsService>,
    admin: AdminServer<AdminService>,
    reflection: Arc<Reflections>,
    scrape: ScrapeService,
}

/// The reflection services, built on their first call: decoded and indexed, the descriptor
/// set is heap that nothing needs until a tool such as grpcurl asks (BENCHMARKS.md has the
/// idle figure).
#[derive(Default)]
struct Reflections {
    v1: OnceLock<Reflection>,
    v1alpha: OnceLock<Reflection>,
}

impl Reflections {
    fn v1(&self) -> Reflection {
        let limit = methods::request_limit(REFLECTION_V1, SMALL_REQUEST);
        let build = || {
            let server = reflection().build_v1()?;
            Ok::<_, tonic_reflection::server::Error>(BoxCloneSyncService::new(
                server.max_decoding_message_size(limit),
            ))
        };
        self.v1.get_or_init(|| build().expect(VALID)).clone()
    }

    fn v1alpha(&self) -> Reflection {
        let limit = methods::request_limit(REFLECTION_V1ALPHA, SMALL_REQUEST);
        let build = || {
            let server = reflection().build_v1alpha()?;
            Ok::<_, tonic_reflection::server::Error>(BoxCloneSyncService::new(
                server.max_decoding_message_size(limit),
            ))
        };
        self.v1alpha.get_or_init(|| build().expect(VALID)).clone()
    }
}

const VALID: &str = "the embedded descriptor set is valid (router::tests)";

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
}

/// Accepts gzip and zstd requests, answers compressed when the client asks, and bounds
/// message sizes both ways: requests by what the method table says of the service
/// ([`methods::request_limit`]), responses by `server.max_message_size`.
macro_rules! configure {
    ($server:expr, $service:expr, $max:expr) => {
        $server
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .max_decoding_message_size(methods::request_limit($service, $max))
            .max_encoding_message_size($max)
    };
}

impl Router {
    /// Health only, for the plaintext probe listener.
    pub fn health_only(health: HealthService, max_message_size: usize) -> Router {
        Router {
            health: configure!(HealthServer::new(health), HEALTH, max_message_size),
            full: None,
        }
    }

    /// Health, echo, metrics, admin and reflection (v1 and v1alpha), and the `/metrics`
    /// page.
    pub fn full(
        health: HealthService,
        echo: EchoService,
        metrics: MetricsService,
        admin: AdminService,
        scrape: ScrapeService,
        max_message_size: usize,
    ) -> Router {
        Router {
            health: configure!(HealthServer::new(health), HEALTH, max_message_size),
            full: Some(Full {
                echo: configure!(EchoServer::new(echo), ECHO, max_message_size),
                metrics: configure!(MetricsServer::new(metrics), METRICS, max_message_size),
                admin: configure!(AdminServer::new(admin), ADMIN, max_message_size),
                reflection: Arc::default(),
                scrape,
            }),
        }
    }
}

impl Routes for Router {
    fn serves(&self, path: &str) -> bool {
        let name = methods::service_of(path);
        name == HEALTH || (self.full.is_some() && methods::is_service(name))
    }

    fn call(&self, request: Request<Body>) -> BoxFuture<Response<Body>, Infallible> {
        let name = methods::service_of(request.uri().path());
        match (name, &self.full) {
            (HEALTH, _) => self.health.clone().call(request),
            (ECHO, Some(full)) => full.echo.clone().call(request),
            (METRICS, Some(full)) => full.metrics.clone().call(request),
            (ADMIN, Some(full)) => full.admin.clone().call(request),
            (REFLECTION_V1, Some(full)) => full.reflection.v1().call(request),
            (REFLECTION_V1ALPHA, Some(full)) => full.reflection.v1alpha().call(request),
            _ => {
                let status = Status::unimplemented(format!("no service `{name}` here"));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }

    fn page(&self, path: &str) -> Option<&dyn Page> {
        match (path, &self.full) {
            (METRICS_PAGE, Some(full)) => Some(&full.scrape),
            _ => None,
        }
    }
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
