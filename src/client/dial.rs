//! Connecting to a server: plaintext, server-only TLS or mutual TLS, under a connect
//! timeout, over connections that close politely and say when they are gone.
//!
//! Every connection goes through our own connector, for three reasons: the TLS modes
//! grpc_health_probe has (CA file, system roots, no verification, with or without a client
//! certificate); a lingering close (GOAWAY, then TLS close_notify and FIN, then the peer's
//! last bytes read), so a short-lived client such as a probe never makes the server's
//! kernel see a reset; and a [`Liveness`] per channel that the balancer reads to know a
//! connection has died without waiting for a call to fail on it.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, UnixStream},
    sync::Notify,
    time::Sleep,
};
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::Error;
use crate::tls::{self, ClientAuth};

/// Where the system's CA bundle may live, as Go's crypto/x509 looks for it
/// (`$SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How long a closing connection waits for the server's goodbye before it is dropped.
const LINGER: Duration = Duration::from_millis(500);

/// What a connection's first bytes from the server were.
const UNHEARD: u8 = 0;
const SETTINGS: u8 = 1;
const NOT_HTTP2: u8 = 2;

/// Which server certificates a TLS client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Those issued by a CA in this PEM file.
    Ca(PathBuf),
    /// Those issued by a CA of the system bundle.
    System,
    /// Any (`-tls-no-verify`): encrypted, not authenticated.
    Anything,
}

/// TLS settings as the command line gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    pub trust: Trust,
    /// Client certificate and key (PEM files); `None` for server-only TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsOptions {
    /// Reads the files and builds the rustls config.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let auth = match &self.identity {
            Some((cert, key)) => ClientAuth::Certificate { cert, key },
            None => ClientAuth::Anonymous,
        };
        Ok(match &self.trust {
            Trust::Ca(ca) => tls::client_config(ca, auth)?,
            Trust::System => tls::client_config(&system_bundle()?, auth)?,
            Trust::Anything => tls::client_config_no_verify(auth)?,
        })
    }
}

fn system_bundle() -> Result<PathBuf, Error> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or(Error::NoSystemRoots)
}

/// Where a target listens: a TCP `host:port`, or a unix socket named as grpc-go and
/// grpc_health_probe name one (`unix:/path`, `unix:///path`, `unix-abstract:name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Unix(PathBuf),
    /// A socket in the abstract namespace (Linux): its name, without the leading NUL.
    Abstract(Vec<u8>),
}

impl Target {
    /// `unix:/run/x.sock`, `unix:///run/x.sock` and `unix:relative` are paths,
    /// `unix-abstract:name` an abstract name, anything else `host:port`.
    pub fn parse(addr: &str) -> Target {
        if let Some(name) = addr.strip_prefix("unix-abstract:") {
            return Target::Abstract(name.as_bytes().to_vec());
        }
        match addr.strip_prefix("unix:") {
            // unix://absolute_path: the authority is empty, the path absolute.
            Some(rest) => Target::Unix(PathBuf::from(rest.strip_prefix("//").unwrap_or(rest))),
            None => Target::Tcp(addr.to_string()),
        }
    }

    /// Whether this is a unix socket (no resolving, no TLS name of its own).
    pub fn is_unix(&self) -> bool {
        !matches!(self, Target::Tcp(_))
    }
}

/// How to reach a server.
#[derive(Clone)]
pub struct Dial {
    /// `host:port` (a name is resolved at connect time and its addresses tried in order), or
    /// a unix socket: `unix:/path`, `unix:///path`, `unix-abstract:name`.
    pub addr: String,
    /// TLS settings; `None` for plaintext (the health-only listener).
    pub tls: Option<Arc<ClientConfig>>,
    /// The name the server certificate must carry; the host of `addr` when `None`.
    pub server_name: Option<String>,
    /// Covers TCP, TLS and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// Prepended to tonic's own `user-agent`.
    pub user_agent: Option<String>,
}

