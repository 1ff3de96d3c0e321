//! A raw HTTP/2 gRPC client (h2 over tokio-rustls), for what a channel hides: which
//! connection a call used, GOAWAY, and when the server closed the connection.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::Request;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::{net::TcpStream, task::JoinHandle};

/// One HTTP/2 connection; `closed` resolves with the time the server ended it.
pub struct RawConn {
    pub send: SendRequest<Bytes>,
    pub closed: JoinHandle<(Instant, Result<(), h2::Error>)>,
}

pub async fn connect(addr: SocketAddr, tls: rustls::ClientConfig) -> RawConn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    try_tls(tcp, tls).await.unwrap()
}

/// TLS and HTTP/2 over `tcp`; the error says which failed.
pub async fn try_tls(tcp: TcpStream, tls: rustls::ClientConfig) -> Result<RawConn, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    over(stream).await.map_err(|e| format!("HTTP/2: {e}"))
}

/// A TCP connection to `addr` from the local address `from` (127.0.0.2, say: a source
/// address of its own on loopback).
pub async fn tcp_from(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// HTTP/2 in plaintext over any stream (a unix socket, a plaintext TCP port).
pub async fn over<S>(stream: S) -> Result<RawConn, h2::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, connection) = h2::client::handshake(stream).await?;
    let closed = tokio::spawn(async move {
        let result = connection.await;
        (Instant::now(), result)
    });
    Ok(RawConn { send, closed })
}

/// Asserts that a health Check on `conn` answers SERVING.
pub async fn assert_health_serving(mut conn: RawConn) {
    use vitals::proto::health::{HealthCheckRequest, HealthCheckResponse};
    let reply = call(
        &mut conn.send,
        "/grpc.health.v1.Health/Check",
        frame(&HealthCheckRequest::default()),
    )
    .await
    .expect("a health check answer");
    assert_eq!(reply.grpc_status.as_deref(), Some("0"), "{reply:?}");
    assert_eq!(reply.message::<HealthCheckResponse>().status, 1, "SERVING");
}

/// A length-prefixed, uncompressed gRPC message.
pub fn frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(0);
    buf.put_u32(body.len() as u32);
    buf.put_slice(&body);
    buf.freeze()
}

/// What a unary call came back with.
#[derive(Debug)]
pub struct Reply {
    pub grpc_status: Option<String>,
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
    pub body: Bytes,
}

impl Reply {
    /// The reply's one message, decoded (the body without its 5-byte length prefix).
    pub fn message<M: Message + Default>(&self) -> M {
        let framed = self
            .body
            .get(5..)
            .unwrap_or_else(|| panic!("no message in the reply: {self:?}"));
        M::decode(framed).unwrap_or_else(|e| panic!("not the message expected ({e}): {self:?}"))
    }
}

/// Sends one unary call with `body` as its whole request body (already framed).
pub async fn call(
    send: &mut SendRequest<Bytes>,
    path: &str,
    body: Bytes,
) -> Result<Reply, h2::Error> {
    call_with(send, path, &[], body).await
}

/// [`call`] with extra request headers.
pub async fn call_with(
    send: &mut SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, h2::Error> {
    call_ending(send, path, headers, body, true).await
}

/// A call whose request body is `body` and, unless `end`, never ends: the request stays
/// open until the server answers.
pub async fn call_ending(
    send: &mut SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    end: bool,
) -> Result<Reply, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let mut request = Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(()).unwrap();
    let (response, mut stream) = ready.send_request(request, false)?;
    stream.send_data(body, end)?;
    let response = response.await?;
    let headers = response.headers().clone();
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body = response.into_body();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    drop(stream);
    let grpc_status = grpc_status.or_else(|| {
        trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .map(|v| v.to_str().unwrap().to_string())
    });
    Ok(Reply {
        grpc_status,
        headers,
        trailers,
        body: data.freeze(),
    })
}

/// A length-prefixed gRPC message with any compressed flag and any declared length, which
/// need not match the body (truncated or lying frames).
pub fn frame_raw(compressed: bool, declared_len: u32, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + body.len());
    buf.put_u8(u8::from(compressed));
    buf.put_u32(declared_len);
    buf.put_slice(body);
    buf.freeze()
}

/// A zstd frame that inflates to `size` zero bytes from about `size / 32768` bytes: RLE
/// blocks of 128 KiB, each a 3-byte block header and the one byte to repeat (RFC 8878).
pub fn zstd_bomb(size: usize) -> Vec<u8> {
    const BLOCK: usize = 128 * 1024;
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd]; // magic number
    out.push(0x00); // frame header: no content size, no checksum, no dictionary
    out.push(7 << 3); // window descriptor: 2^(10+7) = 128 KiB
    let mut left = size;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        let last = u32::from(left == 0);
        let header = ((n as u32) << 3) | (1 << 1) | last; // Block_Type 1: RLE
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}
