//! What the call layer and the handlers share: who is calling ([`Peer`]), the call's ids
//! ([`RequestContext`]), trailers a handler wants sent ([`Trailers`]), and the
//! [`Routes`] a connection hands its calls (and its plain HTTP [`Page`]s) to. The transport fills these in; handlers read
//! them; neither imports the other.

use std::{convert::Infallible, fmt, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Request, Response};
use tonic::{body::Body, codegen::BoxFuture};

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// A unix socket (the plaintext health listener): no address to speak of.
    Unix,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(addr) => write!(f, "{addr}"),
            PeerAddr::Unix => f.write_str("unix"),
        }
    }
}

/// Who is calling: put into every request's extensions for handlers to read.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: PeerAddr,
    /// The verified client certificate's identity; `None` on the plaintext listener.
    pub identity: Option<Arc<str>>,
}

impl Peer {
    /// The identity of the request's peer, or an empty string.
    pub fn identity_of(extensions: &Extensions) -> String {
        extensions
            .get::<Peer>()
            .and_then(|p| p.identity.as_deref())
            .unwrap_or_default()
            .to_string()
    }
}

/// Trailers a handler wants sent after a successful response (tonic has no API for that):
/// put into the response's extensions, appended by the call layer.
#[derive(Debug, Clone)]
pub struct Trailers(pub HeaderMap);

/// The services a listener offers, as the transport sees them: a path in, a response out.
pub trait Routes: Send + Sync + 'static {
    /// Whether a service here answers `path` (else the answer is UNIMPLEMENTED, and the
    /// call is neither authorized nor denied).
    fn serves(&self, path: &str) -> bool;

    /// Hands the request to the service its path names.
    fn call(&self, request: Request<Body>) -> BoxFuture<Response<Body>, Infallible>;

    /// The plain HTTP page at `path` (`/metrics`), if this listener has one. The
    /// transport authorizes a request for it by its path, as it does a method.
    fn page(&self, _path: &str) -> Option<&dyn Page> {
        None
    }
}

/// A plain HTTP page beside the gRPC services, served on HTTP/1.1 and HTTP/2 alike: a
/// `GET` (its headers) in, a whole response out.
pub trait Page: Send + Sync + 'static {
    fn get(&self, headers: &HeaderMap) -> BoxFuture<Response<Bytes>, Infallible>;
}

/// The request id, trace id and span id of a call; in every request's extensions, on the
/// call's log lines, and the request id in the response headers. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct RequestContext(Arc<Ids>);

#[derive(Debug, Default)]
pub struct Ids {
    pub request_id: String,
    pub trace_id: String,
    pub span_id: String,
}

impl std::ops::Deref for RequestContext {
    type Target = Ids;
    fn deref(&self) -> &Ids {
        &self.0
    }
}

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

impl RequestContext {
    /// From `x-request-id` (kept when it is 1 to 128 visible ASCII characters, else a new
    /// one) and W3C `traceparent` (its trace id is kept; this call gets a new span id).
    pub fn from_headers(headers: &HeaderMap) -> RequestContext {
        let request_id = headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(|| hex_id(fastrand::u128(..), 32), str::to_string);
        let trace_id = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(trace_id_of)
            .map_or_else(|| hex_id(fastrand::u128(1..), 32), str::to_string);
        RequestContext(Arc::new(Ids {
            request_id,
            trace_id,
            span_id: hex_id(fastrand::u64(1..).into(), 16),
        }))
    }
}

/// The low `digits` hex digits of `value`, zero-padded: `format!("{:032x}")` without the
/// formatting machinery, which is per-call work.
fn hex_id(value: u128, digits: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (0..digits)
        .rev()
        .map(|i| HEX[(value >> (4 * i)) as usize & 0xf])
        .collect();
    String::from_utf8(digits).expect("hex digits are ASCII")
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is valid.
fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && parent.bytes().any(|b| b != b'0')
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are zero-padded lowercase hex of the asked width.
    #[test]
    fn hex_ids() {
        assert_eq!(hex_id(0xab, 4), "00ab");
        assert_eq!(hex_id(u128::MAX, 32), "f".repeat(32));
        assert_eq!(hex_id(0x0123_4567_89ab_cdef, 16), "0123456789abcdef");
    }

    /// A valid traceparent lends its trace id; a request id is kept when it is printable.
    #[test]
    fn ids_come_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, "req-7".parse().unwrap());
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        headers.insert(
            TRACEPARENT,
            format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
        );
        let context = RequestContext::from_headers(&headers);
        assert_eq!(context.request_id, "req-7");
        assert_eq!(context.trace_id, trace);
        assert_eq!(context.span_id.len(), 16);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        let fresh = RequestContext::from_headers(&HeaderMap::new());
        assert_eq!((fresh.request_id.len(), fresh.trace_id.len()), (32, 32));
    }
}
