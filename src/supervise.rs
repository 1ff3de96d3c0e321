//! The daemon's long-lived tasks, kept alive: a task that panics is logged once with its
//! name, counted, and run again after a backoff, holding on to what it had (its state is
//! borrowed, never moved into the run that panicked). A task that keeps panicking is
//! *failing*, which readiness reports with the task's name until it has run
//! [`HEALTHY_AFTER`] without a panic.
//!
//! The counts live in one process-wide table (the tasks are the daemon's, one of each), read
//! by the metrics (`vitals_task_restarts_total{task}`) and by the health checks.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use futures_util::FutureExt;

/// The first wait before a task runs again; it doubles with each panic close to the last,
/// up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Panics within this window count towards failing, and a task that has run this long
/// without one is healthy again (its backoff starts over).
const HEALTHY_AFTER: Duration = Duration::from_secs(600);
/// This many panics within [`HEALTHY_AFTER`] make a task failing.
const FAILING_AFTER: usize = 3;

#[derive(Debug, Default)]
struct Task {
    restarts: u64,
    /// When it panicked, within the last [`HEALTHY_AFTER`].
    recent: VecDeque<Instant>,
}

static TASKS: Mutex<BTreeMap<&'static str, Task>> = Mutex::new(BTreeMap::new());

fn tasks() -> std::sync::MutexGuard<'static, BTreeMap<&'static str, Task>> {
    TASKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a panic of `name`: how long to wait before it runs again.
fn panicked(name: &'static str, message: &str) -> Duration {
    let now = Instant::now();
    let mut tasks = tasks();
    let task = tasks.entry(name).or_default();
    task.restarts += 1;
    task.recent.push_back(now);
    while task
        .recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > HEALTHY_AFTER)
    {
        task.recent.pop_front();
    }
    let recent = task.recent.len();
    let backoff = MIN_BACKOFF
        .saturating_mul(1 << (recent.saturating_sub(1)).min(6))
        .min(MAX_BACKOFF);
    tracing::error!(
        task = name,
        reason = message,
        restarts = task.restarts,
        retry_in_ms = backoff.as_millis() as u64,
        "a daemon task panicked; running it again"
    );
    backoff
}

/// How many times each task was run again after a panic, by name.
pub fn restarts() -> Vec<(&'static str, u64)> {
    tasks().iter().map(|(n, t)| (*n, t.restarts)).collect()
}

/// Why readiness fails because of tasks: the task and one line for each task that panicked
/// [`FAILING_AFTER`] times or more within [`HEALTHY_AFTER`].
pub fn failing() -> Vec<(&'static str, String)> {
    let now = Instant::now();
    tasks()
        .iter()
        .filter(|(_, t)| {
            t.recent
                .iter()
                .filter(|at| now.duration_since(**at) <= HEALTHY_AFTER)
                .count()
                >= FAILING_AFTER
        })
        .map(|(name, t)| {
            let why = format!(
                "the {name} task keeps failing ({} panics in the last {} min)",
                t.recent.len(),
                HEALTHY_AFTER.as_secs() / 60
            );
            (*name, why)
        })
        .collect()
}

/// What a panic said.
fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A run of a task over its state.
pub type Run<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Debug builds only, for the tests of the real binary: `VITALS_TEST_PANIC=push=1,files=99`
/// makes the first N runs of each named task panic as they start.
#[cfg(debug_assertions)]
fn injected(name: &str, run: u32) -> bool {
    std::env::var("VITALS_TEST_PANIC").is_ok_and(|spec| {
        spec.split(',').any(|entry| {
            entry
                .split_once('=')
                .is_some_and(|(task, n)| task == name && n.parse().is_ok_and(|n: u32| run < n))
        })
    })
}

/// Runs `run(state)` until it returns; when it panics, says so, counts it, waits the
/// backoff and runs it again on the same state.
pub async fn task<S: Send>(
    name: &'static str,
    state: &mut S,
    mut run: impl FnMut(&mut S) -> Run<'_>,
) {
    #[cfg(debug_assertions)]
    let mut runs = 0;
    loop {
        let current = run(state);
        #[cfg(debug_assertions)]
        let current: Run<'_> = {
            let inject = injected(name, runs);
            runs += 1;
            Box::pin(async move {
                if inject {
                    panic!("VITALS_TEST_PANIC asked for it");
                }
                current.await
            })
        };
        match AssertUnwindSafe(current).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let wait = panicked(name, &message(panic.as_ref()));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The same for a thread's body (the sampler's): runs `body` until it returns.
pub fn thread(name: &'static str, mut body: impl FnMut()) {
    loop {
        match std::panic::catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(()) => return,
            Err(panic) => std::thread::sleep(panicked(name, &message(panic.as_ref()))),
        }
    }
}

/// Runs `work` once; a panic is logged and counted under `name` (not restarted: the caller
/// answers for it, as a scrape answers 500) and comes back as `Err` with what it said.
pub async fn once<T>(name: &'static str, work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let message = message(panic.as_ref());
            let mut tasks = tasks();
            tasks.entry(name).or_default().restarts += 1;
            tracing::error!(task = name, reason = %message, "panicked; answered with an error");
            message
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that panics runs again on the state it had, is counted, and is failing after
    /// the third panic; one that returns is not run again.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_runs_again_on_its_state() {
        let mut runs = 0u32;
        task("test-panics", &mut runs, |runs| {
            Box::pin(async move {
                *runs += 1;
                if *runs <= 3 {
                    panic!("run {runs} fails");
                }
            })
        })
        .await;
        assert_eq!(runs, 4, "three panics, then a run that returned");
        assert!(restarts().contains(&("test-panics", 3)));
        let failing = failing();
        assert!(
            failing.iter().any(|(task, why)| *task == "test-panics"
                && why.starts_with("the test-panics task keeps failing")),
            "{failing:?}"
        );
    }

    /// The backoff doubles from a second and stops at a minute.
    #[test]
    fn backoff_doubles_to_a_minute() {
        let waits: Vec<u64> = (0..9)
            .map(|_| panicked("test-backoff", "x").as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
