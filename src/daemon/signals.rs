//! The signals the daemon acts on: SIGHUP reloads, SIGTERM and SIGINT stop.

use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

use super::Control;

/// The handlers, installed before the daemon serves: a SIGHUP that arrives right after
/// READY must reload, not kill (SIGHUP's default action).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Turns SIGHUP into a reload and SIGTERM or SIGINT into a stop. A second stop is
    /// forwarded too (it ends the shutdown delay). The handlers stay installed to the end:
    /// a SIGTERM during the drain must not kill.
    pub async fn forward(mut self, control: mpsc::Sender<Control>) {
        loop {
            let command = tokio::select! {
                _ = self.term.recv() => Control::Stop,
                _ = self.int.recv() => Control::Stop,
                _ = self.hup.recv() => Control::Reload,
            };
            // Once the daemon no longer listens, signals are still caught, and dropped.
            let _ = control.try_send(command);
        }
    }
}
