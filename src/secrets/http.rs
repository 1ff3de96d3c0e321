//! The secret store's client: [`crate::outbound`]'s HTTP/1.1 client (one kept connection),
//! a CA bundle of the operator's choosing, an optional client certificate, a timeout per
//! request, and Vault's headers. Startup makes a handful of requests.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header::HeaderValue};
use http_body_util::Full;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use super::{Failure, Secret};
use crate::outbound;

/// Largest response body read.
const MAX_BODY: usize = 1 << 20;

pub struct Client {
    http: outbound::Client,
    namespace: Option<String>,
}

/// A response: its status and body (zeroized on drop: it may hold secrets).
pub struct Response {
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
}

impl From<outbound::Error> for Failure {
    fn from(e: outbound::Error) -> Failure {
        match e {
            outbound::Error::Transient(r) => Failure::Transient(r),
            outbound::Error::Permanent(r) => Failure::Permanent(r),
        }
    }
}

impl Client {
    /// `addr` is `https://host[:port]`; `ca` the PEM bundle that must have issued the
    /// server's certificate; `identity` the client certificate and key for cert auth.
    pub fn new(
        addr: &str,
        ca: &std::path::Path,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
        timeout: std::time::Duration,
        namespace: Option<String>,
    ) -> Result<Client, Failure> {
        let tls = outbound::tls_config(ca, identity, &[crate::tls::ALPN_HTTP1])?;
        Ok(Client {
            http: outbound::Client::new(addr, Some(tls), timeout)?,
            namespace,
        })
    }

    /// Sends one request. `token` goes in `X-Vault-Token` (marked sensitive); `body` is JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Response, Failure> {
        let mut request = Request::builder().method(method).uri(path).header(
            http::header::USER_AGENT,
            concat!("vitalsd/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(token) = token {
            let mut value = HeaderValue::from_bytes(token.expose())
                .map_err(|_| Failure::Permanent("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace.as_str());
        }
        let body = match body {
            Some(json) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::copy_from_slice(&json))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| Failure::Permanent(format!("building the request: {e}")))?;
        let response = self.http.send(request, MAX_BODY).await?;
        Ok(Response {
            status: response.status,
            body: Zeroizing::new(response.body.to_vec()),
        })
    }
}
