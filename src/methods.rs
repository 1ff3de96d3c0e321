//! Every method the server routes, once: its path, its service, how it streams and how
//! large its requests may be. The router, the call layer, the RPC statistics, health and
//! the config's ACL validation all read this table, so a new method is added here only.

/// Fully qualified service names, as health reports them and paths start with.
pub const HEALTH: &str = "grpc.health.v1.Health";
pub const ECHO: &str = "vitals.echo.v1.Echo";
pub const METRICS: &str = "vitals.metrics.v1.Metrics";
/// Operator actions (certificate rotation); no default grant covers them.
pub const ADMIN: &str = "vitals.admin.v1.Admin";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The plain HTTP pages (not gRPC) the mutual-TLS port serves, on HTTP/1.1 and HTTP/2.
/// ACL rules name a page by its path; `*` covers them too.
pub const METRICS_PAGE: &str = "/metrics";
pub const PAGES: [&str; 1] = [METRICS_PAGE];

/// The service whose health says only that the process answers: the name for liveness
/// probes. SERVING for as long as the daemon answers at all, draining included.
pub const LIVENESS_SERVICES: [&str; 1] = [HEALTH];
/// Services whose health follows the device checks, as the overall `""` does: names for
/// readiness probes. (Reflection is a tool, not a service with a status.)
pub const READINESS_SERVICES: [&str; 2] = [ECHO, METRICS];

/// How a method's messages flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response: the server's deadline cap applies.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    Bidi,
}

/// How large a method's request messages may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestSize {
    /// A service name, an interval, a reflection query: [`SMALL_REQUEST`] at most.
    Small,
    /// Up to `server.max_message_size` (echo payloads).
    Message,
}

/// The largest request message of a [`RequestSize::Small`] method.
pub const SMALL_REQUEST: usize = 4096;

impl RequestSize {
    /// The largest request message, given `server.max_message_size`.
    pub fn limit(self, max_message_size: usize) -> usize {
        match self {
            RequestSize::Small => SMALL_REQUEST.min(max_message_size),
            RequestSize::Message => max_message_size,
        }
    }
}

/// The largest request message any method of `service` takes (tonic's limits are per
/// service).
pub fn request_limit(service: &str, max_message_size: usize) -> usize {
    ALL.iter()
        .filter(|m| m.service == service)
        .map(|m| m.request_size.limit(max_message_size))
        .max()
        .unwrap_or(SMALL_REQUEST)
}

/// One routed method.
#[derive(Debug)]
pub struct Method {
    /// `/pkg.Service/Method`, as it appears in the HTTP/2 `:path`.
    pub path: &'static str,
    /// `pkg.Service`.
    pub service: &'static str,
    pub kind: Kind,
    pub request_size: RequestSize,
}

impl Method {
    /// Whether the response is a stream (the deadline cap is for unary calls only).
    pub fn streams_responses(&self) -> bool {
        self.kind != Kind::Unary
    }

    /// `pkg.Service/Method`, as ACL rules name it.
    pub fn name(&self) -> &'static str {
        &self.path[1..]
    }
}

const fn method(
    path: &'static str,
    service: &'static str,
    kind: Kind,
    request_size: RequestSize,
) -> Method {
    Method {
        path,
        service,
        kind,
        request_size,
    }
}

/// Every method, in the order the statistics report them.
pub const ALL: [Method; 10] = [
    method(
        "/grpc.health.v1.Health/Check",
        HEALTH,
        Kind::Unary,
        RequestSize::Small,
    ),
    method(
        "/grpc.health.v1.Health/Watch",
        HEALTH,
        Kind::ServerStreaming,
        RequestSize::Small,
    ),
    method(
        "/grpc.health.v1.Health/List",
        HEALTH,
        Kind::Unary,
        RequestSize::Small,
    ),
    method(
        "/vitals.echo.v1.Echo/Echo",
        ECHO,
        Kind::Unary,
        RequestSize::Message,
    ),
    method(
        "/vitals.echo.v1.Echo/EchoStream",
        ECHO,
        Kind::Bidi,
        RequestSize::Message,
    ),
    method(
        "/vitals.metrics.v1.Metrics/Snapshot",
        METRICS,
        Kind::Unary,
        RequestSize::Small,
    ),
    method(
        "/vitals.metrics.v1.Metrics/Watch",
        METRICS,
        Kind::ServerStreaming,
        RequestSize::Small,
    ),
    method(
        "/vitals.admin.v1.Admin/Rotate",
        ADMIN,
        Kind::Unary,
        RequestSize::Small,
    ),
    method(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        REFLECTION_V1,
        Kind::Bidi,
        RequestSize::Small,
    ),
    method(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        REFLECTION_V1ALPHA,
        Kind::Bidi,
        RequestSize::Small,
    ),
];

/// Where `path` is in [`ALL`], if it is a routed method.
pub fn index(path: &str) -> Option<usize> {
    ALL.iter().position(|m| m.path == path)
}

/// The routed method at `path`.
pub fn find(path: &str) -> Option<&'static Method> {
    index(path).map(|i| &ALL[i])
}

/// `pkg.Service` of `/pkg.Service/Method` (empty when the path has no service part).
pub fn service_of(path: &str) -> &str {
    path.strip_prefix('/')
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
}

/// Whether `service` is the service of a routed method.
pub fn is_service(service: &str) -> bool {
    ALL.iter().any(|m| m.service == service)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path starts with its own service, and no path is listed twice.
    #[test]
    fn paths_name_their_service_once() {
        for (i, m) in ALL.iter().enumerate() {
            assert_eq!(service_of(m.path), m.service, "{}", m.path);
            assert_eq!(index(m.path), Some(i), "{} is listed twice", m.path);
            assert_eq!(format!("/{}", m.name()), m.path);
        }
        for service in LIVENESS_SERVICES.iter().chain(&READINESS_SERVICES) {
            assert!(is_service(service), "{service}");
        }
        assert_eq!(find("/nope.Nope/X").map(|m| m.path), None);
        assert_eq!(service_of("garbage"), "");
    }

    /// Health, metrics and reflection take small requests; echo takes the configured size.
    #[test]
    fn request_limits_follow_the_table() {
        let max = 4 << 20;
        assert_eq!(request_limit(HEALTH, max), SMALL_REQUEST);
        assert_eq!(request_limit(METRICS, max), SMALL_REQUEST);
        assert_eq!(request_limit(REFLECTION_V1, max), SMALL_REQUEST);
        assert_eq!(request_limit(ECHO, max), max);
    }

    /// The table says what the protos say: which methods stream which way.
    #[test]
    fn kinds_match_the_protos() {
        use crate::proto::FILE_DESCRIPTOR_SET;
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                for m in &service.method {
                    let path = format!("/{name}/{}", m.name());
                    let Some(method) = find(&path) else {
                        continue;
                    };
                    seen += 1;
                    let kind = match (m.client_streaming(), m.server_streaming()) {
                        (false, false) => Kind::Unary,
                        (false, true) => Kind::ServerStreaming,
                        (true, true) => Kind::Bidi,
                        (true, false) => panic!("{path}: client streaming is not routed"),
                    };
                    assert_eq!(method.kind, kind, "{path}");
                }
            }
        }
        // Reflection's own protos come with tonic-reflection, not in our descriptor set.
        let ours = ALL
            .iter()
            .filter(|m| ![REFLECTION_V1, REFLECTION_V1ALPHA].contains(&m.service))
            .count();
        assert_eq!(
            seen, ours,
            "every routed method of ours is in the descriptor set"
        );
    }
}
