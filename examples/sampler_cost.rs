//! What one `Sampler::sample()` costs: CPU time and wall time per sample.
//!
//! ```text
//! cargo run --release --example sampler_cost [SAMPLES] [INTERVAL_MS]
//! ```
//!
//! SAMPLES defaults to 200, INTERVAL_MS to 10. sysinfo reads /proc/stat at most every 200 ms,
//! so below that most samples skip the CPU-times read; pass 250 to cost every sample as the
//! daemon (sampling every second or so) pays it.
//!
//! CPU time is the sampling thread's on-CPU nanoseconds from /proc/thread-self/schedstat. The
//! kernel brings that counter up to date when the thread is switched out, so each reading is
//! taken after the sleep that follows a sample, and the cost of that sleep and of the reading
//! itself (the median of empty rounds interleaved with the samples) is subtracted.

use std::hint::black_box;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use vitals::sampler::Sampler;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let samples = match args.next().map(|a| a.parse::<usize>()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => return usage(),
    };
    let interval = match args.next().map(|a| a.parse::<u64>()) {
        None => Duration::from_millis(10),
        Some(Ok(ms)) => Duration::from_millis(ms),
        Some(Err(_)) => return usage(),
    };
    let Some(clock) = ThreadClock::detect() else {
        eprintln!("sampler_cost: neither /proc/thread-self/schedstat nor /stat is readable");
        return ExitCode::FAILURE;
    };

    // Warm up: the 200 ms a CPU usage figure needs, then a few samples so buffers and lists
    // exist.
    let mut sampler = Sampler::new();
    thread::sleep(Duration::from_millis(250));
    for _ in 0..3 {
        black_box(sampler.sample());
        thread::sleep(interval);
    }

    // Each sample is paired with an empty round (sleep, read the clock) whose cost is the
    // measurement overhead; interleaving them keeps the subtraction honest on a busy machine.
    // The two half sleeps keep samples `interval` apart.
    let half = interval / 2;
    let mut cpu = Vec::with_capacity(samples);
    let mut wall = Vec::with_capacity(samples);
    let mut overhead = Vec::with_capacity(samples);
    let mut before = clock.now();
    for _ in 0..samples {
        thread::sleep(half);
        let after = clock.now();
        overhead.push(after.saturating_sub(before));
        before = after;

        let started = Instant::now();
        black_box(sampler.sample());
        wall.push(started.elapsed());
        thread::sleep(half);
        let after = clock.now();
        cpu.push(after.saturating_sub(before));
        before = after;
    }
    let overhead = median(&mut overhead);
    for c in &mut cpu {
        *c = c.saturating_sub(overhead);
    }

    let cpu_mean = cpu.iter().sum::<Duration>() / samples as u32;
    let cpu_median = median(&mut cpu);
    let wall_mean = wall.iter().sum::<Duration>() / samples as u32;
    println!(
        "sampler: {samples} samples, cpu per sample {:.3} ms (median {:.3}), wall {:.3} ms",
        ms(cpu_mean),
        ms(cpu_median),
        ms(wall_mean),
    );
    eprintln!(
        "  {} ms apart, CPU from {}, {:.3} ms of measurement overhead per sample subtracted",
        interval.as_millis(),
        clock.source(),
        ms(overhead),
    );
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: sampler_cost [SAMPLES (default 200)] [INTERVAL_MS (default 10)]");
    ExitCode::from(2)
}

/// The calling thread's CPU time, from the most precise /proc file there is.
#[derive(Clone, Copy)]
enum ThreadClock {
    /// /proc/thread-self/schedstat, first field: nanoseconds on CPU.
    Schedstat,
    /// /proc/thread-self/stat utime + stime, in USER_HZ (100) ticks: only the mean means much.
    Stat,
}

impl ThreadClock {
    fn detect() -> Option<ThreadClock> {
        [ThreadClock::Schedstat, ThreadClock::Stat]
            .into_iter()
            .find(|clock| clock.read().is_some())
    }

    fn now(self) -> Duration {
        self.read().unwrap_or_default()
    }

    fn read(self) -> Option<Duration> {
        match self {
            ThreadClock::Schedstat => {
                let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
                let nanos = text.split_whitespace().next()?.parse().ok()?;
                Some(Duration::from_nanos(nanos))
            }
            ThreadClock::Stat => {
                let text = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
                // The command name is in parentheses and may hold spaces: count after it.
                let mut fields = text.rsplit_once(')')?.1.split_whitespace();
                let utime: u64 = fields.nth(11)?.parse().ok()?;
                let stime: u64 = fields.next()?.parse().ok()?;
                Some(Duration::from_millis((utime + stime) * 10))
            }
        }
    }

    fn source(self) -> &'static str {
        match self {
            ThreadClock::Schedstat => "/proc/thread-self/schedstat",
            ThreadClock::Stat => "/proc/thread-self/stat (10 ms ticks)",
        }
    }
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}
