//! The daemon's one HTTP client, for the secret store and the remote_write receiver:
//! HTTP/1.1, plain or over rustls (ALPN `http/1.1`), with a CA bundle of the operator's
//! choosing, an optional client certificate, and a timeout per request. It keeps its one
//! connection between requests (a push every interval should not pay a TLS handshake each
//! time) and makes a new one when that has closed.
//!
//! HTTP/1.1 by the daemon's own small codec ([`crate::http1`]) rather than hyper's HTTP/2
//! client: every receiver and secret store speaks it, and it costs a small fraction of
//! hyper's client (docs/arm.md has both figures).

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use rustls::{
    ClientConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::{net::TcpStream, sync::Mutex};

use crate::http1 as wire;

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

/// A plain or TLS connection, boxed so the HTTP/1.1 code exists once.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An HTTP/1.1 connection and what was read past the last answer.
struct Http1 {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// Largest answer head read.
const MAX_HEAD: usize = 64 << 10;

impl Http1 {
    fn over(io: Box<dyn Io>) -> Http1 {
        Http1 {
            io,
            buf: Vec::new(),
        }
    }

    /// Sends one request and reads its answer; whether the connection may be used again.
    /// The error's flag says nothing at all came back (a kept connection the server had
    /// closed), so sending again on a new one is safe.
    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        mut headers: HeaderMap,
        authority: &str,
        body: &[u8],
        max_body: usize,
    ) -> Result<(Response, bool), (Error, bool)> {
        let transient = |what: &str| (Error::Transient(what.to_owned()), false);
        let host = HeaderValue::try_from(authority)
            .map_err(|e| (Error::Permanent(e.to_string()), false))?;
        headers.insert(header::HOST, host);
        let mut out = Vec::with_capacity(512 + body.len());
        wire::write_head(
            &mut out,
            &format!("{method} {path} HTTP/1.1"),
            &headers,
            body.len(),
        );
        out.extend_from_slice(body);
        if let Err(e) = async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        }
        .await
        {
            return Err((Error::Transient(format!("sending the request: {e}")), true));
        }
        loop {
            let n = match wire::read_head(&mut self.io, &mut self.buf, MAX_HEAD).await {
                Ok(n) => n,
                Err(wire::HeadError::Closed) => {
                    return Err((
                        Error::Transient("the connection closed before an answer".into()),
                        true,
                    ));
                }
                Err(wire::HeadError::Io(e)) if self.buf.is_empty() => {
                    return Err((Error::Transient(format!("reading the answer: {e}")), true));
                }
                Err(_) => return Err(transient("the answer's head is broken or too long")),
            };
            let head = wire::parse_head(&self.buf[..n]).map_err(transient)?;
            self.buf.drain(..n);
            let [version, code, _] = &head.start;
            if !version.starts_with("HTTP/1.") {
                return Err(transient("the answer is not HTTP/1"));
            }
            let status = StatusCode::from_bytes(code.as_bytes())
                .map_err(|_| transient("a malformed status"))?;
            if status.is_informational() {
                continue;
            }
            let length = if method == Method::HEAD
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                wire::Length::Exactly(0)
            } else {
                wire::body_length(&head.headers)
                    .map_err(transient)?
                    .ok_or_else(|| transient("an answer without Content-Length or chunks"))?
            };
            let body = wire::read_body(&mut self.io, &mut self.buf, length, max_body)
                .await
                .map_err(transient)?;
            let keep = wire::keeps_alive(version, &head.headers);
            return Ok((
                Response {
                    status,
                    body: Bytes::from(body),
                },
                keep,
            ));
        }
    }
}

/// A client for one server (`http://host:port` or `https://host:port`).
pub struct Client {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// `host:port`, for the connection and the Host header.
    authority: String,
    timeout: Duration,
    kept: Mutex<Option<Http1>>,
}

/// A rustls client config that trusts the PEM bundle `ca`, offers `alpn` (the client
/// speaks `http/1.1`; tests offer others), and presents `identity` when given.
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
        let (rest, port) = match (base.split_once("://"), &tls) {
            (Some(("https", rest)), Some(_)) => (rest, 443),
            (Some(("http", rest)), None) => (rest, 80),
            (None, Some(_)) => (base, 443),
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
        let (reused, conn) = match kept.take() {
            Some(conn) => (true, conn),
            None => (false, self.connect().await?),
        };
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let attempt = |mut conn: Http1| {
            let headers = parts.headers.clone();
            let (method, body) = (&parts.method, &body);
            async move {
                let result = conn
                    .exchange(method, path, headers, &self.authority, body, max_body)
                    .await;
                (result, conn)
            }
        };
        let (mut result, mut conn) = attempt(conn).await;
        // A kept connection the server closed meanwhile: once more on a new one.
        if reused && matches!(result, Err((_, true))) {
            (result, conn) = attempt(self.connect().await?).await;
        }
        let (response, keep) = result.map_err(|(e, _)| e)?;
        if keep {
            *kept = Some(conn);
        }
        Ok(response)
    }

    async fn connect(&self) -> Result<Http1, Error> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Error::Transient(format!("connecting to {}: {e}", self.authority)))?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Ok(Http1::over(Box::new(tcp)));
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let stream = connector.connect(name.clone(), tcp).await.map_err(|e| {
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|inner| matches!(inner, rustls::Error::InvalidCertificate(_)));
            if certificate {
                Error::Permanent(format!(
                    "TLS: the server's certificate is not trusted by ca_cert: {e}"
                ))
            } else {
                Error::Transient(format!("TLS handshake with {}: {e}", self.authority))
            }
        })?;
        Ok(Http1::over(Box::new(stream)))
    }
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
