//! The YAML front end: a file's apps become [`AppSettings`], checked here with errors that name
//! file, line and column and show the lines around the place; relative paths in it resolve
//! against the file's directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::binds::{binds_clash, BindSpec};
use super::interpolate::{self, find_reference, Rewritten};
use super::settings::{
    AppSettings, GatewaySettings, Resolved, DEFAULT_UNIX_MODE, MAX_LIMIT_REQUEST_FIELD_SIZE,
};
use super::values::{normalize_static_prefix, resolve_path};
use super::{AppConfig, BindAddr, BindConfig, Config, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    python: Option<String>,
    admin: Option<Spanned<BindSpec>>,
    max_connections: Option<usize>,
    gateway_threads: Option<Spanned<usize>>,
    reload: Option<bool>,
    reload_paths: Option<Vec<String>>,
    apps: Spanned<IndexMap<String, Spanned<AppSettings>>>,
}

/// The binds taken so far: where, by which app, on which line.
type Taken = Vec<(BindAddr, String, u64)>;

/// The file being read, for errors that point into it.
struct Source<'a> {
    path: &'a Path,
    /// The file as written, for the lines errors show.
    text: &'a str,
    /// What the parser read, for turning its places into places in `text`.
    rewritten: &'a Rewritten,
}

impl Source<'_> {
    /// An error at `line`:`column` of the file as written.
    fn error(&self, line: u64, column: u64, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            line,
            column,
            snippet: snippet(self.text, line, column),
            message,
        }
    }

    /// An error at a place the parser gave.
    fn error_at(&self, at: &Location, message: String) -> ConfigError {
        let (line, column) = self.rewritten.original(at.line(), at.column());
        self.error(line, column, message)
    }

    fn syntax_error(&self, err: &serde_saphyr::Error) -> ConfigError {
        let (line, column) = err
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        if let serde_saphyr::Error::PropertyRequiredButUnset { name, .. } = err.without_snippet() {
            // The parser names the value; the error is at the reference.
            let (line, column) = self.rewritten.original(line, column);
            let (line, column) =
                find_reference(self.text, line, column, name).unwrap_or((line, column));
            let message = format!(
                "environment variable {name} is not set and `${{{name}}}` has no default (write `${{{name}:-DEFAULT}}` for one)"
            );
            return self.error(line, column, message);
        }
        // The library's message starts with its own "error: line L column C:"; keep what follows.
        let full = err.to_string();
        let first = full.lines().next().unwrap_or_default();
        let message = first
            .split_once(&format!("line {line} column {column}: "))
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_else(|| first.trim_start_matches("error: ").to_owned());
        let (line, column) = self.rewritten.original(line, column);
        self.error(line, column, message)
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
            snippet: String::new(),
        })?;
        Config::parse(path, &text)
    }

    /// The configuration `text` (read from `path`) gives, with the process's environment for
    /// its `${VAR}` references.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(path, text, interpolate::environment())
    }

    /// [`Config::parse`] with the environment given.
    fn parse_with_env(
        path: &Path,
        text: &str,
        env: HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let rewritten = Rewritten::new(text);
        let source = Source {
            path,
            text,
            rewritten: &rewritten,
        };
        let options = interpolate::parse_options(env);
        let file: FileConfig = serde_saphyr::from_str_with_options(&rewritten.text, options)
            .map_err(|err| source.syntax_error(&err))?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        if file.apps.value.is_empty() {
            let message = "`apps` names no app".into();
            return Err(source.error_at(&file.apps.referenced, message));
        }
        let mut apps = Vec::new();
        let mut taken = Taken::new();
        for (name, app) in file.apps.value {
            let python = file.python.as_deref();
            apps.push(file_app(&source, &base, name, app, python, &mut taken)?);
        }
        let admin = match &file.admin {
            Some(spec) => Some(file_admin(&source, spec, &taken)?),
            None => None,
        };
        if file.max_connections == Some(0) {
            let message = "`max_connections` must be at least 1".into();
            return Err(source.error(1, 1, message));
        }
        if let Some(threads) = file.gateway_threads.as_ref().filter(|t| t.value == 0) {
            let message = "`gateway_threads` must be at least 1".into();
            return Err(source.error_at(&threads.referenced, message));
        }
        let settings = GatewaySettings {
            admin,
            max_connections: file.max_connections,
            gateway_threads: file.gateway_threads.map(|threads| threads.value),
            reload: file.reload,
            reload_paths: (file.reload_paths.iter().flatten())
                .map(|path| resolve_path(&base, path))
                .collect(),
        };
        Ok(settings.into_config(Some(path.to_owned()), apps))
    }
}

