//! The access log: one line per request on stdout, in nginx's and gunicorn's combined format
//! (with sluice's fields appended as `key=value`) or as one JSON object per line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderValue, Method, Version};

use crate::config::AccessLog;

/// What the line is made of, gathered as the request passes (see `context::Observation`).
pub(crate) struct AccessRecord {
    pub(crate) format: AccessLog,
    pub(crate) app: String,
    pub(crate) method: Method,
    /// As the client sent it (see `framing::RawTarget`), fragment left out.
    pub(crate) target: Vec<u8>,
    pub(crate) version: Version,
    /// The connection came over TLS.
    pub(crate) tls: bool,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) user_agent: Option<HeaderValue>,
    /// The TCP peer (a proxy, when the client came through one); `None` on a Unix socket.
    pub(crate) peer: Option<SocketAddr>,
}

/// How a request ended, for its line.
pub(crate) struct Outcome<'a> {
    pub(crate) request_id: &'a str,
    /// Who the client really is (after trusted proxies); `None` on a Unix socket.
    pub(crate) client: Option<SocketAddr>,
    /// Its wait for a Python thread, and its time in Python, if it got that far.
    pub(crate) queued: Option<Duration>,
    pub(crate) python: Option<Duration>,
    pub(crate) status: u16,
    /// Body bytes sent.
    pub(crate) bytes: u64,
    pub(crate) total: Duration,
}

/// Writes the line for a finished response.
pub(crate) fn write(record: &AccessRecord, outcome: &Outcome<'_>) {
    let now = time::OffsetDateTime::now_utc();
    let line = match record.format {
        AccessLog::Off => return,
        AccessLog::Combined => combined(record, outcome, now),
        AccessLog::Json => json(record, outcome, now),
    };
    // One write per line, so lines from concurrent requests never interleave.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A peer as the log shows it: its address, or `unix` for a Unix socket's.
fn peer_str(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unix".to_owned(), |p| p.to_string())
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent "$http_referer"
/// "$http_user_agent"`, then `app= rid= total_ms= queue_ms= python_ms= peer= tls=`; a request that
/// never reached Python (static file, rejected) has `-` for the Python times.
fn combined(record: &AccessRecord, outcome: &Outcome<'_>, now: time::OffsetDateTime) -> String {
    const CLF: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    let opt_ms =
        |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{:.3}", ms(d)));
    format!(
        "{client} - - [{time}] \"{method} {target} {version}\" {status} {bytes} \"{referer}\" \"{agent}\" app={app} rid={rid} total_ms={total:.3} queue_ms={queue} python_ms={python} peer={peer} tls={tls}\n",
        client = outcome
            .client
            .map_or_else(|| "-".to_owned(), |c| c.ip().to_string()),
        time = now.format(CLF).unwrap_or_default(),
        method = escape(record.method.as_str().as_bytes()),
        target = escape(&record.target),
        version = version_str(record.version),
        status = outcome.status,
        bytes = outcome.bytes,
        referer = record.referer.as_ref().map_or_else(|| "-".into(), |v| escape(v.as_bytes())),
        agent = record.user_agent.as_ref().map_or_else(|| "-".into(), |v| escape(v.as_bytes())),
        app = record.app,
        rid = outcome.request_id,
        total = ms(outcome.total),
        queue = opt_ms(outcome.queued),
        python = opt_ms(outcome.python),
        peer = peer_str(record.peer),
        tls = if record.tls { "on" } else { "off" },
    )
}

fn json(record: &AccessRecord, outcome: &Outcome<'_>, now: time::OffsetDateTime) -> String {
    let target = String::from_utf8_lossy(&record.target);
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&*target, None),
    };
    let lossy = |v: &Option<HeaderValue>| {
        v.as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let round = |d: Duration| (ms(d) * 1000.0).round() / 1000.0;
    let mut line = serde_json::json!({
        "time": now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "app": record.app,
        "request_id": outcome.request_id,
        "client": outcome.client.map(|c| c.ip().to_string()),
        "peer": peer_str(record.peer),
        "method": record.method.as_str(),
        "path": path,
        "query": query,
        "protocol": version_str(record.version),
        "tls": record.tls,
        "status": outcome.status,
        "bytes": outcome.bytes,
        "total_ms": round(outcome.total),
        "queue_ms": outcome.queued.map(round),
        "python_ms": outcome.python.map(round),
        "referer": lossy(&record.referer),
        "user_agent": lossy(&record.user_agent),
    })
    .to_string();
    line.push('\n');
    line
}

/// nginx's escaping for the quoted fields: `"`, `\` and bytes outside printable ASCII as `\xHH`,
/// so a client cannot forge a second log line or break the quoting.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\x{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome<'static> {
        Outcome {
            request_id: "abc-123",
            client: Some("203.0.113.7:0".parse().unwrap()),
            queued: Some(Duration::from_micros(250)),
            python: Some(Duration::from_micros(12_345)),
            status: 200,
            bytes: 13,
            total: Duration::from_micros(13_000),
        }
    }

    fn record(format: AccessLog) -> AccessRecord {
        AccessRecord {
            format,
            app: "shop".into(),
            method: Method::GET,
            target: b"/a?b=\"c\"".to_vec(),
            version: Version::HTTP_11,
            tls: true,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8.0")),
            peer: Some("127.0.0.1:5000".parse().unwrap()),
        }
    }

    #[test]
    fn combined_lines_escape_and_carry_the_times() {
        let now = time::macros::datetime!(2026-11-23 10:04:05 UTC);
        let line = combined(&record(AccessLog::Combined), &outcome(), now);
        assert_eq!(
            line,
            "203.0.113.7 - - [23/Nov/2026:10:04:05 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 13 \"-\" \"curl/8.0\" app=shop rid=abc-123 total_ms=13.000 queue_ms=0.250 python_ms=12.345 peer=127.0.0.1:5000 tls=on\n"
        );
    }

    #[test]
    fn json_lines_are_one_object() {
        let now = time::macros::datetime!(2026-11-23 10:04:05 UTC);
        let line = json(&record(AccessLog::Json), &outcome(), now);
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a");
        assert_eq!(v["query"], "b=\"c\"");
        assert_eq!(v["request_id"], "abc-123");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["python_ms"], 12.345);
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["time"], "2026-11-23T10:04:05Z");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["tls"], true);
    }
}
