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

    /// Turns SIGHUP into a reload and SIGTERM or SIGINT into a stop.
    pub async fn forward(mut self, control: mpsc::Sender<Control>) {
        loop {
            let command = tokio::select! {
                _ = self.term.recv() => Control::Stop,
                _ = self.int.recv() => Control::Stop,
                _ = self.hup.recv() => Control::Reload,
            };
            if control.send(command).await.is_err() || command == Control::Stop {
                // Keep the handlers installed: a second SIGTERM during the drain must not kill.
                return std::future::pending().await;
            }
        }
    }
}