/// One app of the file, checked: its name, callable and binds at the app, then its settings.
fn file_app(
    source: &Source<'_>,
    base: &Path,
    name: String,
    app: Spanned<AppSettings>,
    default_python: Option<&str>,
    taken: &mut Taken,
) -> Result<AppConfig, ConfigError> {
    let at = app.referenced;
    let mut settings = app.value;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        let message = format!("app name {name:?} may hold only letters, digits, '-', '_' and '.'");
        return Err(source.error_at(&at, message));
    }
    let callable = match settings.app.as_deref().map(str::trim) {
        None => Err(format!("app {name}: missing field `app` (module:callable)")),
        Some("") => Err(format!("app {name}: `app` is empty; give module:callable")),
        Some(callable) => Ok(callable.to_owned()),
    }
    .map_err(|message| source.error_at(&at, message))?;
    let binds = file_binds(source, base, &name, &settings, &at, taken)?;
    for (field, value) in [("workers", settings.workers), ("threads", settings.threads)] {
        if value == Some(0) {
            let message = format!("app {name}: `{field}` must be at least 1");
            return Err(source.error_at(&at, message));
        }
    }
    let (static_dirs, forwarded_allow_ips) =
        file_edge(&settings, base).map_err(|(place, message)| {
            source.error_at(&place.unwrap_or(at), format!("app {name}: {message}"))
        })?;
    settings.python = settings.python.or(default_python.map(str::to_owned));
    let resolved = Resolved {
        name,
        callable,
        binds,
        static_dirs,
        forwarded_allow_ips,
    };
    Ok(settings.into_app(resolved, base))
}

/// An app's binds, each at its place in the file, none clashing with a bind taken before.
fn file_binds(
    source: &Source<'_>,
    base: &Path,
    name: &str,
    settings: &AppSettings,
    at: &Location,
    taken: &mut Taken,
) -> Result<Vec<BindConfig>, ConfigError> {
    let Some(bind) = &settings.bind else {
        return Err(source.error_at(at, format!("app {name}: missing field `bind`")));
    };
    if bind.value.is_empty() {
        let message = format!("app {name}: `bind` is empty");
        return Err(source.error_at(&bind.referenced, message));
    }
    let unix_mode = settings.unix_mode.unwrap_or(DEFAULT_UNIX_MODE);
    let mut binds = Vec::new();
    for spec in &bind.value {
        let at = &spec.referenced;
        let bind = spec
            .value
            .bind(base, unix_mode)
            .map_err(|e| source.error_at(at, format!("app {name}: {e}")))?;
        let addr = bind.addr.clone();
        if let Some((other, line)) = taken_by(taken, &addr) {
            let message =
                format!("app {name}: bind {addr} is already taken by app {other} (line {line})");
            return Err(source.error_at(at, message));
        }
        taken.push((addr, name.to_owned(), at.line()));
        binds.push(bind);
    }
    Ok(binds)
}

/// The admin bind: a plain TCP address no app has taken.
fn file_admin(
    source: &Source<'_>,
    spec: &Spanned<BindSpec>,
    taken: &Taken,
) -> Result<std::net::SocketAddr, ConfigError> {
    let at = &spec.referenced;
    if let BindSpec::Map { .. } = spec.value {
        let message =
            "admin: a plain HOST:PORT (the admin bind has no TLS or PROXY protocol)".into();
        return Err(source.error_at(at, message));
    }
    let addr = spec
        .value
        .addr()
        .map_err(|e| source.error_at(at, format!("admin: {e}")))?;
    if let Some((other, line)) = taken_by(taken, &BindAddr::Tcp(addr)) {
        let message = format!("admin bind {addr} is already taken by app {other} (line {line})");
        return Err(source.error_at(at, message));
    }
    Ok(addr)
}

