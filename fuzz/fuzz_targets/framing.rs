//! Fuzzes the gateway's HTTP/1.1 framing scanner (`gateway/src/edge/framing/scanner.rs`):
//! whatever the bytes and however they are split into reads, it never panics, reaches the same
//! verdict, and never lets a line, a head or a field count past its limits.
//!
//! Input: four bytes that pick the limits and how the stream is split, then the stream:
//! - `[0]`: request-line limit, 1 + the byte;
//! - `[1]`: field-count limit, 1 + the byte mod 16;
//! - `[2]`: field-line limit (also chunk-size lines), 1 + the byte;
//! - `[3]`: seed for the lengths of the reads in the third feeding (see [`Verdict::pieces`]).
//!
//! A seed file such as `~~~~GET / HTTP/1.1\r\n\r\n` gives limits 127, 15, 127.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_fuzz::read_lengths;
use sluice_gateway::fuzzing::{Fault, Limits, Scanner, MAX_HEAD_BYTES};

fuzz_target!(|data: &[u8]| {
    let [line, fields, field_size, seed, ref stream @ ..] = *data else {
        return;
    };
    let limits = Limits {
        line: 1 + usize::from(line),
        fields: 1 + usize::from(fields % 16),
        field_size: 1 + usize::from(field_size),
    };
    let whole = Verdict::pieces(limits, stream, std::iter::once(stream.len()));
    let bytewise = Verdict::pieces(limits, stream, std::iter::repeat(1));
    assert_eq!(bytewise, whole, "one byte per read");
    let split = Verdict::pieces(limits, stream, read_lengths(seed));
    assert_eq!(split, whole, "reads of varying length (seed {seed})");
    let accepted = match whole.stop {
        Some((at, _, _)) => &stream[..at],
        None => stream,
    };
    let heads = check_limits(accepted, limits);
    assert_eq!(
        heads, whole.heads,
        "heads counted by the scanner and by the model"
    );
});

/// Everything the scanner tells its caller, with offsets from the start of the stream.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    /// Where the first fault is, which one, and whether it is in a body.
    stop: Option<(usize, Fault, bool)>,
    heads: u64,
    escapes: Vec<usize>,
    raw_targets: Vec<(u64, Vec<u8>)>,
}

impl Verdict {
    /// Feeds `stream` to a new scanner in reads of the given lengths (the last one cut to what
    /// is left), stopping at the first fault, as the gateway does.
    fn pieces(limits: Limits, stream: &[u8], lengths: impl Iterator<Item = usize>) -> Verdict {
        let mut scanner = Scanner::new(limits);
        let mut verdict = Verdict {
            stop: None,
            heads: 0,
            escapes: Vec::new(),
            raw_targets: Vec::new(),
        };
        let mut offset = 0;
        for length in lengths {
            if offset == stream.len() {
                break;
            }
            let piece = &stream[offset..(offset + length).min(stream.len())];
            let scanned = scanner.scan(piece);
            verdict
                .escapes
                .extend(scanner.escapes().iter().map(|at| offset + at));
            let targets = scanner.take_raw_targets().into_iter();
            verdict
                .raw_targets
                .extend(targets.map(|(head, target)| (head, target.to_vec())));
            if let Err(stop) = scanned {
                assert!(stop.at < piece.len(), "a stop past its read: {stop:?}");
                verdict.stop = Some((offset + stop.at, stop.fault, stop.in_body));
                break;
            }
            offset += piece.len();
        }
        verdict.heads = scanner.heads();
        verdict
    }
}

/// Walks the bytes the scanner accepted as a plain model of HTTP/1.1 messages (which is enough,
/// since the scanner accepted them, so every line ends in CRLF and every field is well formed),
/// checks every line, head and field count against the limits, including a line cut off by
/// the end of the bytes, and returns how many heads it saw end.
fn check_limits(bytes: &[u8], limits: Limits) -> u64 {
    let mut model = Model {
        bytes,
        at: 0,
        limits,
    };
    let mut heads = 0;
    while model.at < bytes.len() {
        let Some(framing) = model.head() else {
            break;
        };
        heads += 1;
        let ended = match framing {
            BodyFraming::Length(n) => model.skip(n),
            BodyFraming::Chunked => model.chunked_body(),
        };
        if !ended {
            break;
        }
    }
    heads
}

enum BodyFraming {
    Length(u64),
    Chunked,
}

struct Model<'a> {
    bytes: &'a [u8],
    at: usize,
    limits: Limits,
}

impl<'a> Model<'a> {
    /// The next line, without its CRLF, and moves past it; `None` (after checking what there is
    /// of it against `limit`) when the bytes end inside it.
    fn line(&mut self, limit: usize, what: &str) -> Option<&'a [u8]> {
        let bytes = self.bytes;
        let rest = &bytes[self.at..];
        let end = rest.windows(2).position(|w| w == b"\r\n");
        let line = &rest[..end.unwrap_or(rest.len())];
        // A CR at the very end waits for its LF and is not part of the line.
        let len = line.len() - usize::from(end.is_none() && line.ends_with(b"\r"));
        assert!(
            len <= limit,
            "a {what} of {len} bytes over its limit of {limit}"
        );
        self.at += line.len() + 2;
        end.map(|_| line)
    }

    /// Skips `n` body bytes; false if the bytes end first.
    fn skip(&mut self, n: u64) -> bool {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return false;
        }
        self.at += n as usize;
        true
    }

    /// One head (and the empty lines before it); its framing, or `None` if the bytes end first.
    fn head(&mut self) -> Option<BodyFraming> {
        let start = self.at;
        while self.bytes[self.at..].starts_with(b"\r\n") {
            self.at += 2;
        }
        self.line(self.limits.line, "request line")?;
        let mut framing = BodyFraming::Length(0);
        let mut fields = 0;
        loop {
            let line = self.line(self.limits.field_size, "field line")?;
            if line.is_empty() {
                break;
            }
            fields += 1;
            assert!(fields <= self.limits.fields, "{fields} fields");
            let colon = line.iter().position(|&b| b == b':').expect("a colon");
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                let digits = std::str::from_utf8(value).expect("digits");
                framing = BodyFraming::Length(digits.parse().expect("a length"));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                framing = BodyFraming::Chunked;
            }
        }
        // Leading empty lines count towards the head, as they take room in hyper's buffer.
        assert!(self.at - start <= MAX_HEAD_BYTES, "a head over the cap");
        Some(framing)
    }

    /// Chunks, the last chunk and the trailer section; false if the bytes end first.
    fn chunked_body(&mut self) -> bool {
        loop {
            let Some(line) = self.line(self.limits.field_size, "chunk-size line") else {
                return false;
            };
            let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let hex = std::str::from_utf8(&line[..digits]).expect("hex digits");
            let size = u64::from_str_radix(hex, 16).expect("a chunk size");
            if size == 0 {
                return self.trailers();
            }
            if !self.skip(size) {
                return false;
            }
            match self.bytes.get(self.at..self.at + 2) {
                Some([b'\r', b'\n']) => self.at += 2,
                Some(other) => panic!("chunk data followed by {other:?}"),
                None => return false,
            }
        }
    }

    fn trailers(&mut self) -> bool {
        let mut fields = 0;
        loop {
            let Some(line) = self.line(self.limits.field_size, "trailer line") else {
                return false;
            };
            if line.is_empty() {
                return true;
            }
            fields += 1;
            assert!(fields <= self.limits.fields, "{fields} trailer fields");
        }
    }
}
