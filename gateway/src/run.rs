//! The running gateway: its binds, the current generation of its apps, and what each signal does.
//!
//! A bind owns its listener and accept loop and serves whatever app its [`Route`] names now. A
//! reload starts a whole new generation of apps beside the old one; only when every new worker
//! is ready are the routes switched, binds opened and closed, and the old generation drained
//! (its workers finish the requests they hold, then exit). If the new file is invalid or an app
//! fails to start, nothing is switched and the old generation goes on serving. With `reload`
//! on, a changed file (see `watch`) does exactly what SIGHUP does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::app::Route;
use crate::config::{AppConfig, BindAddr, BindConfig, Config};
use crate::edge::activation::{Inherited, Passed};
use crate::edge::admission::{self, ConnectionLimit};
use crate::edge::connection::Connections;
use crate::edge::tls::{self, TlsSetting};
use crate::metrics::Metrics;
use crate::server;
use crate::shutdown::{Signal, Signals, Stop};
use crate::supervisor::{self, AppHandle, RunDir, StartError};
use crate::watch::{self, Watch};

/// Which configured bind a listener belongs to, across reloads. A port-0 bind is a fresh port
/// each time it is opened, so it is kept per app and position in the app's list: reloading
/// does not move it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BindKey {
    configured: BindAddr,
    app: Option<(String, usize)>,
}

impl BindKey {
    fn new(configured: &BindAddr, app: &str, position: usize) -> BindKey {
        let fresh = matches!(configured, BindAddr::Tcp(addr) if addr.port() == 0);
        BindKey {
            configured: configured.clone(),
            app: fresh.then(|| (app.to_owned(), position)),
        }
    }
}

struct Bind {
    key: BindKey,
    route: Arc<Route>,
    /// TLS or plain for new connections; a reload reads the files again.
    tls: Arc<TlsSetting>,
    /// Whether new connections start with a PROXY protocol header.
    proxy_protocol: Arc<AtomicBool>,
    accepting: CancellationToken,
    accept_loop: JoinHandle<()>,
    connections: Arc<Connections>,
    /// The Unix socket file sluice made for this bind, removed when the bind closes.
    _unix_file: Option<UnixFile>,
}

impl Bind {
    fn open(
        key: BindKey,
        listener: Listener,
        app: &AppHandle,
        limit: &Arc<ConnectionLimit>,
    ) -> anyhow::Result<Bind> {
        let addr = listener.socket.local_addr()?;
        let route = Arc::new(Route::new(app.state.clone()));
        let accepting = CancellationToken::new();
        let connections = Arc::new(Connections::default());
        let tls = Arc::new(TlsSetting::new(listener.tls));
        let proxy_protocol = Arc::new(AtomicBool::new(listener.proxy_protocol));
        let state = server::BindState {
            route: route.clone(),
            tls: tls.clone(),
            proxy_protocol: proxy_protocol.clone(),
            limit: limit.clone(),
            connections: connections.clone(),
        };
        let (accept_loop, unix_file) = match listener.socket {
            Socket::Tcp(socket) => (
                tokio::spawn(server::accept_loop(socket, state, accepting.clone())),
                None,
            ),
            Socket::Unix(socket, file) => (
                tokio::spawn(server::accept_loop(socket, state, accepting.clone())),
                file,
            ),
        };
        let scheme = if tls.current().is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(app = %app.state.config.name, addr = %addr, scheme, "listening");
        Ok(Bind {
            key,
            route,
            tls,
            proxy_protocol,
            accepting,
            accept_loop,
            connections,
            _unix_file: unix_file,
        })
    }

    /// Stops accepting, then gives open connections up to `wait` to finish their requests.
    async fn close(self, wait: Duration) {
        self.accepting.cancel();
        let _ = self.accept_loop.await;
        drop(self._unix_file);
        self.connections.drain(wait).await;
    }
}

/// The admin bind: its listener task and what its endpoints read.
struct AdminBind {
    state: Arc<Admin>,
    accepting: CancellationToken,
    accept_loop: JoinHandle<()>,
}

