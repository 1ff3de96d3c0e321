//! The daemon's one HTTP client, for the secret store and the remote_write receiver: plain
//! HTTP/1.1, or rustls with HTTP/2 or HTTP/1.1 as ALPN decides, a CA bundle of the
//! operator's choosing, an optional client certificate, and a timeout per request. It
//! keeps its one connection between requests (a push every interval should not pay a TLS
//! handshake each time) and makes a new one when that has closed.
//!
//! hyper's HTTP/1.1 codec is linked for the `/metrics` server already, so speaking it here
//! adds little (docs/arm.md has the figure).

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{
    ClientConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::{net::TcpStream, sync::Mutex};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No connection, a timeout, a broken answer: another try may work.
    Transient(String),
    /// A bad address, an untrusted certificate: trying again will not help.
    Permanent(String),
}

impl Error {
    pub fn reason(&self) -> &str {
        match self {
            Error::Transient(r) | Error::Permanent(r) => r,
        }
    }
}

/// A response: its status and its body, read whole (up to the caller's limit).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_usable(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }
}

/// A client for one server (`http://host:port` or `https://host:port`).
pub struct Client {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// `host:port`, for the connection and the Host header.
    authority: String,
    scheme: &'static str,
    timeout: Duration,
    kept: Mutex<Option<Sender>>,
}

/// A rustls client config that trusts the PEM bundle `ca`, offers `alpn`, and presents
/// `identity` when given.
pub fn tls_config(
    ca: &Path,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, Error> {
    let permanent = |e: &dyn std::fmt::Display| Error::Permanent(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    let certs = crate::tls::load_certs(ca).map_err(|e| permanent(&e))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Error::Permanent(format!("{}: {e}", ca.display())))?;
    }
    let builder = ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| permanent(&e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| Error::Permanent(format!("the client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

impl Client {
    /// `base` is `https://host[:port]` (443 by default), or `http://host[:port]` (80)
    /// when `tls` is `None`.
    pub fn new(base: &str, tls: Option<ClientConfig>, timeout: Duration) -> Result<Client, Error> {
        let (scheme, rest, port) = match (base.split_once("://"), &tls) {
            (Some(("https", rest)), Some(_)) => ("https", rest, 443),
            (Some(("http", rest)), None) => ("http", rest, 80),
            (None, Some(_)) => ("https", base, 443),
            _ => {
                return Err(Error::Permanent(format!(
                    "`{base}`: the scheme does not match the TLS settings"
                )));
            }
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']');
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{port}")
        };
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(Error::Permanent(format!("`{base}` has no host")));
        }
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(host)
                    .map_err(|_| Error::Permanent(format!("`{base}` has no valid host name")))?;
                Some((Arc::new(config), name))
            }
            None => None,
        };
        Ok(Client {
            tls,
            authority,
            scheme,
            timeout,
            kept: Mutex::new(None),
        })
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `request` (its URI is the path and query) within the timeout, and reads at
    /// most `max_body` bytes of the answer.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response, Error> {
        match tokio::time::timeout(self.timeout, self.exchange(request, max_body)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be stuck mid-answer: start afresh next time.
                *self.kept.lock().await = None;
                Err(Error::Transient(format!(
                    "no answer from {} within {}ms",
                    self.authority,
                    self.timeout.as_millis()
                )))
            }
        }
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response, Error> {
        let mut kept = self.kept.lock().await;
        let mut sender = match kept.take() {
            Some(sender) if sender.is_usable() => sender,
            _ => self.connect().await?,
        };
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let transient = |what: &str, e: hyper::Error| Error::Transient(format!("{what}: {e}"));
        let response = match &mut sender {
            Sender::Http1(s) => {
                parts.uri = Uri::try_from(path).map_err(|e| Error::Permanent(e.to_string()))?;
                let host = HeaderValue::try_from(self.authority.as_str())
                    .map_err(|e| Error::Permanent(e.to_string()))?;
                parts.headers.insert(header::HOST, host);
                s.send_request(Request::from_parts(parts, body))
                    .await
                    .map_err(|e| transient("request", e))?
            }
            Sender::Http2(s) => {
                parts.uri = Uri::try_from(format!("{}://{}{path}", self.scheme, self.authority))
                    .map_err(|e| Error::Permanent(e.to_string()))?;
                s.send_request(Request::from_parts(parts, body))
                    .await
                    .map_err(|e| transient("request", e))?
            }
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| Error::Transient(format!("reading the answer: {e}")))?
            .to_bytes();
        *kept = Some(sender);
        Ok(Response { status, body })
    }

    async fn connect(&self) -> Result<Sender, Error> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Error::Transient(format!("connecting to {}: {e}", self.authority)))?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return http1_over(TokioIo::new(tcp)).await;
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
            if certificate {
                Error::Permanent(format!(
                    "TLS: {}'s certificate is not trusted by the configured CA: {e}",
                    self.authority
                ))
            } else {
                Error::Transient(format!("TLS handshake with {}: {e}", self.authority))
            }
        })?;
        if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2) {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| Error::Transient(format!("HTTP/2 handshake: {e}")))?;
            tokio::spawn(connection);
            Ok(Sender::Http2(sender))
        } else {
            http1_over(TokioIo::new(stream)).await
        }
    }
}

async fn http1_over<I>(io: I) -> Result<Sender, Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| Error::Transient(format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(connection);
    Ok(Sender::Http1(sender))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses get their scheme's default port, and a scheme that does not match the
    /// TLS settings is refused.
    #[test]
    fn addresses() {
        let plain = Client::new("http://127.0.0.1:9090/api/v1/write", None, Duration::ZERO);
        assert_eq!(plain.unwrap().authority(), "127.0.0.1:9090");
        let plain = Client::new("http://prom.example", None, Duration::ZERO);
        assert_eq!(plain.unwrap().authority(), "prom.example:80");
        assert!(matches!(
            Client::new("https://x", None, Duration::ZERO),
            Err(Error::Permanent(_))
        ));
        assert!(matches!(
            Client::new("http://", None, Duration::ZERO),
            Err(Error::Permanent(_))
        ));
    }
}
