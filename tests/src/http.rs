//! A small blocking HTTP/1.1 client over `std::net::TcpStream`, hand-written so tests control the
//! exact bytes on the wire and can observe what a general-purpose client would hide: interim
//! `1xx` responses, repeated headers in order, keep-alive reuse, bodies read incrementally, and a
//! body cut off before its declared end (a distinct outcome, not an error).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Every socket read/write gives up after this long, so a server that stops answering fails the
/// test instead of hanging it. Generous: CI is a loaded 2-core box.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A response head (status line + headers), kept exactly as received: header names keep their
/// case, repeats stay separate and in order. Bytes are decoded as latin-1 so nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in the order received.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Does a comma-separated header (e.g. `Connection`) carry `token`?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// All of the declared (Content-Length / chunked) body arrived, or the connection closed a
    /// close-delimited body.
    Complete,
    /// The connection closed (or was reset) before the declared or chunked body was complete.
    CutOff,
}

/// A complete response, read to its end.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: Head,
    /// `1xx` responses that preceded this one (e.g. `100 Continue`).
    pub interim: Vec<Head>,
    pub body: Vec<u8>,
    pub end: BodyEnd,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.head.header_all(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (with the body) when it is not, since every caller expects JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {} body {:?}",
                self.status(),
                self.text()
            )
        })
    }

    pub fn is_cut_off(&self) -> bool {
        self.end == BodyEnd::CutOff
    }
}

/// A request to send. Serialized by hand: nothing is added except `Host` (when absent) and
/// `Content-Length` / `Transfer-Encoding: chunked` framing (unless disabled).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    chunk_sizes: Option<Vec<usize>>,
    auto_framing: bool,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Self {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            chunk_sizes: None,
            auto_framing: true,
        }
    }

    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    pub fn head(target: &str) -> Self {
        Self::new("HEAD", target)
    }

    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", target).body(body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Send the body with `Transfer-Encoding: chunked`, cut into chunks of these sizes (cycled
    /// until the body is used up; zero sizes are skipped because a zero chunk ends the body).
    pub fn chunked(mut self, sizes: &[usize]) -> Self {
        assert!(
            sizes.iter().any(|&s| s > 0),
            "chunk sizes must not all be 0"
        );
        self.chunk_sizes = Some(sizes.to_vec());
        self
    }

    /// Send only the headers given: no automatic Content-Length / Transfer-Encoding.
    pub fn no_auto_framing(mut self) -> Self {
        self.auto_framing = false;
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// Request line + headers + blank line.
    pub fn head_bytes(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self.has_header("host") {
            out.push_str(&format!("Host: {host}\r\n"));
        }
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.auto_framing {
            if self.chunk_sizes.is_some() {
                if !self.has_header("transfer-encoding") {
                    out.push_str("Transfer-Encoding: chunked\r\n");
                }
            } else if !self.body.is_empty() && !self.has_header("content-length") {
                out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// The body as it goes on the wire (chunk-encoded when `chunked` was asked for).
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.chunk_sizes {
            None => self.body.clone(),
            Some(sizes) => encode_chunked(&self.body, sizes),
        }
    }
}

/// Chunk-encode `body` with chunks of `sizes` (cycled), ending with the zero chunk.
pub fn encode_chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut rest = body;
    let mut cycle = sizes.iter().copied().filter(|&s| s > 0).cycle();
    while !rest.is_empty() {
        let n = cycle.next().expect("a non-zero chunk size").min(rest.len());
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A buffered reader over any byte source; the response parser works on this so the unit tests
/// can feed it canned bytes without a server.
pub struct Wire<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    /// The peer reset the connection (treated as end of stream, remembered for diagnostics).
    pub reset: bool,
}

const MAX_HEAD: usize = 256 * 1024;

impl<R: Read> Wire<R> {
    pub fn new(inner: R) -> Self {
        Wire {
            inner,
            buf: Vec::new(),
            start: 0,
            reset: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Read more bytes into the buffer. `Ok(false)` = end of stream. A reset counts as end of
    /// stream: a server that aborts a response mid-body may well RST, and that is still a cut-off.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 64 * 1024, 0);
        loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.buf.truncate(old);
                    self.reset = true;
                    return Ok(false);
                }
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// One line without its CRLF (or bare LF). `Ok(None)` if the stream ended first.
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.available()[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                let mut line = self.available()[..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(end + 1);
                return Ok(Some(line));
            }
            scanned = self.available().len();
            if scanned > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Is there nothing buffered and nothing arriving within `wait`? Used to assert that the server
    /// has NOT sent something yet; it never waits for something to happen.
    pub fn nothing_pending(&mut self, wait: Duration) -> io::Result<bool>
    where
        R: AsTcp,
    {
        if !self.available().is_empty() {
            return Ok(false);
        }
        let old = self.inner.tcp().read_timeout()?;
        self.inner.tcp().set_read_timeout(Some(wait))?;
        let got = self.fill();
        self.inner.tcp().set_read_timeout(old)?;
        match got {
            Ok(true) => Ok(false),
            // EOF is "something happened" too.
            Ok(false) => Ok(false),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Parse one response head (status line and headers).
    pub fn read_head(&mut self) -> io::Result<Head> {
        let status_line = match self.read_line()? {
            Some(l) => l,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response head",
                ))
            }
        };
        let status_line = latin1(&status_line);
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(&format!("bad status line {status_line:?}")));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| invalid(&format!("bad status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        let mut size = 0;
        loop {
            let line = self.read_line()?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a response head",
                )
            })?;
            if line.is_empty() {
                break;
            }
            size += line.len();
            if size > MAX_HEAD {
                return Err(invalid("response head too large"));
            }
            let line = latin1(&line);
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad header line {line:?}")))?;
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(Head {
            version,
            status,
            reason,
            headers,
        })
    }

    /// Start reading the body that belongs to `head`, a response to a `method` request.
    pub fn body(&mut self, head: &Head, method: &str) -> io::Result<BodyStream<'_, R>> {
        let state = framing(head, method)?;
        Ok(BodyStream { wire: self, state })
    }

    /// Read a whole response, collecting `1xx` heads along the way.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        let head = loop {
            let head = self.read_head()?;
            // 101 switches protocols: it is final as far as this client is concerned.
            if (100..200).contains(&head.status) && head.status != 101 {
                interim.push(head);
            } else {
                break head;
            }
        };
        let (body, end) = self.body(&head, method)?.read_to_end()?;
        Ok(Response {
            head,
            interim,
            body,
            end,
        })
    }
}

