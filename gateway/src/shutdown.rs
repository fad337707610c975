//! Signals to the gateway and what they mean.

use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: stop accepting, let in-flight requests finish within the graceful timeout.
    Graceful,
    /// SIGINT, SIGQUIT: stop now.
    Immediate,
}

/// Waits for a signal that stops the gateway. SIGHUP is caught so that it does not kill the
/// gateway (its default action); reloading on it is not implemented yet, and the log says so.
pub async fn wait_for_stop() -> std::io::Result<Stop> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(Stop::Graceful),
            _ = int.recv() => return Ok(Stop::Immediate),
            _ = quit.recv() => return Ok(Stop::Immediate),
            _ = hup.recv() => tracing::warn!("SIGHUP received: reloading is not supported yet; ignoring it"),
        }
    }
}
