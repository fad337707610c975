//! The pure scanner of HTTP/1.1 message framing: bytes in, in pieces of any size; out, the
//! number of clean heads, the first fault and where it is, and the targets hyper will get
//! percent-encoded. No I/O.
//!
//! What the fuzz targets drive is `pub` (the module is private to the crate: they reach it only
//! through `sluice_gateway::fuzzing`); the rest stays private.

use bytes::Bytes;

use crate::config::EdgeConfig;

/// The most bytes a whole request head may take: hyper's own read buffer cap
/// (`DEFAULT_MAX_BUFFER_SIZE`, which sluice leaves alone). hyper answers 431 when an unfinished
/// head fills its buffer, but a single read can overshoot the cap and let a larger head through;
/// counting here makes every head beyond it a 431, whatever the reads were.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// The size limits the scanner enforces, from the app's edge settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, without its CRLF.
    pub line: usize,
    /// Most field lines in a head (and in a trailer section).
    pub fields: usize,
    /// Longest field line (name, colon, value), without its CRLF; also bounds chunk-size lines.
    pub field_size: usize,
}

impl From<&EdgeConfig> for Limits {
    fn from(edge: &EdgeConfig) -> Limits {
        Limits {
            line: edge.limit_request_line,
            fields: edge.limit_request_fields,
            field_size: edge.limit_request_field_size,
        }
    }
}

/// What is wrong with a request, as found in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A LF without the CR before it (RFC 9112 §2.2).
    BareLf,
    /// A CR not followed by LF (RFC 9112 §2.2).
    BareCr,
    /// A request line that is not `method SP request-target SP version` (RFC 9112 §3), e.g. a
    /// control byte, space or DEL in the target, or a target that starts with neither `/` nor
    /// another visible ASCII byte.
    RequestLine,
    /// A field line that starts with whitespace: obs-fold (RFC 9112 §5.2) or whitespace before
    /// the first field (§2.2).
    ObsFold,
    /// A field name that is empty, not a token, or followed by whitespace before the colon
    /// (RFC 9112 §5.1), or a field line without a colon.
    FieldName,
    /// A control byte or DEL in a field value (RFC 9110 §5.5).
    FieldValue,
    /// `Content-Length` that is not one decimal number (RFC 9110 §8.6).
    ContentLength,
    /// More than one `Content-Length` field line, even with equal values (RFC 9112 §6.3).
    DuplicateContentLength,
    /// `Transfer-Encoding` whose last coding is not `chunked`, or that is malformed, has
    /// parameters, names `chunked` twice or stands on two field lines (RFC 9112 §6.1, §6.3).
    TransferEncoding,
    /// `Transfer-Encoding` with a coding before `chunked` (`gzip, chunked`): well framed, but a
    /// coding sluice does not decode, so 501 (RFC 9112 §6.1).
    UnknownTransferCoding,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1): the smuggling classic.
    ContentLengthWithTransferEncoding,
    /// A chunk size that is not 1*HEXDIG fitting in 64 bits, or a malformed chunk-size line
    /// (RFC 9112 §7.1).
    ChunkSize,
    /// A chunk extension that is not `;name[=token|quoted-string]` (RFC 9112 §7.1.1).
    ChunkExtension,
    /// Chunk data not followed by CRLF (RFC 9112 §7.1).
    ChunkData,
    /// A chunk-size line longer than `limit_request_field_size`.
    ChunkLineTooLong,
    /// A request line longer than `limit_request_line`.
    RequestLineTooLong,
    /// A field line (in a head or a trailer section) longer than `limit_request_field_size`.
    FieldTooLarge,
    /// More field lines (in a head or a trailer section) than `limit_request_fields`.
    TooManyFields,
    /// A head longer than [`MAX_HEAD_BYTES`] in all.
    HeadTooLarge,
}

impl Fault {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Fault::BareLf => "bare LF where CRLF is required",
            Fault::BareCr => "bare CR where CRLF is required",
            Fault::RequestLine => "malformed request line",
            Fault::ObsFold => "obsolete line folding",
            Fault::FieldName => "malformed field name",
            Fault::FieldValue => "control byte in a field value",
            Fault::ContentLength => "invalid Content-Length",
            Fault::DuplicateContentLength => "more than one Content-Length",
            Fault::TransferEncoding => "Transfer-Encoding other than chunked",
            Fault::UnknownTransferCoding => "transfer coding other than chunked",
            Fault::ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            Fault::ChunkSize => "malformed chunk size",
            Fault::ChunkExtension => "malformed chunk extension",
            Fault::ChunkData => "chunk data not followed by CRLF",
            Fault::ChunkLineTooLong => "chunk-size line too long",
            Fault::RequestLineTooLong => "request line too long",
            Fault::FieldTooLarge => "header field too large",
            Fault::TooManyFields => "too many header fields",
            Fault::HeadTooLarge => "request head too large",
        }
    }
}

/// Where the scanner stopped: the offset of the offending byte in the slice it was given, and
/// whether that byte belongs to a body (chunk lines, chunk data, trailers) rather than a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub at: usize,
    pub fault: Fault,
    pub in_body: bool,
}

/// Which line a CR ends; decides where the scanner goes once its LF arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// An empty line before a request line (RFC 9112 §2.2 lets a server ignore it).
    Leading,
    Request,
    Field,
    /// The empty line ending a head.
    HeadEnd,
    ChunkSize,
    /// The empty line ending a trailer section, and with it the message.
    TrailerEnd,
}

