//! Strict HTTP/1.1 framing at the edge (RFC 9112): malformed and ambiguous requests get a 400 and
//! a closed connection before anything reaches Python; oversized ones get 414, 431 or 413. The
//! table test sends raw bytes and checks the status (or the close), and the suite app records
//! every request it sees, so "never reaches Python" is checked, not assumed.

use std::io;

use sluice_tests::{Conn, Sluice, SluiceHandle, DEADLINE, START_DEADLINE};

/// The file (in the state dir) where `suite.py` records every request it sees.
const RECORD: &str = "requests.log";

/// What a raw request must lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Reaches the app (`/echo`), which answers 200 with this body; the connection stays open
    /// and serves a second request, so both sides agreed on where the first one ended.
    Echoes(&'static [u8]),
    /// Reaches the app, which answers with this status; the connection stays open.
    Served(u16),
    /// Never reaches the app: this status with `Connection: close`, then the server closes.
    Rejected(u16),
}

use Expect::{Echoes, Rejected, Served};

struct Case {
    /// The attack, or the RFC 9112 (or 9110) rule, the case is about.
    why: &'static str,
    raw: &'static [u8],
    expect: Expect,
}

const fn case(why: &'static str, raw: &'static [u8], expect: Expect) -> Case {
    Case { why, raw, expect }
}

const BAD: Expect = Rejected(400);

