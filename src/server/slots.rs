//! The slots of the pages in flight: at most [`MAX_PAGES_IN_FLIGHT`] pages are rendered
//! or being sent across the server, [`PER_IDENTITY`] of them for one identity and
//! [`PER_CONNECTION`] for one connection; each connection's [`ConnPages`] knows when its
//! pages must be sent by. Below both `call.rs` (a connection's calls carry its
//! `ConnPages`) and `pages.rs` (a page takes a [`Slot`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// Page responses being rendered or sent, across the server; above this a request gets
/// 503. A scrape renders tens of KiB, and a slow reader holds its body until it is sent,
/// so this (not the connection cap times the stream limit) bounds their memory. A fleet's
/// Prometheus pair scrapes each device once per interval.
const MAX_PAGES_IN_FLIGHT: usize = 16;
/// Of those, what one identity may hold (a second client with the grant cannot take every
/// slot from Prometheus), and what one connection may.
const PER_IDENTITY: usize = 4;
const PER_CONNECTION: usize = 2;
/// How long a page may take from its slot to its last byte handed to the connection; a
/// connection with a page older than this is closed (a reader that does not read, an
/// HTTP/2 stream whose window stays shut). Prometheus' own scrape timeout is 10 s.
pub(super) const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The slots taken, across the server and by identity.
#[derive(Default)]
struct Taken {
    total: usize,
    by_identity: HashMap<Arc<str>, usize>,
}

static TAKEN: Mutex<Option<Taken>> = Mutex::new(None);

fn taken<T>(f: impl FnOnce(&mut Taken) -> T) -> T {
    let mut guard = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Taken::default))
}

/// The pages of one connection: how many it holds, and when each must be sent by.
#[derive(Default)]
pub(super) struct ConnPages {
    held: Mutex<BTreeMap<u64, Instant>>,
    next: AtomicU64,
    changed: Notify,
}

impl ConnPages {
    /// Resolves once a page of this connection is past its [`PAGE_TIMEOUT`].
    pub(super) async fn stuck(&self) {
        loop {
            let notified = self.changed.notified();
            let due = self.lock().values().min().copied();
            match due {
                None => notified.await,
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {
                        if self.lock().values().any(|d| *d <= Instant::now()) {
                            return;
                        }
                    }
                    _ = notified => {}
                },
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why no slot was had.
pub(super) enum Busy {
    Server,
    Identity,
    Connection,
}

/// A place among the pages in flight, given back when dropped.
pub(super) struct Slot {
    identity: Option<Arc<str>>,
    conn: Arc<ConnPages>,
    id: u64,
}

impl Slot {
    pub(super) fn take(identity: Option<&Arc<str>>, conn: &Arc<ConnPages>) -> Result<Slot, Busy> {
        if conn.lock().len() >= PER_CONNECTION {
            return Err(Busy::Connection);
        }
        taken(|t| {
            if t.total >= MAX_PAGES_IN_FLIGHT {
                return Err(Busy::Server);
            }
            if let Some(identity) = identity {
                let mine = t.by_identity.entry(identity.clone()).or_default();
                if *mine >= PER_IDENTITY {
                    return Err(Busy::Identity);
                }
                *mine += 1;
            }
            t.total += 1;
            Ok(())
        })?;
        let id = conn.next.fetch_add(1, Ordering::Relaxed);
        conn.lock().insert(id, Instant::now() + PAGE_TIMEOUT);
        conn.changed.notify_waiters();
        Ok(Slot {
            identity: identity.cloned(),
            conn: conn.clone(),
            id,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conn.lock().remove(&self.id);
        self.conn.changed.notify_waiters();
        taken(|t| {
            t.total -= 1;
            if let Some(identity) = &self.identity
                && let Some(mine) = t.by_identity.get_mut(identity)
            {
                *mine -= 1;
                if *mine == 0 {
                    t.by_identity.remove(identity);
                }
            }
        });
    }
}
