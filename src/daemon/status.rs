//! systemd's STATUS= line while the daemon runs: the lifecycle's own messages (reloading,
//! stopping, draining), and between them readiness with its reasons, sent again whenever
//! the reasons change, so `systemctl status` says why the device is NOT_SERVING.
//!
//! One lock orders the two: a readiness update computed before a lifecycle message is never
//! sent after it (a stop's STATUS is not overwritten by a check that ran meanwhile).

use std::sync::Mutex;

use crate::systemd;

/// The STATUS= line, shared by the daemon's loop and the checks task.
#[derive(Debug)]
pub(super) struct StatusLine {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Between READY=1 and the next lifecycle message: readiness owns the line.
    serving: bool,
    /// The TLS listeners' addresses.
    addrs: String,
    /// Why the last reload was rejected, until one is applied.
    rejected: Option<String>,
    /// Why readiness is NOT_SERVING; empty while every check passes.
    failures: Vec<String>,
    /// The STATUS text last sent while serving.
    sent: String,
}

impl State {
    fn text(&self) -> String {
        let rejected = self
            .rejected
            .as_ref()
            .map(|r| format!("; last reload rejected: {r}"))
            .unwrap_or_default();
        match self.failures.as_slice() {
            [] => format!("serving on {}{rejected}", self.addrs),
            reasons => format!(
                "NOT_SERVING: {} (listening on {}){rejected}",
                reasons.join("; "),
                self.addrs
            ),
        }
    }
}

impl StatusLine {
    pub(super) fn new(addrs: String) -> StatusLine {
        StatusLine {
            inner: Mutex::new(State {
                addrs,
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// READY=1 with readiness and its reasons, after start or a reload (`rejected`: why
    /// it was refused, `None` when applied); readiness owns the line from now on.
    pub(super) fn ready(&self, rejected: Option<String>) {
        let mut state = self.lock();
        state.serving = true;
        state.rejected = rejected;
        state.sent = state.text();
        systemd::notify(&format!("READY=1\nSTATUS={}", state.sent));
    }

    /// A lifecycle message (`RELOADING=1\nSTATUS=reloading`, ...): readiness leaves the
    /// line alone until the next [`StatusLine::ready`].
    pub(super) fn lifecycle(&self, message: &str) {
        let mut state = self.lock();
        state.serving = false;
        systemd::notify(message);
    }

    /// The checks' reasons now; sent when they changed and readiness owns the line.
    pub(super) fn failures(&self, failures: Vec<String>) {
        let mut state = self.lock();
        state.failures = failures;
        let text = state.text();
        if state.serving && text != state.sent {
            systemd::notify(&format!("STATUS={text}"));
            state.sent = text;
        }
    }

    /// The line as it reads now (for tests).
    #[cfg(test)]
    fn text(&self) -> String {
        self.lock().text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serving, the line names the addresses; failing, the reasons come first; a rejected
    /// reload is appended to either.
    #[test]
    fn the_line_says_readiness_and_why() {
        let line = StatusLine::new("127.0.0.1:50051".into());
        assert_eq!(line.text(), "serving on 127.0.0.1:50051");
        line.failures(vec![
            "memory has 2.0% available, below 5%".into(),
            "hot".into(),
        ]);
        assert_eq!(
            line.text(),
            "NOT_SERVING: memory has 2.0% available, below 5%; hot (listening on 127.0.0.1:50051)"
        );
        line.ready(Some("server.listen: bad".into()));
        assert!(
            line.text()
                .ends_with("; last reload rejected: server.listen: bad")
        );
        line.failures(vec![]);
        assert_eq!(
            line.text(),
            "serving on 127.0.0.1:50051; last reload rejected: server.listen: bad"
        );
    }

    /// Between a lifecycle message and the next READY=1, readiness changes are kept but
    /// not sent; while serving, only a change is sent.
    #[test]
    fn readiness_waits_for_the_lifecycle() {
        let line = StatusLine::new("a".into());
        line.ready(None);
        line.failures(vec!["x".into()]);
        assert_eq!(line.lock().sent, "NOT_SERVING: x (listening on a)");
        line.lifecycle("STOPPING=1\nSTATUS=stopping");
        line.failures(vec![]);
        assert_eq!(line.lock().sent, "NOT_SERVING: x (listening on a)");
        assert!(!line.lock().serving);
    }
}
