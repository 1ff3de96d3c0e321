//! One `vitals.echo.v1.Echo/Echo` call with retries over a balancer, as gRPC's retry design
//! (A6) has it, and the summary of a run of them.
//!
//! - Each attempt goes through the balancer again, so a retry may land elsewhere.
//! - Attempt N+1 carries `grpc-previous-rpc-attempts: N`.
//! - The call's deadline covers every attempt: each attempt gets what is left as its
//!   `grpc-timeout`, and no retry starts if its backoff would end past the deadline.
//! - Once response headers arrive the call is committed and never retried; a
//!   Trailers-Only error is not committed.
//! - A call that died with its connection before any answer (the server went away) is
//!   re-sent once on another address without counting as an attempt (A6's transparent
//!   retry).
//!
//! The call is made as a server-streaming call on the wire-identical unary method, because
//! tonic's unary API merges trailers into the headers and we want to show them apart.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use http::uri::PathAndQuery;
use tonic::{
    Request, Status,
    codec::CompressionEncoding,
    metadata::{MetadataMap, MetadataValue},
};

use super::{
    balance::{Balancer, Pick},
    histogram::Histogram,
    probe::add_headers,
    retry::{Backoff, Decision, PUSHBACK, RetryPolicy},
};
use crate::{
    proto::echo::{EchoRequest, EchoResponse},
    rpc_stats::code_name,
};

pub const ECHO_PATH: &str = "/vitals.echo.v1.Echo/Echo";
const PREVIOUS_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// What to send.
#[derive(Debug, Clone)]
pub struct EchoCall {
    pub request: EchoRequest,
    pub headers: Vec<(String, String)>,
    pub compression: Option<CompressionEncoding>,
    /// The deadline, across all attempts.
    pub timeout: Duration,
    pub retry: Option<RetryPolicy>,
}

/// A successful call.
#[derive(Debug)]
pub struct Reply {
    pub headers: MetadataMap,
    pub message: EchoResponse,
    pub trailers: MetadataMap,
    /// The address that answered.
    pub addr: String,
    pub attempts: u32,
    pub took: Duration,
}

/// A failed call: its last status, and why it was not tried again.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub addr: Option<String>,
    pub attempts: u32,
    pub why: String,
    /// No attempt reached a server (nothing connected).
    pub unreachable: bool,
    pub took: Duration,
}

/// What happens during a call, for `-v`.
#[derive(Debug)]
pub enum Event<'a> {
    Attempt {
        number: u32,
        addr: &'a str,
    },
    Failed {
        number: u32,
        addr: &'a str,
        status: &'a Status,
        took: Duration,
    },
    Retry {
        after: Duration,
        pushback: bool,
    },
    Transparent {
        addr: &'a str,
    },
}

impl std::fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Attempt { number, addr } => write!(f, "attempt {number} to {addr}"),
            Event::Failed {
                number,
                addr,
                status,
                took,
            } => {
                write!(
                    f,
                    "attempt {number} to {addr} failed after {:.1}ms: {}",
                    took.as_secs_f64() * 1e3,
                    code_name(status.code()),
                )?;
                if !status.message().is_empty() {
                    write!(f, ": {}", status.message())?;
                }
                if let Some(p) = status.metadata().get(PUSHBACK) {
                    write!(f, " ({PUSHBACK}: {})", p.to_str().unwrap_or("?"))?;
                }
                Ok(())
            }
            Event::Retry { after, pushback } => write!(
                f,
                "retrying in {:.1}ms ({})",
                after.as_secs_f64() * 1e3,
                if *pushback {
                    "server pushback"
                } else {
                    "backoff"
                }
            ),
            Event::Transparent { addr } => {
                write!(
                    f,
                    "the connection to {addr} died before an answer; re-sending elsewhere"
                )
            }
        }
    }
}

/// How one attempt ended, when it did not succeed.
struct AttemptError {
    status: Status,
    /// Response headers had arrived: no retry may follow.
    committed: bool,
    /// The status came from this side (transport), not from the server.
    local: bool,
}

impl AttemptError {
    fn of(status: Status, committed: bool) -> AttemptError {
        let local = std::error::Error::source(&status).is_some();
        AttemptError {
            status,
            committed,
            local,
        }
    }
}