/// The app (and its line) that already holds a bind clashing with `addr`, if any.
fn taken_by<'t>(taken: &'t Taken, addr: &BindAddr) -> Option<(&'t str, u64)> {
    taken
        .iter()
        .find(|(other, _, _)| binds_clash(other, addr))
        .map(|(_, app, line)| (app.as_str(), *line))
}

/// URL prefixes and the directories they serve.
type StaticDirs = Vec<(String, PathBuf)>;

/// A result whose error has the place of the offending value, when the file has one for it.
type Placed<T> = Result<T, (Option<Location>, String)>;

/// What a file writes in its own form for the edge (static directories, trusted peers),
/// resolved, and the edge limits checked.
fn file_edge(app: &AppSettings, base: &Path) -> Placed<(StaticDirs, Option<Vec<ipnet::IpNet>>)> {
    let mut static_dirs = Vec::new();
    if let Some(spanned) = &app.static_dirs {
        for (prefix, dir) in &spanned.value {
            let prefix =
                normalize_static_prefix(prefix).map_err(|e| (Some(spanned.referenced), e))?;
            let dir = resolve_path(base, dir);
            if !dir.is_dir() {
                let message = format!(
                    "static directory {} for {prefix} is not a directory",
                    dir.display()
                );
                return Err((Some(spanned.referenced), message));
            }
            static_dirs.push((prefix, dir));
        }
    }
    let forwarded_allow_ips = match &app.forwarded_allow_ips {
        None => None,
        Some(spanned) => Some(
            spanned
                .value
                .parse()
                .map_err(|e| (Some(spanned.referenced), e))?,
        ),
    };
    check_edge_limits(app).map_err(|message| (None, message))?;
    Ok((static_dirs, forwarded_allow_ips))
}

/// The edge limits a file may give out of range (the command line's flags refuse them as they
/// are parsed).
fn check_edge_limits(app: &AppSettings) -> Result<(), String> {
    for (field, value) in [
        ("limit_request_line", app.limit_request_line),
        ("limit_request_fields", app.limit_request_fields),
        ("limit_request_field_size", app.limit_request_field_size),
        (
            "h2_max_concurrent_streams",
            app.h2_max_concurrent_streams.map(|n| n as usize),
        ),
    ] {
        if value == Some(0) {
            return Err(format!("`{field}` must be at least 1"));
        }
    }
    if app
        .limit_request_field_size
        .is_some_and(|n| n > MAX_LIMIT_REQUEST_FIELD_SIZE)
    {
        return Err(format!(
            "`limit_request_field_size` must be at most {MAX_LIMIT_REQUEST_FIELD_SIZE}"
        ));
    }
    Ok(())
}

