//! Slow and hostile clients: many connections trickling request heads or bodies a byte at a
//! time, all driven from one thread with non-blocking sockets (so a thousand of them cost the
//! test one thread, not a thousand), each reconnecting when the server cuts it off, as an
//! attacker would. Plus the open-file bookkeeping such tests need.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a trickling connection begins; the rest of it is one byte at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrickleKind {
    /// A request head that never ends: `GET target`, then a header value growing forever.
    Head,
    /// A whole head announcing a 1 MB body, then the body.
    Body,
}

impl TrickleKind {
    fn prefix(self, target: &str) -> String {
        match self {
            TrickleKind::Head => format!("GET {target} HTTP/1.1\r\nHost: trickle\r\nX-Trickle: "),
            TrickleKind::Body => format!(
                "POST {target} HTTP/1.1\r\nHost: trickle\r\nContent-Length: 1000000\r\n\r\n"
            ),
        }
    }

    fn byte(self) -> u8 {
        match self {
            TrickleKind::Head => b'a',
            TrickleKind::Body => b'x',
        }
    }
}

/// A group of trickling connections to start.
#[derive(Debug, Clone)]
pub struct TrickleSpec {
    pub addr: SocketAddr,
    pub kind: TrickleKind,
    pub connections: usize,
    /// The path in their request line.
    pub target: String,
}

/// What the trickling connections met, in all.
#[derive(Debug, Clone, Default)]
pub struct TrickleReport {
    /// Connections opened, reconnections included.
    pub connects: u64,
    /// Bytes trickled after the prefixes.
    pub bytes: u64,
    /// Connections cut off by the server (closed or reset), trickling heads and bodies.
    pub cut_heads: u64,
    pub cut_bodies: u64,
    /// Status lines the server sent before cutting a connection off (`HTTP/1.1 408 ...` → n).
    pub answers: std::collections::BTreeMap<String, u64>,
}

/// Trickling connections being driven. Dropping it stops them (without waiting).
pub struct Trickle {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    wanted: usize,
    driver: Option<JoinHandle<Result<TrickleReport, String>>>,
}

/// How often the driver thread wakes; each wake pokes a slice of the connections so the bytes
/// are spread out rather than sent in bursts.
const TICK: Duration = Duration::from_millis(50);

