//! `grpc.health.v1.Health`: Check, Watch and List, as the gRPC health-checking spec says.
//!
//! Check of an unknown service is NOT_FOUND. Watch of an unknown service sends
//! SERVICE_UNKNOWN and stays open, then reports the service if it appears. When the daemon
//! drains, watchers get NOT_SERVING and then the stream ends with UNAVAILABLE, so a drain is
//! not held up by probes that watch forever.

use tonic::{Request, Response, Status};

use super::{TaskStream, task_stream};
use crate::{
    health::{Health, Phase, ServingStatus},
    proto::health::{
        HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
        health_server,
    },
};

pub struct HealthService {
    health: Health,
}

impl HealthService {
    pub fn new(health: Health) -> HealthService {
        HealthService { health }
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl health_server::Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.health.status(service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    async fn list(
        &self,
        _request: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        let statuses = self
            .health
            .statuses()
            .iter()
            .map(|(name, status)| (name.clone(), response(*status)))
            .collect();
        Ok(Response::new(HealthListResponse { statuses }))
    }

    type WatchStream = TaskStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut rx = self.health.subscribe();
        Ok(Response::new(task_stream(|tx| async move {
            let mut last = None;
            loop {
                let (phase, status) = {
                    let current = rx.borrow_and_update();
                    let status = current.1.get(&service).copied();
                    (current.0, status.unwrap_or(ServingStatus::ServiceUnknown))
                };
                if last != Some(status) {
                    last = Some(status);
                    if tx.send(Ok(response(status))).await.is_err() {
                        return;
                    }
                }
                if phase == Phase::Draining || rx.changed().await.is_err() {
                    let _ = tx
                        .send(Err(Status::unavailable("the server is shutting down")))
                        .await;
                    return;
                }
            }
        })))
    }
}