impl AdminBind {
    fn open(listener: TcpListener, state: Arc<Admin>) -> anyhow::Result<AdminBind> {
        let addr = listener.local_addr()?;
        let accepting = CancellationToken::new();
        let accept_loop = tokio::spawn(server::admin_loop(
            listener,
            admin::router(state.clone()),
            accepting.clone(),
        ));
        tracing::info!(addr = %addr, "admin listening");
        Ok(AdminBind {
            state,
            accepting,
            accept_loop,
        })
    }

    fn publish(&self, apps: &[AppHandle]) {
        self.state
            .apps
            .store(Arc::new(apps.iter().map(|a| a.state.clone()).collect()));
    }
}

struct Gateway {
    config: Config,
    rundir: Arc<RunDir>,
    metrics: Arc<Metrics>,
    admin: Option<AdminBind>,
    apps: Vec<AppHandle>,
    binds: Vec<Bind>,
    /// Client connections open across every bind, against `max_connections`.
    connections: Arc<ConnectionLimit>,
    /// Old generations and closed binds still draining.
    draining: JoinSet<()>,
    /// Numbers each app of each generation, keeping their socket names apart.
    next_app_index: usize,
    /// Sockets passed by systemd that no bind has taken yet (a reload may add the bind).
    inherited: Inherited,
}

/// Serves `config` until a stop signal; returns once every worker has stopped.
/// `inherited`: the sockets systemd passed ([`Inherited::from_env`], taken before the runtime
/// started).
pub async fn run(config: Config, inherited: Inherited) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let rundir = Arc::new(RunDir::prepare()?);
    let pidfile = config.pidfile.clone();
    let mut gateway = tokio::select! {
        gateway = Gateway::start(config, rundir, inherited) => gateway?,
        _ = wait_for_stop(&mut signals) => anyhow::bail!("stopped by a signal during start-up"),
    };
    // Written once the binds listen; removed when this function returns, however it does.
    let _pidfile = match pidfile.map(PidFile::write).transpose() {
        Ok(pidfile) => pidfile,
        Err(err) => {
            gateway.stop(Stop::Immediate).await;
            return Err(err);
        }
    };
    // No watcher at all unless `reload` is on. What it watches is decided here, at the start.
    let watch = match gateway.config.reload {
        true => Some(Watch::start(&gateway.config, gateway.rundir.path()).context("reload")?),
        false => None,
    };
    loop {
        let signal = tokio::select! {
            signal = signals.next() => signal,
            changed = changed_files(watch.as_ref()) => {
                tracing::info!("reload: {} changed", watch::describe_changed(&changed));
                Signal::Reload
            }
        };
        match signal {
            Signal::Reload => gateway.reload().await,
            Signal::MoreWorkers => gateway.apps.iter().for_each(AppHandle::add_worker),
            Signal::FewerWorkers => gateway.apps.iter().for_each(AppHandle::remove_worker),
            Signal::Stop(how) => {
                gateway.stop(how).await;
                return Ok(());
            }
        }
    }
}

/// A kept bind's TLS after a reload: its files read again (a renewed certificate) or its new
/// ones, for new connections. A file that cannot be used leaves the pair in use as it is.
fn reload_tls(app: &AppConfig, bind: &BindConfig, setting: &TlsSetting) {
    match &bind.tls {
        None => setting.set(None),
        Some(files) => match tls::load(files, app.edge.http) {
            Ok(config) => setting.set(Some(config)),
            Err(err) => tracing::error!(
                app = %app.name,
                addr = %bind.addr,
                "reload: {err}; the bind keeps the certificate it had"
            ),
        },
    }
}

/// The files `reload` saw change; never, without `reload`.
async fn changed_files(watch: Option<&Watch>) -> Vec<PathBuf> {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// The gateway's pid in a file (`pidfile`, gunicorn's `--pid`), removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    /// Written beside and renamed into place, so that nobody reads it empty or half written.
    fn write(path: PathBuf) -> anyhow::Result<PidFile> {
        let mut temp = path.clone().into_os_string();
        temp.push(format!(".{}.tmp", std::process::id()));
        let temp = PathBuf::from(temp);
        std::fs::write(&temp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&temp, &path))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&temp);
            })
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn wait_for_stop(signals: &mut Signals) {
    while !matches!(signals.next().await, Signal::Stop(_)) {}
}

/// A socket listening for a bind, with the TLS configuration it starts with.
struct Listener {
    socket: Socket,
    tls: Option<Arc<rustls::ServerConfig>>,
    proxy_protocol: bool,
}