/// Lets `Wire::nothing_pending` set a read timeout on the underlying socket.
pub trait AsTcp {
    fn tcp(&self) -> &TcpStream;
}

impl AsTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Fixed(u64),
    Close,
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Done(BodyEnd),
}

/// RFC 9112 section 6.3 message-body length rules, as far as a response goes.
fn framing(head: &Head, method: &str) -> io::Result<BodyState> {
    let no_body = method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304;
    if no_body {
        return Ok(BodyState::Done(BodyEnd::Complete));
    }
    if let Some(te) = head.header_all("transfer-encoding").last() {
        let last = te.rsplit(',').next().unwrap_or_default().trim();
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            BodyState::ChunkSize
        } else {
            BodyState::Close
        });
    }
    let lengths = head.header_all("content-length");
    if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(invalid(&format!("conflicting Content-Length {lengths:?}")));
        }
        let n = first
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(&format!("bad Content-Length {first:?}")))?;
        return Ok(BodyState::Fixed(n));
    }
    Ok(BodyState::Close)
}

/// A response body being read incrementally. Borrowing the wire keeps the connection from being
/// reused before this body is finished with.
pub struct BodyStream<'a, R> {
    wire: &'a mut Wire<R>,
    state: BodyState,
}

impl<R: Read> BodyStream<'_, R> {
    /// How the body ended, once it has.
    pub fn end(&self) -> Option<BodyEnd> {
        match self.state {
            BodyState::Done(end) => Some(end),
            _ => None,
        }
    }

    /// The next piece of body bytes as they arrive; `Ok(None)` once the body has ended (see
    /// [`BodyStream::end`] for how).
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.state {
                BodyState::Done(_) => return Ok(None),
                BodyState::Fixed(0) => self.state = BodyState::Done(BodyEnd::Complete),
                BodyState::Fixed(n) | BodyState::ChunkData(n) => {
                    if self.wire.available().is_empty() && !self.wire.fill()? {
                        self.state = BodyState::Done(BodyEnd::CutOff);
                        continue;
                    }
                    let take = (self.wire.available().len() as u64).min(n) as usize;
                    let data = self.wire.available()[..take].to_vec();
                    self.wire.consume(take);
                    let left = n - take as u64;
                    self.state = match self.state {
                        BodyState::Fixed(_) => BodyState::Fixed(left),
                        _ if left == 0 => BodyState::ChunkDataEnd,
                        _ => BodyState::ChunkData(left),
                    };
                    return Ok(Some(data));
                }
                BodyState::Close => {
                    if self.wire.available().is_empty() && !self.wire.fill()? {
                        self.state = BodyState::Done(BodyEnd::Complete);
                        continue;
                    }
                    let data = self.wire.available().to_vec();
                    self.wire.consume(data.len());
                    return Ok(Some(data));
                }
                BodyState::ChunkSize => {
                    let Some(line) = self.wire.read_line()? else {
                        self.state = BodyState::Done(BodyEnd::CutOff);
                        continue;
                    };
                    let line = latin1(&line);
                    let hex = line.split(';').next().unwrap_or_default().trim();
                    let n = u64::from_str_radix(hex, 16)
                        .map_err(|_| invalid(&format!("bad chunk size line {line:?}")))?;
                    self.state = if n == 0 {
                        BodyState::Trailers
                    } else {
                        BodyState::ChunkData(n)
                    };
                }
                BodyState::ChunkDataEnd => {
                    let Some(line) = self.wire.read_line()? else {
                        self.state = BodyState::Done(BodyEnd::CutOff);
                        continue;
                    };
                    if !line.is_empty() {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    let Some(line) = self.wire.read_line()? else {
                        self.state = BodyState::Done(BodyEnd::CutOff);
                        continue;
                    };
                    if line.is_empty() {
                        self.state = BodyState::Done(BodyEnd::Complete);
                    }
                }
            }
        }
    }

    /// Read until the accumulated bytes contain `needle` or the body ends. Returns everything read
    /// by this call; the caller asserts on it.
    pub fn read_until(&mut self, needle: &[u8]) -> io::Result<Vec<u8>> {
        let mut got = Vec::new();
        while !contains(&got, needle) {
            match self.next_chunk()? {
                Some(data) => got.extend_from_slice(&data),
                None => break,
            }
        }
        Ok(got)
    }

    /// The rest of the body and how it ended.
    pub fn read_to_end(mut self) -> io::Result<(Vec<u8>, BodyEnd)> {
        let mut body = Vec::new();
        while let Some(data) = self.next_chunk()? {
            body.extend_from_slice(&data);
        }
        Ok((body, self.end().expect("body ended")))
    }

    /// The rest of the body fed to `f` piece by piece (for bodies too big to want in one Vec).
    pub fn for_each(mut self, mut f: impl FnMut(&[u8])) -> io::Result<BodyEnd> {
        while let Some(data) = self.next_chunk()? {
            f(&data);
        }
        Ok(self.end().expect("body ended"))
    }

    /// See [`Wire::nothing_pending`].
    pub fn nothing_pending(&mut self, wait: Duration) -> io::Result<bool>
    where
        R: AsTcp,
    {
        self.wire.nothing_pending(wait)
    }
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// One client connection; reusable for keep-alive as long as each response is read to its end.
pub struct Conn {
    wire: Wire<TcpStream>,
    addr: SocketAddr,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        // Small writes (heads, tiny chunks) must go out when written, not when Nagle decides.
        stream.set_nodelay(true)?;
        Ok(Conn {
            wire: Wire::new(stream),
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.wire.get_ref().local_addr().expect("local_addr")
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.wire.get_ref().set_read_timeout(Some(timeout))
    }

    /// Send a whole request (head and body).
    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        let mut bytes = req.head_bytes(&self.addr.to_string());
        bytes.extend_from_slice(&req.body_bytes());
        self.send_raw(&bytes)
    }

