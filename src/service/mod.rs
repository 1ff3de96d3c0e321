//! The gRPC services, one per file, and the names the server routes and reports them by.

pub mod echo;
pub mod health;
pub mod metrics;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Fully qualified service names, as health reports them and paths start with.
pub const ECHO: &str = "vitals.echo.v1.Echo";
pub const METRICS: &str = "vitals.metrics.v1.Metrics";
pub const HEALTH: &str = "grpc.health.v1.Health";
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The services health reports on (reflection is a tool, not a service with a status).
pub const HEALTH_SERVICES: [&str; 3] = [HEALTH, ECHO, METRICS];

/// Every method path the server routes, for the RPC statistics.
pub const METHODS: [&str; 9] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/vitals.echo.v1.Echo/Echo",
    "/vitals.echo.v1.Echo/EchoStream",
    "/vitals.metrics.v1.Metrics/Snapshot",
    "/vitals.metrics.v1.Metrics/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// A server-streaming response fed by a task.
pub type TaskStream<T> = ReceiverStream<Result<T, Status>>;

/// Runs `produce` as a task that feeds a response stream. The task is dropped as soon as
/// the client goes away (the stream's receiver is dropped), so an abandoned stream holds
/// nothing, however long `produce` would have waited.
pub fn task_stream<T, F>(
    produce: impl FnOnce(mpsc::Sender<Result<T, Status>>) -> F,
) -> TaskStream<T>
where
    T: Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let closed = tx.clone();
    let work = produce(tx);
    tokio::spawn(async move {
        tokio::select! {
            _ = closed.closed() => {}
            _ = work => {}
        }
    });
    ReceiverStream::new(rx)
}
