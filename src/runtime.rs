//! The tokio runtime both binaries run on.
//!
//! With one worker (one CPU, or `server.worker_threads = 1`) this is tokio's current-thread
//! scheduler rather than the multi-thread scheduler with a single worker. Under load the
//! multi-thread scheduler's LIFO slot runs the task just woken ahead of older ones, so one
//! busy connection keeps the worker while calls on the others wait: the current-thread
//! scheduler serves more calls with a much shorter tail (BENCHMARKS.md, "Where the tail came
//! from", has the A/B figures).

use tokio::runtime::{Builder, Runtime, RuntimeFlavor};

/// A runtime with `workers` workers; 0 means one per CPU this process may run on.
pub fn build(workers: usize) -> std::io::Result<Runtime> {
    let workers = match workers {
        0 => cpus(),
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

/// The number of CPUs this process may run on (its affinity mask, so `taskset` counts).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
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

/// `pow`, the one libm function the binaries call (tokio's multi-thread scheduler weighs its
/// task poll times with `powf`), from the pure-Rust `libm` crate (musl's implementation):
/// with it defined here the linker drops `libm.so.6`, one shared library fewer to load and
/// map. Kept with the 6 MiB budget for what it buys in idle memory: 0.5 MiB of VmRSS
/// (6.37 against 6.88 MiB on x86_64, `BENCH_PARTS=footprint scripts/bench.sh`, 2026-12-06),
/// which no setting gives (libm's pages are mapped as soon as it is loaded). An exported C
/// symbol is an unsafe attribute; the function itself is safe code.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exported `pow` computes powers (tokio's decay factors among them).
    #[test]
    fn pow_is_a_power() {
        assert_eq!(pow(0.5, 10.0), 0.0009765625);
        assert_eq!(pow(10.0, 3.0), 1000.0);
        assert!((pow(2.0, 0.5) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert!((pow(0.8, 2.5) - 0.572_433_402_239_946_2).abs() < 1e-15);
    }

    /// One worker is the current-thread scheduler; more are the multi-thread one.
    #[test]
    fn one_worker_is_current_thread() {
        let one = build(1).unwrap();
        assert_eq!(one.block_on(async { describe() }), ("current_thread", 1));
        let two = build(2).unwrap();
        assert_eq!(two.block_on(async { describe() }), ("multi_thread", 2));
    }
}
