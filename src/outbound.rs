//! The daemon's one HTTP client, for the secret store and the remote_write receiver:
//! HTTP/1.1, plain or over rustls (ALPN `http/1.1`), with a CA bundle of the operator's
//! choosing, an optional client certificate, and a timeout per request. It keeps its one
//! connection between requests (a push every interval should not pay a TLS handshake each
//! time) and makes a new one when that has closed.
//!
//! HTTP/1.1 by hyper's `client::conn::http1`, which parses and frames the answers (every
//! receiver and secret store speaks HTTP/1.1). What is ours is the policy: one kept
//! connection, a deadline for the whole exchange, a cap on the answer's head and body, and
//! which failures are worth another try.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
};
use tokio::io::{AsyncRead, AsyncWrite};
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
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A plain or TLS connection, boxed so hyper's client code exists once.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One HTTP/1.1 connection: hyper's sender, and the task that drives the connection,
/// stopped when this is dropped (a server that never answers holds nothing afterwards).
struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::AbortHandle,
}

impl Drop for Http1 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Largest answer head read.
const MAX_HEAD: usize = 64 << 10;

impl Http1 {
    async fn over(io: Box<dyn Io>, authority: &str) -> Result<Http1, Error> {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_header_size(MAX_HEAD)
            .max_buf_size(MAX_HEAD + (16 << 10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Transient(format!("HTTP/1.1 with {authority}: {e}")))?;
        let driver = tokio::spawn(async move {
            // Its error, if any, is the request's too, which says it.
            let _ = conn.await;
        })
        .abort_handle();
        Ok(Http1 { sender, driver })
    }
}

/// Why an exchange failed, and whether the request can be sent again on a new connection:
/// it never left, or a kept connection closed before any answer came (the server's idle
/// timeout met the request).
fn failed(authority: &str, err: &hyper::Error, reused: bool) -> (Error, bool) {
    let again = err.is_canceled() || (reused && err.is_incomplete_message());
    let what = if err.is_parse() || err.is_parse_status() {
        "the answer is not valid HTTP/1.1"
    } else {
        "the exchange failed"
    };
    (
        Error::Transient(format!("{authority}: {what}: {err}")),
        again,
    )
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
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let host = HeaderValue::try_from(self.authority.as_str())
            .map_err(|e| Error::Permanent(e.to_string()))?;
        let build = || {
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.headers_mut() = parts.headers.clone();
            request.headers_mut().insert(header::HOST, host.clone());
            request
        };
        // A kept connection the server has closed since is not tried.
        let mut conn = kept.take().filter(|c| !c.sender.is_closed());
        let mut reused = conn.is_some();
        let response = loop {
            let mut http1 = match conn.take() {
                Some(http1) => http1,
                None => self.connect().await?,
            };
            match http1.sender.send_request(build()).await {
                Ok(response) => break (response, http1),
                Err(err) => match failed(&self.authority, &err, reused) {
                    (_, true) if reused => reused = false,
                    (error, _) => return Err(error),
                },
            }
        };
        let (response, http1) = response;
        let status = response.status();
        let headers = response.headers().clone();
        let keep = !response
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = http_body_util::Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                Error::Transient(format!(
                    "reading the answer from {}: {e} (at most {max_body} bytes are read)",
                    self.authority
                ))
            })?
            .to_bytes();
        if keep {
            *kept = Some(http1);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    async fn connect(&self) -> Result<Http1, Error> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| Error::Transient(format!("connecting to {}: {e}", self.authority)))?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Http1::over(Box::new(tcp), &self.authority).await;
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
        Http1::over(Box::new(stream), &self.authority).await
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
