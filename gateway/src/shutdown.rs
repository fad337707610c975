//! The signals the gateway answers, as gunicorn's master does.

use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: stop accepting, let in-flight requests finish within the graceful timeout.
    Graceful,
    /// SIGINT, SIGQUIT: stop now.
    Immediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Stop(Stop),
    /// SIGHUP: re-read the configuration and replace every worker.
    Reload,
    /// SIGTTIN: one more worker per app.
    MoreWorkers,
    /// SIGTTOU: one fewer worker per app.
    FewerWorkers,
}

/// Installed before any worker starts: SIGHUP, SIGTTIN and SIGTTOU would otherwise stop or
/// kill the gateway (their default actions).
pub(crate) struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    quit: UnixSignal,
    hup: UnixSignal,
    ttin: UnixSignal,
    ttou: UnixSignal,
}

impl Signals {
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
        })
    }

    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop(Stop::Graceful),
            _ = self.int.recv() => Signal::Stop(Stop::Immediate),
            _ = self.quit.recv() => Signal::Stop(Stop::Immediate),
            _ = self.hup.recv() => Signal::Reload,
            _ = self.ttin.recv() => Signal::MoreWorkers,
            _ = self.ttou.recv() => Signal::FewerWorkers,
        }
    }
}