    /// Send only the head of `req` (e.g. to wait for `100 Continue` before the body).
    pub fn send_head(&mut self, req: &Request) -> io::Result<()> {
        let bytes = req.head_bytes(&self.addr.to_string());
        self.send_raw(&bytes)
    }

    /// Send only the (framed) body of `req`.
    pub fn send_body(&mut self, req: &Request) -> io::Result<()> {
        self.send_raw(&req.body_bytes())
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.wire.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Read one head as is, including a `1xx` interim response.
    pub fn read_head(&mut self) -> io::Result<Head> {
        self.wire.read_head()
    }

    /// Read one whole response to a `method` request, skipping (and recording) `1xx` responses.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        self.wire.read_response(method)
    }

    /// Send `req` and read its whole response.
    pub fn request(&mut self, req: &Request) -> io::Result<Response> {
        self.send(req)?;
        self.read_response(&req.method)
    }

    /// Send `req`, read its final head, and hand back the body to read incrementally.
    pub fn stream(&mut self, req: &Request) -> io::Result<(Head, BodyStream<'_, TcpStream>)> {
        self.send(req)?;
        let head = loop {
            let head = self.wire.read_head()?;
            if !(100..200).contains(&head.status) || head.status == 101 {
                break head;
            }
        };
        let body = self.wire.body(&head, &req.method)?;
        Ok((head, body))
    }

