//! The route table as `sluice check` prints it: every app with its binds and settings, then the
//! gateway-wide ones, each value with where it came from.

use std::fmt;
use std::time::Duration;

use super::origin::Shown;
use super::{AccessLog, AppConfig, BindAddr, BindConfig, Config, TlsFiles};

/// One line of the table: the setting's key, its value, and the key its origin is kept under.
type Row = (&'static str, String);

impl Config {
    /// The route table as `sluice check` prints it: each app's settings, then the gateway's,
    /// one a line, each with where its value came from.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let file = self.source.as_deref();
        for (index, app) in self.apps.iter().enumerate() {
            out.push_str(&format!("{}: {}\n", app.name, app.app));
            let rows = app.rows();
            let shown = |key: &str| Shown {
                origin: self.origins.app(index, key),
                file,
            };
            push_rows(&mut out, &rows, shown);
        }
        let admin = match self.admin {
            Some(admin) => format!("{admin} (/metrics, /healthz, /readyz)"),
            None => "off".into(),
        };
        let rows = [
            ("admin", admin),
            ("max_connections", self.max_connections.to_string()),
            ("gateway_threads", self.gateway_threads.to_string()),
            (
                "pidfile",
                self.pidfile
                    .as_deref()
                    .map_or_else(|| "off".into(), |p| p.display().to_string()),
            ),
            ("reload", self.describe_reload()),
        ];
        out.push_str("gateway:\n");
        let shown = |key: &str| Shown {
            origin: self.origins.gateway(key),
            file,
        };
        push_rows(&mut out, &rows, shown);
        out
    }

    /// `reload`, and what it watches: each app's `*.py` files, the `reload_paths`, the file.
    fn describe_reload(&self) -> String {
        if !self.reload {
            return "off".into();
        }
        let mut watched: Vec<String> = Vec::new();
        for dir in self.code_dirs() {
            let entry = format!("{}/**/*.py", dir.display());
            if !watched.contains(&entry) {
                watched.push(entry);
            }
        }
        watched.extend(self.reload_paths.iter().map(|p| p.display().to_string()));
        watched.extend(self.source.iter().map(|p| p.display().to_string()));
        format!("on, watching {}", watched.join(", "))
    }
}

/// `  key: value` lines with the origins lined up in a column after them.
fn push_rows<'a>(out: &mut String, rows: &[Row], shown: impl Fn(&str) -> Shown<'a>) {
    let width = rows
        .iter()
        .map(|(key, value)| key.len() + value.len() + 2)
        .max()
        .unwrap_or(0);
    for (key, value) in rows {
        let setting = format!("{key}: {value}");
        out.push_str(&format!("  {setting:<width$}   {}\n", shown(key)));
    }
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn or_off<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "off".into(), show)
}

fn on_off(on: bool) -> String {
    if on { "on" } else { "off" }.into()
}

impl AppConfig {
    /// Every setting of the app, by its YAML key.
    fn rows(&self) -> Vec<Row> {
        let binds: Vec<String> = self.binds.iter().map(|b| b.to_string()).collect();
        let edge = &self.edge;
        let statics: Vec<String> = edge
            .static_dirs
            .iter()
            .map(|(prefix, dir)| format!("{prefix} -> {}", dir.display()))
            .collect();
        let nets: Vec<String> = edge
            .forwarded_allow_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        let unix_mode = self
            .binds
            .iter()
            .find(|b| matches!(b.addr, BindAddr::Unix(_)))
            .map_or_else(
                || "(no unix: bind)".into(),
                |b| format!("{:04o}", b.unix_mode),
            );
        vec![
            ("bind", binds.join(", ")),
            ("unix_mode", unix_mode),
            (
                "backlog",
                self.binds.first().map_or(0, |b| b.backlog).to_string(),
            ),
            ("workers", self.workers.to_string()),
            ("threads", self.threads.to_string()),
            ("python", self.python.display().to_string()),
            (
                "chdir",
                self.chdir
                    .as_deref()
                    .map_or_else(|| "(current directory)".into(), |d| d.display().to_string()),
            ),
            ("timeout", duration(self.timeout)),
            ("graceful_timeout", duration(self.graceful_timeout)),
            ("queue_timeout", duration(self.queue_timeout)),
            ("max_body", size(self.max_body)),
            ("max_requests", or_off(self.max_requests, |n| n.to_string())),
            ("max_requests_jitter", self.max_requests_jitter.to_string()),
            ("max_rss", or_off(self.max_rss, size)),
            ("worker_lifetime", or_off(self.worker_lifetime, duration)),
            (
                "limit_request_line",
                format!("{} B", edge.limit_request_line),
            ),
            (
                "limit_request_fields",
                edge.limit_request_fields.to_string(),
            ),
            (
                "limit_request_field_size",
                format!("{} B", edge.limit_request_field_size),
            ),
            ("header_timeout", duration(edge.header_timeout)),
            ("keepalive", duration(edge.keepalive)),
            ("min_body_rate", format!("{}/s", size(edge.min_body_rate))),
            ("response_buffer", size(edge.response_buffer)),
            (
                "static",
                if statics.is_empty() {
                    "none".into()
                } else {
                    statics.join(", ")
                },
            ),
            (
                "static_hashed_max_age",
                or_off(edge.static_hashed_max_age, duration),
            ),
            ("compress", on_off(edge.compress)),
            ("compress_min_size", size(edge.compress_min_size)),
            ("forwarded_allow_ips", nets.join(", ")),
            (
                "access_log",
                match edge.access_log {
                    AccessLog::Off => "off",
                    AccessLog::Combined => "combined",
                    AccessLog::Json => "json",
                }
                .into(),
            ),
            ("http", edge.http.as_str().into()),
            (
                "h2_max_concurrent_streams",
                edge.h2_max_concurrent_streams.to_string(),
            ),
        ]
    }
}

impl fmt::Display for BindConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tls {
            None => write!(f, "{}", self.addr)?,
            Some(tls) => write!(f, "{} (TLS: {})", self.addr, tls)?,
        }
        if self.proxy_protocol {
            write!(f, " (PROXY protocol)")?;
        }
        Ok(())
    }
}

impl fmt::Display for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certfile {}, keyfile {}",
            self.certfile.display(),
            self.keyfile.display()
        )?;
        if let Some(ca) = &self.ca_certs {
            write!(f, ", client certificates verified against {}", ca.display())?;
        }
        Ok(())
    }
}
