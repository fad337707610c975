//! Small test helpers with no server in them: hashing, multipart bodies, cookies, deterministic
//! test data and deadline polling.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::http::Response;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Incremental SHA-256 (for bodies too large to want in memory twice).
#[derive(Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn hex(self) -> String {
        hex(&self.inner.finalize())
    }
}

/// `len` bytes that cover every byte value and never repeat with a short period, so truncation,
/// reordering or duplication anywhere changes the hash. Includes bytes that are invalid UTF-8.
pub fn test_bytes(len: usize, seed: u32) -> Vec<u8> {
    // xorshift32: deterministic, no dependency.
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Poll `f` until it returns `Some`, or panic after `deadline` saying what was awaited. The pause
/// between attempts only paces the polling; the deadline is what bounds the wait.
pub fn wait_for<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    try_wait_for(deadline, &mut f)
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Like [`wait_for`] but returns `None` on timeout.
pub fn try_wait_for<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A multipart/form-data body builder.
pub struct Multipart {
    boundary: String,
    parts: Vec<Part>,
}

struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

impl Multipart {
    pub fn new() -> Self {
        Multipart {
            boundary: "sluice-test-boundary-7MA4YWxkTrZu0gW".to_string(),
            parts: Vec::new(),
        }
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.parts.push(Part {
            name: name.to_string(),
            filename: None,
            content_type: None,
            data: value.as_bytes().to_vec(),
        });
        self
    }

    pub fn file(mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) -> Self {
        self.parts.push(Part {
            name: name.to_string(),
            filename: Some(filename.to_string()),
            content_type: Some(content_type.to_string()),
            data: data.to_vec(),
        });
        self
    }

    /// `(Content-Type header value, body)`.
    pub fn build(mut self) -> (String, Vec<u8>) {
        // A boundary that occurs inside a part would end that part early: extend it until unique.
        while self
            .parts
            .iter()
            .any(|p| crate::http::contains(&p.data, self.boundary.as_bytes()))
        {
            self.boundary.push('x');
        }
        let mut body = Vec::new();
        for p in &self.parts {
            body.extend_from_slice(format!("--{}\r\n", self.boundary).as_bytes());
            let mut disp = format!("Content-Disposition: form-data; name=\"{}\"", p.name);
            if let Some(f) = &p.filename {
                disp.push_str(&format!("; filename=\"{f}\""));
            }
            body.extend_from_slice(disp.as_bytes());
            body.extend_from_slice(b"\r\n");
            if let Some(ct) = &p.content_type {
                body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            body.extend_from_slice(&p.data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            body,
        )
    }
}

/// `application/x-www-form-urlencoded` encoding of `fields`.
pub fn form_urlencoded(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A minimal cookie jar: remembers `name=value` from `Set-Cookie`, ignores attributes (one
/// host, no expiry games in these tests).
#[derive(Debug, Default, Clone)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Absorb every `Set-Cookie` of `resp`.
    pub fn update(&mut self, resp: &Response) {
        for sc in resp.header_all("set-cookie") {
            let pair = sc.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                self.set(k.trim(), v.trim());
            }
        }
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.cookies.iter_mut().find(|(k, _)| k == name) {
            Some(c) => c.1 = value.to_string(),
            None => self.cookies.push((name.to_string(), value.to_string())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Cookie` request header value, or `None` when empty.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// curl, a real client, with `args` (and `--silent --show-error --max-time 20`): whether it
/// succeeded, its stdout and its stderr.
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.len(), 3);
        assert_eq!(h.hex(), sha256_hex(b"abc"));
    }

    #[test]
    fn test_bytes_are_varied_and_not_utf8() {
        let b = test_bytes(4096, 1);
        assert_eq!(b, test_bytes(4096, 1));
        assert_ne!(b, test_bytes(4096, 2));
        let distinct: std::collections::HashSet<u8> = b.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert!(std::str::from_utf8(&b).is_err());
    }

    #[test]
    fn multipart_boundary_avoids_data() {
        let data = b"--sluice-test-boundary-7MA4YWxkTrZu0gW inside".to_vec();
        let (ct, body) = Multipart::new()
            .text("a", "1")
            .file("f", "x.bin", "application/octet-stream", &data)
            .build();
        let boundary = ct.split("boundary=").nth(1).unwrap();
        assert_eq!(boundary, "sluice-test-boundary-7MA4YWxkTrZu0gWx");
        assert!(body.ends_with(format!("--{boundary}--\r\n").as_bytes()));
        assert!(crate::http::contains(&body, &data));
    }

    #[test]
    fn urlencoding() {
        assert_eq!(form_urlencoded(&[("a b", "c&d=é")]), "a+b=c%26d%3D%C3%A9");
    }
}
