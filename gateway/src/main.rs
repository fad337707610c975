//! The `sluice` command: parse the command line, set up logging, load the configuration, run.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use sluice_gateway::config::{Cli, Command};
use sluice_gateway::Config;

fn main() -> ExitCode {
    let cli = Cli::parse_with_env();
    set_up_logging();
    let loaded = match cli.command {
        Command::Serve(args) => args.into_config(),
        Command::Run { config, reload } => Config::load(&config)
            .map(|config| reload.apply(config))
            .map_err(|err| err.to_string()),
        Command::Check { config } => return check(&config),
    };
    match loaded {
        Ok(config) => run(config),
        Err(err) => fail(err),
    }
}

fn set_up_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// `sluice check`: the file loads and its TLS files are usable; then its route table.
fn check(path: &Path) -> ExitCode {
    let loaded = Config::load(path).map_err(|err| err.to_string());
    let checked = loaded.and_then(|config| {
        sluice_gateway::check_tls(&config)
            .map(|()| config)
            .map_err(|err| format!("{}: {err}", path.display()))
    });
    match checked {
        Ok(config) => {
            println!("{} is valid\n", path.display());
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

fn run(config: Config) -> ExitCode {
    // Before any thread starts: it clears the variables systemd set.
    let inherited = sluice_gateway::Inherited::from_env();
    batch_scheduling();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.gateway_threads)
        .thread_name("sluice-gateway")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(sluice_gateway::run(config, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(format!("{err:#}")),
    }
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::FAILURE
}

/// Puts this thread, and so every thread and worker process the gateway starts after it (both
/// inherit the policy), under SCHED_BATCH. A gateway thread woken by a worker's answer no longer
/// preempts the Python thread that sent it, which is about to block by itself (on its next
/// request or the GIL); the gateway runs then and finds several answers waiting instead of one.
/// The other way round, a worker thread woken by a request no longer preempts the gateway in the
/// middle of a burst of requests; before, the two took turns one request at a time. Only who
/// runs first on a wake-up changes, not the CPU share, and an idle CPU still takes a woken thread
/// at once: it matters only when the cores are all busy. Measured on 2 CPUs with the bench's
/// 64 connections (2 alternating 5 s runs each, every thread put back under SCHED_OTHER with
/// `chrt` for the other): Django 9.9k/10.6k -> 12.7k/13.3k req/s, Flask 9.9k/11.8k ->
/// 13.9k/13.0k, the gateway 41-47 -> 30-34 CPU µs per request. Best effort: a sandbox that
/// forbids it leaves the default policy.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) on this thread (pid 0) with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(
            "cannot run SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}