impl Trickle {
    /// Opens every connection of `specs` (in the driver thread), then sends each one byte every
    /// `interval`, reconnecting those the server cuts off, until stopped.
    pub fn start(specs: Vec<TrickleSpec>, interval: Duration) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let wanted = specs.iter().map(|s| s.connections).sum();
        let driver = {
            let (stop, opened) = (stop.clone(), opened.clone());
            std::thread::Builder::new()
                .name("trickle".into())
                .spawn(move || drive(specs, interval, &stop, &opened))
                .expect("spawn the trickle driver")
        };
        Trickle {
            stop,
            opened,
            wanted,
            driver: Some(driver),
        }
    }

    /// Waits until every connection has been opened once; panics with the driver's error (say,
    /// out of file descriptors) or after `deadline`.
    pub fn wait_open(&mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.opened.load(Ordering::Acquire) < self.wanted {
            if self.driver.as_ref().is_some_and(JoinHandle::is_finished) {
                let outcome = self.driver.take().expect("driver").join();
                panic!("the trickle driver stopped while opening connections: {outcome:?}");
            }
            assert!(
                Instant::now() < end,
                "only {} of {} trickling connections open after {deadline:?}",
                self.opened.load(Ordering::Acquire),
                self.wanted
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes every connection and reports what they met; panics if the driver failed.
    pub fn stop(mut self) -> TrickleReport {
        self.stop.store(true, Ordering::Release);
        let driver = self.driver.take().expect("driver");
        match driver.join().expect("the trickle driver panicked") {
            Ok(report) => report,
            Err(err) => panic!("the trickle driver failed: {err}"),
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Trickler {
    stream: TcpStream,
    spec: usize,
}

enum Poke {
    Alive,
    /// The server closed or reset the connection, after sending this status line if any.
    Cut(Option<String>),
}

fn open(spec: &TrickleSpec, index: usize) -> io::Result<Trickler> {
    let mut stream = TcpStream::connect_timeout(&spec.addr, Duration::from_secs(20))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    stream.write_all(spec.kind.prefix(&spec.target).as_bytes())?;
    stream.set_nonblocking(true)?;
    Ok(Trickler {
        stream,
        spec: index,
    })
}

impl Trickler {
    fn poke(&mut self, byte: u8) -> Poke {
        let mut buf = [0u8; 512];
        match self.stream.read(&mut buf) {
            Ok(0) => return Poke::Cut(None),
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let line = text.lines().next().unwrap_or_default().to_string();
                return Poke::Cut(Some(line));
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Poke::Cut(None),
        }
        match self.stream.write(&[byte]) {
            Ok(_) => Poke::Alive,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Poke::Alive,
            Err(_) => Poke::Cut(None),
        }
    }
}

fn drive(
    specs: Vec<TrickleSpec>,
    interval: Duration,
    stop: &AtomicBool,
    opened: &AtomicUsize,
) -> Result<TrickleReport, String> {
    let mut report = TrickleReport::default();
    let mut conns: Vec<Option<Trickler>> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        for n in 0..spec.connections {
            if stop.load(Ordering::Acquire) {
                return Ok(report);
            }
            let conn = open(spec, index).map_err(|err| {
                format!(
                    "cannot open trickling connection {n} of {} to {}: {err}",
                    spec.connections, spec.addr
                )
            })?;
            conns.push(Some(conn));
            report.connects += 1;
            opened.fetch_add(1, Ordering::Release);
        }
    }
    let slices = (interval.as_millis() / TICK.as_millis()).max(1) as usize;
    let mut next = Instant::now();
    let mut tick = 0usize;
    while !stop.load(Ordering::Acquire) {
        for at in (tick % slices..conns.len()).step_by(slices) {
            let spec = match &mut conns[at] {
                Some(conn) => match conn.poke(specs[conn.spec].kind.byte()) {
                    Poke::Alive => {
                        report.bytes += 1;
                        continue;
                    }
                    Poke::Cut(answer) => {
                        if let Some(line) = answer {
                            *report.answers.entry(line).or_insert(0) += 1;
                        }
                        match specs[conn.spec].kind {
                            TrickleKind::Head => report.cut_heads += 1,
                            TrickleKind::Body => report.cut_bodies += 1,
                        }
                        conn.spec
                    }
                },
                // A reconnect failed on an earlier tick: try again. Which spec it belonged to
                // is kept by position.
                None => spec_of(&specs, at),
            };
            conns[at] = None;
            // A failed reconnect is left for a later tick (the server may be at its cap).
            if let Ok(conn) = open(&specs[spec], spec) {
                conns[at] = Some(conn);
                report.connects += 1;
            }
        }
        tick += 1;
        next += TICK;
        // Pacing, not waiting for a condition: the driver sends at a fixed rate.
        if let Some(pause) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
    }
    Ok(report)
}

/// The spec a connection belongs to, from its position (connections are laid out spec by spec).
fn spec_of(specs: &[TrickleSpec], mut at: usize) -> usize {
    for (index, spec) in specs.iter().enumerate() {
        if at < spec.connections {
            return index;
        }
        at -= spec.connections;
    }
    unreachable!("position past every spec")
}

/// Makes sure this process may hold `needed` open files, raising its soft limit towards the hard
/// one; panics, saying what to change, when the hard limit is too low.
pub fn ensure_open_file_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test holds about {needed} open files but the hard limit is {}: raise it \
         (`ulimit -Hn`, or LimitNOFILE= for a service) rather than scaling the test down",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: setrlimit only reads the struct we own.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(set, 0, "setrlimit: {}", io::Error::last_os_error());
}

/// How many files process `pid` has open (its entries in `/proc/PID/fd`).
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or_else(|err| panic!("reading /proc/{pid}/fd: {err}"))
}
