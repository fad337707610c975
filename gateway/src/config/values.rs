//! How configuration values are written, the same on the command line and in YAML: durations,
//! sizes, octal modes, address lists, static mappings and HTTP versions, as text and as YAML
//! scalars (where a YAML number is read as a number); and paths against a base directory. Also
//! the way back, for the defaults `--help` shows.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::HttpVersions;

/// A duration: `30s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds >= 0.0 && seconds.is_finite() {
            return Ok(Duration::from_secs_f64(seconds));
        }
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 30s, 500ms, 2m"))
}

/// A size: `10MiB`, `512KiB`, `1GB`, or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("invalid size {text:?} ({e}); use e.g. 10MiB, 512KiB"))
}

/// A Unix socket file's mode, in octal as chmod takes it: `660`, `0660`, `0o660`.
pub fn parse_unix_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|&mode| mode <= 0o777)
        .ok_or_else(|| format!("invalid unix_mode {text:?}; give octal permission bits like 0660"))
}

/// gunicorn's `forwarded_allow_ips`: a comma-separated list of addresses and CIDR networks,
/// or `*` for every peer.
pub fn parse_allow_ips(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let mut nets = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        nets.extend(parse_allow_ip(item)?);
    }
    Ok(nets)
}

fn parse_allow_ip(item: &str) -> Result<Vec<ipnet::IpNet>, String> {
    if item == "*" {
        return Ok(vec![
            "0.0.0.0/0".parse().expect("valid"),
            "::/0".parse().expect("valid"),
        ]);
    }
    if let Ok(net) = item.parse::<ipnet::IpNet>() {
        return Ok(vec![net.trunc()]);
    }
    item.parse::<IpAddr>()
        .map(|ip| vec![ipnet::IpNet::from(ip)])
        .map_err(|_| format!("invalid address or network {item:?}; use e.g. 10.0.0.0/8, ::1 or *"))
}

/// `forwarded_allow_ips` in YAML: a list, or gunicorn's comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum AllowIps {
    List(Vec<String>),
    Text(String),
}

impl AllowIps {
    pub(super) fn parse(&self) -> Result<Vec<ipnet::IpNet>, String> {
        match self {
            AllowIps::Text(text) => parse_allow_ips(text),
            AllowIps::List(items) => items
                .iter()
                .map(|item| parse_allow_ip(item.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map(|nets| nets.concat()),
        }
    }
}

/// `--static /static/=DIR`: a URL prefix and the directory it serves.
pub fn parse_static(text: &str) -> Result<(String, PathBuf), String> {
    let (prefix, dir) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid static mapping {text:?}; use /static/=DIR"))?;
    Ok((normalize_static_prefix(prefix)?, PathBuf::from(dir)))
}

/// A static prefix as the router matches it: starting and ending with `/`.
pub(super) fn normalize_static_prefix(prefix: &str) -> Result<String, String> {
    let prefix = prefix.trim();
    if !prefix.starts_with('/') {
        return Err(format!("static prefix {prefix:?} must start with /"));
    }
    if prefix.contains(['?', '#', '%', '\\']) || prefix.split('/').any(|p| p == "..") {
        return Err(format!("static prefix {prefix:?} must be a plain path"));
    }
    Ok(if prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    })
}

impl HttpVersions {
    pub fn parse(text: &str) -> Result<HttpVersions, String> {
        match text.trim() {
            "auto" => Ok(HttpVersions::Auto),
            "1" | "1.1" => Ok(HttpVersions::Http1),
            "2" => Ok(HttpVersions::Http2),
            other => Err(format!("invalid http {other:?}; use 1, 2 or auto")),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            HttpVersions::Auto => "auto",
            HttpVersions::Http1 => "1",
            HttpVersions::Http2 => "2",
        }
    }
}

/// `path` against `base`, made absolute and without `.` parts, so that a worker finds it
/// whatever its working directory.
pub(super) fn resolve_path(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    let joined = base.join(path);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    absolute.components().collect()
}

/// An interpreter given with a slash is a path (relative ones resolve against `base`); a bare
/// name is looked up on PATH when the worker starts.
pub(super) fn resolve_python(base: &Path, text: &str) -> PathBuf {
    if text.contains('/') {
        resolve_path(base, text)
    } else {
        PathBuf::from(text)
    }
}

/// A YAML scalar where a number or a text may stand: `timeout: 30` and `timeout: 30s`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Float(f64),
    Text(String),
}