async fn attempt(
    pick: &Pick,
    call: &EchoCall,
    previous: u32,
    left: Duration,
) -> Result<Reply, AttemptError> {
    let mut grpc = tonic::client::Grpc::new(pick.channel.clone());
    if let Some(encoding) = call.compression {
        grpc = grpc.send_compressed(encoding).accept_compressed(encoding);
    }
    grpc.ready().await.map_err(|e| AttemptError {
        status: Status::unavailable(format!("{}: {}", pick.addr, crate::error::chain(&e))),
        committed: false,
        local: true,
    })?;
    let mut request = Request::new(call.request.clone());
    request.set_timeout(left);
    add_headers(&mut request, &call.headers);
    if previous > 0 {
        request
            .metadata_mut()
            .insert(PREVIOUS_ATTEMPTS, MetadataValue::from(previous));
    }
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
    let response = grpc
        .server_streaming(request, PathAndQuery::from_static(ECHO_PATH), codec)
        .await
        .map_err(|status| AttemptError::of(status, false))?;
    let (headers, mut stream, _) = response.into_parts();
    let message = match stream.message().await {
        Ok(Some(message)) => message,
        Ok(None) => {
            return Err(AttemptError::of(
                Status::internal("the server sent no reply"),
                true,
            ));
        }
        Err(status) => return Err(AttemptError::of(status, true)),
    };
    let trailers = stream
        .trailers()
        .await
        .map_err(|status| AttemptError::of(status, true))?
        .unwrap_or_default();
    Ok(Reply {
        headers,
        message,
        trailers,
        addr: pick.addr.clone(),
        attempts: previous + 1,
        took: Duration::ZERO,
    })
}