/// A listening socket of either kind; a Unix one with the file sluice made for it, if it did.
enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener, Option<UnixFile>),
}

/// A Unix socket's file that sluice made: removed when dropped (the bind closed, or start-up
/// failed after it was made). One left by a crash is replaced at the next start.
struct UnixFile(PathBuf);

impl Drop for UnixFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Socket {
    /// What the log and the admin show: the address, or the socket's path.
    fn local_addr(&self) -> std::io::Result<BindAddr> {
        match self {
            Socket::Tcp(socket) => socket.local_addr().map(BindAddr::Tcp),
            Socket::Unix(socket, _) => {
                let addr = socket.local_addr()?;
                let path = addr.as_pathname().unwrap_or(Path::new("(unnamed)"));
                Ok(BindAddr::Unix(path.to_owned()))
            }
        }
    }
}

/// Reads a bind's TLS files, then listens on its address, or takes the socket systemd passed
/// for it.
fn open_listener(
    app: &AppConfig,
    bind: &BindConfig,
    inherited: &mut Inherited,
    app_names: &[&str],
) -> anyhow::Result<Listener> {
    let tls = match &bind.tls {
        Some(files) => Some(
            tls::load(files, app.edge.http)
                .with_context(|| format!("app {}: bind {}: TLS", app.name, bind.addr))?,
        ),
        None => None,
    };
    let app = &app.name;
    let passed = inherited
        .take(app, &bind.addr, app_names)
        .map_err(anyhow::Error::msg)?;
    if let Some(passed) = passed {
        let socket = match passed {
            Passed::Tcp(socket) => socket
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(socket))
                .map(Socket::Tcp),
            // systemd made the file and removes it.
            Passed::Unix(socket) => socket
                .set_nonblocking(true)
                .and_then(|()| UnixListener::from_std(socket))
                .map(|socket| Socket::Unix(socket, None)),
        }
        .with_context(|| format!("app {app}: the socket systemd passed for {}", bind.addr))?;
        tracing::info!(app, bind = %bind.addr, "using a socket passed by systemd");
        return Ok(Listener {
            socket,
            tls,
            proxy_protocol: bind.proxy_protocol,
        });
    }
    let socket = match &bind.addr {
        BindAddr::Tcp(addr) => listen(*addr, bind.backlog).map(Socket::Tcp),
        BindAddr::Unix(path) => listen_unix(path, bind.unix_mode, bind.backlog)
            .map(|socket| Socket::Unix(socket, Some(UnixFile(path.clone())))),
    }
    .with_context(|| format!("app {app}: cannot listen on {}", bind.addr))?;
    Ok(Listener {
        socket,
        tls,
        proxy_protocol: bind.proxy_protocol,
    })
}

/// Listens on a Unix socket at `path` with the file mode `mode`. A socket file left by a run
/// that crashed (nobody accepts on it) is replaced; one a running server answers on, or a file
/// that is no socket, is an error.
fn listen_unix(path: &Path, mode: u32, backlog: u32) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "a running server answers on it",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let socket = UnixListener::bind(path)?;
    // bind() listened with the standard library's backlog; Linux takes a second listen() on a
    // listening socket as a new backlog.
    use std::os::fd::AsRawFd;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen() on a socket this function owns; no memory is passed.
    if unsafe { libc::listen(socket.as_raw_fd(), backlog) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(socket)
}

/// The admin bind's listen backlog.
const ADMIN_BACKLOG: u32 = 1024;

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The longest graceful timeout of `apps`: how long their binds' connections get to finish.
fn longest_grace(apps: &[AppHandle]) -> Duration {
    apps.iter()
        .map(|a| a.state.config.graceful_timeout)
        .max()
        .unwrap_or_default()
}

/// Starts every app of `config` at once; all ready, or none kept.
async fn start_apps(
    config: &Config,
    first_index: usize,
    rundir: &Arc<RunDir>,
    metrics: &Arc<Metrics>,
) -> Result<Vec<AppHandle>, (String, StartError)> {
    let tasks: Vec<_> = config
        .apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let (app, rundir, metrics) = (app.clone(), rundir.clone(), metrics.clone());
            tokio::spawn(supervisor::start_app(app, first_index + i, rundir, metrics))
        })
        .collect();
    let mut started = Vec::new();
    let mut failure = None;
    for (app, task) in config.apps.iter().zip(tasks) {
        match task.await.expect("start-up task panicked") {
            Ok(handle) => started.push(handle),
            Err(err) => failure = failure.or(Some((app.name.clone(), err))),
        }
    }
    match failure {
        None => Ok(started),
        Some(failure) => {
            for app in started {
                app.stop(Duration::ZERO).await;
            }
            Err(failure)
        }
    }
}

