//! `vitals.metrics.v1.Metrics`: the sampler's latest snapshot plus the RPC statistics.
//!
//! Requests never read /proc: the device part comes from what the sampler last published,
//! the RPC part from atomic counters. Watch streams are driven by the sampler's
//! publications, so they add no timers of their own.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{TaskStream, task_stream};
use crate::{
    proto::metrics::{Snapshot, SnapshotRequest, WatchRequest, metrics_server},
    rpc_stats::RpcStats,
    sampler::{FIRST_SAMPLE_WAIT, Published},
};

pub struct MetricsService {
    snapshots: watch::Receiver<Published>,
    stats: Arc<RpcStats>,
    /// The sampler's interval: the shortest Watch interval worth serving.
    min_interval: Duration,
    shutdown: CancellationToken,
}

impl MetricsService {
    pub fn new(
        snapshots: watch::Receiver<Published>,
        stats: Arc<RpcStats>,
        min_interval: Duration,
        shutdown: CancellationToken,
    ) -> MetricsService {
        MetricsService {
            snapshots,
            stats,
            min_interval,
            shutdown,
        }
    }
}

/// The latest snapshot; right after startup, waits (briefly) for the sampler's first one.
async fn first_sample(mut snapshots: watch::Receiver<Published>) -> Published {
    if snapshots.borrow().sampled_at_unix_ms == 0 {
        let first = snapshots.wait_for(|s| s.sampled_at_unix_ms > 0);
        let _ = tokio::time::timeout(FIRST_SAMPLE_WAIT, first).await;
    }
    snapshots.borrow().clone()
}

fn with_rpc(device: &Snapshot, stats: &RpcStats) -> Snapshot {
    let mut snapshot = device.clone();
    snapshot.rpc = stats.snapshot();
    snapshot.server = Some(stats.server.snapshot());
    snapshot
}

#[tonic::async_trait]
impl metrics_server::Metrics for MetricsService {
    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Snapshot>, Status> {
        let device = first_sample(self.snapshots.clone()).await;
        Ok(Response::new(with_rpc(&device, &self.stats)))
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
        let shutdown = self.shutdown.clone();
        Ok(Response::new(task_stream(|tx| async move {
            let mut next_due = tokio::time::Instant::now();
            loop {
                // Send the newest snapshot once it is due, then wait for a newer one.
                let now = tokio::time::Instant::now();
                let sampled = snapshots.borrow().sampled_at_unix_ms > 0;
                if sampled && now + slack >= next_due {
                    let device = snapshots.borrow_and_update().clone();
                    if tx.send(Ok(with_rpc(&device, &stats))).await.is_err() {
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