/// The lines around `line` with a caret under `column`, like a compiler.
fn snippet(text: &str, line: u64, column: u64) -> String {
    if line == 0 {
        return String::new();
    }
    let line = line as usize;
    let first = line.saturating_sub(2).max(1);
    let mut out = String::new();
    for (number, content) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if number < first || number > line {
            continue;
        }
        out.push_str(&format!("{number:>4} | {content}\n"));
        if number == line {
            out.push_str(&format!(
                "     | {}^\n",
                " ".repeat((column as usize).saturating_sub(1))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use super::super::settings::{
        default_gateway_threads, DEFAULT_LIMIT_REQUEST_FIELDS, DEFAULT_MAX_BODY_BYTES,
        DEFAULT_TIMEOUT,
    };
    use super::super::{AccessLog, TlsFiles};
    use super::*;

    fn plain(addr: &str) -> BindConfig {
        BindConfig {
            addr: BindAddr::Tcp(addr.parse().unwrap()),
            tls: None,
            unix_mode: DEFAULT_UNIX_MODE,
            proxy_protocol: false,
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/sluice/sluice.yaml"), text)
    }

    #[test]
    fn a_full_file_parses_with_defaults_and_relative_paths() {
        let config = parse(
            "python: venv/bin/python\napps:\n  shop:\n    app: shop.wsgi:application\n    chdir: shop\n    bind: [\"127.0.0.1:8000\", 8001]\n    workers: 4\n    threads: 10\n    timeout: 45s\n    max_body: 20MiB\n  api:\n    app: api:app\n    bind: [8070]\n",
        )
        .unwrap();
        let shop = &config.apps[0];
        assert_eq!(shop.name, "shop");
        assert_eq!(
            shop.binds,
            vec![plain("127.0.0.1:8000"), plain("0.0.0.0:8001")]
        );
        assert_eq!(shop.chdir.as_deref(), Some(Path::new("/etc/sluice/shop")));
        assert_eq!(shop.python, PathBuf::from("/etc/sluice/venv/bin/python"));
        assert_eq!((shop.workers, shop.threads), (4, 10));
        assert_eq!(shop.timeout, Duration::from_secs(45));
        assert_eq!(shop.max_body, 20 * 1024 * 1024);
        let api = &config.apps[1];
        assert_eq!(
            (api.workers, api.threads, api.max_body),
            (1, 1, DEFAULT_MAX_BODY_BYTES)
        );
        assert_eq!(api.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [1]\n    wokers: 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (5, 5));
        assert!(
            err.to_string()
                .starts_with("/etc/sluice/sluice.yaml:5:5: unknown field `wokers`"),
            "{err}"
        );

        let err = parse(
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n  b:\n    bind: [2]\n    workers: 1\n",
        )
        .unwrap_err();
        // At app b's first line, not where its mapping happens to end.
        assert_eq!(err.line, 6, "{err}");
        assert!(err.message.contains("missing field `app`"), "{err}");

        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [8000]\n  b:\n    app: x:z\n    bind: [\"127.0.0.1:8000\"]\n").unwrap_err();
        assert_eq!(err.line, 7);
        assert!(
            err.message.contains("already taken by app a (line 4)"),
            "{err}"
        );

        let err =
            parse("apps:\n  a:\n    app: x:y\n    bind: [1]\n    timeout: soon\n").unwrap_err();
        assert_eq!(err.line, 5);
        assert!(err.message.contains("invalid duration"), "{err}");

        let err = parse("apps:\n  a:\n    app: [x\n").unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn gateway_threads_parse_default_and_refuse_zero() {
        let apps = "apps:\n  a:\n    app: x:y\n    bind: [1]\n";
        let config = parse(&format!("gateway_threads: 3\n{apps}")).unwrap();
        assert_eq!(config.gateway_threads, 3);
        assert!(config.describe().contains("gateway_threads: 3"));
        let config = parse(apps).unwrap();
        assert_eq!(config.gateway_threads, default_gateway_threads());
        assert!(default_gateway_threads() >= 1);
        let err = parse(&format!("{apps}gateway_threads: 0\n")).unwrap_err();
        assert_eq!((err.line, err.column), (5, 18), "{err}");
        assert!(err.message.contains("`gateway_threads` must be at least 1"));
    }

    #[test]
    fn reload_is_off_unless_set_and_its_paths_resolve_against_the_file() {
        let apps = "apps:\n  a:\n    app: x:y\n    chdir: /srv/a\n    bind: [1]\n";
        let config = parse(apps).unwrap();
        assert!(!config.reload);
        assert!(config.describe().contains("reload: off\n"));
        let config = parse(&format!(
            "reload: true\nreload_paths: [templates, /etc/extra.conf]\n{apps}"
        ))
        .unwrap();
        assert!(config.reload);
        assert_eq!(
            config.reload_paths,
            [
                PathBuf::from("/etc/sluice/templates"),
                PathBuf::from("/etc/extra.conf")
            ]
        );
        assert!(
            config.describe().contains(
                "reload: on, watching /srv/a/**/*.py, /etc/sluice/templates, /etc/extra.conf, /etc/sluice/sluice.yaml\n"
            ),
            "{}",
            config.describe()
        );
        let err = parse(&format!("reload: sometimes\n{apps}")).unwrap_err();
        assert_eq!(err.line, 1, "{err}");
    }

    #[test]
    fn recycling_settings_parse_and_zero_means_off() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    max_requests: 1000\n    max_requests_jitter: 50\n    max_rss: 512MiB\n    worker_lifetime: 1h\n  b:\n    app: x:z\n    bind: [2]\n    max_requests: 0\n",
        )
        .unwrap();
        let a = &config.apps[0];
        assert_eq!((a.max_requests, a.max_requests_jitter), (Some(1000), 50));
        assert_eq!(a.max_rss, Some(512 * 1024 * 1024));
        assert_eq!(a.worker_lifetime, Some(Duration::from_secs(3600)));
        let b = &config.apps[1];
        assert_eq!(
            (b.max_requests, b.max_rss, b.worker_lifetime),
            (None, None, None)
        );
    }

    #[test]
    fn edge_settings_parse_with_gunicorn_names_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("staticfiles")).unwrap();
        let file = dir.path().join("sluice.yaml");
        let config = Config::parse(
            &file,
            "admin: \"127.0.0.1:9100\"\nmax_connections: 500\napps:\n  a:\n    app: x:y\n    bind: [1]\n    static: {\"/static\": staticfiles}\n    static_hashed_max_age: 365d\n    forwarded_allow_ips: \"10.0.0.0/8, ::1\"\n    access_log: json\n    limit_request_line: 4094\n    keepalive: 2s\n    min_body_rate: 0\n    compress: true\n  b:\n    app: x:z\n    bind: [2]\n    forwarded_allow_ips: [\"*\"]\n",
        )
        .unwrap();
        assert_eq!(config.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.max_connections, 500);
        let a = &config.apps[0].edge;
        assert_eq!(
            a.static_dirs,
            vec![("/static/".to_owned(), dir.path().join("staticfiles"))]
        );
        assert_eq!(
            a.static_hashed_max_age,
            Some(Duration::from_secs(365 * 86400))
        );
        assert_eq!(
            a.forwarded_allow_ips,
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        assert_eq!(a.access_log, AccessLog::Json);
        assert_eq!(a.limit_request_line, 4094);
        assert_eq!(a.limit_request_fields, DEFAULT_LIMIT_REQUEST_FIELDS);
        assert_eq!(a.keepalive, Duration::from_secs(2));
        assert_eq!(a.min_body_rate, 0);
        assert!(a.compress);
        let b = &config.apps[1].edge;
        assert_eq!(b.forwarded_allow_ips.len(), 2);
        assert!(b.forwarded_allow_ips[0].contains(&"203.0.113.9".parse::<IpAddr>().unwrap()));
        assert_eq!(b.access_log, AccessLog::Off);

        let err = Config::parse(
            &file,
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    static: {\"/s/\": missing}\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        assert!(err.message.contains("is not a directory"), "{err}");
        let err = Config::parse(
            &file,
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    forwarded_allow_ips: [\"10.0.0.300\"]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 5, "{err}");
        let err = Config::parse(
            &file,
            "admin: 8000\napps:\n  a:\n    app: x:y\n    bind: [8000]\n",
        )
        .unwrap_err();
        assert_eq!(err.line, 1, "{err}");
    }

    #[test]
    fn tls_binds_take_their_files_relative_to_the_file() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    bind:\n      - 8000\n      - {addr: \"127.0.0.1:8443\", certfile: tls/cert.pem, keyfile: /k.pem}\n      - {addr: 9443, certfile: c.pem, keyfile: k.pem, ca_certs: ca.pem}\n",
        )
        .unwrap();
        let binds = &config.apps[0].binds;
        assert_eq!(binds[0], plain("0.0.0.0:8000"));
        assert_eq!(
            binds[1].addr,
            BindAddr::Tcp("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            binds[1].tls,
            Some(TlsFiles {
                certfile: "/etc/sluice/tls/cert.pem".into(),
                keyfile: "/k.pem".into(),
                ca_certs: None,
            })
        );
        assert_eq!(
            binds[2].addr,
            BindAddr::Tcp("0.0.0.0:9443".parse().unwrap())
        );
        let tls = binds[2].tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_certs.as_deref(),
            Some(Path::new("/etc/sluice/ca.pem"))
        );

        for (yaml, want) in [
            ("{addr: 1, certfile: c.pem}", "`certfile` needs `keyfile`"),
            ("{addr: 1, keyfile: k.pem}", "`keyfile` needs `certfile`"),
            (
                "{addr: 1, ca_certs: ca.pem}",
                "`ca_certs` needs `certfile` and `keyfile`",
            ),
            ("{certfile: c.pem, keyfile: k.pem}", "missing field `addr`"),
            (
                "{addr: 1, certfile: c, keyfile: k, cert: x}",
                "unknown field `cert`",
            ),
            ("70000", "port 70000 is not in 0-65535"),
        ] {
            let err = parse(&format!(
                "apps:\n  a:\n    app: x:y\n    bind:\n      - {yaml}\n"
            ))
            .unwrap_err();
            assert_eq!(err.line, 5, "{yaml}: {err}");
            assert!(err.message.contains(want), "{yaml}: {err}");
        }
        let err = parse(
            "admin: {addr: 1, certfile: c, keyfile: k}\napps:\n  a:\n    app: x:y\n    bind: [2]\n",
        )
        .unwrap_err();
        assert!(err.message.contains("the admin bind has no TLS"), "{err}");
    }

    #[test]
    fn unix_binds_resolve_against_the_file_and_clash_by_path() {
        let config = parse(
            "apps:\n  a:\n    app: x:y\n    unix_mode: 600\n    bind: [\"unix:run/a.sock\", \"unix:/tmp/b.sock\"]\n",
        )
        .unwrap();
        let binds = &config.apps[0].binds;
        assert_eq!(
            binds[0].addr,
            BindAddr::Unix("/etc/sluice/run/a.sock".into())
        );
        assert_eq!(binds[0].addr.to_string(), "unix:/etc/sluice/run/a.sock");
        assert_eq!(binds[1].unix_mode, 0o600);
        let err = parse("apps:\n  a:\n    app: x:y\n    bind: [\"unix:/s\"]\n  b:\n    app: x:z\n    bind: [\"unix:/s\"]\n")
            .unwrap_err();
        assert!(err.message.contains("already taken by app a"), "{err}");
        let err =
            parse("admin: \"unix:/s\"\napps:\n  a:\n    app: x:y\n    bind: [1]\n").unwrap_err();
        assert!(err.message.contains("not a Unix socket"), "{err}");
        assert!(parse("apps:\n  a:\n    app: x:y\n    bind: [\"unix:\"]\n").is_err());
    }

    fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse_with_env(Path::new("/etc/sluice/sluice.yaml"), text, env)
    }

    #[test]
    fn values_take_the_environment_as_if_written_there() {
        let text = "apps:\n  a:\n    app: ${MODULE}:app\n    bind: [\"127.0.0.1:${PORT:-8000}\"]\n    workers: ${WORKERS:-2}\n    threads: ${THREADS-3}\n    compress: ${COMPRESS:-false}\n    chdir: \"/srv/$${HOME}\"\n";
        let set = [
            ("MODULE", "shop"),
            ("PORT", "9000"),
            ("WORKERS", "4"),
            ("THREADS", "6"),
            ("COMPRESS", "true"),
        ];
        let app = &parse_env(text, &set).unwrap().apps[0];
        assert_eq!(app.app, "shop:app");
        assert_eq!(app.binds, vec![plain("127.0.0.1:9000")]);
        assert_eq!((app.workers, app.threads), (4, 6));
        assert!(app.edge.compress);
        assert_eq!(app.chdir.as_deref(), Some(Path::new("/srv/${HOME}")));
        // Unset: the defaults. `:-` also takes the default for an empty value, `-` does not.
        let app = &parse_env(text, &[("MODULE", "shop"), ("WORKERS", "")])
            .unwrap()
            .apps[0];
        assert_eq!(app.binds, vec![plain("127.0.0.1:8000")]);
        assert_eq!((app.workers, app.threads), (2, 3));
        assert!(!app.edge.compress);
        let err = parse_env(text, &[("MODULE", "shop"), ("THREADS", "")]).unwrap_err();
        assert_eq!((err.line, err.column), (6, 14), "{err}");
        // A value never adds structure: it stays one scalar.
        let err =
            parse_env(text, &[("MODULE", "shop"), ("WORKERS", "1\n    python: x")]).unwrap_err();
        assert_eq!(err.line, 5, "{err}");
    }

    #[test]
    fn an_unset_variable_without_default_is_an_error_at_its_reference() {
        let text = "apps:\n  a:\n    app: x:y\n    bind: [1]\n    workers: 2\n    python: \"/srv/${VENV}/bin/python\"\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!((err.line, err.column), (6, 19), "{err}");
        assert!(
            err.message.contains("environment variable VENV is not set"),
            "{err}"
        );
        assert!(
            err.snippet
                .contains("   6 |     python: \"/srv/${VENV}/bin/python\""),
            "{err}"
        );
        assert!(
            err.snippet.contains(&format!("     | {}^", " ".repeat(18))),
            "{err}"
        );
        assert!(parse_env(text, &[("VENV", "v")]).is_ok());
        // A bare `$NAME` too, and a reference in a default that is used.
        let err = parse_env("apps:\n  a:\n    app: $APP\n    bind: [1]\n", &[]).unwrap_err();
        assert_eq!((err.line, err.column), (3, 10), "{err}");
        let text = "apps:\n  a:\n    app: x:y\n    bind: [\"${HOST:-${ADDR}}\"]\n";
        let err = parse_env(text, &[]).unwrap_err();
        assert_eq!((err.line, err.column), (4, 21), "{err}");
        assert!(err.message.contains("ADDR"), "{err}");
        assert!(parse_env(text, &[("HOST", "127.0.0.1:1")]).is_ok());
    }

    #[test]
    fn later_errors_keep_their_place_in_the_file_as_written() {
        // The rewrite inserts characters before `wokers` on its line: the column is the file's.
        let err = parse_env(
            "apps:\n  a:\n    app: x:y\n    bind: [1]\n    wokers: ${W}\n",
            &[("W", "2")],
        )
        .unwrap_err();
        assert_eq!((err.line, err.column), (5, 5), "{err}");
        let err = parse_env(
            "apps:\n  a: {app: x:y, bind: [1], timeout: \"${T}\", workers: \"$W\", wokers: 1}\n",
            &[("T", "3s"), ("W", "2")],
        )
        .unwrap_err();
        // (In a flow mapping a reference is quoted: `{` and `}` end a plain value there.)
        let column =
            "  a: {app: x:y, bind: [1], timeout: \"${T}\", workers: \"$W\", ".len() as u64 + 1;
        assert_eq!((err.line, err.column), (2, column), "{err}");
    }

    #[test]
    fn field_size_is_capped_by_the_worker_frame_format() {
        let yaml = |n: usize| {
            format!("apps:\n  a:\n    app: x:y\n    bind: [1]\n    limit_request_field_size: {n}\n")
        };
        assert!(parse(&yaml(MAX_LIMIT_REQUEST_FIELD_SIZE)).is_ok());
        let err = parse(&yaml(MAX_LIMIT_REQUEST_FIELD_SIZE + 1)).unwrap_err();
        assert!(err.message.contains("at most 65535"), "{err}");
    }
}