impl Gateway {
    async fn start(
        config: Config,
        rundir: Arc<RunDir>,
        mut inherited: Inherited,
    ) -> anyhow::Result<Gateway> {
        admission::raise_open_file_limit(&config);
        // Bind first: a taken port fails in milliseconds, before any Python starts.
        let mut listeners = Vec::new();
        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        for app in &config.apps {
            for (position, bind) in app.binds.iter().enumerate() {
                let listener = open_listener(app, bind, &mut inherited, &names)?;
                listeners.push((BindKey::new(&bind.addr, &app.name, position), listener));
            }
        }
        if !inherited.is_empty() {
            tracing::warn!("systemd passed more sockets than there are binds; the rest are unused");
        }
        let metrics = Arc::new(Metrics::new());
        // The admin bind answers /healthz while the apps start; /readyz says not yet.
        let admin = match config.admin {
            Some(addr) => {
                let listener = listen(addr, ADMIN_BACKLOG)
                    .with_context(|| format!("admin: cannot listen on {addr}"))?;
                Some(AdminBind::open(
                    listener,
                    Arc::new(Admin::new(metrics.clone())),
                )?)
            }
            None => None,
        };
        let apps = start_apps(&config, 0, &rundir, &metrics)
            .await
            .map_err(|(name, err)| anyhow::anyhow!("app {name} failed to start: {err}"))?;
        if let Some(admin) = &admin {
            admin.publish(&apps);
        }
        let mut gateway = Gateway {
            next_app_index: config.apps.len(),
            inherited,
            connections: ConnectionLimit::new(config.max_connections),
            config,
            rundir,
            metrics,
            admin,
            apps,
            binds: Vec::new(),
            draining: JoinSet::new(),
        };
        let mut listeners = listeners.into_iter();
        for (index, app) in gateway.config.apps.iter().enumerate() {
            for (key, listener) in listeners.by_ref().take(app.binds.len()) {
                let bind = Bind::open(key, listener, &gateway.apps[index], &gateway.connections)?;
                gateway.binds.push(bind);
            }
        }
        Ok(gateway)
    }

    /// SIGHUP: a new generation of every app, switched to only when all of it is ready.
    async fn reload(&mut self) {
        let Some(config) = self.reloaded_config() else {
            return;
        };
        tracing::info!("reload: starting new workers");
        let new_listeners = match self.open_new_binds(&config) {
            Ok(listeners) => listeners,
            Err(err) => {
                tracing::error!("reload: {err:#}, so the running workers go on serving");
                return;
            }
        };
        if config.admin != self.config.admin {
            tracing::warn!("reload: a changed `admin` bind takes effect at the next start");
        }
        if config.gateway_threads != self.config.gateway_threads {
            tracing::warn!("reload: a changed `gateway_threads` takes effect at the next start");
        }
        let apps = match start_apps(&config, self.next_app_index, &self.rundir, &self.metrics).await
        {
            Ok(apps) => apps,
            Err((name, err)) => {
                tracing::error!(app = %name, "reload: the app failed to start, so the running workers go on serving:\n{err}");
                return;
            }
        };
        self.next_app_index += config.apps.len();
        let removed = self.switch_binds(&config, &apps, new_listeners);
        let old_apps = std::mem::replace(&mut self.apps, apps);
        if let Some(admin) = &self.admin {
            admin.publish(&self.apps);
        }
        self.drain(old_apps, removed);
        admission::raise_open_file_limit(&config);
        self.connections.set_max(config.max_connections);
        self.config = config;
        tracing::info!("reload: done; the previous workers are finishing their requests");
    }

    /// The configuration to reload to: the file read again, or for `sluice serve` the same
    /// settings (new workers, new code). `None` if the file is invalid.
    fn reloaded_config(&self) -> Option<Config> {
        let Some(path) = &self.config.source else {
            return Some(self.config.clone());
        };
        match Config::load(path) {
            Ok(config) => Some(config),
            Err(err) => {
                tracing::error!("reload: the configuration is invalid, so the running workers go on serving:\n{err}");
                None
            }
        }
    }