    /// The body of a head already read with [`Conn::read_head`].
    pub fn body(&mut self, head: &Head, method: &str) -> io::Result<BodyStream<'_, TcpStream>> {
        self.wire.body(head, method)
    }

    /// Has the server closed this connection? Waits at most `wait` for the EOF.
    pub fn closed_by_peer(&mut self, wait: Duration) -> bool {
        if !self.wire.available().is_empty() {
            return false;
        }
        let _ = self.wire.get_ref().set_read_timeout(Some(wait));
        let closed = matches!(self.wire.fill(), Ok(false));
        let _ = self.wire.get_ref().set_read_timeout(Some(IO_TIMEOUT));
        closed
    }

    /// Has nothing arrived (no bytes, no close) within `wait`? For asserting that the server has
    /// NOT answered or closed yet; see [`Wire::nothing_pending`].
    pub fn nothing_pending(&mut self, wait: Duration) -> io::Result<bool> {
        self.wire.nothing_pending(wait)
    }

    /// A second handle on the socket for writing from another thread (e.g. pushing a body the
    /// server may refuse half-way, while this thread reads the response).
    pub fn writer(&self) -> io::Result<TcpStream> {
        self.wire.get_ref().try_clone()
    }

    /// Half-close our side (the server sees EOF on its read side).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.wire.get_ref().shutdown(Shutdown::Write)
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    Conn::connect(addr)?.request(req)
}

/// `GET target` on a fresh connection; panics with context on a transport error because every
/// caller would.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, &Request::get(target)).unwrap_or_else(|e| panic!("GET {target} on {addr}: {e}"))
}

