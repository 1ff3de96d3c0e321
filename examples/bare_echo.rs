//! The framework floor for the benchmarks: the same `vitals.echo.v1.Echo` service and the
//! same rustls server config as vitalsd (mutual TLS, TLS 1.3, ALPN h2, ring), served by
//! tonic's own `Server` with its defaults and nothing else: no auth, no statistics, no
//! request context, no tracing, no custom accept loop.
//!
//! cargo run --release --example bare_echo -- --listen 127.0.0.1:50061 --pki certs/dev
#![forbid(unsafe_code)]

use std::{net::SocketAddr, path::PathBuf};

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming, transport::Server};
use vitals::proto::echo::{
    EchoRequest, EchoResponse,
    echo_server::{Echo, EchoServer},
};

struct Bare;

#[tonic::async_trait]
impl Echo for Bare {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            echo_message: request.into_inner().echo_message,
            ..Default::default()
        }))
    }

    type EchoStreamStream = ReceiverStream<Result<EchoResponse, Status>>;

    async fn echo_stream(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        Err(Status::unimplemented(
            "the bare server serves unary echo only",
        ))
    }
}

// Built with `--features count-allocs` (scripts/bench.sh's allocation count), it counts
// its allocations and prints them when SIGTERM stops it.
#[cfg(feature = "count-allocs")]
#[global_allocator]
static ALLOCATOR: vitals::alloc_count::Counting = vitals::alloc_count::Counting;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    #[cfg(feature = "count-allocs")]
    tokio::spawn(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
        let (allocations, bytes) = vitals::alloc_count::counts();
        eprintln!("allocations: {allocations} ({bytes} bytes)");
        std::process::exit(0);
    });
    let mut listen: SocketAddr = "127.0.0.1:50061".parse()?;
    let mut pki = PathBuf::from("certs/dev");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or_default().parse()?,
            "--pki" => pki = args.next().unwrap_or_default().into(),
            other => anyhow::bail!("unknown argument {other}; use --listen ADDR --pki DIR"),
        }
    }
    vitals::pki::ensure_dev(&pki)?;
    let key = vitals::tls::Key::load(&pki.join("server.key"))?;
    let identity =
        vitals::tls::server_config(&pki.join("server.crt"), key, &pki.join("ca.crt"), &[])?;
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.config);
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bare echo serving on {}", listener.local_addr()?);

    // Handshakes run on their own tasks; finished TLS streams go to tonic.
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    Server::builder()
        .add_service(EchoServer::new(Bare))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await?;
    Ok(())
}