    /// Listeners for the binds of `config` that are not open yet; all of them, or an error.
    fn open_new_binds(&mut self, config: &Config) -> anyhow::Result<Vec<(BindKey, Listener)>> {
        let mut new_listeners = Vec::new();
        let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        for app in &config.apps {
            for (position, bind) in app.binds.iter().enumerate() {
                let key = BindKey::new(&bind.addr, &app.name, position);
                if self.binds.iter().any(|b| b.key == key) {
                    continue;
                }
                let listener = open_listener(app, bind, &mut self.inherited, &names)?;
                new_listeners.push((key, listener));
            }
        }
        Ok(new_listeners)
    }

    /// Points every bind of `config` at its app in `apps` (the new generation), opening the new
    /// ones; returns the binds `config` no longer has.
    fn switch_binds(
        &mut self,
        config: &Config,
        apps: &[AppHandle],
        mut new_listeners: Vec<(BindKey, Listener)>,
    ) -> Vec<Bind> {
        let mut keep = HashSet::new();
        for (app, handle) in config.apps.iter().zip(apps) {
            for (position, spec) in app.binds.iter().enumerate() {
                let addr = &spec.addr;
                let key = BindKey::new(addr, &app.name, position);
                keep.insert(key.clone());
                if let Some(bind) = self.binds.iter().find(|b| b.key == key) {
                    bind.route.store(handle.state.clone());
                    reload_tls(app, spec, &bind.tls);
                    bind.proxy_protocol
                        .store(spec.proxy_protocol, Ordering::Relaxed);
                } else if let Some(at) = new_listeners.iter().position(|(k, _)| *k == key) {
                    let (key, listener) = new_listeners.swap_remove(at);
                    match Bind::open(key, listener, handle, &self.connections) {
                        Ok(bind) => self.binds.push(bind),
                        Err(err) => {
                            tracing::error!(app = %app.name, "reload: cannot open {addr}: {err}")
                        }
                    }
                }
            }
        }
        let (kept, removed): (Vec<Bind>, Vec<Bind>) = std::mem::take(&mut self.binds)
            .into_iter()
            .partition(|b| keep.contains(&b.key));
        self.binds = kept;
        removed
    }

    /// The previous generation drains in the background: the removed binds' connections get
    /// the longest graceful timeout of the old apps, each old app its own.
    fn drain(&mut self, old_apps: Vec<AppHandle>, removed: Vec<Bind>) {
        let wait = longest_grace(&old_apps);
        for bind in removed {
            tracing::info!(addr = %bind.key.configured, "reload: no longer listening");
            self.draining.spawn(bind.close(wait));
        }
        for app in old_apps {
            let grace = app.state.config.graceful_timeout;
            self.draining.spawn(app.stop(grace));
        }
    }

    /// One deadline for the whole stop: open connections get until then to finish their
    /// requests, and the workers get what is left of it.
    async fn stop(mut self, how: Stop) {
        tracing::info!("stopping ({how:?})");
        if let Some(admin) = &self.admin {
            admin.state.stopping.store(true, Ordering::Relaxed);
        }
        let wait = match how {
            Stop::Graceful => longest_grace(&self.apps),
            Stop::Immediate => Duration::ZERO,
        };
        let deadline = tokio::time::Instant::now() + wait;
        // Stop accepting everywhere first (new connections are refused), then drain.
        for bind in &self.binds {
            bind.accepting.cancel();
        }
        let mut closing = JoinSet::new();
        for bind in self.binds.drain(..) {
            closing.spawn(bind.close(wait));
        }
        while closing.join_next().await.is_some() {}
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut stopping = JoinSet::new();
        for app in self.apps.drain(..) {
            stopping.spawn(app.stop(left));
        }
        while stopping.join_next().await.is_some() {}
        if how == Stop::Immediate {
            self.draining.abort_all();
        }
        while self.draining.join_next().await.is_some() {}
        if let Some(admin) = self.admin.take() {
            admin.accepting.cancel();
            let _ = admin.accept_loop.await;
        }
        tracing::info!("stopped");
    }
}
