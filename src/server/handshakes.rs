//! The TLS handshakes in progress, by source address: at most `server.max_handshakes`
//! at once, shared fairly between sources.
//!
//! While the table has room, every handshake is let in. When it is full, a newcomer takes
//! the place of the oldest handshake of the source that holds the most, unless the
//! newcomer's own source holds as many (then the newcomer is closed): one address that
//! opens handshakes and never finishes them holds the table only until someone else
//! knocks, and each source keeps at least its share of the table. Once the table is three
//! quarters full, a new handshake from a source that holds more than a quarter of it gets a
//! quarter of `server.handshake_timeout`; a source holding a few keeps the whole timeout,
//! so a real client on a slow link or a loaded device is not cut short by someone else's
//! flood. A source is an IPv4 address or an IPv6 /64 (what one host usually has); unix
//! sockets never do TLS. RELIABILITY.md says why.

use std::{
    collections::VecDeque,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

/// Where handshakes come from, for fairness: an IPv4 address, or an IPv6 /64.
type Source = u128;

fn source_of(ip: IpAddr) -> Source {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_bits()),
            None => v6.to_bits() & !((1u128 << 64) - 1) | (1 << 32),
        },
    }
}

pub struct Handshakes {
    max: usize,
    next: AtomicU64,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    total: usize,
    /// Per source, its handshakes, oldest first: (id, what cancels it). A Vec, not a map:
    /// at most `max_handshakes` sources, and no hasher to link.
    by_source: Vec<(Source, VecDeque<(u64, CancellationToken)>)>,
}

/// A place in the table, given up when dropped.
pub struct Slot {
    handshakes: Arc<Handshakes>,
    source: Source,
    id: u64,
    /// Cancelled when a newcomer from a smaller source takes this place.
    pub evicted: CancellationToken,
    /// How long this handshake may take.
    pub timeout: Duration,
}

/// What [`Handshakes::admit`] decided.
pub enum Admission {
    Admitted {
        slot: Slot,
        evicted: bool,
    },
    /// The table is full and this source holds the most already.
    Refused,
}

impl Handshakes {
    pub fn new(max: usize) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            max,
            next: AtomicU64::new(0),
            table: Mutex::default(),
        })
    }

    /// Handshakes in progress now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for a handshake from `ip`, which may take `timeout` (less under pressure).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, timeout: Duration) -> Admission {
        let source = source_of(ip);
        let mut table = self.lock();
        let mut evicted = false;
        if table.total >= self.max {
            let mine = table
                .find(source)
                .map_or(0, |at| table.by_source[at].1.len());
            let biggest = (table.by_source.iter().enumerate())
                .max_by_key(|(_, (_, q))| q.len())
                .map(|(at, (_, q))| (at, q.len()));
            match biggest {
                Some((at, held)) if held > mine + 1 => {
                    let queue = &mut table.by_source[at].1;
                    if let Some((_, token)) = queue.pop_front() {
                        token.cancel();
                    }
                    // Not emptied: it held more than one.
                    table.total -= 1;
                    evicted = true;
                }
                _ => return Admission::Refused,
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let at = match table.find(source) {
            Some(at) => at,
            None => {
                table.by_source.push((source, VecDeque::new()));
                table.by_source.len() - 1
            }
        };
        let queue = &mut table.by_source[at].1;
        queue.push_back((id, token.clone()));
        let held = queue.len();
        table.total += 1;
        let pressed = table.total * 4 >= self.max * 3 && held * 4 > self.max;
        Admission::Admitted {
            slot: Slot {
                handshakes: self.clone(),
                source,
                id,
                evicted: token,
                timeout: if pressed { timeout / 4 } else { timeout },
            },
            evicted,
        }
    }
}

impl Table {
    fn find(&self, source: Source) -> Option<usize> {
        self.by_source.iter().position(|(s, _)| *s == source)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.handshakes.lock();
        let Some(at) = table.find(self.source) else {
            return;
        };
        let queue = &mut table.by_source[at].1;
        // An evicted handshake has left the table already.
        let Some(i) = queue.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        queue.remove(i);
        if queue.is_empty() {
            table.by_source.swap_remove(at);
        }
        table.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(h: &Arc<Handshakes>, ip: &str) -> Option<(Slot, bool)> {
        match h.admit(ip.parse().unwrap(), Duration::from_secs(4)) {
            Admission::Admitted { slot, evicted } => Some((slot, evicted)),
            Admission::Refused => None,
        }
    }

    /// A full table makes room for another source by evicting the oldest handshake of the
    /// biggest one; the biggest source itself is refused; places come back when dropped.
    #[test]
    fn full_table_evicts_the_biggest_sources_oldest() {
        let h = Handshakes::new(4);
        let held: Vec<_> = (0..4).map(|_| admit(&h, "127.0.0.1").unwrap()).collect();
        assert!(held.iter().all(|(_, evicted)| !evicted));
        assert_eq!(held[3].0.timeout, Duration::from_secs(1), "pressure");
        assert!(admit(&h, "127.0.0.1").is_none(), "the biggest source waits");
        let (newcomer, evicted) = admit(&h, "127.0.0.2").unwrap();
        assert!(evicted);
        assert!(held[0].0.evicted.is_cancelled(), "the oldest went");
        assert!(!held[1].0.evicted.is_cancelled());
        assert_eq!(h.len(), 4);
        // .2 holds 1 and .1 holds 3: another .2 still evicts; a third would not.
        let (_second, evicted) = admit(&h, "127.0.0.2").unwrap();
        assert!(evicted);
        assert!(admit(&h, "127.0.0.2").is_none());
        drop(newcomer);
        drop(held);
        assert_eq!(h.len(), 1);
    }

    /// Under pressure only the source holding more than a quarter of the table is hurried:
    /// a newcomer from a source with a few handshakes keeps the whole timeout.
    #[test]
    fn pressure_hurries_the_flooding_source_only() {
        let h = Handshakes::new(16);
        let flood: Vec<_> = (0..12).map(|_| admit(&h, "127.0.0.1").unwrap()).collect();
        assert_eq!(
            flood[10].0.timeout,
            Duration::from_secs(4),
            "11 of 16: no pressure"
        );
        assert_eq!(
            flood[11].0.timeout,
            Duration::from_secs(1),
            "12 of 16, 12 from .1"
        );
        let (probe, _) = admit(&h, "127.0.0.2").unwrap();
        assert_eq!(probe.timeout, Duration::from_secs(4), "13 of 16, 1 from .2");
    }

    /// One IPv6 /64 is one source; IPv4-mapped addresses are their IPv4 address.
    #[test]
    fn sources() {
        let s = |ip: &str| source_of(ip.parse().unwrap());
        assert_eq!(s("2001:db8::1"), s("2001:db8::ffff:1"));
        assert_ne!(s("2001:db8::1"), s("2001:db8:0:1::1"));
        assert_eq!(s("::ffff:10.0.0.1"), s("10.0.0.1"));
        assert_ne!(s("10.0.0.1"), s("10.0.0.2"));
    }
}