/// The framing field a field line is, as far as its name tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Other,
    ContentLength,
    TransferEncoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: a request line or an empty line comes next.
    Idle,
    Method,
    /// The first byte of the target.
    TargetStart,
    Target,
    /// After a `#` in the target: a fragment, which is not part of the request (RFC 9112
    /// §3.2) and is dropped before routing.
    Fragment,
    Version,
    /// A CR was seen; the LF must follow.
    Lf(Line),
    /// The start of a field line, or the empty line that ends the section.
    FieldStart,
    Name,
    /// Inside a field value (its leading OWS included).
    Value,
    /// Fixed-length body bytes still to come.
    Body(u64),
    /// The first digit of a chunk size.
    ChunkStart,
    ChunkSize,
    /// Whitespace after the chunk size: only `;` (an extension) may follow.
    ChunkSizeWs,
    /// After `;`: whitespace, then an extension name.
    ExtBeforeName,
    ExtName,
    /// Whitespace after an extension name: `=` or `;` may follow.
    ExtAfterName,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtBeforeValue,
    ExtToken,
    ExtQuoted,
    /// After a backslash inside a quoted string.
    ExtQuotedPair,
    /// After a quoted string: whitespace and `;`, or the end of the line.
    ExtAfterValue,
    /// Whitespace after an extension value: only `;` may follow.
    ExtAfterValueWs,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
}

/// Where a `Transfer-Encoding` value is, coding by coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codings {
    /// Before a coding name: at the start of the value, or after a comma.
    Before,
    /// Inside a coding name.
    Name,
    /// Whitespace after a coding name: a comma or the end of the line may follow.
    After,
}

/// The framing of one client connection's byte stream, checked as it arrives in pieces of any
/// size.
#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    state: State,
    /// Bytes of the current line so far, for the limits.
    line_len: usize,
    /// Bytes of the current head before the current line, CRLFs and leading empty lines
    /// included.
    head_len: usize,
    /// Field lines so far in the current head or trailer section.
    fields: usize,
    /// Inside a trailer section rather than a head.
    trailers: bool,
    /// Heads scanned to their end without a fault.
    heads: u64,
    // The current field line: which framing field its name makes it, and how far the name
    // still matches each of the two that matter.
    framing: Framing,
    name_len: usize,
    maybe_content_length: bool,
    maybe_transfer_encoding: bool,
    // The current value of a framing field: digits (or letters of the current coding name)
    // seen, and whether whitespace came after them.
    value: u64,
    value_len: usize,
    value_ws: bool,
    // The current `Transfer-Encoding` value: where in its list, whether the current coding
    // name still matches `chunked`, how many codings were `chunked`, whether the last one was,
    // and whether any other was.
    codings: Codings,
    coding_is_chunked: bool,
    chunked_codings: u32,
    last_coding_chunked: bool,
    other_codings: bool,
    // The framing of the current head.
    content_length: Option<u64>,
    chunked: bool,
    /// A coding before `chunked`: refused with 501 once the head is known to be no smuggling.
    unknown_coding: bool,
    /// The current request target as the client sent it, fragment left out.
    target: Vec<u8>,
    /// The current target holds bytes that reach hyper percent-encoded.
    target_escaped: bool,
    /// Offsets, in the slice given to the latest [`Scanner::scan`], of the target bytes that
    /// reach hyper percent-encoded.
    escapes: Vec<usize>,
    /// The targets that reach hyper percent-encoded, as sent, with the index of their head
    /// (counting from 0 on the connection); taken by [`Scanner::take_raw_targets`].
    raw_targets: Vec<(u64, Bytes)>,
    /// The size of the chunk whose size line is being read.
    chunk: u64,
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";
const CHUNKED: &[u8] = b"chunked";

// Byte classes, one table lookup per byte for the runs that make up most of a head.
/// tchar (RFC 9110 §5.6.2): the bytes of a token (a method, a field name).
const TCHAR: u8 = 1;
/// What a request target passes on to hyper as it is: visible ASCII but `#` (which starts a
/// fragment) and the [`ESCAPED`] bytes.
const TARGET: u8 = 2;
/// field-vchar, SP and HTAB (RFC 9110 §5.5): what a field value may hold.
const VALUE: u8 = 4;
/// Visible ASCII.
const VCHAR: u8 = 8;
/// Target bytes that RFC 3986 wants percent-encoded and that clients send raw all the same
/// (`curl 'http://h/à'`, a JSON query, a backtick): nginx serves them, and so does sluice. The
/// `http` crate under hyper refuses them in a URI, so they reach hyper percent-encoded and the
/// app gets the target as the client sent it (see [`RawTarget`](super::RawTarget)).
const ESCAPED: u8 = 16;
/// What a fragment passes on to hyper as it is: visible ASCII but the [`ESCAPED`] bytes. A
/// fragment may hold those too; they reach hyper percent-encoded (it refuses a fragment that is
/// not UTF-8) and the `http` crate drops the fragment.
const FRAGMENT: u8 = 32;

static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let mut class = 0;
        if matches!(byte,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
        {
            class |= TCHAR;
        }
        let escaped = matches!(byte, b'"' | b'<' | b'>' | b'`') || byte >= 0x80;
        if byte > b' ' && byte < 0x7f {
            class |= VCHAR;
            if byte != b'#' && !escaped {
                class |= TARGET;
            }
        }
        if escaped {
            class |= ESCAPED;
        }
        if byte > b' ' && byte < 0x7f && !escaped {
            class |= FRAGMENT;
        }
        if byte == b'\t' || byte == b' ' || (byte > b' ' && byte != 0x7f) {
            class |= VALUE;
        }
        table[b] = class;
        b += 1;
    }
    table
}

fn is(class: u8, b: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

/// How many leading bytes of `bytes` are of `class`.
fn run_length(class: u8, bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| !is(class, b))
        .unwrap_or(bytes.len())
}

fn is_tchar(b: u8) -> bool {
    is(TCHAR, b)
}

