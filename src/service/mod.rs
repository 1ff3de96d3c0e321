//! The gRPC services, one per file, the `/metrics` page (scrape.rs; its text written by
//! prometheus-client in exposition.rs), and the [`Router`] that hands a listener's calls to
//! them by the service name in the path.

pub mod admin;
pub mod echo;
pub mod exposition;
pub mod health;
pub mod metrics;
mod router;
pub mod scrape;

pub use router::Router;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

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