/// Every case goes to `/echo` (which answers with the request body) on a fresh connection.
const CASES: &[Case] = &[
    // --- well-formed requests still pass -------------------------------------------------------
    case("baseline GET, RFC 9112 §3", b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("Content-Length body, RFC 9112 §6.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Echoes(b"hello")),
    case("Content-Length: 0, RFC 9112 §6.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", Echoes(b"")),
    case("a GET may carry a body, RFC 9110 §9.3.1", b"GET /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", Echoes(b"hi")),
    case("chunked body, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Echoes(b"hello")),
    case("chunked: several chunks, upper-case hex and leading zeros, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n002\r\nhe\r\n3\r\nllo\r\n00A\r\n0123456789\r\n000\r\n\r\n", Echoes(b"hello0123456789")),
    case("chunk extension name=token, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0;last\r\n\r\n", Echoes(b"hello")),
    case("chunk extension with a quoted-string value and quoted-pair, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x \\\"y\\\" z\";b\r\nhello\r\n0\r\n\r\n", Echoes(b"hello")),
    case("chunk extension with BWS around ';' and '=', RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 ; a = b\r\nhello\r\n0\r\n\r\n", Echoes(b"hello")),
    case("trailer fields after the last chunk, RFC 9112 §7.1.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n", Echoes(b"hello")),
    case("transfer coding names are case-insensitive, RFC 9112 §7", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Echoes(b"hello")),
    case("OWS (HTAB) around a field value, RFC 9112 §5.1", b"POST /echo HTTP/1.1\r\nHost:\tt \r\nTransfer-Encoding:\tchunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Echoes(b"hello")),
    case("an empty line before the request line is ignored, RFC 9112 §2.2", b"\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("HTTP/1.0 needs no Host, RFC 9112 §3.2", b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Echoes(b"")),
    case("Host with a port, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", Echoes(b"")),
    case("Host as an IPv6 literal, RFC 3986 §3.2.2", b"GET /echo HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Echoes(b"")),
    case("empty Host (no authority), RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost:\r\n\r\n", Echoes(b"")),
    case("obs-text and HTAB inside a field value, RFC 9110 §5.5", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Latin: caf\xe9\tau lait\r\n\r\n", Echoes(b"")),
    case("an empty first path segment is origin-form, not an authority, RFC 3986 §3.3", b"GET //echo HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("asterisk-form with OPTIONS, RFC 9112 §3.2.4", b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", Served(404)),
    case("percent-encoded bytes in the target, RFC 3986 §2.1", b"GET /echo/%00%0d%0a?q=%ff HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    // Bytes RFC 3986 wants percent-encoded that clients send raw all the same; nginx serves each.
    case("raw UTF-8 in the path (curl 'http://h/é')", b"GET /echo/caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("raw UTF-8 in the query", b"GET /echo?q=caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("raw latin-1 (not UTF-8) in the path", b"GET /echo/caf\xe9 HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("quotes in the path and the query", b"GET /echo/\"a\"?q=\"b\" HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("braces in the path and the query (JSON)", b"GET /echo/{a}?q={\"b\":1} HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a pipe in the path and the query", b"GET /echo/a|b?q=c|d HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a backslash in the query", b"GET /echo?q=a\\b HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a caret in the path and the query", b"GET /echo/a^b?q=c^d HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a backtick in the path and the query", b"GET /echo/a`b?q=c`d HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("angle brackets in the path and the query", b"GET /echo/<a>?q=<b> HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a fragment, dropped before routing, RFC 9112 §3.2", b"GET /echo#frag HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    case("a fragment after a query, with raw bytes of its own", b"GET /echo?q=1#f<\xc3\xa9># HTTP/1.1\r\nHost: t\r\n\r\n", Echoes(b"")),
    // --- the request line, RFC 9112 §3 ---------------------------------------------------------
    case("bare LF ending the request line, RFC 9112 §2.2", b"GET /echo HTTP/1.1\nHost: t\r\n\r\n", BAD),
    case("bare LF line endings throughout, RFC 9112 §2.2", b"GET /echo HTTP/1.1\nHost: t\n\n", BAD),
    case("bare CR ending the request line, RFC 9112 §2.2", b"GET /echo HTTP/1.1\rHost: t\r\n\r\n", BAD),
    case("NUL in the target, RFC 9112 §3.2", b"GET /ec\x00ho HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("control byte in the target, RFC 9112 §3.2", b"GET /ec\x01ho HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("DEL in the target, RFC 9112 §3.2", b"GET /ec\x7fho HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("a fragment first in the target (not origin-form), RFC 9112 §3.2.1", b"GET #frag HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("raw non-ASCII first in the target (not origin-form), RFC 9112 §3.2.1", b"GET \xc3\xa9/echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("DEL in the query, RFC 9112 §3.2", b"GET /echo?a=\x7f HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("control byte in a fragment, RFC 9112 §3.2", b"GET /echo#a\x01 HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("space inside the target, RFC 9112 §3", b"GET /echo x HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("two spaces between method and target, RFC 9112 §3", b"GET  /echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("HTAB as the request-line separator, RFC 9112 §3", b"GET\t/echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("leading space before the method, RFC 9112 §3", b" GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("trailing space after the version, RFC 9112 §3", b"GET /echo HTTP/1.1 \r\nHost: t\r\n\r\n", BAD),
    case("method with a non-token byte, RFC 9110 §9.1", b"G(T /echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("lower-case protocol name, RFC 9112 §2.3", b"GET /echo http/1.1\r\nHost: t\r\n\r\n", BAD),
    case("unknown minor version HTTP/1.2, RFC 9112 §2.3", b"GET /echo HTTP/1.2\r\nHost: t\r\n\r\n", BAD),
    case("HTTP/2.0 in an HTTP/1 request line, RFC 9112 §2.3", b"GET /echo HTTP/2.0\r\nHost: t\r\n\r\n", BAD),
    case("HTTP/0.9 simple request without a version, RFC 9112 §3", b"GET /echo\r\n\r\n", BAD),
    case("absolute-form target on a server that is not a proxy (routing / cache-key confusion), RFC 9112 §3.2.2", b"GET http://evil.example/echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("absolute-form target naming the same host, RFC 9112 §3.2.2", b"GET http://t/echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("authority-form target without CONNECT, RFC 9112 §3.2.3", b"GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("CONNECT (authority-form) to a server that is not a proxy, RFC 9112 §3.2.3", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", BAD),
    case("asterisk-form with a method other than OPTIONS, RFC 9112 §3.2.4", b"GET * HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    case("target that is not origin-form, RFC 9112 §3.2.1", b"GET echo HTTP/1.1\r\nHost: t\r\n\r\n", BAD),
    // --- header fields, RFC 9112 §5 ------------------------------------------------------------
    case("whitespace between field name and colon, RFC 9112 §5.1", b"GET /echo HTTP/1.1\r\nHost : t\r\n\r\n", BAD),
    case("HTAB between field name and colon, RFC 9112 §5.1", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A\t: 1\r\n\r\n", BAD),
    case("obs-fold continuation line, RFC 9112 §5.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n 2\r\n\r\n", BAD),
    case("obs-fold with HTAB, RFC 9112 §5.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\t2\r\n\r\n", BAD),
    case("whitespace between the request line and the first field, RFC 9112 §2.2", b"GET /echo HTTP/1.1\r\n Host: t\r\n\r\n", BAD),
    case("space inside a field name, RFC 9110 §5.1", b"GET /echo HTTP/1.1\r\nHost: t\r\nX A: 1\r\n\r\n", BAD),
    case("non-token byte in a field name, RFC 9110 §5.1", b"GET /echo HTTP/1.1\r\nHost: t\r\nX(A): 1\r\n\r\n", BAD),
    case("non-ASCII byte in a field name, RFC 9110 §5.1", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-\xe9: 1\r\n\r\n", BAD),
    case("empty field name, RFC 9110 §5.1", b"GET /echo HTTP/1.1\r\nHost: t\r\n: 1\r\n\r\n", BAD),
    case("field line without a colon, RFC 9112 §5", b"GET /echo HTTP/1.1\r\nHost: t\r\nJunk\r\n\r\n", BAD),
    case("NUL in a field value, RFC 9110 §5.5", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", BAD),
    case("control byte in a field value, RFC 9110 §5.5", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", BAD),
    case("ESC in a field value (terminal injection into logs), RFC 9110 §5.5", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\x1b[2Jb\r\n\r\n", BAD),
    case("DEL in a field value, RFC 9110 §5.5", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", BAD),
    case("bare CR inside a field value (header injection), RFC 9112 §2.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\rX-B: b\r\n\r\n", BAD),
    case("bare LF between two fields (header injection), RFC 9112 §2.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nX-A: a\nX-B: b\r\n\r\n", BAD),
    case("bare LF ending the head, RFC 9112 §2.2", b"GET /echo HTTP/1.1\r\nHost: t\r\n\n", BAD),
    // --- Host, RFC 9112 §3.2 -------------------------------------------------------------------
    case("HTTP/1.1 request without Host, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\n\r\n", BAD),
    case("two different Host fields (virtual-host confusion), RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nHost: evil\r\n\r\n", BAD),
    case("two identical Host fields, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n", BAD),
    case("two Host fields in HTTP/1.0, RFC 9112 §3.2", b"GET /echo HTTP/1.0\r\nHost: t\r\nHost: u\r\n\r\n", BAD),
    case("Host as a list, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: t, evil\r\n\r\n", BAD),
    case("Host with userinfo, RFC 9112 §3.2 / RFC 9110 §4.2.4", b"GET /echo HTTP/1.1\r\nHost: user@t\r\n\r\n", BAD),
    case("Host with a space inside, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: t u\r\n\r\n", BAD),
    case("Host with a non-numeric port, RFC 3986 §3.2.3", b"GET /echo HTTP/1.1\r\nHost: t:x\r\n\r\n", BAD),
    case("Host with a path, RFC 9112 §3.2", b"GET /echo HTTP/1.1\r\nHost: t/evil\r\n\r\n", BAD),
    // --- Content-Length, RFC 9112 §6.3 / RFC 9110 §8.6 ------------------------------------------
    case("two different Content-Length fields (CL.CL smuggling), RFC 9112 §6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", BAD),
    case("two identical Content-Length fields, RFC 9112 §6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", BAD),
    case("Content-Length as a list of equal values, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello", BAD),
    case("Content-Length as a list of different values, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!", BAD),
    case("negative Content-Length, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", BAD),
    case("Content-Length with a plus sign, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", BAD),
    case("hexadecimal Content-Length, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello", BAD),
    case("Content-Length with trailing garbage, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5a\r\n\r\nhello", BAD),
    case("Content-Length with a space between digits, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\nhellohello", BAD),
    case("empty Content-Length, RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n", BAD),
    case("Content-Length beyond 64 bits (integer overflow), RFC 9110 §8.6", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n", BAD),
    // --- Transfer-Encoding, RFC 9112 §6.1 ------------------------------------------------------
    case("Content-Length then Transfer-Encoding (CL.TE smuggling), RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo?smuggled HTTP/1.1\r\n\r\n", BAD),
    case("Transfer-Encoding then Content-Length (TE.CL smuggling), RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1e\r\nGET /echo?smuggled HTTP/1.1\r\n\r\n0\r\n\r\n", BAD),
    case("Transfer-Encoding with Content-Length: 0, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", BAD),
    case("a coding before chunked (gzip, chunked) is not implemented, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(501)),
    case("an unknown coding before chunked, no space after the comma, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: x-custom,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Rejected(501)),
    case("a coding before chunked with Content-Length is smuggling first, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\nhello", BAD),
    case("an empty list element before chunked, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: , chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("a trailing comma after chunked, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("gzip alone (the body length is unknown), RFC 9112 §6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunked not last (chunked, gzip), RFC 9112 §6.3", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunked applied twice, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("two Transfer-Encoding fields, both chunked, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("an unknown coding on a second Transfer-Encoding field (TE.TE obfuscation), RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunked on the second of two Transfer-Encoding fields, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("identity is no transfer coding, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello", BAD),
    case("look-alike coding name (xchunked), RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("quoted coding name, RFC 9112 §6.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \"chunked\"\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunked with a parameter, RFC 9112 §7", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("vertical tab before chunked (TE obfuscation), RFC 9110 §5.5", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    case("Transfer-Encoding in an HTTP/1.0 request, RFC 9112 §6.1", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", BAD),
    // --- chunked framing, RFC 9112 §7.1 --------------------------------------------------------
    case("chunk size that is not hex, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\ng\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk size with a 0x prefix, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", BAD),
    case("negative chunk size, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", BAD),
    case("whitespace before the chunk size, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", BAD),
    case("whitespace after the chunk size without an extension, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", BAD),
    case("empty chunk-size line, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk size beyond 64 bits (integer overflow), RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", BAD),
    case("bare LF after the chunk size, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", BAD),
    case("chunk data longer than its size, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk data ended by a bare LF, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", BAD),
    case("bare LF inside a chunk extension, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello\r\n0\r\n\r\n", BAD),
    case("bare CR inside a chunk extension, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n", BAD),
    case("NUL inside a chunk extension, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x00b\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk extension without a name, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk extension with an empty name, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;=v\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk extension value with a space, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b c\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk extension with an unterminated quoted-string, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n", BAD),
    case("chunk extension with trailing whitespace, RFC 9112 §7.1.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a \r\nhello\r\n0\r\n\r\n", BAD),
    case("bare LF ending the last chunk, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n", BAD),
    case("bare LF ending the chunked body, RFC 9112 §7.1", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n", BAD),
    case("bare LF inside the trailer section, RFC 9112 §7.1.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: 1\nX-B: 2\r\n\r\n", BAD),
    case("obs-fold inside the trailer section, RFC 9112 §7.1.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: 1\r\n 2\r\n\r\n", BAD),
    case("NUL inside a trailer field, RFC 9112 §7.1.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: a\x00b\r\n\r\n", BAD),
    case("trailer line without a colon, RFC 9112 §7.1.2", b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nJunk\r\n\r\n", BAD),
];

fn start(extra: &[&str]) -> SluiceHandle {
    let mut sluice = Sluice::serve("suite:app")
        .workers(1)
        .threads(1)
        .env("SUITE_RECORD", RECORD);
    for arg in extra {
        sluice = sluice.arg(arg);
    }
    sluice.start()
}

/// How many requests the app has seen so far.
fn seen(sluice: &SluiceHandle) -> usize {
    match std::fs::read_to_string(sluice.state_file(RECORD)) {
        Ok(text) => text.lines().count(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
        Err(err) => panic!("reading the request record: {err}"),
    }
}

/// What actually happened to a raw request, for the table and for the report.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A response with this status and body; whether it said `Connection: close` and whether the
    /// server then closed; whether a second request on the connection was served.
    Response {
        status: u16,
        body: Vec<u8>,
        close_header: bool,
        closed: bool,
        reused: bool,
    },
    /// No response: the connection was closed (or reset).
    Closed,
    /// Neither a response nor a close within the client's I/O timeout.
    NoAnswer,
}

const FOLLOW_UP: &[u8] = b"GET /echo?follow-up HTTP/1.1\r\nHost: t\r\n\r\n";

/// Sends `raw` on a fresh connection and observes the response and what the server does next.
fn observe(sluice: &SluiceHandle, raw: &[u8]) -> Outcome {
    let mut conn = Conn::connect(sluice.addr()).expect("connect");
    conn.send_raw(raw).expect("send");
    let method = if raw.starts_with(b"HEAD ") {
        "HEAD"
    } else {
        "GET"
    };
    let resp = match conn.read_response(method) {
        Ok(resp) => resp,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Outcome::Closed
        }
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Outcome::NoAnswer
        }
        Err(err) => panic!("reading the response to {raw:?}: {err}"),
    };
    let close_header = resp.head.has_token("Connection", "close");
    let (closed, reused) = if close_header {
        (conn.closed_by_peer(DEADLINE), false)
    } else {
        // The server keeps the connection: a second request on it must be served.
        let reused = conn.send_raw(FOLLOW_UP).is_ok()
            && conn
                .read_response("GET")
                .is_ok_and(|follow| follow.status() == 200);
        (false, reused)
    };
    Outcome::Response {
        status: resp.status(),
        body: resp.body,
        close_header,
        closed,
        reused,
    }
}

/// Does `outcome` (with the app having seen `reached` requests meanwhile) meet `expect`?
fn meets(expect: Expect, outcome: &Outcome, reached: usize) -> bool {
    match (expect, outcome) {
        (
            Expect::Echoes(want),
            Outcome::Response {
                status: 200,
                body,
                reused: true,
                ..
            },
        ) => body == want && reached == 2,
        (Expect::Served(want), Outcome::Response { status, reused, .. }) => {
            *status == want && *reused && reached == 2
        }
        (
            Expect::Rejected(want),
            Outcome::Response {
                status,
                close_header: true,
                closed: true,
                ..
            },
        ) => *status == want && reached == 0,
        _ => false,
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Closed => "closed without a response".into(),
        Outcome::NoAnswer => "no answer (timed out)".into(),
        Outcome::Response {
            status,
            body,
            close_header,
            closed,
            reused,
        } => format!(
            "{status} body={:?}{}{}{}",
            String::from_utf8_lossy(body),
            if *close_header {
                " Connection:close"
            } else {
                ""
            },
            if *closed { " closed" } else { "" },
            if *reused { " reused" } else { "" },
        ),
    }
}

/// The table: every case on a fresh connection to one sluice with one worker thread, so a request
/// that slipped through to Python would be counted before the next case runs.
#[test]
fn table_of_malformed_and_well_formed_requests() {
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());
    let sluice = start(&[]);
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let before = seen(&sluice);
        let outcome = observe(&sluice, case.raw);
        let reached = seen(&sluice) - before;
        let ok = meets(case.expect, &outcome, reached);
        eprintln!(
            "[{i:3}] {} {:?} -> {} (app saw {reached}): {}",
            if ok { "ok  " } else { "FAIL" },
            case.expect,
            describe(&outcome),
            case.why
        );
        if !ok {
            failures.push(format!(
                "[{i}] {}: expected {:?}, got {} and the app saw {reached} request(s)\n    {:?}",
                case.why,
                case.expect,
                describe(&outcome),
                String::from_utf8_lossy(case.raw)
            ));
        }
    }
    // A fence: the only worker thread serves requests in order, so anything a rejected case had
    // slipped through would be recorded before this one.
    let before = seen(&sluice);
    let fence = observe(&sluice, b"GET /echo?fence HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        meets(Echoes(b""), &fence, seen(&sluice) - before),
        "{fence:?}"
    );
    let served: usize = CASES
        .iter()
        .filter(|c| matches!(c.expect, Expect::Echoes(_) | Expect::Served(_)))
        .count();
    assert_eq!(
        seen(&sluice),
        2 * served + 2,
        "the app saw other requests than the well-formed ones (and their follow-ups):\n{}",
        std::fs::read_to_string(sluice.state_file(RECORD)).unwrap_or_default()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// Sends `raw` on a fresh connection and asserts `expect`, counting what the app saw.
fn assert_outcome(sluice: &SluiceHandle, why: &str, raw: &[u8], expect: Expect) {
    let before = seen(sluice);
    let outcome = observe(sluice, raw);
    let reached = seen(sluice) - before;
    assert!(
        meets(expect, &outcome, reached),
        "{why}: expected {expect:?}, got {} and the app saw {reached} request(s)",
        describe(&outcome)
    );
}

/// A GET whose request line is exactly `len` bytes long (without its CRLF).
fn request_line_of(len: usize) -> Vec<u8> {
    let pad = len - "GET /echo?p= HTTP/1.1".len();
    format!(
        "GET /echo?p={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(pad)
    )
    .into_bytes()
}

/// A GET with one field line exactly `len` bytes long (without its CRLF).
fn field_line_of(len: usize) -> Vec<u8> {
    let pad = len - "X-Pad: ".len();
    format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(pad)
    )
    .into_bytes()
}

/// A GET with exactly `n` field lines, Host included.
fn fields_of(n: usize) -> Vec<u8> {
    let mut head = String::from("GET /echo HTTP/1.1\r\nHost: t\r\n");
    for i in 1..n {
        head.push_str(&format!("X-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A POST of `len` body bytes, framed by Content-Length or as one chunk.
fn post_of(len: usize, chunked: bool) -> Vec<u8> {
    let body = "b".repeat(len);
    if chunked {
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n{body}\r\n0\r\n\r\n"
        )
    } else {
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n{body}")
    }
    .into_bytes()
}

/// The head of a POST that declares `len` body bytes (the body is never sent).
fn declared_post_of(len: u64) -> Vec<u8> {
    format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").into_bytes()
}

/// gunicorn's defaults: a request line of 8190 bytes, 100 fields, fields of 8190 bytes; and a
/// 10 MiB body.
#[test]
fn default_limits_are_414_431_and_413_one_byte_past_them() {
    let sluice = start(&[]);
    assert_outcome(
        &sluice,
        "request line at the limit",
        &request_line_of(8190),
        Served(200),
    );
    assert_outcome(
        &sluice,
        "request line past it",
        &request_line_of(8191),
        Rejected(414),
    );
    // hyper's own ceiling for a target is 64 KiB; past it the answer is still 414.
    assert_outcome(
        &sluice,
        "request line past hyper's",
        &request_line_of(70_000),
        Rejected(414),
    );
    assert_outcome(
        &sluice,
        "field at the limit",
        &field_line_of(8190),
        Served(200),
    );
    assert_outcome(
        &sluice,
        "field past it",
        &field_line_of(8191),
        Rejected(431),
    );
    assert_outcome(&sluice, "fields at the limit", &fields_of(100), Served(200));
    assert_outcome(
        &sluice,
        "one field too many",
        &fields_of(101),
        Rejected(431),
    );
    assert_outcome(
        &sluice,
        "body past 10 MiB",
        &declared_post_of(10 * 1024 * 1024 + 1),
        Rejected(413),
    );
}

/// The same limits set on the command line, small enough to cross both ways.
#[test]
fn limits_from_the_command_line() {
    let sluice = start(&[
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "5",
        "--limit-request-field-size",
        "50",
        "--max-body",
        "1KiB",
    ]);
    assert_outcome(
        &sluice,
        "request line at the limit",
        &request_line_of(100),
        Served(200),
    );
    assert_outcome(
        &sluice,
        "request line past it",
        &request_line_of(101),
        Rejected(414),
    );
    assert_outcome(
        &sluice,
        "field at the limit",
        &field_line_of(50),
        Served(200),
    );
    assert_outcome(&sluice, "field past it", &field_line_of(51), Rejected(431));
    assert_outcome(&sluice, "fields at the limit", &fields_of(5), Served(200));
    assert_outcome(&sluice, "one field too many", &fields_of(6), Rejected(431));
    for chunked in [false, true] {
        assert_outcome(
            &sluice,
            "body at the limit",
            &post_of(1024, chunked),
            Served(200),
        );
        assert_outcome(
            &sluice,
            "body past it",
            &post_of(1025, chunked),
            Rejected(413),
        );
    }
    assert_outcome(
        &sluice,
        "declared body past it",
        &declared_post_of(1025),
        Rejected(413),
    );
}

/// Limits from the YAML file, read per connection from the app being served: a reload that
/// changes them applies to the next connection. More than hyper's own 100 fields works too.
#[test]
fn limits_from_the_config_file_follow_a_reload() {
    let yaml = |line: usize| {
        format!(
            "apps:\n  suite:\n    app: suite:app\n    chdir: {chdir}\n    bind: [\"127.0.0.1:0\"]\n    \
             workers: 1\n    threads: 1\n    limit_request_line: {line}\n    \
             limit_request_fields: 150\n    limit_request_field_size: 64\n",
            chdir = serde_json::to_string(&sluice_tests::apps_dir().display().to_string()).unwrap(),
        )
    };
    let sluice = Sluice::run_config(&yaml(200))
        .env("SUITE_RECORD", RECORD)
        .start();
    assert_outcome(
        &sluice,
        "request line at the limit",
        &request_line_of(200),
        Served(200),
    );
    assert_outcome(
        &sluice,
        "request line past it",
        &request_line_of(201),
        Rejected(414),
    );
    assert_outcome(
        &sluice,
        "field at the limit",
        &field_line_of(64),
        Served(200),
    );
    assert_outcome(&sluice, "field past it", &field_line_of(65), Rejected(431));
    assert_outcome(
        &sluice,
        "more fields than hyper's default",
        &fields_of(150),
        Served(200),
    );
    assert_outcome(
        &sluice,
        "one field too many",
        &fields_of(151),
        Rejected(431),
    );

    let path = sluice.config_path().expect("a config file").to_owned();
    std::fs::write(&path, yaml(300)).expect("rewrite the config");
    let mark = sluice.log_len();
    sluice.signal(libc::SIGHUP);
    let outcome = sluice.wait_log_after(mark, "the reload's outcome", START_DEADLINE, |l| {
        l.contains("reload: done") || l.contains("reload: the") || l.contains("reload: cannot")
    });
    assert!(outcome.contains("reload: done"), "{outcome}");
    assert_outcome(&sluice, "the new limit", &request_line_of(300), Served(200));
    assert_outcome(
        &sluice,
        "past the new limit",
        &request_line_of(301),
        Rejected(414),
    );
}

/// Sends `raw` on `conn` and reads one response.
fn exchange(conn: &mut Conn, raw: &[u8]) -> sluice_tests::Response {
    conn.send_raw(raw).expect("send");
    conn.read_response("GET").expect("a response")
}

/// Every good framing on one keep-alive connection: each body ends exactly where the next
/// request begins.
#[test]
fn good_requests_of_every_framing_share_one_connection() {
    let sluice = start(&[]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let requests: &[(&[u8], &[u8])] = &[
        (b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", b""),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n\r\n\nGET ",
            b"\r\n\nGET ",
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;a=b\r\nx\ny\r\n4;q=\"; \\\"\"\r\n\r\n\r\n\r\n0;end\r\nT: 1\r\n\r\n",
            b"x\ny\r\n\r\n",
        ),
        (b"\r\nGET /echo HTTP/1.1\r\nHost: t\r\n\r\n", b""),
    ];
    for (raw, body) in requests {
        let resp = exchange(&mut conn, raw);
        assert_eq!(resp.status(), 200, "{}", String::from_utf8_lossy(raw));
        assert_eq!(resp.body, *body, "{}", String::from_utf8_lossy(raw));
        assert!(!resp.head.has_token("Connection", "close"));
    }
    assert_eq!(seen(&sluice), requests.len());
}

/// Pipelined requests in one write are answered in order; a malformed one among them is
/// answered with 400 after those before it, and nothing after it is served.
#[test]
fn pipelined_requests_stop_at_the_first_malformed_one() {
    let sluice = start(&[]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    conn.send_raw(
        b"POST /echo?1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none\
          POST /echo?2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
          GET /echo?3 HTTP/1.1\nHost: t\r\n\r\n\
          GET /echo?4 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    for body in [&b"one"[..], b"two"] {
        let resp = conn.read_response("GET").unwrap();
        assert_eq!((resp.status(), &resp.body[..]), (200, body));
    }
    let resp = conn.read_response("GET").unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.head.has_token("Connection", "close"));
    assert!(conn.closed_by_peer(DEADLINE));
    assert_eq!(seen(&sluice), 2);
}

/// A malformed body on a connection that already served a request: 400, close, and the app only
/// ever saw the first request.
#[test]
fn a_malformed_body_after_a_good_request_closes_the_connection() {
    let sluice = start(&[]);
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let resp = exchange(&mut conn, b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(resp.status(), 200);
    let resp = exchange(
        &mut conn,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;a\x00\r\nhello\r\n0\r\n\r\nGET /echo?smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(resp.status(), 400);
    assert!(resp.head.has_token("Connection", "close"));
    assert!(conn.closed_by_peer(DEADLINE));
    assert_eq!(seen(&sluice), 1);
}

/// The bytes of a str whose code points are bytes (WSGI's latin-1 strings, through JSON).
fn latin1_bytes(value: &serde_json::Value) -> Vec<u8> {
    let text = value.as_str().expect("a string");
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("a latin-1 code point"))
        .collect()
}

/// A target as sent, and what the app must see of it.
struct Target {
    sent: Vec<u8>,
    raw_uri: Vec<u8>,
    path_info: Vec<u8>,
    query_string: Vec<u8>,
}

fn target(sent: &[u8], raw_uri: &[u8], path_info: &[u8], query_string: &[u8]) -> Target {
    Target {
        sent: sent.to_vec(),
        raw_uri: raw_uri.to_vec(),
        path_info: path_info.to_vec(),
        query_string: query_string.to_vec(),
    }
}

impl Target {
    fn request(&self) -> Vec<u8> {
        [&b"GET "[..], &self.sent, b" HTTP/1.1\r\nHost: t\r\n\r\n"].concat()
    }

    fn check(&self, resp: &sluice_tests::Response) {
        let sent = String::from_utf8_lossy(&self.sent);
        assert_eq!(resp.status(), 200, "{sent}");
        let env = resp.json();
        assert_eq!(
            latin1_bytes(&env["RAW_URI"]),
            self.raw_uri,
            "RAW_URI of {sent}"
        );
        assert_eq!(
            latin1_bytes(&env["PATH_INFO"]),
            self.path_info,
            "PATH_INFO of {sent}"
        );
        assert_eq!(
            latin1_bytes(&env["QUERY_STRING"]),
            self.query_string,
            "QUERY_STRING of {sent}"
        );
    }
}

/// Raw bytes in a target reach the app exactly as sent, told apart from a client's own
/// percent-encoding, and a fragment never does; pipelined, each request gets its own target.
#[test]
fn raw_targets_reach_the_app_as_sent() {
    let sluice = start(&[]);
    let long_query = [&b"/environ?q="[..], &b"\"<>`".repeat(1500)].concat();
    let cases = [
        target(
            b"/environ/caf\xc3\xa9?q=\xc3\xa0\"x\"",
            b"/environ/caf\xc3\xa9?q=\xc3\xa0\"x\"",
            b"/environ/caf\xc3\xa9",
            b"q=\xc3\xa0\"x\"",
        ),
        target(
            b"/environ/a%3Cb<c>`?x=%22\"|{}^\\#frag<\xe9>",
            b"/environ/a%3Cb<c>`?x=%22\"|{}^\\",
            b"/environ/a<b<c>`",
            b"x=%22\"|{}^\\",
        ),
        target(
            b"/environ/plain?a=1#frag",
            b"/environ/plain?a=1",
            b"/environ/plain",
            b"a=1",
        ),
        target(
            b"/environ/latin\xe9",
            b"/environ/latin\xe9",
            b"/environ/latin\xe9",
            b"",
        ),
        // Escaped, it is three times as long: more than one read of hyper's.
        target(
            &long_query,
            &long_query,
            b"/environ",
            &long_query["/environ?".len()..],
        ),
    ];
    for case in &cases {
        let mut conn = Conn::connect(sluice.addr()).unwrap();
        case.check(&exchange(&mut conn, &case.request()));
    }
    // All of them pipelined in one write, with plain targets between: each head gets its own.
    let plain = target(b"/environ/p", b"/environ/p", b"/environ/p", b"");
    let mut conn = Conn::connect(sluice.addr()).unwrap();
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for case in &cases {
        all.extend(plain.request());
        all.extend(case.request());
        expected.extend([&plain, case]);
    }
    conn.send_raw(&all).unwrap();
    for case in expected {
        case.check(&conn.read_response("GET").unwrap());
    }
}

/// A client that shuts its sending side after whole requests (`nc -N`, scripted clients) gets
/// every one of them answered, then the close; one cut short by the shutdown never reaches the
/// app.
#[test]
fn a_half_closed_client_gets_every_whole_request_answered() {
    let sluice = start(&[]);
    let get = &b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n"[..];
    let post = &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"[..];
    let chunked =
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..];
    let slow = &b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n"[..];
    type Case<'a> = (&'a str, Vec<u8>, &'a [&'a [u8]]);
    let cases: &[Case<'_>] = &[
        ("GET", get.to_vec(), &[b""]),
        ("Content-Length POST", post.to_vec(), &[b"hello"]),
        ("chunked POST", chunked.to_vec(), &[b"hello"]),
        (
            "a GET still in Python when the shutdown comes",
            slow.to_vec(),
            &[b"slept"],
        ),
        (
            "pipelined GET and POST",
            [get, post].concat(),
            &[b"", b"hello"],
        ),
        (
            "pipelined chunked POST and GET",
            [chunked, get].concat(),
            &[b"hello", b""],
        ),
        (
            "pipelined slow GET and chunked POST",
            [slow, chunked].concat(),
            &[b"slept", b"hello"],
        ),
    ];
    for (why, raw, bodies) in cases {
        let before = seen(&sluice);
        let mut conn = Conn::connect(sluice.addr()).unwrap();
        conn.send_raw(raw).unwrap();
        conn.shutdown_write().unwrap();
        for body in *bodies {
            let resp = conn
                .read_response("GET")
                .unwrap_or_else(|err| panic!("{why}: no answer: {err}"));
            assert_eq!((resp.status(), &resp.body[..]), (200, *body), "{why}");
        }
        assert!(
            conn.closed_by_peer(DEADLINE),
            "{why}: not closed after the answers"
        );
        assert_eq!(seen(&sluice) - before, bodies.len(), "{why}");
    }
    // Cut short by the shutdown: a body that never ends is a 400 (or a plain close), and an
    // unfinished head a plain close; neither reaches the app.
    for (why, raw) in [
        (
            "Content-Length body cut short",
            &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel"[..],
        ),
        (
            "chunked body cut short",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ),
        ("head cut short", b"GET /echo HTTP/1.1\r\nHost: t\r\n"),
    ] {
        let before = seen(&sluice);
        let mut conn = Conn::connect(sluice.addr()).unwrap();
        conn.send_raw(raw).unwrap();
        conn.shutdown_write().unwrap();
        match conn.read_response("GET") {
            Ok(resp) => assert_eq!(resp.status(), 400, "{why}"),
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{why}: {err}"),
        }
        assert!(conn.closed_by_peer(DEADLINE), "{why}: not closed");
        assert_eq!(seen(&sluice), before, "{why}: reached the app");
    }
}
