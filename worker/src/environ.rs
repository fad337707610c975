//! The PEP 3333 environ, built from a request head without re-encoding its bytes.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use sluice_proto::{RequestHead, Scheme};

use crate::app::App;

/// A str whose code points are the bytes (latin-1), as WSGI wants for everything from the wire.
pub(crate) fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    if bytes.is_ascii() {
        PyString::new(py, std::str::from_utf8(bytes).expect("ASCII is UTF-8"))
    } else {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        PyString::new(py, &text)
    }
}

/// `%XX` becomes the byte; anything malformed stays as it was (as gunicorn and wsgiref do).
fn percent_decode(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return raw.into();
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(hi), Some(lo)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out.into()
}

/// `Host` split into name and port, `[v6]` brackets kept as gunicorn keeps them.
fn split_host(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    let colon = if host.starts_with(b"[") {
        host.iter()
            .position(|&b| b == b']')
            .and_then(|end| host[end..].iter().position(|&b| b == b':').map(|c| end + c))
    } else {
        host.iter().rposition(|&b| b == b':')
    };
    match colon {
        Some(at) => (&host[..at], Some(&host[at + 1..])),
        None => (host, None),
    }
}

/// `HTTP_` plus the name upper-cased with dashes as underscores; `None` for names with an
/// underscore, which would let `X_Forwarded_For` pose as `X-Forwarded-For` downstream.
fn cgi_key(name: &[u8]) -> Option<String> {
    if name.contains(&b'_') {
        return None;
    }
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for &b in name {
        key.push(match b {
            b'-' => '_',
            _ => char::from(b.to_ascii_uppercase()),
        });
    }
    Some(key)
}

pub(crate) fn build<'py>(
    py: Python<'py>,
    app: &App,
    head: &RequestHead,
    body: Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyDict>> {
    let env = PyDict::new(py);
    put_request(py, &env, head)?;
    let host = put_headers(py, &env, head)?;
    put_server(py, &env, head, host)?;
    put_wsgi(py, app, &env, head, body)?;
    Ok(env)
}

/// The CGI variables of the request line, the client and the body's length.
fn put_request(py: Python<'_>, env: &Bound<'_, PyDict>, head: &RequestHead) -> PyResult<()> {
    let (path, query) = match head.target.iter().position(|&b| b == b'?') {
        Some(q) => (&head.target[..q], &head.target[q + 1..]),
        None => (&head.target[..], &b""[..]),
    };
    env.set_item(intern!(py, "REQUEST_METHOD"), latin1(py, &head.method))?;
    env.set_item(intern!(py, "SCRIPT_NAME"), intern!(py, ""))?;
    env.set_item(intern!(py, "PATH_INFO"), latin1(py, &percent_decode(path)))?;
    env.set_item(intern!(py, "QUERY_STRING"), latin1(py, query))?;
    env.set_item(intern!(py, "RAW_URI"), latin1(py, &head.target))?;
    env.set_item(intern!(py, "SERVER_PROTOCOL"), head.version.as_str())?;
    // A client on a Unix socket has no address: empty, as gunicorn gives it.
    let (remote_addr, remote_port) = head.peer.map_or_else(Default::default, |p| {
        (p.ip().to_string(), p.port().to_string())
    });
    env.set_item(intern!(py, "REMOTE_ADDR"), remote_addr)?;
    env.set_item(intern!(py, "REMOTE_PORT"), remote_port)?;
    if head.has_body || head.body_len > 0 {
        env.set_item(intern!(py, "CONTENT_LENGTH"), head.body_len.to_string())?;
    }
    Ok(())
}

