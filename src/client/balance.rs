//! Several addresses behind one client, as gRPC's two basic load-balancing policies have
//! them: `pick_first` (the first address that connects, kept while it works; when it
//! stops, the list is tried again from the top) and `round_robin` (every address
//! connected, calls rotated over those that are up; one that went down is redialled in the
//! background, at most once a second).
//!
//! Targets are resolved once: a name that resolves to several addresses contributes all of
//! them, in the resolver's order, and certificates are still checked against the name.
//! A connection's death is seen from its [`Liveness`] (EOF or an error on the socket), so
//! a server that went away is skipped before a call is wasted on it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Mutex;
use tonic::transport::Channel;

use super::{Conn, Dial, Error, Liveness};

/// How long a round_robin address that failed to connect rests before it is redialled.
const REDIAL_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    PickFirst,
    RoundRobin,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::PickFirst => "pick_first",
            Policy::RoundRobin => "round_robin",
        }
    }
}

/// No address could take the call.
#[derive(Debug, thiserror::Error)]
#[error("no address is reachable: {}", .failures.join("; "))]
pub struct Unreachable {
    /// `addr: why`, per address tried.
    pub failures: Vec<String>,
}

/// The address a call goes to.
pub struct Pick {
    pub index: usize,
    pub addr: String,
    pub channel: Channel,
    pub liveness: Arc<Liveness>,
}

struct Subchannel {
    dial: Dial,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    conn: Option<Conn>,
    failed: Option<(Instant, String)>,
}

impl Subchannel {
    fn usable(slot: &Slot) -> Option<&Conn> {
        slot.conn.as_ref().filter(|c| c.liveness.is_usable())
    }