/// A channel and the liveness of its connection.
#[derive(Clone)]
pub struct Conn {
    pub channel: Channel,
    pub liveness: Arc<Liveness>,
}

impl Dial {
    /// Mutual TLS with the CA, certificate and key at these paths.
    pub fn mtls(addr: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Dial, Error> {
        let config = tls::client_config(ca, ClientAuth::Certificate { cert, key })?;
        Ok(Dial::with_tls(addr, config))
    }

    /// The dev PKI in `dir`, as `vitalsd --dev` serves it.
    pub fn dev(addr: &str, dir: &Path) -> Result<Dial, Error> {
        Dial::mtls(
            addr,
            &dir.join("ca.crt"),
            &dir.join("client.crt"),
            &dir.join("client.key"),
        )
    }

    pub fn with_tls(addr: &str, config: ClientConfig) -> Dial {
        Dial {
            tls: Some(Arc::new(config)),
            ..Dial::plaintext(addr)
        }
    }

    pub fn plaintext(addr: &str) -> Dial {
        Dial {
            addr: addr.to_string(),
            tls: None,
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            user_agent: None,
        }
    }

    /// The same settings for another target.
    pub fn target(&self, addr: &str) -> Dial {
        Dial {
            addr: addr.to_string(),
            ..self.clone()
        }
    }

    /// Connects to one resolved address of the target, still checking the certificate
    /// against the target's name.
    pub fn resolved(&self, addr: std::net::SocketAddr) -> Dial {
        Dial {
            addr: addr.to_string(),
            server_name: Some(self.tls_name().to_string()),
            ..self.clone()
        }
    }

    fn host(&self) -> &str {
        // A unix socket has no host; grpc-go calls it localhost.
        if Target::parse(&self.addr).is_unix() {
            return "localhost";
        }
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The name the server certificate is checked against.
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(self.host())
    }

    /// Connects now; the channel reconnects by itself later.
    pub async fn connect(&self) -> Result<Channel, Error> {
        Ok(self.open().await?.channel)
    }

    /// Connects now (TCP, TLS, and the server's HTTP/2 SETTINGS within `connect_timeout`)
    /// and returns the channel with the liveness of its connection.
    pub async fn open(&self) -> Result<Conn, Error> {
        let authority = match Target::parse(&self.addr) {
            Target::Tcp(addr) => addr,
            Target::Unix(_) | Target::Abstract(_) => "localhost".to_string(),
        };
        let uri: Uri = format!("http://{authority}")
            .parse()
            .map_err(|_| Error::Address(self.addr.clone()))?;
        let mut endpoint = Endpoint::from(uri);
        if let Some(agent) = &self.user_agent {
            endpoint = endpoint
                .user_agent(agent.as_str())
                .map_err(|_| Error::UserAgent(agent.clone()))?;
        }
        let liveness = Arc::new(Liveness::default());
        let connector = self.connector()?;
        let live = liveness.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let (connector, live) = (connector.clone(), live.clone());
            async move { Ok::<_, io::Error>(TokioIo::new(connector.stream(live).await?)) }
        });
        // Connected means the server has spoken HTTP/2 (its SETTINGS), as grpc-go's
        // blocking dial has it: a TLS port probed in plaintext, or a listener that never
        // answers, is a connection failure, not a failed call.
        let connecting = async {
            let channel = endpoint.connect_with_connector(connector).await?;
            Ok::<_, tonic::transport::Error>((channel, liveness.preface().await))
        };
        let channel = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok((channel, Ok(())))) => channel,
            Ok(Ok((_, Err(mut why)))) => {
                // The server's "certificate required" alert is usually lost to its reset.
                let anonymous = self
                    .tls
                    .as_ref()
                    .is_some_and(|c| !c.client_auth_cert_resolver.has_certs());
                if anonymous && !why.contains("HTTP/2 (") {
                    why.push_str(
                        " (no client certificate was offered; does the server require one?)",
                    );
                }
                return Err(Error::NoPreface {
                    addr: self.addr.clone(),
                    why,
                });
            }
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    addr: self.addr.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    addr: self.addr.clone(),
                    timeout: self.connect_timeout,
                });
            }
        };
        Ok(Conn { channel, liveness })
    }
}