pub(super) fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => Ok(Some(Duration::from_secs(n))),
        NumberOrText::Float(f) if f >= 0.0 && f.is_finite() => Ok(Some(Duration::from_secs_f64(f))),
        NumberOrText::Float(f) => Err(serde::de::Error::custom(format!("invalid duration {f}"))),
        NumberOrText::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

pub(super) fn size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => Ok(Some(n)),
        NumberOrText::Float(f) => Err(serde::de::Error::custom(format!("invalid size {f}"))),
        NumberOrText::Text(text) => parse_size(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

pub(super) fn unix_mode<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    // A number is read by its digits, so `unix_mode: 660` is rw-rw---- like `"0660"`.
    by_text(de, parse_unix_mode)
}

pub(super) fn http_versions<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<HttpVersions>, D::Error> {
    // `http: 1.1` is a YAML number; read by its digits like the text.
    by_text(de, HttpVersions::parse)
}

/// A scalar read as text, a number by its digits.
fn by_text<'de, D: Deserializer<'de>, T>(
    de: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    match NumberOrText::deserialize(de)? {
        NumberOrText::Number(n) => parse(&n.to_string()),
        NumberOrText::Float(f) => parse(&f.to_string()),
        NumberOrText::Text(text) => parse(&text),
    }
    .map(Some)
    .map_err(serde::de::Error::custom)
}

/// A duration as `--help` shows a default: `30s`.
pub(super) fn duration_text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A size as `--help` shows a default: in the largest binary unit it is a whole number of.
pub(super) fn size_text(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    bytes.to_string()
}

/// An address list as `--forwarded-allow-ips` takes it: a single address without its `/32`.
pub(super) fn allow_ips_text(nets: &[ipnet::IpNet]) -> String {
    let items: Vec<String> = nets
        .iter()
        .map(|net| {
            if net.prefix_len() == net.max_prefix_len() {
                net.addr().to_string()
            } else {
                net.to_string()
            }
        })
        .collect();
    items.join(",")
}

/// A mode as chmod writes it: `0660`.
pub(super) fn unix_mode_text(mode: u32) -> String {
    format!("{mode:04o}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    }

    #[test]
    fn static_mappings_and_modes() {
        assert!(parse_static("static=/x").is_err());
        assert_eq!(parse_static("/s=/x").unwrap().0, "/s/");
        assert_eq!(parse_unix_mode("0o660"), Ok(0o660));
        assert_eq!(parse_unix_mode("0755"), Ok(0o755));
        assert!(parse_unix_mode("0800").is_err());
        assert!(parse_unix_mode("1777").is_err());
    }

    #[test]
    fn the_way_back_is_read_as_it_was_written() {
        for bytes in [0, 512, 1024, 1536, 10 << 20, 4 << 20, 3 << 30] {
            assert_eq!(parse_size(&size_text(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(size_text(10 << 20), "10MiB");
        assert_eq!(size_text(1024), "1KiB");
        for seconds in [0, 5, 30, 90, 3600] {
            let duration = Duration::from_secs(seconds);
            assert_eq!(parse_duration(&duration_text(duration)), Ok(duration));
        }
        assert_eq!(duration_text(Duration::from_secs(30)), "30s");
        let nets = parse_allow_ips("127.0.0.1, ::1, 10.0.0.0/8").unwrap();
        assert_eq!(allow_ips_text(&nets), "127.0.0.1,::1,10.0.0.0/8");
        assert_eq!(parse_allow_ips(&allow_ips_text(&nets)), Ok(nets));
        assert_eq!(unix_mode_text(0o660), "0660");
        assert_eq!(parse_unix_mode(&unix_mode_text(0o600)), Ok(0o600));
    }
}
