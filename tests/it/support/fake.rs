//! Fake peers for what a real component cannot be made to do: answer with broken HTTP,
//! impossible values, or whatever a test needs to see handled.

use std::sync::Arc;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

use super::TestPki;

/// A loopback server that answers every request it reads with what `answer` makes of the
/// request's head (its first line and headers), plain or (with a PKI) over TLS with the
/// PKI's server certificate; its address.
pub async fn answering_server(
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    tls: Option<&TestPki>,
) -> std::net::SocketAddr {
    answering_server_on(0, answer, tls).await
}

/// [`answering_server`] on a given loopback port (one a config already names).
pub async fn answering_server_on(
    port: u16,
    answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    tls: Option<&TestPki>,
) -> std::net::SocketAddr {
    let answer = Arc::new(answer);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|pki| {
        let chain = vitals::tls::load_certs(&pki.path("server.crt")).unwrap();
        let key = vitals::tls::load_key(&pki.path("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(vitals::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            answer_each(tls, answer.as_ref()).await;
                        }
                    }
                    None => answer_each(tcp, answer.as_ref()).await,
                }
            });
        }
    });
    addr
}

/// Reads request heads (and Content-Length bodies) and writes what `answer` makes of each.
async fn answer_each<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    answer: &(dyn Fn(&str) -> Vec<u8> + Send + Sync),
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let Ok(n) = io.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() < end + 4 + length {
            continue;
        }
        let reply = answer(&String::from_utf8_lossy(&buf[..end]));
        buf.drain(..end + 4 + length);
        if io.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// A Vault KV v2 answering every read of an entry with `{ field: value }` (and 404 to
/// anything else): a store a test starts late or never.
pub fn kv_answer(
    field: &'static str,
    value: &'static str,
) -> impl Fn(&str) -> Vec<u8> + Send + Sync {
    move |head| {
        let path = head.split(' ').nth(1).unwrap_or_default();
        if !path.starts_with("/v1/secret/data/") {
            return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec();
        }
        let body =
            format!(r#"{{"data":{{"data":{{"{field}":"{value}"}},"metadata":{{"version":1}}}}}}"#);
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}