fn is_value_byte(b: u8) -> bool {
    is(VALUE, b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn hex_value(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            state: State::Idle,
            line_len: 0,
            head_len: 0,
            fields: 0,
            trailers: false,
            heads: 0,
            framing: Framing::Other,
            name_len: 0,
            maybe_content_length: false,
            maybe_transfer_encoding: false,
            value: 0,
            value_len: 0,
            value_ws: false,
            codings: Codings::Before,
            coding_is_chunked: false,
            chunked_codings: 0,
            last_coding_chunked: false,
            other_codings: false,
            content_length: None,
            chunked: false,
            unknown_coding: false,
            target: Vec::new(),
            target_escaped: false,
            escapes: Vec::new(),
            raw_targets: Vec::new(),
            chunk: 0,
        }
    }

    /// The offsets, in the slice given to the latest [`Scanner::scan`], of the bytes that must
    /// reach hyper percent-encoded (see [`ESCAPED`]).
    pub fn escapes(&self) -> &[usize] {
        &self.escapes
    }

    /// The targets with [`ESCAPED`] bytes finished since the last call, as the client sent them
    /// (fragment left out), each with the index of its head on the connection.
    pub fn take_raw_targets(&mut self) -> Vec<(u64, Bytes)> {
        std::mem::take(&mut self.raw_targets)
    }

    /// Heads scanned to their end without a fault.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Is the scanner inside a body (chunk lines, chunk data, trailers) rather than a head?
    fn in_body(&self) -> bool {
        match self.state {
            State::Body(_)
            | State::ChunkStart
            | State::ChunkSize
            | State::ChunkSizeWs
            | State::ExtBeforeName
            | State::ExtName
            | State::ExtAfterName
            | State::ExtBeforeValue
            | State::ExtToken
            | State::ExtQuoted
            | State::ExtQuotedPair
            | State::ExtAfterValue
            | State::ExtAfterValueWs
            | State::ChunkData(_)
            | State::ChunkDataCr
            | State::ChunkDataLf => true,
            State::Lf(line) => line == Line::ChunkSize || (self.trailers && line != Line::Leading),
            State::FieldStart | State::Name | State::Value => self.trailers,
            State::Idle
            | State::Method
            | State::TargetStart
            | State::Target
            | State::Fragment
            | State::Version => false,
        }
    }

    /// Checks the next bytes of the stream. After a fault the scanner is done with the
    /// connection: the caller stops feeding it.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.escapes.clear();
        let mut i = 0;
        while i < bytes.len() {
            match self.step(bytes, i) {
                Ok(next) => i = next,
                Err(fault) => {
                    return Err(Stop {
                        at: i,
                        fault,
                        in_body: self.in_body(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Consumes what it can from `bytes[i..]` (at least one byte) and returns where to go on.
    fn step(&mut self, bytes: &[u8], i: usize) -> Result<usize, Fault> {
        let b = bytes[i];
        match self.state {
            State::Body(left) => {
                let (taken, rest) = counted(left, bytes.len() - i);
                self.state = rest.map_or(State::Idle, State::Body);
                return Ok(i + taken);
            }
            State::ChunkData(left) => {
                let (taken, rest) = counted(left, bytes.len() - i);
                self.state = rest.map_or(State::ChunkDataCr, State::ChunkData);
                return Ok(i + taken);
            }
            _ => {}
        }
        // The bulk of a head: runs of plain bytes go by in a tight loop, as far as the line's
        // limit allows. Whatever ends a run (or is beyond the limit) is left to `byte`.
        let (class, limit) = match self.state {
            State::Method => (TCHAR, self.limits.line),
            State::TargetStart | State::Target => (TARGET, self.limits.line),
            State::Fragment => (FRAGMENT, self.limits.line),
            State::Version => (VCHAR, self.limits.line),
            State::Name => (TCHAR, self.limits.field_size),
            State::Value if self.framing == Framing::Other => (VALUE, self.limits.field_size),
            _ => (0, 0),
        };
        let end = i + limit.saturating_sub(self.line_len).min(bytes.len() - i);
        let run = run_length(class, &bytes[i..end]);
        if run == 0 {
            if matches!(self.state, State::Target | State::Fragment) && is(ESCAPED, b) {
                self.grow_line()?;
                self.escapes.push(i);
                if self.state == State::Target {
                    self.target.push(b);
                    self.target_escaped = true;
                }
                return Ok(i + 1);
            }
            self.byte(b)?;
            return Ok(i + 1);
        }
        match self.state {
            State::TargetStart | State::Target => {
                self.state = State::Target;
                self.target.extend_from_slice(&bytes[i..i + run]);
            }
            State::Name => {
                for (at, &b) in bytes[i..i + run].iter().enumerate() {
                    if !self.maybe_content_length && !self.maybe_transfer_encoding {
                        self.name_len += run - at;
                        break;
                    }
                    self.name_byte(b);
                }
            }
            _ => {}
        }
        self.line_len += run;
        Ok(i + run)
    }

    /// Counts one more byte of the current line (never its CR) against the line's limit.
    fn grow_line(&mut self) -> Result<(), Fault> {
        self.line_len += 1;
        let (limit, fault) = match self.state {
            State::Method
            | State::TargetStart
            | State::Target
            | State::Fragment
            | State::Version => (self.limits.line, Fault::RequestLineTooLong),
            State::Name | State::Value => (self.limits.field_size, Fault::FieldTooLarge),
            _ => (self.limits.field_size, Fault::ChunkLineTooLong),
        };
        if self.line_len > limit {
            return Err(fault);
        }
        Ok(())
    }

    /// One byte that [`Scanner::step`] left: a line ending, the byte that ends a run, or a
    /// byte of a line too rare to be worth a run (chunk-size lines, field starts).
    #[inline]
    fn byte(&mut self, b: u8) -> Result<(), Fault> {
        // CR and LF mean the same wherever a line may end; elsewhere each state rejects them.
        match (self.state, b) {
            (State::Lf(line), b'\n') => return self.end_line(line),
            (State::Lf(_), _) => return Err(Fault::BareCr),
            (State::ChunkDataCr, b'\r') => {
                self.state = State::ChunkDataLf;
                return Ok(());
            }
            (State::ChunkDataLf, b'\n') => {
                self.state = State::ChunkStart;
                self.line_len = 0;
                return Ok(());
            }
            (State::ChunkDataCr | State::ChunkDataLf, _) => return Err(Fault::ChunkData),
            (_, b'\n') => return Err(Fault::BareLf),
            _ => {}
        }
        // The first byte of a line sets its length below.
        if b != b'\r'
            && !matches!(
                self.state,
                State::Idle | State::FieldStart | State::ChunkStart
            )
        {
            self.grow_line()?;
        }
        match self.state {
            State::Idle
            | State::Method
            | State::TargetStart
            | State::Target
            | State::Fragment
            | State::Version => self.request_line_byte(b),
            State::FieldStart | State::Name | State::Value => self.field_line_byte(b),
            State::ChunkStart | State::ChunkSize | State::ChunkSizeWs => self.chunk_size_byte(b),
            State::ExtBeforeName
            | State::ExtName
            | State::ExtAfterName
            | State::ExtBeforeValue
            | State::ExtToken
            | State::ExtQuoted
            | State::ExtQuotedPair
            | State::ExtAfterValue
            | State::ExtAfterValueWs => self.chunk_extension_byte(b),
            State::Lf(_)
            | State::Body(_)
            | State::ChunkData(_)
            | State::ChunkDataCr
            | State::ChunkDataLf => unreachable!("handled in step and above"),
        }
    }

    /// A byte of a request line (or of the empty lines before one) that is not CR-LF's LF.
    #[inline]
    fn request_line_byte(&mut self, b: u8) -> Result<(), Fault> {
        match self.state {
            State::Idle => match b {
                b'\r' => self.state = State::Lf(Line::Leading),
                b if is_tchar(b) => {
                    self.line_len = 1;
                    self.target.clear();
                    self.target_escaped = false;
                    self.state = State::Method;
                }
                _ => return Err(Fault::RequestLine),
            },
            State::Method => match b {
                b' ' => self.state = State::TargetStart,
                b if is_tchar(b) => {}
                _ => return Err(Fault::RequestLine),
            },
            // Plain target bytes went by in `step`, and so did escaped ones after the first byte;
            // what is left here ends the target, starts its fragment, or is bad.
            State::TargetStart => return Err(Fault::RequestLine),
            State::Target => match b {
                b' ' => self.end_target(),
                b'#' => self.state = State::Fragment,
                _ => return Err(Fault::RequestLine),
            },
            State::Fragment => match b {
                b' ' => self.end_target(),
                _ => return Err(Fault::RequestLine),
            },
            // hyper checks the version itself; visible ASCII up to the CR is all this needs.
            State::Version => match b {
                b'\r' => self.state = State::Lf(Line::Request),
                b'!'..=b'~' => {}
                _ => return Err(Fault::RequestLine),
            },
            _ => unreachable!("not a request-line state: {:?}", self.state),
        }
        Ok(())
    }

    /// A byte of a field line, in a head or a trailer section, or of the empty line ending it.
    #[inline]
    fn field_line_byte(&mut self, b: u8) -> Result<(), Fault> {
        match self.state {
            State::FieldStart => match b {
                b'\r' if self.trailers => self.state = State::Lf(Line::TrailerEnd),
                b'\r' => self.state = State::Lf(Line::HeadEnd),
                b' ' | b'\t' => return Err(Fault::ObsFold),
                b if is_tchar(b) => self.start_field(b)?,
                _ => return Err(Fault::FieldName),
            },
            State::Name => match b {
                b':' => self.start_value()?,
                b if is_tchar(b) => self.name_byte(b),
                _ => return Err(Fault::FieldName),
            },
            State::Value => match b {
                b'\r' => self.state = State::Lf(Line::Field),
                b if is_value_byte(b) => self.value_byte(b)?,
                _ => return Err(Fault::FieldValue),
            },
            _ => unreachable!("not a field-line state: {:?}", self.state),
        }
        Ok(())
    }

    /// The first byte of a field name: one more field line, counted against the limit.
    fn start_field(&mut self, b: u8) -> Result<(), Fault> {
        self.fields += 1;
        if self.fields > self.limits.fields {
            return Err(Fault::TooManyFields);
        }
        self.line_len = 1;
        self.name_len = 0;
        self.maybe_content_length = !self.trailers;
        self.maybe_transfer_encoding = !self.trailers;
        self.name_byte(b);
        self.state = State::Name;
        Ok(())
    }

    /// A byte of a chunk-size line up to its first extension.
    #[inline]
    fn chunk_size_byte(&mut self, b: u8) -> Result<(), Fault> {
        match self.state {
            State::ChunkStart => match hex_value(b) {
                Some(digit) => {
                    self.line_len = 1;
                    self.chunk = digit;
                    self.state = State::ChunkSize;
                }
                None => return Err(Fault::ChunkSize),
            },
            State::ChunkSize => match b {
                b'\r' => self.state = State::Lf(Line::ChunkSize),
                b';' => self.state = State::ExtBeforeName,
                b' ' | b'\t' => self.state = State::ChunkSizeWs,
                b => {
                    let digit = hex_value(b).ok_or(Fault::ChunkSize)?;
                    self.chunk = self
                        .chunk
                        .checked_mul(16)
                        .and_then(|n| n.checked_add(digit))
                        .ok_or(Fault::ChunkSize)?;
                }
            },
            // BWS (RFC 9112 §7.1.1) is only allowed before a `;`.
            State::ChunkSizeWs => match b {
                b';' => self.state = State::ExtBeforeName,
                b' ' | b'\t' => {}
                _ => return Err(Fault::ChunkSize),
            },
            _ => unreachable!("not a chunk-size state: {:?}", self.state),
        }
        Ok(())
    }

    /// A byte of a chunk extension: `;name[=token|quoted-string]`, BWS around `;` and `=`.
    fn chunk_extension_byte(&mut self, b: u8) -> Result<(), Fault> {
        self.state = match (self.state, b) {
            (State::ExtBeforeName, b' ' | b'\t') => State::ExtBeforeName,
            (State::ExtBeforeName, b) if is_tchar(b) => State::ExtName,
            (State::ExtName, b'\r') => State::Lf(Line::ChunkSize),
            (State::ExtName, b';') => State::ExtBeforeName,
            (State::ExtName, b'=') => State::ExtBeforeValue,
            (State::ExtName, b' ' | b'\t') => State::ExtAfterName,
            (State::ExtName, b) if is_tchar(b) => State::ExtName,
            (State::ExtAfterName, b';') => State::ExtBeforeName,
            (State::ExtAfterName, b'=') => State::ExtBeforeValue,
            (State::ExtAfterName, b' ' | b'\t') => State::ExtAfterName,
            (State::ExtBeforeValue, b' ' | b'\t') => State::ExtBeforeValue,
            (State::ExtBeforeValue, b'"') => State::ExtQuoted,
            (State::ExtBeforeValue, b) if is_tchar(b) => State::ExtToken,
            (State::ExtToken, b'\r') => State::Lf(Line::ChunkSize),
            (State::ExtToken, b';') => State::ExtBeforeName,
            (State::ExtToken, b' ' | b'\t') => State::ExtAfterValueWs,
            (State::ExtToken, b) if is_tchar(b) => State::ExtToken,
            // qdtext and quoted-pair (RFC 9110 §5.6.4).
            (State::ExtQuoted, b'"') => State::ExtAfterValue,
            (State::ExtQuoted, b'\\') => State::ExtQuotedPair,
            (State::ExtQuoted, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff) => {
                State::ExtQuoted
            }
            (State::ExtQuotedPair, b'\t' | b' '..=b'~' | 0x80..=0xff) => State::ExtQuoted,
            (State::ExtAfterValue, b'\r') => State::Lf(Line::ChunkSize),
            (State::ExtAfterValue, b';') => State::ExtBeforeName,
            (State::ExtAfterValue, b' ' | b'\t') => State::ExtAfterValueWs,
            (State::ExtAfterValueWs, b';') => State::ExtBeforeName,
            (State::ExtAfterValueWs, b' ' | b'\t') => State::ExtAfterValueWs,
            _ => return Err(Fault::ChunkExtension),
        };
        Ok(())
    }

    /// The space after the target: what hyper will see differs from what the client sent, so
    /// the latter is kept for the app.
    fn end_target(&mut self) {
        if self.target_escaped {
            let target = Bytes::copy_from_slice(&self.target);
            self.raw_targets.push((self.heads, target));
        }
        self.state = State::Version;
    }

    fn name_byte(&mut self, b: u8) {
        let lower = b.to_ascii_lowercase();
        self.maybe_content_length &= CONTENT_LENGTH.get(self.name_len) == Some(&lower);
        self.maybe_transfer_encoding &= TRANSFER_ENCODING.get(self.name_len) == Some(&lower);
        self.name_len += 1;
    }

    fn start_value(&mut self) -> Result<(), Fault> {
        self.framing = if self.maybe_content_length && self.name_len == CONTENT_LENGTH.len() {
            if self.content_length.is_some() {
                return Err(Fault::DuplicateContentLength);
            }
            Framing::ContentLength
        } else if self.maybe_transfer_encoding && self.name_len == TRANSFER_ENCODING.len() {
            if self.chunked {
                return Err(Fault::TransferEncoding);
            }
            self.codings = Codings::Before;
            self.chunked_codings = 0;
            self.last_coding_chunked = false;
            self.other_codings = false;
            Framing::TransferEncoding
        } else {
            Framing::Other
        };
        self.value = 0;
        self.value_len = 0;
        self.value_ws = false;
        self.state = State::Value;
        Ok(())
    }

    /// One byte of a framing field's value, OWS included.
    fn value_byte(&mut self, b: u8) -> Result<(), Fault> {
        match self.framing {
            Framing::Other => Ok(()),
            Framing::ContentLength => self.length_byte(b),
            Framing::TransferEncoding => self.coding_byte(b),
        }
    }

    /// One byte of a `Content-Length` value: one decimal number, OWS around it.
    fn length_byte(&mut self, b: u8) -> Result<(), Fault> {
        if is_ws(b) {
            self.value_ws = self.value_len > 0;
            return Ok(());
        }
        if self.value_ws || !b.is_ascii_digit() {
            return Err(Fault::ContentLength);
        }
        self.value = self
            .value
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(Fault::ContentLength)?;
        self.value_len += 1;
        Ok(())
    }

    /// One byte of a `Transfer-Encoding` value: coding names separated by commas, OWS around
    /// each. No parameters and no empty list elements: nothing legitimate sends them, and each
    /// is one more way for two parsers to disagree.
    fn coding_byte(&mut self, b: u8) -> Result<(), Fault> {
        match (self.codings, b) {
            (Codings::Name, b' ' | b'\t') => {
                self.end_coding();
                self.codings = Codings::After;
            }
            (Codings::Name, b',') => {
                self.end_coding();
                self.codings = Codings::Before;
            }
            (Codings::After, b',') => self.codings = Codings::Before,
            (Codings::Before | Codings::After, b' ' | b'\t') => {}
            (Codings::Before, b) if is_tchar(b) => {
                self.codings = Codings::Name;
                self.value_len = 0;
                self.coding_is_chunked = true;
                self.coding_name_byte(b);
            }
            (Codings::Name, b) if is_tchar(b) => self.coding_name_byte(b),
            _ => return Err(Fault::TransferEncoding),
        }
        Ok(())
    }

    fn coding_name_byte(&mut self, b: u8) {
        self.coding_is_chunked &= CHUNKED.get(self.value_len) == Some(&b.to_ascii_lowercase());
        self.value_len += 1;
    }

    fn end_coding(&mut self) {
        let chunked = self.coding_is_chunked && self.value_len == CHUNKED.len();
        self.last_coding_chunked = chunked;
        if chunked {
            self.chunked_codings += 1;
        } else {
            self.other_codings = true;
        }
    }

    /// The end of a `Transfer-Encoding` line: `chunked` must be the last coding and come once
    /// (RFC 9112 §6.1); any other coding before it is well framed but not understood.
    fn end_codings(&mut self) -> Result<(), Fault> {
        match self.codings {
            // Empty, or a comma at the end.
            Codings::Before => return Err(Fault::TransferEncoding),
            Codings::Name => self.end_coding(),
            Codings::After => {}
        }
        if self.chunked_codings != 1 || !self.last_coding_chunked {
            return Err(Fault::TransferEncoding);
        }
        self.chunked = true;
        self.unknown_coding = self.other_codings;
        Ok(())
    }

    fn end_line(&mut self, line: Line) -> Result<(), Fault> {
        if !self.trailers && line != Line::ChunkSize {
            // Checked per line: each line is bounded already, so no head gets far past this.
            self.head_len += self.line_len + 2;
            if self.head_len > MAX_HEAD_BYTES {
                return Err(Fault::HeadTooLarge);
            }
        }
        self.line_len = 0;
        self.state = match line {
            Line::Leading => State::Idle,
            Line::Request => {
                self.fields = 0;
                self.trailers = false;
                self.content_length = None;
                self.chunked = false;
                self.unknown_coding = false;
                State::FieldStart
            }
            Line::Field => {
                match self.framing {
                    Framing::Other => {}
                    Framing::ContentLength if self.value_len == 0 => {
                        return Err(Fault::ContentLength)
                    }
                    Framing::ContentLength => self.content_length = Some(self.value),
                    Framing::TransferEncoding => self.end_codings()?,
                }
                self.framing = Framing::Other;
                State::FieldStart
            }
            Line::HeadEnd => {
                if self.chunked && self.content_length.is_some() {
                    return Err(Fault::ContentLengthWithTransferEncoding);
                }
                if self.unknown_coding {
                    return Err(Fault::UnknownTransferCoding);
                }
                self.heads += 1;
                self.head_len = 0;
                if self.chunked {
                    State::ChunkStart
                } else {
                    match self.content_length {
                        None | Some(0) => State::Idle,
                        Some(n) => State::Body(n),
                    }
                }
            }
            Line::ChunkSize if self.chunk == 0 => {
                self.trailers = true;
                self.fields = 0;
                State::FieldStart
            }
            Line::ChunkSize => State::ChunkData(self.chunk),
            Line::TrailerEnd => {
                self.trailers = false;
                State::Idle
            }
        };
        Ok(())
    }
}

/// Takes what is here of a run of `left` counted bytes (a body, a chunk's data) from
/// `available`: how many, and how many are still to come (`None` once the run is complete).
#[inline]
fn counted(left: u64, available: usize) -> (usize, Option<u64>) {
    let taken = left.min(available as u64);
    (taken as usize, (taken < left).then_some(left - taken))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::edge::framing) const LIMITS: Limits = Limits {
        line: 64,
        fields: 4,
        field_size: 40,
    };

    /// Scans `bytes` whole, one byte at a time, and split at every point; all must agree.
    /// Returns the fault (if any) and the number of clean heads.
    fn scan(bytes: &[u8]) -> (Option<Fault>, u64) {
        let whole = {
            let mut s = Scanner::new(LIMITS);
            (s.scan(bytes).err(), s.heads())
        };
        let feed = |pieces: &mut dyn Iterator<Item = &[u8]>| {
            let mut s = Scanner::new(LIMITS);
            let mut offset = 0;
            for piece in pieces {
                if let Err(stop) = s.scan(piece) {
                    return (
                        Some(Stop {
                            at: offset + stop.at,
                            ..stop
                        }),
                        s.heads(),
                    );
                }
                offset += piece.len();
            }
            (None, s.heads())
        };
        assert_eq!(feed(&mut bytes.chunks(1)), whole, "byte by byte: {bytes:?}");
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                feed(&mut [a, b].into_iter()),
                whole,
                "split at {split}: {bytes:?}"
            );
        }
        (whole.0.map(|stop| stop.fault), whole.1)
    }

    fn ok(bytes: &[u8]) -> u64 {
        match scan(bytes) {
            (None, heads) => heads,
            (Some(fault), _) => panic!("{fault:?} in {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// A head with these field lines (CRLF-separated, without the last CRLF).
    fn head_with(fields: &[u8]) -> Vec<u8> {
        [&b"POST / HTTP/1.1\r\n"[..], fields, b"\r\n\r\n"].concat()
    }

    fn fault(bytes: &[u8]) -> Fault {
        scan(bytes)
            .0
            .unwrap_or_else(|| panic!("no fault in {:?}", String::from_utf8_lossy(bytes)))
    }

    #[test]
    fn byte_classes_follow_the_grammar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is(TCHAR, b), tchar, "{b:#04x}");
            assert_eq!(is(VCHAR, b), b.is_ascii_graphic(), "{b:#04x}");
            let escaped = b"\"<>`".contains(&b) || b >= 0x80;
            assert_eq!(is(ESCAPED, b), escaped, "{b:#04x}");
            let target = b.is_ascii_graphic() && b != b'#' && !escaped;
            assert_eq!(is(TARGET, b), target, "{b:#04x}");
            assert_eq!(
                is(FRAGMENT, b),
                b.is_ascii_graphic() && !escaped,
                "{b:#04x}"
            );
            let value = b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80;
            assert_eq!(is(VALUE, b), value, "{b:#04x}");
        }
    }

    #[test]
    fn well_formed_messages_pass_and_are_counted() {
        assert_eq!(ok(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
        assert_eq!(ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
        assert_eq!(
            ok(b"POST /x?y=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"),
            2
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n\
                 5;a=b;c=\"d\\\"e\" ; f\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
            2
        );
        // An unfinished message: its head counts, its body is still awaited.
        assert_eq!(ok(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhel"), 1);
        assert_eq!(ok(b"GET / HTTP/1.1\r\nHost: a"), 0);
    }

    #[test]
    fn bodies_are_not_scanned_as_heads() {
        // Bare LFs, NULs and a whole request inside bodies are data, not framing.
        let body = b"\n\0GET /smuggled HTTP/1.1\nHost: x\n\n";
        let mut fixed =
            format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        fixed.extend_from_slice(body);
        fixed.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(ok(&fixed), 2);
        let mut chunked = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        chunked.extend_from_slice(body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(ok(&chunked), 2);
    }

    #[test]
    fn line_endings_must_be_crlf() {
        assert_eq!(fault(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Fault::BareLf);
        assert_eq!(fault(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Fault::BareLf);
        assert_eq!(fault(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Fault::BareLf);
        assert_eq!(fault(b"\nGET / HTTP/1.1\r\n\r\n"), Fault::BareLf);
        assert_eq!(fault(b"GET / HTTP/1.1\rHost: a\r\n\r\n"), Fault::BareCr);
        assert_eq!(fault(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), Fault::BareCr);
    }

    #[test]
    fn request_lines_are_checked() {
        for bad in [
            &b"GET  / HTTP/1.1\r\n"[..],
            b" GET / HTTP/1.1\r\n",
            b"GET\t/ HTTP/1.1\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET #b HTTP/1.1\r\n",
            b"GET \xc3\xa9 HTTP/1.1\r\n",
            b"GET <a> HTTP/1.1\r\n",
            b"GET /a#\x01 HTTP/1.1\r\n",
            b"GET /a#\x7f HTTP/1.1\r\n",
            b"GET /\x00 HTTP/1.1\r\n",
            b"GET /\x7f HTTP/1.1\r\n",
            b"G(T / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
        ] {
            assert_eq!(fault(bad), Fault::RequestLine, "{bad:?}");
        }
    }

    #[test]
    fn field_lines_are_checked() {
        assert_eq!(fault(&head_with(b"A : b")), Fault::FieldName);
        assert_eq!(fault(&head_with(b"A\t: b")), Fault::FieldName);
        assert_eq!(fault(&head_with(b": b")), Fault::FieldName);
        assert_eq!(fault(&head_with(b"A(B): c")), Fault::FieldName);
        assert_eq!(fault(&head_with(b"Junk")), Fault::FieldName);
        assert_eq!(fault(&head_with(b" A: b")), Fault::ObsFold);
        assert_eq!(fault(&head_with(b"A: b\r\n\tc")), Fault::ObsFold);
        assert_eq!(fault(&head_with(b"A: b\x00")), Fault::FieldValue);
        assert_eq!(fault(&head_with(b"A: \x1b")), Fault::FieldValue);
        assert_eq!(fault(&head_with(b"A: \x7f")), Fault::FieldValue);
        assert_eq!(ok(&head_with(b"A:\t\xe9 b\t")), 1);
        assert_eq!(ok(&head_with(b"A:")), 1);
    }

    #[test]
    fn content_length_must_be_one_number() {
        assert_eq!(ok(&head_with(b"Content-Length: \t007 ")), 1);
        for bad in [
            &b"Content-Length: 1, 1"[..],
            b"Content-Length: +1",
            b"Content-Length: -1",
            b"Content-Length: 1 1",
            b"Content-Length: 0x1",
            b"Content-Length:",
            b"Content-Length: 18446744073709551616",
        ] {
            assert_eq!(fault(&head_with(bad)), Fault::ContentLength, "{bad:?}");
        }
        assert_eq!(
            fault(&head_with(b"Content-Length: 1\r\ncontent-length: 1")),
            Fault::DuplicateContentLength
        );
    }

    #[test]
    fn transfer_encoding_must_be_chunked_alone() {
        assert_eq!(ok(&head_with(b"Transfer-Encoding:  Chunked\t")), 1);
        for unknown in [
            &b"Transfer-Encoding: gzip, chunked"[..],
            b"Transfer-Encoding: gzip,chunked",
            b"Transfer-Encoding:  x , y ,\tCHUNKED ",
        ] {
            assert_eq!(
                fault(&head_with(unknown)),
                Fault::UnknownTransferCoding,
                "{unknown:?}"
            );
        }
        // Found at the end of the head, so smuggling is still called smuggling.
        assert_eq!(
            fault(&head_with(
                b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 1"
            )),
            Fault::ContentLengthWithTransferEncoding
        );
        for bad in [
            &b"Transfer-Encoding: chunked, gzip"[..],
            b"Transfer-Encoding: gzip",
            b"Transfer-Encoding: x,chunked,chunked",
            b"Transfer-Encoding: , chunked",
            b"Transfer-Encoding: chunked,",
            b"Transfer-Encoding: gzip;q=1, chunked",
            b"Transfer-Encoding: gzip chunked",
            b"Transfer-Encoding: gzip, chunked\r\nTransfer-Encoding: chunked",
            b"Transfer-Encoding: chunked, chunked",
            b"Transfer-Encoding: chunked;q=1",
            b"Transfer-Encoding: chunk",
            b"Transfer-Encoding: chunkedx",
            b"Transfer-Encoding: identity",
            b"Transfer-Encoding:",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
        ] {
            assert_eq!(fault(&head_with(bad)), Fault::TransferEncoding, "{bad:?}");
        }
        for both in [
            &b"Transfer-Encoding: chunked\r\nContent-Length: 0"[..],
            b"Content-Length: 3\r\nTransfer-Encoding: chunked",
        ] {
            assert_eq!(
                fault(&head_with(both)),
                Fault::ContentLengthWithTransferEncoding
            );
        }
        // In a trailer section the names mean nothing.
        assert_eq!(
            ok(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\
                 Content-Length: x\r\nTransfer-Encoding: y\r\n\r\n"
            ),
            1
        );
    }

    #[test]
    fn chunk_framing_is_checked_in_the_body() {
        let body = |chunks: &[u8]| {
            [
                &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                chunks,
            ]
            .concat()
        };
        for (bad, want) in [
            (&b"g\r\n"[..], Fault::ChunkSize),
            (b" 5\r\n", Fault::ChunkSize),
            (b"0x5\r\n", Fault::ChunkSize),
            (b"\r\n", Fault::ChunkSize),
            (b"5 \r\n", Fault::ChunkSize),
            (b"10000000000000000\r\n", Fault::ChunkSize),
            (b"5\n", Fault::BareLf),
            (b"5;\r\n", Fault::ChunkExtension),
            (b"5;=v\r\n", Fault::ChunkExtension),
            (b"5;a \r\n", Fault::ChunkExtension),
            (b"5;a=\r\n", Fault::ChunkExtension),
            (b"5;a=b c\r\n", Fault::ChunkExtension),
            (b"5;a=b \r\n", Fault::ChunkExtension),
            (b"5;a=\"b\r\n", Fault::ChunkExtension),
            (b"5;a=\"\x01\"\r\n", Fault::ChunkExtension),
            (b"5;a\x00\r\n", Fault::ChunkExtension),
            (b"5;a\rb\r\n", Fault::BareCr),
            (b"3\r\nhello\r\n", Fault::ChunkData),
            (b"5\r\nhello\n", Fault::ChunkData),
            (b"0\n", Fault::BareLf),
            (b"0\r\n\n", Fault::BareLf),
            (b"0\r\nA: 1\nB: 2\r\n\r\n", Fault::BareLf),
            (b"0\r\nA: 1\r\n 2\r\n\r\n", Fault::ObsFold),
            (b"0\r\nA: \x00\r\n\r\n", Fault::FieldValue),
            (b"0\r\nJunk\r\n\r\n", Fault::FieldName),
            (
                b"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
                Fault::ChunkLineTooLong,
            ),
        ] {
            assert_eq!(
                fault(&body(bad)),
                want,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = Scanner::new(LIMITS);
        let stop = s.scan(&body(b"5 x")).unwrap_err();
        assert!(stop.in_body);
        assert_eq!(stop.at, body(b"5 ").len());
    }

    #[test]
    fn limits_are_exact() {
        // A request line of exactly the limit passes; one byte more is too long.
        let target = "/".repeat(LIMITS.line - "GET  HTTP/1.1".len());
        assert_eq!(ok(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()), 1);
        assert_eq!(
            fault(format!("GET {target}/ HTTP/1.1\r\n\r\n").as_bytes()),
            Fault::RequestLineTooLong
        );
        let value = "v".repeat(LIMITS.field_size - "A: ".len());
        assert_eq!(
            ok(format!("GET / HTTP/1.1\r\nA: {value}\r\n\r\n").as_bytes()),
            1
        );
        assert_eq!(
            fault(format!("GET / HTTP/1.1\r\nA: {value}v\r\n\r\n").as_bytes()),
            Fault::FieldTooLarge
        );
        let fields = "A: 1\r\n".repeat(LIMITS.fields);
        assert_eq!(ok(format!("GET / HTTP/1.1\r\n{fields}\r\n").as_bytes()), 1);
        assert_eq!(
            fault(format!("GET / HTTP/1.1\r\n{fields}B: 2\r\n\r\n").as_bytes()),
            Fault::TooManyFields
        );
        let stop = Scanner::new(LIMITS)
            .scan(format!("GET / HTTP/1.1\r\n{fields}B: 2\r\n\r\n").as_bytes())
            .unwrap_err();
        assert!(!stop.in_body);
    }

    #[test]
    fn a_head_is_capped_in_all_at_hyper_buffer_size() {
        let roomy = Limits {
            line: 8190,
            fields: 1000,
            field_size: 8190,
        };
        let field = format!("X: {}\r\n", "v".repeat(8000));
        let fits = (MAX_HEAD_BYTES - 100) / field.len();
        let head = |n: usize| format!("GET / HTTP/1.1\r\n{}\r\n", field.repeat(n)).into_bytes();
        let mut scanner = Scanner::new(roomy);
        assert_eq!(scanner.scan(&head(fits)), Ok(()));
        assert_eq!(scanner.heads(), 1);
        let stop = Scanner::new(roomy).scan(&head(fits + 1)).unwrap_err();
        assert_eq!((stop.fault, stop.in_body), (Fault::HeadTooLarge, false));
        // Empty lines before a request line count too.
        let stop = Scanner::new(roomy)
            .scan(&b"\r\n".repeat(MAX_HEAD_BYTES))
            .unwrap_err();
        assert_eq!(stop.fault, Fault::HeadTooLarge);
    }

    #[test]
    fn targets_with_bytes_to_escape_are_kept_as_sent() {
        let mut s = Scanner::new(LIMITS);
        let input = b"GET /a HTTP/1.1\r\n\r\nGET /\xc3\xa9?q=\"<`>\"#f<\xe9> HTTP/1.1\r\n\r\n";
        s.scan(input).unwrap();
        let second = input.iter().position(|&b| b == 0xc3).unwrap();
        let escaped: Vec<u8> = s.escapes().iter().map(|&at| input[at]).collect();
        assert_eq!(escaped, b"\xc3\xa9\"<`>\"<\xe9>");
        assert_eq!(s.escapes()[0], second);
        assert_eq!(
            s.take_raw_targets(),
            vec![(1, Bytes::from_static(b"/\xc3\xa9?q=\"<`>\""))]
        );
        assert!(s.take_raw_targets().is_empty());
        // A target split over reads is kept whole; offsets are per read.
        let mut s = Scanner::new(LIMITS);
        s.scan(b"GET /ab").unwrap();
        assert!(s.escapes().is_empty());
        s.scan(b"c<d HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(s.escapes(), [1]);
        assert_eq!(
            s.take_raw_targets(),
            vec![(0, Bytes::from_static(b"/abc<d"))]
        );
    }
}