/// `CONTENT_TYPE` and the `HTTP_` variables; returns the first `Host` value, if any.
fn put_headers<'h>(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    head: &'h RequestHead,
) -> PyResult<Option<&'h [u8]>> {
    // Repeated headers are joined into one value: cookies with "; " (RFC 6265), others ", ".
    let mut joined: Vec<(String, Vec<u8>)> = Vec::with_capacity(head.headers.len());
    let mut host: Option<&[u8]> = None;
    for (name, value) in &head.headers {
        match &name[..] {
            b"content-type" => {
                env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, value))?;
                continue;
            }
            // The body was buffered: CONTENT_LENGTH (`put_request`) is the real length.
            b"content-length" | b"transfer-encoding" => continue,
            b"host" => host = host.or(Some(value)),
            _ => {}
        }
        let Some(key) = cgi_key(name) else { continue };
        match joined.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                let sep: &[u8] = if &name[..] == b"cookie" { b"; " } else { b", " };
                existing.extend_from_slice(sep);
                existing.extend_from_slice(value);
            }
            None => joined.push((key, value.to_vec())),
        }
    }
    for (key, value) in &joined {
        env.set_item(key, latin1(py, value))?;
    }
    Ok(host)
}

/// `SERVER_NAME` and `SERVER_PORT`: from `Host` if the client sent one, else the address it
/// connected to.
fn put_server(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    head: &RequestHead,
    host: Option<&[u8]>,
) -> PyResult<()> {
    let (server_name, server_port) = match host.map(split_host) {
        Some((name, port)) => {
            let default = if head.scheme.as_str() == "https" {
                "443"
            } else {
                "80"
            };
            let port = port
                .map(|p| latin1(py, p))
                .unwrap_or_else(|| PyString::new(py, default));
            (latin1(py, name), port)
        }
        None => {
            let (name, port) = head.local.map_or_else(
                || ("localhost".to_owned(), String::new()),
                |l| (l.ip().to_string(), l.port().to_string()),
            );
            (PyString::new(py, &name), PyString::new(py, &port))
        }
    };
    env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
    env.set_item(intern!(py, "SERVER_PORT"), server_port)?;
    Ok(())
}

/// The `wsgi.` variables, `wsgi.input` over the buffered body among them.
fn put_wsgi<'py>(
    py: Python<'py>,
    app: &App,
    env: &Bound<'py, PyDict>,
    head: &RequestHead,
    body: Bound<'py, PyBytes>,
) -> PyResult<()> {
    // BytesIO shares the bytes object's buffer until written to, so this is not a copy.
    let input = app.bytes_io.bind(py).call1((body,))?;
    env.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    env.set_item(intern!(py, "wsgi.url_scheme"), head.scheme.as_str())?;
    if head.scheme == Scheme::Https {
        // What CGI servers set and some apps check instead of wsgi.url_scheme.
        env.set_item(intern!(py, "HTTPS"), intern!(py, "on"))?;
    }
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    env.set_item(
        intern!(py, "wsgi.errors"),
        app.sys.bind(py).getattr(intern!(py, "stderr"))?,
    )?;
    env.set_item(intern!(py, "wsgi.multithread"), app.multithread)?;
    env.set_item(intern!(py, "wsgi.multiprocess"), app.multiprocess)?;
    env.set_item(intern!(py, "wsgi.run_once"), false)?;
    env.set_item(intern!(py, "wsgi.file_wrapper"), app.file_wrapper.bind(py))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(&*percent_decode(b"/caf%C3%A9"), b"/caf\xc3\xa9");
        assert_eq!(&*percent_decode(b"/a%2Fb"), b"/a/b");
        assert_eq!(&*percent_decode(b"/100%"), b"/100%");
        assert_eq!(&*percent_decode(b"/%zz%4"), b"/%zz%4");
    }

    #[test]
    fn host_splits_like_gunicorn() {
        assert_eq!(
            split_host(b"example.com:8080"),
            (&b"example.com"[..], Some(&b"8080"[..]))
        );
        assert_eq!(split_host(b"example.com"), (&b"example.com"[..], None));
        assert_eq!(split_host(b"[::1]:80"), (&b"[::1]"[..], Some(&b"80"[..])));
        assert_eq!(split_host(b"[::1]"), (&b"[::1]"[..], None));
    }

    #[test]
    fn underscored_names_are_dropped() {
        assert_eq!(cgi_key(b"x-real-ip").as_deref(), Some("HTTP_X_REAL_IP"));
        assert_eq!(cgi_key(b"x_real_ip"), None);
    }
}