/// Makes the call: attempts, retries and re-picks within the deadline.
pub async fn call(
    balancer: &Balancer,
    call: &EchoCall,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<Reply, Failure> {
    let started = Instant::now();
    let deadline = started + call.timeout;
    let mut backoff = call.retry.as_ref().map(Backoff::new);
    let mut attempts = 0u32;
    let mut transparent_left = 1;
    let mut reached = false;
    let fail =
        |status: Status, addr: Option<String>, attempts: u32, why: String, reached: bool| Failure {
            status,
            addr,
            attempts,
            why,
            unreachable: !reached,
            took: started.elapsed(),
        };
    let deadline_status =
        || Status::deadline_exceeded(format!("deadline of {:?} exceeded", call.timeout));
    loop {
        let number = attempts + 1;
        let pick = match tokio::time::timeout_at(deadline.into(), balancer.pick()).await {
            Err(_) => {
                return Err(fail(
                    deadline_status(),
                    None,
                    attempts,
                    "the deadline passed".into(),
                    reached,
                ));
            }
            Ok(Ok(pick)) => pick,
            Ok(Err(unreachable)) => {
                attempts = number;
                let status = Status::unavailable(unreachable.to_string());
                on_event(Event::Failed {
                    number,
                    addr: "-",
                    status: &status,
                    took: Duration::ZERO,
                });
                match next_step(call, &mut backoff, attempts, &status, deadline) {
                    Ok(after) => {
                        on_event(Event::Retry {
                            after,
                            pushback: false,
                        });
                        tokio::time::sleep(after).await;
                        continue;
                    }
                    Err(why) => return Err(fail(status, None, attempts, why, reached)),
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        on_event(Event::Attempt {
            number,
            addr: &pick.addr,
        });
        let attempt_started = Instant::now();
        let result =
            tokio::time::timeout_at(deadline.into(), attempt(&pick, call, attempts, left)).await;
        let err = match result {
            Ok(Ok(mut reply)) => {
                reply.took = started.elapsed();
                return Ok(reply);
            }
            Ok(Err(err)) => Some(err),
            Err(_) => None,
        };
        let took = attempt_started.elapsed();
        // Timed out, or failed with no time left to try again.
        let Some(err) = err.filter(|_| Instant::now() < deadline) else {
            return Err(fail(
                deadline_status(),
                Some(pick.addr),
                number,
                "the deadline passed during the attempt".into(),
                true,
            ));
        };
        if err.local {
            balancer.broken(pick.index).await;
            if !err.committed && transparent_left > 0 && !pick.liveness.is_usable() {
                transparent_left -= 1;
                on_event(Event::Transparent { addr: &pick.addr });
                continue;
            }
        } else {
            reached = true;
        }
        attempts = number;
        on_event(Event::Failed {
            number,
            addr: &pick.addr,
            status: &err.status,
            took,
        });
        if err.committed {
            let why = "response headers had arrived, so the call was committed".to_string();
            return Err(fail(err.status, Some(pick.addr), attempts, why, reached));
        }
        match next_step(call, &mut backoff, attempts, &err.status, deadline) {
            Ok(after) => {
                let pushback = err.status.metadata().get(PUSHBACK).is_some();
                on_event(Event::Retry { after, pushback });
                tokio::time::sleep(after).await;
            }
            Err(why) => return Err(fail(err.status, Some(pick.addr), attempts, why, reached)),
        }
    }
}

/// The wait before the next attempt, or why there is none.
fn next_step(
    call: &EchoCall,
    backoff: &mut Option<Backoff>,
    attempts: u32,
    status: &Status,
    deadline: Instant,
) -> Result<Duration, String> {
    let (Some(policy), Some(backoff)) = (&call.retry, backoff.as_mut()) else {
        return Err("no retry policy".into());
    };
    let pushback = status
        .metadata()
        .get(PUSHBACK)
        .map(|v| v.to_str().unwrap_or("<binary>"));
    match policy.decide(attempts, status.code(), pushback, backoff, fastrand::f64()) {
        Decision::Retry { after, .. } if Instant::now() + after >= deadline => Err(format!(
            "the deadline would pass before attempt {} (in {:.1}ms)",
            attempts + 1,
            after.as_secs_f64() * 1e3
        )),
        Decision::Retry { after, .. } => Ok(after),
        Decision::Stop(stop) => Err(stop.to_string()),
    }
}

/// What a run of calls came to.
#[derive(Debug, Default)]
pub struct Summary {
    pub latency: Histogram,
    pub ok: u64,
    /// Failed calls by final status code name.
    pub failed: BTreeMap<&'static str, u64>,
    /// Successful calls by the address that answered.
    pub by_addr: BTreeMap<String, u64>,
    pub attempts: u64,
    pub unreachable: u64,
}

impl Summary {
    pub fn add(&mut self, result: &Result<Reply, Failure>) {
        match result {
            Ok(reply) => {
                self.ok += 1;
                self.attempts += u64::from(reply.attempts);
                self.latency.record(reply.took);
                *self.by_addr.entry(reply.addr.clone()).or_default() += 1;
            }
            Err(failure) => {
                self.attempts += u64::from(failure.attempts);
                *self
                    .failed
                    .entry(code_name(failure.status.code()))
                    .or_default() += 1;
                if failure.unreachable {
                    self.unreachable += 1;
                }
            }
        }
    }

    pub fn calls(&self) -> u64 {
        self.ok + self.failed.values().sum::<u64>()
    }

    /// 0 when every call succeeded; 2 when every failure was for want of a connection;
    /// else 3.
    pub fn exit_code(&self) -> u8 {
        let failed: u64 = self.failed.values().sum();
        match failed {
            0 => super::exit::OK,
            n if n == self.unreachable => super::exit::CONNECT,
            _ => super::exit::RPC,
        }
    }

    pub fn to_text(&self) -> String {
        let ms = |d: Duration| format!("{:.2}ms", d.as_secs_f64() * 1e3);
        let h = &self.latency;
        let mut out = format!(
            "{} calls: {} ok, {} failed, {} attempts\n",
            self.calls(),
            self.ok,
            self.calls() - self.ok,
            self.attempts
        );
        if h.count() > 0 {
            out += &format!(
                "latency min {} p50 {} p90 {} p99 {} max {} mean {}\n",
                ms(h.min()),
                ms(h.quantile(0.5)),
                ms(h.quantile(0.9)),
                ms(h.quantile(0.99)),
                ms(h.max()),
                ms(h.mean())
            );
        }
        for (addr, n) in &self.by_addr {
            out += &format!("answered by {addr}: {n}\n");
        }
        for (code, n) in &self.failed {
            out += &format!("failed with {code}: {n}\n");
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let us = |d: Duration| (d.as_secs_f64() * 1e7).round() / 10.0;
        let h = &self.latency;
        serde_json::json!({
            "calls": self.calls(),
            "ok": self.ok,
            "failed": self.failed,
            "attempts": self.attempts,
            "by_addr": self.by_addr,
            "latency_us": {
                "min": us(h.min()), "p50": us(h.quantile(0.5)), "p90": us(h.quantile(0.9)),
                "p99": us(h.quantile(0.99)), "max": us(h.max()), "mean": us(h.mean()),
            },
        })
    }
}

/// Metadata as `key: value` lines with a prefix; binary values shown as their length.
/// The status itself (`grpc-status`, `grpc-message`) is left out: it is shown apart.
pub fn metadata_lines(prefix: &str, metadata: &MetadataMap) -> Vec<String> {
    metadata
        .as_ref()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "grpc-status" | "grpc-message"))
        .map(|(k, v)| format!("{prefix}{k}: {}", v.to_str().unwrap_or("<binary>")))
        .collect()
}

/// Metadata as a JSON object of lists.
pub fn metadata_json(metadata: &MetadataMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in metadata.as_ref() {
        let entry = map
            .entry(k.as_str())
            .or_insert_with(|| serde_json::json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(v.to_str().unwrap_or("<binary>").into());
        }
    }
    serde_json::Value::Object(map)
}
