//! What vitalsctl and the tests need to call a daemon: a channel over mutual TLS (or
//! plaintext), dialled with a connect timeout.
//!
//! - [`retry`]: the gRPC retry policy (proposal A6): parsing, backoff, server pushback
//! - [`histogram`]: a log-linear latency histogram
//! - [`cpu`]: this process's CPU time, from /proc

use std::{path::Path, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::tls::{self, ClientAuth};

pub mod cpu;
pub mod histogram;
pub mod retry;
mod view;
pub use view::{snapshot_json, snapshot_table};

/// The dev PKI directory and address `--dev` means.
pub const DEV_DIR: &str = "certs/dev";
pub const DEV_ADDR: &str = "127.0.0.1:50051";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Tls(#[from] tls::Error),
    #[error("`{0}` is not a host:port address")]
    Address(String),
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// How to reach a daemon.
#[derive(Clone)]
pub struct Dial {
    /// `host:port`.
    pub addr: String,
    /// TLS settings; `None` for plaintext (the health-only listener).
    pub tls: Option<Arc<ClientConfig>>,
    /// The name the server certificate must carry; the host of `addr` when `None`.
    pub server_name: Option<String>,
    pub connect_timeout: Duration,
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
            addr: addr.to_string(),
            tls: Some(Arc::new(config)),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn plaintext(addr: &str) -> Dial {
        Dial {
            addr: addr.to_string(),
            tls: None,
            server_name: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Connects now; the channel reconnects by itself later.
    pub async fn connect(&self) -> Result<Channel, Error> {
        let uri: Uri = format!("http://{}", self.addr)
            .parse()
            .map_err(|_| Error::Address(self.addr.clone()))?;
        let endpoint = Endpoint::from(uri).connect_timeout(self.connect_timeout);
        let connect_err = |source| Error::Connect {
            addr: self.addr.clone(),
            source,
        };
        let Some(config) = self.tls.clone() else {
            return endpoint.connect().await.map_err(connect_err);
        };
        let name = self
            .server_name
            .as_deref()
            .unwrap_or(self.host())
            .to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| Error::ServerName(name))?;
        let addr = self.addr.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let server_name = server_name.clone();
            let addr = addr.clone();
            async move {
                let tcp = TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        });
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(connect_err)
    }
}