impl Dial {
    /// What opens streams to this server; checks the TLS name.
    pub fn connector(&self) -> Result<Connector, Error> {
        let tls = match self.tls.clone() {
            Some(config) => {
                let name = self.tls_name().to_string();
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| Error::ServerName(name))?;
                Some((tokio_rustls::TlsConnector::from(config), server_name))
            }
            None => None,
        };
        let target = Target::parse(&self.addr);
        if target.is_unix() && tls.is_some() {
            return Err(Error::UnixTls(self.addr.clone()));
        }
        Ok(Connector { target, tls })
    }
}

/// Opens TCP (and TLS) or unix streams to one server.
#[derive(Clone)]
pub struct Connector {
    target: Target,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    /// A new stream, reporting to `liveness`; the caller keeps the time.
    pub async fn stream(&self, liveness: Arc<Liveness>) -> io::Result<Graceful> {
        let stream = match &self.target {
            Target::Tcp(addr) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                match &self.tls {
                    Some((connector, name)) => {
                        Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
                    }
                    None => Stream::Plain(tcp),
                }
            }
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                let std = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                std.set_nonblocking(true)?;
                Stream::Unix(UnixStream::from_std(std)?)
            }
        };
        Ok(Graceful::new(stream, liveness))
    }
}

/// The connections of one channel: how many can still carry calls, and how many have not
/// yet been closed and dropped.
#[derive(Debug, Default)]
pub struct Liveness {
    usable: AtomicUsize,
    open: AtomicUsize,
    /// What the server's first bytes were: [`UNHEARD`], [`SETTINGS`] or [`NOT_HTTP2`].
    first: AtomicU8,
    /// The first error a connection's socket or TLS session reported (a TLS alert such as
    /// "certificate required" says more than "the connection closed").
    error: std::sync::Mutex<Option<(String, bool)>>,
    changed: Notify,
}

impl Liveness {
    /// Whether a connection is up and has seen neither EOF nor an error.
    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire) > 0
    }

    /// Waits until every connection has been closed, at most `limit`; whether they were.
    pub async fn closed(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.open.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Waits for the server's first bytes: `Ok` when they are an HTTP/2 SETTINGS frame,
    /// else why not.
    pub(super) async fn preface(&self) -> Result<(), String> {
        loop {
            let notified = self.changed.notified();
            match self.first.load(Ordering::Acquire) {
                SETTINGS => return Ok(()),
                NOT_HTTP2 => {
                    return Err(
                        "the server did not answer in HTTP/2 (TLS expected, or not gRPC?)".into(),
                    );
                }
                _ if !self.is_usable() => {
                    let why = "the connection closed before the server's HTTP/2 preface";
                    let kept = self.error.lock().unwrap_or_else(|e| e.into_inner());
                    return Err(match kept.as_ref() {
                        Some((error, _)) => format!("{why}: {error}"),
                        None => why.to_string(),
                    });
                }
                _ => notified.await,
            }
        }
    }

    fn opened(&self) {
        self.usable.fetch_add(1, Ordering::AcqRel);
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// A TCP, TLS or unix stream.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// `$call` on whichever stream `$stream` holds, pinned.
macro_rules! on_stream {
    ($stream:expr, $s:ident => $call:expr) => {
        match $stream {
            Stream::Plain($s) => {
                let $s = Pin::new($s);
                $call
            }
            Stream::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $call
            }
            Stream::Unix($s) => {
                let $s = Pin::new($s);
                $call
            }
        }
    };
}

/// A stream that closes politely: `poll_shutdown` sends close_notify and FIN, then reads
/// the peer out until its EOF (at most [`LINGER`]), so closing never leaves unread bytes
/// for the kernel to answer with a reset. It reports itself to a [`Liveness`].
pub struct Graceful {
    stream: Stream,
    liveness: Arc<Liveness>,
    usable: bool,
    shut: bool,
    linger: Option<Pin<Box<Sleep>>>,
}

impl Graceful {
    fn new(stream: Stream, liveness: Arc<Liveness>) -> Graceful {
        liveness.opened();
        Graceful {
            stream,
            liveness,
            usable: true,
            shut: false,
            linger: None,
        }
    }

    /// Keeps the first error, preferring one seen reading (where TLS alerts surface) to
    /// one seen writing (a broken pipe says little).
    fn failed(&self, error: &io::Error, reading: bool) {
        let mut kept = self
            .liveness
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if kept.as_ref().is_none_or(|(_, read)| reading && !read) {
            *kept = Some((error.to_string(), reading));
        }
    }

    fn unusable(&mut self) {
        if std::mem::take(&mut self.usable) {
            self.liveness.usable.fetch_sub(1, Ordering::AcqRel);
            self.liveness.changed.notify_waiters();
        }
    }

    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        on_stream!(&mut self.stream, s => s.poll_read(cx, buf))
    }
}