/// `req` on a fresh connection; panics with context on a transport error.
pub fn send(addr: SocketAddr, req: &Request) -> Response {
    request(addr, req).unwrap_or_else(|e| panic!("{} {} on {addr}: {e}", req.method, req.target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its pieces one `read` at a time, then EOF or an error: exercises
    /// the parser on every split point a socket could produce.
    struct Pieces {
        pieces: Vec<Vec<u8>>,
        then: Option<io::ErrorKind>,
    }

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pieces.is_empty() {
                return match self.then {
                    Some(kind) => Err(io::Error::new(kind, "canned error")),
                    None => Ok(0),
                };
            }
            let piece = &mut self.pieces[0];
            let n = piece.len().min(out.len());
            out[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.pieces.remove(0);
            }
            Ok(n)
        }
    }

    fn wire(bytes: &[u8]) -> Wire<Pieces> {
        Wire::new(Pieces {
            pieces: vec![bytes.to_vec()],
            then: None,
        })
    }

    /// The same bytes delivered one byte per read.
    fn trickle(bytes: &[u8]) -> Wire<Pieces> {
        Wire::new(Pieces {
            pieces: bytes.iter().map(|&b| vec![b]).collect(),
            then: None,
        })
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhelloHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        for mut w in [wire(raw), trickle(raw)] {
            let r = w.read_response("GET").unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.head.reason, "OK");
            assert_eq!(r.body, b"hello");
            assert_eq!(r.end, BodyEnd::Complete);
            assert_eq!(r.header_all("X-A"), vec!["1", "2"]);
            let r = w.read_response("GET").unwrap();
            assert_eq!(r.status(), 404);
            assert!(r.body.is_empty());
            assert_eq!(r.end, BodyEnd::Complete);
        }
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        for mut w in [wire(raw), trickle(raw)] {
            let r = w.read_response("GET").unwrap();
            assert_eq!(r.body, b"hello, world!!!");
            assert_eq!(r.end, BodyEnd::Complete);
            let r = w.read_response("GET").unwrap();
            assert_eq!(r.status(), 204);
            assert_eq!(r.end, BodyEnd::Complete);
        }
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it";
        for mut w in [wire(raw), trickle(raw)] {
            let r = w.read_response("GET").unwrap();
            assert_eq!(r.body, b"all of it");
            assert_eq!(r.end, BodyEnd::Complete);
        }
    }

    #[test]
    fn short_content_length_body_is_cut_off() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
        let r = wire(raw).read_response("GET").unwrap();
        assert_eq!(r.body, b"hello");
        assert_eq!(r.end, BodyEnd::CutOff);
    }

    #[test]
    fn chunked_body_cut_off_anywhere_is_cut_off() {
        let full: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n0\r\n\r\n";
        let head_len = full.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // Every truncation point after the head but before the final CRLF is a cut-off.
        for cut in head_len..full.len() {
            let r = wire(&full[..cut]).read_response("GET").unwrap();
            assert_eq!(r.end, BodyEnd::CutOff, "cut at {cut}");
        }
        let r = wire(full).read_response("GET").unwrap();
        assert_eq!(r.end, BodyEnd::Complete);
        assert_eq!(r.body, b"partial");
    }

    #[test]
    fn reset_mid_body_is_cut_off() {
        let mut w = Wire::new(Pieces {
            pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc".to_vec()],
            then: Some(io::ErrorKind::ConnectionReset),
        });
        let r = w.read_response("GET").unwrap();
        assert_eq!(r.end, BodyEnd::CutOff);
        assert!(w.reset);
    }

    #[test]
    fn timeout_is_an_error_not_a_cut_off() {
        let mut w = Wire::new(Pieces {
            pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc".to_vec()],
            then: Some(io::ErrorKind::WouldBlock),
        });
        let err = w.read_response("GET").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn head_response_has_no_body_despite_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut w = wire(raw);
        let r = w.read_response("HEAD").unwrap();
        assert_eq!(r.header("content-length"), Some("1048576"));
        assert!(r.body.is_empty());
        assert_eq!(r.end, BodyEnd::Complete);
        let r = w.read_response("GET").unwrap();
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn interim_responses_are_collected() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let r = wire(raw).read_response("POST").unwrap();
        assert_eq!(r.interim.len(), 1);
        assert_eq!(r.interim[0].status, 100);
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, b"ok");
    }

    #[test]
    fn nothing_at_all_is_an_eof_error() {
        let err = wire(b"").read_response("GET").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = wire(b"HTTP/1.1 200 OK\r\nContent-Le")
            .read_response("GET")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn garbage_is_rejected() {
        let err = wire(b"SSH-2.0-OpenSSH\r\n\r\n")
            .read_response("GET")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = wire(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .read_response("GET")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = wire(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            .read_response("GET")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn latin1_header_bytes_survive() {
        let r = wire(b"HTTP/1.1 200 OK\r\nX-L: caf\xe9\r\nContent-Length: 0\r\n\r\n")
            .read_response("GET")
            .unwrap();
        assert_eq!(r.header("x-l"), Some("caf\u{e9}"));
    }

    #[test]
    fn streaming_reads_pieces_as_they_arrive() {
        let mut w = Wire::new(Pieces {
            pieces: vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n".to_vec(),
                b"5\r\nlast\n\r\n0\r\n\r\n".to_vec(),
            ],
            then: None,
        });
        let head = w.read_head().unwrap();
        let mut body = w.body(&head, "GET").unwrap();
        assert_eq!(body.read_until(b"first\n").unwrap(), b"first\n");
        assert_eq!(body.end(), None);
        let (rest, end) = body.read_to_end().unwrap();
        assert_eq!(rest, b"last\n");
        assert_eq!(end, BodyEnd::Complete);
    }

    #[test]
    fn request_serialization() {
        let req = Request::post("/echo", b"abcdefghij".to_vec()).header("X-A", "1");
        let head = String::from_utf8(req.head_bytes("127.0.0.1:1")).unwrap();
        assert_eq!(
            head,
            "POST /echo HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\nContent-Length: 10\r\n\r\n"
        );
        let req = req.chunked(&[3, 0, 4]);
        let head = String::from_utf8(req.head_bytes("h")).unwrap();
        assert!(head.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!head.contains("Content-Length"));
        assert_eq!(
            req.body_bytes(),
            b"3\r\nabc\r\n4\r\ndefg\r\n3\r\nhij\r\n0\r\n\r\n".to_vec()
        );
        // The encoder and the decoder agree.
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend_from_slice(&encode_chunked(&[7u8; 1000], &[1, 100, 13]));
        let r = wire(&raw).read_response("GET").unwrap();
        assert_eq!(r.body, vec![7u8; 1000]);
        assert_eq!(r.end, BodyEnd::Complete);
    }
}
