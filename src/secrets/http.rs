//! A small HTTPS client for the secret store: one HTTP/2 request per connection over rustls
//! (Vault and OpenBao speak h2 with ALPN), a CA bundle of the operator's choosing, an
//! optional client certificate, a timeout per request. Startup makes a handful of requests,
//! so no pool. HTTP/2 rather than HTTP/1.1 because the server side already links hyper's
//! HTTP/2 and h2, so the client adds far less code than an HTTP/1 codec (docs/arm.md).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header::HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    ClientConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{Failure, Secret};

/// Largest response body read.
const MAX_BODY: usize = 1 << 20;

pub struct Client {
    tls: Arc<ClientConfig>,
    /// `host:port`, for the connection and the Host header.
    authority: String,
    server_name: ServerName<'static>,
    timeout: std::time::Duration,
    namespace: Option<String>,
}

/// A response: its status and body (zeroized on drop: it may hold secrets).
pub struct Response {
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
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
        let authority = addr.strip_prefix("https://").unwrap_or(addr);
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:443")
        };
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host)
            .map_err(|_| Failure::Permanent(format!("`{addr}` has no valid host name")))?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = crate::tls::load_certs(ca).map_err(|e| Failure::Permanent(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Failure::Permanent(format!("{}: {e}", ca.display())))?;
        }
        let builder = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Failure::Permanent(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Failure::Permanent(format!("the device certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Client {
            tls: Arc::new(config),
            authority,
            server_name,
            timeout,
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
        match tokio::time::timeout(self.timeout, self.send(method, path, token, body)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Transient(format!(
                "no answer within {}ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<Response, Failure> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Failure::Transient(format!("connecting to {}: {e}", self.authority)))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let stream = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                let certificate = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
                if certificate {
                    Failure::Permanent(format!(
                        "TLS: the server's certificate is not trusted by ca_cert: {e}"
                    ))
                } else {
                    Failure::Transient(format!("TLS handshake with {}: {e}", self.authority))
                }
            })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(Failure::Permanent(format!(
                "{} does not speak HTTP/2 over TLS (ALPN h2), which Vault and OpenBao do",
                self.authority
            )));
        }
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Transient(format!("HTTP/2 handshake: {e}")))?;
        let driver = tokio::spawn(connection);

        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header(
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
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Transient(format!("request: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Transient(format!("reading the response: {e}")))?
            .to_bytes();
        driver.abort();
        Ok(Response {
            status,
            body: Zeroizing::new(body.to_vec()),
        })
    }
}