    /// The connection if it is up, else a new one (dialled now).
    async fn connect(&self) -> Result<Conn, String> {
        let mut slot = self.slot.lock().await;
        if let Some(conn) = Subchannel::usable(&slot) {
            return Ok(conn.clone());
        }
        slot.conn = None;
        match self.dial.open().await {
            Ok(conn) => {
                slot.failed = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(err) => {
                let why = anyhow_like(&err);
                slot.failed = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    /// The connection if it is up now, without dialling.
    fn ready(&self) -> Option<Conn> {
        let slot = self.slot.try_lock().ok()?;
        Subchannel::usable(&slot).cloned()
    }

    fn due_for_redial(&self) -> bool {
        self.slot.try_lock().is_ok_and(|slot| {
            Subchannel::usable(&slot).is_none()
                && slot
                    .failed
                    .as_ref()
                    .is_none_or(|(at, _)| at.elapsed() >= REDIAL_AFTER)
        })
    }
}

/// An error and its sources, as one line.
fn anyhow_like(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

pub struct Balancer {
    policy: Policy,
    subchannels: Vec<Arc<Subchannel>>,
    /// round_robin: the next index to try; pick_first: the index in use.
    cursor: AtomicUsize,
}

impl Balancer {
    /// Resolves every target in order (dropping repeated addresses) and, for round_robin,
    /// connects to all of them at once.
    pub async fn new(targets: &[String], dialer: &Dial, policy: Policy) -> Result<Balancer, Error> {
        let mut seen = Vec::new();
        let mut subchannels = Vec::new();
        for target in targets {
            // A unix socket is its own address: nothing to resolve.
            if super::Target::parse(target).is_unix() {
                subchannels.push(Arc::new(Subchannel {
                    dial: dialer.target(target),
                    slot: Mutex::new(Slot::default()),
                }));
                continue;
            }
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host(target.as_str())
                .await
                .map_err(|source| Error::Resolve {
                    addr: target.clone(),
                    source,
                })?
                .collect();
            if resolved.is_empty() {
                return Err(Error::NoAddress {
                    addr: target.clone(),
                });
            }
            let dial = dialer.target(target);
            for addr in resolved {
                if seen.contains(&addr) {
                    continue;
                }
                seen.push(addr);
                subchannels.push(Arc::new(Subchannel {
                    dial: dial.resolved(addr),
                    slot: Mutex::new(Slot::default()),
                }));
            }
        }
        let balancer = Balancer {
            policy,
            subchannels,
            cursor: AtomicUsize::new(0),
        };
        if policy == Policy::RoundRobin {
            balancer.connect_all().await;
        }
        Ok(balancer)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The resolved addresses, in order.
    pub fn addrs(&self) -> Vec<String> {
        self.subchannels
            .iter()
            .map(|s| s.dial.addr.clone())
            .collect()
    }

    async fn connect_all(&self) -> Vec<Result<Conn, String>> {
        futures_util::future::join_all(self.subchannels.iter().map(|s| s.connect())).await
    }

    fn pick_of(&self, index: usize, conn: Conn) -> Pick {
        Pick {
            index,
            addr: self.subchannels[index].dial.addr.clone(),
            channel: conn.channel,
            liveness: conn.liveness,
        }
    }

    fn failures(&self, results: &[Result<Conn, String>]) -> Unreachable {
        Unreachable {
            failures: self
                .subchannels
                .iter()
                .zip(results)
                .filter_map(|(s, r)| {
                    r.as_ref()
                        .err()
                        .map(|why| format!("{}: {why}", s.dial.addr))
                })
                .collect(),
        }
    }

    /// The address for the next call.
    pub async fn pick(&self) -> Result<Pick, Unreachable> {
        match self.policy {
            Policy::PickFirst => self.pick_first().await,
            Policy::RoundRobin => self.round_robin().await,
        }
    }

    async fn pick_first(&self) -> Result<Pick, Unreachable> {
        let current = self.cursor.load(Ordering::Acquire);
        if let Some(conn) = self.subchannels[current].ready() {
            return Ok(self.pick_of(current, conn));
        }
        let mut results = Vec::with_capacity(self.subchannels.len());
        for (index, subchannel) in self.subchannels.iter().enumerate() {
            match subchannel.connect().await {
                Ok(conn) => {
                    self.cursor.store(index, Ordering::Release);
                    return Ok(self.pick_of(index, conn));
                }
                Err(why) => results.push(Err(why)),
            }
        }
        Err(self.failures(&results))
    }

    async fn round_robin(&self) -> Result<Pick, Unreachable> {
        let n = self.subchannels.len();
        for subchannel in &self.subchannels {
            if subchannel.due_for_redial() {
                let subchannel = subchannel.clone();
                tokio::spawn(async move {
                    let _ = subchannel.connect().await;
                });
            }
        }
        for _ in 0..n {
            let index = self.cursor.fetch_add(1, Ordering::AcqRel) % n;
            if let Some(conn) = self.subchannels[index].ready() {
                return Ok(self.pick_of(index, conn));
            }
        }
        // Nothing is up: dial everything once, then take the first that answered.
        let results = self.connect_all().await;
        match results.iter().position(Result::is_ok) {
            Some(index) => {
                let conn = results[index].as_ref().expect("ok").clone();
                self.cursor.store(index + 1, Ordering::Release);
                Ok(self.pick_of(index, conn))
            }
            None => Err(self.failures(&results)),
        }
    }

    /// A call on this address failed in the transport: forget its connection, so the next
    /// pick dials again (or moves on).
    pub async fn broken(&self, index: usize) {
        let mut slot = self.subchannels[index].slot.lock().await;
        slot.conn = None;
    }

    /// Drops every connection and waits (at most `limit`) for them to close politely.
    pub async fn close(self, limit: Duration) {
        let mut open = Vec::new();
        for subchannel in &self.subchannels {
            if let Some(conn) = subchannel.slot.lock().await.conn.take() {
                open.push(conn.liveness);
            }
        }
        drop(self);
        futures_util::future::join_all(open.iter().map(|l| l.closed(limit))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Targets resolve in order, literal addresses as they are, repeats dropped, and the
    /// certificate name stays the target's host.
    #[tokio::test]
    async fn resolves_in_order_without_repeats() {
        let targets = ["127.0.0.1:1", "[::1]:2", "127.0.0.1:1", "127.0.0.2:3"].map(String::from);
        let balancer = Balancer::new(&targets, &Dial::plaintext(""), Policy::PickFirst)
            .await
            .unwrap();
        assert_eq!(balancer.addrs(), ["127.0.0.1:1", "[::1]:2", "127.0.0.2:3"]);
        assert_eq!(balancer.subchannels[1].dial.tls_name(), "::1");
        let named = Balancer::new(
            &["localhost:7".into()],
            &Dial::plaintext(""),
            Policy::PickFirst,
        )
        .await
        .unwrap();
        assert!(
            named
                .subchannels
                .iter()
                .all(|s| s.dial.tls_name() == "localhost")
        );
    }

    /// With nothing listening, a pick fails and names every address tried.
    #[tokio::test]
    async fn unreachable_names_every_address() {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .to_string()
        };
        let targets = [free(), free()];
        for policy in [Policy::PickFirst, Policy::RoundRobin] {
            let balancer = Balancer::new(&targets, &Dial::plaintext(""), policy)
                .await
                .unwrap();
            let err = balancer.pick().await.err().unwrap();
            assert_eq!(err.failures.len(), 2, "{err}");
            assert!(err.failures[0].starts_with(&targets[0]), "{err}");
        }
    }
}
