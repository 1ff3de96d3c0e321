//! `vitals.metrics.v1.Metrics`: the sampler's latest snapshot plus the RPC statistics.
//!
//! Requests never read /proc: the device part comes from what the sampler last published,
//! the RPC part from atomic counters. Watch streams are driven by the sampler's
//! publications, so they add no timers of their own.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{TaskStream, task_stream};
use crate::{
    health::Health,
    proto::metrics::{HealthCheck, Snapshot, SnapshotRequest, WatchRequest, metrics_server},
    rpc_stats::RpcStats,
    sampler::{FIRST_SAMPLE_WAIT, Published},
};

pub struct MetricsService {
    snapshots: watch::Receiver<Published>,
    /// When the sampler started: its first sample has no CPU usage yet, and for
    /// [`FIRST_SAMPLE_WAIT`] after this requests wait for the one that has.
    sampler_started: Instant,
    stats: Arc<RpcStats>,
    /// The checks' verdicts, added to every snapshot sent.
    health: Health,
    /// The sampler's interval: the shortest Watch interval worth serving.
    min_interval: Duration,
    shutdown: CancellationToken,
}

impl MetricsService {
    pub fn new(
        snapshots: watch::Receiver<Published>,
        sampler_started: Instant,
        stats: Arc<RpcStats>,
        health: Health,
        min_interval: Duration,
        shutdown: CancellationToken,
    ) -> MetricsService {
        MetricsService {
            snapshots,
            sampler_started,
            stats,
            health,
            min_interval,
            shutdown,
        }
    }
}

/// Whether a snapshot is worth sending: sampled, and with CPU usage unless the sampler has
/// been running for longer than its first samples take (a device whose CPU cannot be read
/// never gets it).
fn complete(snapshot: &Snapshot, sampler_started: Instant) -> bool {
    snapshot.sampled_at_unix_ms > 0
        && (snapshot.cpu.is_some() || sampler_started.elapsed() >= FIRST_SAMPLE_WAIT)
}

/// The latest snapshot; right after startup, waits (briefly) for the first complete one.
/// The `/metrics` page (scrape.rs) waits the same way.
pub(super) async fn first_sample(
    mut snapshots: watch::Receiver<Published>,
    sampler_started: Instant,
) -> Published {
    if !complete(&snapshots.borrow(), sampler_started) {
        let first = snapshots.wait_for(|s| complete(s, sampler_started));
        let _ = tokio::time::timeout(FIRST_SAMPLE_WAIT, first).await;
    }
    snapshots.borrow().clone()
}

/// The sampler's snapshot with what is read at the call: the RPC and transport counters,
/// and health's verdicts.
fn with_rpc(device: &Snapshot, stats: &RpcStats, health: &Health) -> Snapshot {
    let mut snapshot = device.clone();
    snapshot.rpc = stats.snapshot();
    snapshot.server = Some(stats.server.snapshot());
    snapshot.health_checks = health
        .verdicts()
        .iter()
        .map(|v| HealthCheck {
            check: v.check.to_string(),
            subject: v.subject.clone(),
            failing: v.failure.is_some(),
            reason: v.failure.clone().unwrap_or_default(),
        })
        .collect();
    snapshot
}

#[tonic::async_trait]
impl metrics_server::Metrics for MetricsService {
    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let device = first_sample(self.snapshots.clone(), self.sampler_started).await;
        Ok(Response::new(with_rpc(&device, &self.stats, &self.health)))
    }

    type WatchStream = TaskStream<Snapshot>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let asked = Duration::from_millis(request.get_ref().interval_ms.into());
        let interval = asked.max(self.min_interval);
        // Publications arrive about one sampler interval apart, never exactly on time.
        let slack = self.min_interval / 2;
        let mut snapshots = self.snapshots.clone();
        let stats = self.stats.clone();
        let health = self.health.clone();
        let shutdown = self.shutdown.clone();
        let started = self.sampler_started;
        Ok(Response::new(task_stream(|tx| async move {
            let mut next_due = tokio::time::Instant::now();
            loop {
                // Send the newest snapshot once it is due, then wait for a newer one.
                let now = tokio::time::Instant::now();
                let sampled = complete(&snapshots.borrow(), started);
                if sampled && now + slack >= next_due {
                    let device = snapshots.borrow_and_update().clone();
                    if tx
                        .send(Ok(with_rpc(&device, &stats, &health)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    next_due = now + interval;
                }
                tokio::select! {
                    changed = snapshots.changed() => if changed.is_err() { return },
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                        return;
                    }
                }
            }
        })))
    }
}
