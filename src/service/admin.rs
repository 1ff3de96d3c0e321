//! `vitals.admin.v1.Admin`: operator actions. `Rotate` renews the server certificate now
//! (from the `[tls.issue]` pki engine) and answers with the new serial and notAfter.
//!
//! No grant covers it by default: only an ACL rule that names it (or `*`) lets a caller in.
//! The renewal itself is the daemon's renewal task; this asks it over a channel, so a
//! rotate and a scheduled renewal never run at once. A renewal that fails (the pki
//! unreachable or refusing, or a certificate it answered with that the task refused and did
//! not write) is UNAVAILABLE with the reason.

use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::proto::admin::{RotateRequest, RotateResponse, admin_server::Admin};

/// What the renewal task answers a rotate with.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// Colon-separated hex, as the pki engine writes it.
    pub serial: String,
    pub not_after: SystemTime,
}

/// One rotate, asked of the renewal task; the reply is the new certificate or why not.
pub struct RotateAsk {
    pub reply: oneshot::Sender<Result<Rotated, String>>,
}

/// Where rotates go: the renewal task, or `None` without `[tls.issue]`.
pub type Rotator = Option<mpsc::Sender<RotateAsk>>;

#[derive(Clone)]
pub struct AdminService {
    rotator: Rotator,
}

impl AdminService {
    pub fn new(rotator: Rotator) -> AdminService {
        AdminService { rotator }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn rotate(
        &self,
        _request: Request<RotateRequest>,
    ) -> Result<Response<RotateResponse>, Status> {
        let Some(rotator) = &self.rotator else {
            return Err(Status::failed_precondition(
                "this daemon does not issue its certificate: rotate needs a [tls.issue] section in its config",
            ));
        };
        let (reply, answer) = oneshot::channel();
        rotator
            .send(RotateAsk { reply })
            .await
            .map_err(|_| Status::unavailable("the renewal task has stopped"))?;
        let rotated = answer
            .await
            .map_err(|_| Status::unavailable("the renewal task has stopped"))?
            .map_err(|reason| Status::unavailable(format!("renewal failed: {reason}")))?;
        let not_after = rotated
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(Response::new(RotateResponse {
            serial: rotated.serial,
            not_after_unix: not_after,
        }))
    }
}