impl Drop for Graceful {
    fn drop(&mut self) {
        self.unusable();
        self.liveness.open.fetch_sub(1, Ordering::AcqRel);
        self.liveness.changed.notify_waiters();
    }
}

impl AsyncRead for Graceful {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = ready!(this.poll_read_inner(cx, buf));
        if let Err(e) = &result {
            this.failed(e, true);
        }
        if result.is_err() || buf.filled().len() == before {
            this.unusable();
        } else if this.liveness.first.load(Ordering::Relaxed) == UNHEARD {
            // An HTTP/2 server starts with a SETTINGS frame: type 4 in the frame header's
            // fourth byte.
            let first = &buf.filled()[before..];
            let kind = if first.len() < 4 || first[3] == 4 {
                SETTINGS
            } else {
                NOT_HTTP2
            };
            this.liveness.first.store(kind, Ordering::Release);
            this.liveness.changed.notify_waiters();
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for Graceful {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(on_stream!(&mut this.stream, s => s.poll_write(cx, data)));
        if let Err(e) = &result {
            this.failed(e, false);
            this.unusable();
        }
        Poll::Ready(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = ready!(on_stream!(&mut this.stream, s => s.poll_write_vectored(cx, bufs)));
        if let Err(e) = &result {
            this.failed(e, false);
            this.unusable();
        }
        Poll::Ready(result)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(&mut self.get_mut().stream, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.unusable();
        if !this.shut {
            // The TLS stream sends close_notify, then shuts down the TCP write half.
            let result = ready!(on_stream!(&mut this.stream, s => s.poll_shutdown(cx)));
            this.shut = true;
            if result.is_err() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        // Read the peer out until its EOF, so nothing is left unread when we close.
        let mut sink = [0u8; 2048];
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match this.poll_read_inner(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let linger = this.linger.as_mut().expect("set at shutdown");
                    return match linger.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets are named as grpc-go names them.
    #[test]
    fn targets_parse_as_grpc_go_names_them() {
        assert_eq!(
            Target::parse("10.0.0.7:50051"),
            Target::Tcp("10.0.0.7:50051".into())
        );
        assert_eq!(
            Target::parse("unix:/run/h.sock"),
            Target::Unix("/run/h.sock".into())
        );
        assert_eq!(
            Target::parse("unix:///run/h.sock"),
            Target::Unix("/run/h.sock".into())
        );
        assert_eq!(Target::parse("unix:h.sock"), Target::Unix("h.sock".into()));
        assert_eq!(
            Target::parse("unix-abstract:vitals"),
            Target::Abstract(b"vitals".to_vec())
        );
        assert_eq!(Dial::plaintext("unix:/run/h.sock").tls_name(), "localhost");
        assert!(matches!(
            Dial::with_tls(
                "unix:/x",
                tls::client_config_no_verify(ClientAuth::Anonymous).unwrap()
            )
            .connector(),
            Err(Error::UnixTls(_))
        ));
    }
}
