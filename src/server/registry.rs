//! The open mutual-TLS connections and the certificate chains their peers presented, so a
//! reload can verify them again: a connection whose chain the new client CA or CRLs refuse
//! gets a graceful GOAWAY, as one whose certificate reaches its notAfter does.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::danger::ClientCertVerifier,
};
use tokio_util::sync::CancellationToken;

type Entry = (Arc<[CertificateDer<'static>]>, CancellationToken);

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    /// By connection id; a Vec, not a map: a few hundred entries, and no hasher to link.
    open: Mutex<Vec<(u64, Entry)>>,
}

/// A connection's place in the registry, left when dropped.
pub struct Registered {
    registry: Arc<Registry>,
    id: u64,
    /// Cancelled when the peer's chain no longer verifies.
    pub refused: CancellationToken,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Entry)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(self: &Arc<Self>, chain: Arc<[CertificateDer<'static>]>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let refused = CancellationToken::new();
        self.lock().push((id, (chain, refused.clone())));
        Registered {
            registry: self.clone(),
            id,
            refused,
        }
    }

    /// Verifies every open connection's chain with `verifier`; cancels those refused and
    /// returns how many were.
    pub fn reverify(&self, verifier: &dyn ClientCertVerifier) -> usize {
        // Verified outside the lock: a signature check each, and connections come and go.
        let open: Vec<Entry> = self.lock().iter().map(|(_, e)| e.clone()).collect();
        let now = UnixTime::now();
        let mut refused = 0;
        for (chain, token) in open {
            let Some((leaf, intermediates)) = chain.split_first() else {
                continue;
            };
            if let Err(err) = verifier.verify_client_cert(leaf, intermediates, now) {
                tracing::info!(reason = %err, "an open connection's client certificate no longer verifies; sending GOAWAY");
                token.cancel();
                refused += 1;
            }
        }
        refused
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(at) = open.iter().position(|(id, _)| *id == self.id) {
            open.swap_remove(at);
        }
    }
}
