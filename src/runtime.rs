//! The tokio runtime both binaries run on.
//!
//! With one worker (one CPU, or `server.worker_threads = 1`) this is tokio's current-thread
//! scheduler rather than the multi-thread scheduler with a single worker. Under load the
//! multi-thread scheduler's LIFO slot runs the task just woken ahead of older ones, so one
//! busy connection keeps the worker while calls on the others wait: with vitalsd pinned to
//! one core at 512 calls in flight (BENCHMARKS.md), the current-thread scheduler served
//! ~10-20% more calls and cut p99 from ~30 ms to ~8-16 ms; the multi-thread scheduler with
//! its LIFO slot disabled (a `tokio_unstable` option) got only part of the way (p99 ~22 ms).

use tokio::runtime::{Builder, Runtime, RuntimeFlavor};

/// A runtime with `workers` workers; 0 means one per CPU this process may run on.
pub fn build(workers: usize) -> std::io::Result<Runtime> {
    let workers = match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut builder = if workers == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

/// The current runtime's scheduler, for the startup log line.
pub fn describe() -> (&'static str, usize) {
    let runtime = tokio::runtime::Handle::current();
    let flavor = match runtime.runtime_flavor() {
        RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    (flavor, runtime.metrics().num_workers())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker is the current-thread scheduler; more are the multi-thread one.
    #[test]
    fn one_worker_is_current_thread() {
        let one = build(1).unwrap();
        assert_eq!(one.block_on(async { describe() }), ("current_thread", 1));
        let two = build(2).unwrap();
        assert_eq!(two.block_on(async { describe() }), ("multi_thread", 2));
    }
}
