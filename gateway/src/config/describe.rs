//! The route table as `sluice check` prints it: every app with its binds and settings, then the
//! gateway-wide ones.

use std::fmt;

use super::{AccessLog, AppConfig, BindConfig, Config, EdgeConfig, TlsFiles};

impl Config {
    /// The route table as `sluice check` prints it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for app in &self.apps {
            let binds: Vec<String> = app.binds.iter().map(|b| b.to_string()).collect();
            out.push_str(&format!(
                "{name}: {callable}\n  bind: {binds}\n  workers: {workers}, threads: {threads}, python: {python}\n  chdir: {chdir}\n  timeout: {timeout}, graceful_timeout: {graceful}, queue_timeout: {queue}, max_body: {max_body}\n  recycling: {recycling}\n{edge}",
                name = app.name,
                callable = app.app,
                binds = binds.join(", "),
                workers = app.workers,
                threads = app.threads,
                python = app.python.display(),
                chdir = app.chdir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "(current directory)".into()),
                timeout = humantime::format_duration(app.timeout),
                graceful = humantime::format_duration(app.graceful_timeout),
                queue = humantime::format_duration(app.queue_timeout),
                max_body = bytesize::ByteSize(app.max_body).display().iec(),
                recycling = app.describe_recycling(),
                edge = app.edge.describe(),
            ));
        }
        if let Some(admin) = self.admin {
            out.push_str(&format!("admin: {admin} (/metrics, /healthz, /readyz)\n"));
        }
        out.push_str(&format!(
            "max_connections: {}, gateway_threads: {}\n",
            self.max_connections, self.gateway_threads
        ));
        out.push_str(&self.describe_reload());
        out
    }

    /// `reload`, and what it watches: each app's `*.py` files, the `reload_paths`, the file.
    fn describe_reload(&self) -> String {
        if !self.reload {
            return "reload: off\n".into();
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
        format!("reload: on, watching {}\n", watched.join(", "))
    }
}

impl EdgeConfig {
    fn describe(&self) -> String {
        let mut out = format!(
            "  limits: request line {line} B, {fields} fields of {field} B, header_timeout {header}, keepalive {keepalive}, min_body_rate {rate}/s\n",
            line = self.limit_request_line,
            fields = self.limit_request_fields,
            field = self.limit_request_field_size,
            header = humantime::format_duration(self.header_timeout),
            keepalive = humantime::format_duration(self.keepalive),
            rate = bytesize::ByteSize(self.min_body_rate).display().iec(),
        );
        for (prefix, dir) in &self.static_dirs {
            out.push_str(&format!("  static: {prefix} -> {}\n", dir.display()));
        }
        let nets: Vec<String> = self
            .forwarded_allow_ips
            .iter()
            .map(|n| n.to_string())
            .collect();
        out.push_str(&format!(
            "  forwarded_allow_ips: {}, access_log: {}, compress: {}\n",
            nets.join(", "),
            match self.access_log {
                AccessLog::Off => "off",
                AccessLog::Combined => "combined",
                AccessLog::Json => "json",
            },
            if self.compress { "on" } else { "off" }
        ));
        out.push_str(&format!(
            "  http: {}, h2_max_concurrent_streams: {}\n",
            self.http.as_str(),
            self.h2_max_concurrent_streams
        ));
        out
    }
}

impl AppConfig {
    fn describe_recycling(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_requests {
            parts.push(format!(
                "max_requests {n} (+ up to {})",
                self.max_requests_jitter
            ));
        }
        if let Some(bytes) = self.max_rss {
            parts.push(format!(
                "max_rss {}",
                bytesize::ByteSize(bytes).display().iec()
            ));
        }
        if let Some(age) = self.worker_lifetime {
            parts.push(format!(
                "worker_lifetime {}",
                humantime::format_duration(age)
            ));
        }
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join(", ")
        }
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
