//! Steady load for the lifecycle tests: client threads, each with its own keep-alive connection,
//! looping requests until told to stop, and recording the outcome of every single request
//! (status and body, a cut-off body, or the transport error) so a test can count failures
//! instead of hoping there were none.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::{Conn, Request};
use crate::util::try_wait_for;

/// A request that gets no answer within this long counts as timed out (and the client moves on
/// to a new connection), so a stuck server shows up as counted failures, never as a hung test.
pub const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A client stops by itself after this long even if never told to, so nothing outlives a test
/// that panicked before stopping its load.
pub const MAX_LOAD_DURATION: Duration = Duration::from_secs(110);

/// And after this many requests.
pub const MAX_REQUESTS_PER_CLIENT: u64 = 1_000_000;

/// After a failed connect, pause this long before the next attempt (pacing, so a refusing
/// server does not turn the client into a busy loop).
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A complete response.
    Response { status: u16, body: String },
    /// The head arrived but the body was cut off before its end.
    CutOff { status: u16 },
    /// No response at all; a short description of the transport error.
    Error(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Response { status: 200, .. })
    }

    /// The body of a complete response.
    pub fn body(&self) -> Option<&str> {
        match self {
            Outcome::Response { body, .. } => Some(body),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response { status, .. } | Outcome::CutOff { status } => Some(*status),
            Outcome::Error(_) => None,
        }
    }

    /// A label to count outcomes by: `200`, `502`, `cut off 200`, `error: ...`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Response { status, .. } => status.to_string(),
            Outcome::CutOff { status } => format!("cut off {status}"),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
}

/// One request of one client.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: usize,
    /// When the request was about to be written (after connecting, for a fresh connection).
    pub sent: Instant,
    pub done: Instant,
    pub outcome: Outcome,
}

/// One client: where it sends and what.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub addr: SocketAddr,
    pub target: String,
}

/// The running load. Dropping it tells the clients to stop (without waiting for them).
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Vec<Record>>>,
    /// Complete 200 responses per client so far.
    served: Arc<Vec<AtomicU64>>,
    /// Every finished request, whatever its outcome.
    finished: Arc<AtomicU64>,
}

impl Load {
    /// `clients` clients, all sending `GET target` to `addr`.
    pub fn start(clients: usize, addr: SocketAddr, target: &str) -> Load {
        Load::start_mixed(
            (0..clients)
                .map(|_| ClientSpec {
                    addr,
                    target: target.to_string(),
                })
                .collect(),
        )
    }

    /// One client per spec.
    pub fn start_mixed(specs: Vec<ClientSpec>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(
            (0..specs.len())
                .map(|_| AtomicU64::new(0))
                .collect::<Vec<_>>(),
        );
        let finished = Arc::new(AtomicU64::new(0));
        let clients = specs
            .into_iter()
            .enumerate()
            .map(|(index, spec)| {
                let (stop, served, finished) = (stop.clone(), served.clone(), finished.clone());
                std::thread::Builder::new()
                    .name(format!("load-{index}"))
                    .spawn(move || run_client(index, spec, &stop, &served[index], &finished))
                    .expect("spawn a load client")
            })
            .collect();
        Load {
            stop,
            clients,
            served,
            finished,
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Requests finished so far (any outcome).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Wait until every client has had at least `n` complete 200 responses in all: the load
    /// is established on every connection. Panics after `deadline`.
    pub fn wait_all_served(&self, n: u64, deadline: Duration) {
        let ok = try_wait_for(deadline, || {
            self.served
                .iter()
                .all(|s| s.load(Ordering::Relaxed) >= n)
                .then_some(())
        });
        if ok.is_none() {
            let counts: Vec<u64> = self
                .served
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .collect();
            panic!("not every load client got {n} responses within {deadline:?}: {counts:?}");
        }
    }

    /// Wait until `n` more requests have finished (any outcome) than when called: the load is
    /// still flowing. Panics after `deadline`.
    pub fn wait_progress(&self, n: u64, deadline: Duration) {
        let from = self.finished();
        if try_wait_for(deadline, || (self.finished() >= from + n).then_some(())).is_none() {
            panic!(
                "the load made {} of {n} requests within {deadline:?}",
                self.finished() - from
            );
        }
    }

    /// Tell every client to stop and collect what they recorded. Each finishes the request it
    /// is in, which [`CLIENT_IO_TIMEOUT`] bounds; a client that is not back well after that
    /// hangs, and the test fails saying so.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + CLIENT_IO_TIMEOUT + Duration::from_secs(15);
        let mut records = Vec::new();
        for (index, client) in std::mem::take(&mut self.clients).into_iter().enumerate() {
            let back = try_wait_for(deadline.saturating_duration_since(Instant::now()), || {
                client.is_finished().then_some(())
            });
            assert!(
                back.is_some(),
                "load client {index} hangs: not back {:?} after being told to stop",
                CLIENT_IO_TIMEOUT + Duration::from_secs(15)
            );
            records.extend(client.join().expect("load client panicked"));
        }
        records.sort_by_key(|r| r.sent);
        Tally { records }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn describe(stage: &str, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("{stage}: timed out"),
        io::ErrorKind::ConnectionRefused => format!("{stage}: refused"),
        io::ErrorKind::UnexpectedEof => format!("{stage}: closed before a response"),
        kind => format!("{stage}: {kind:?}"),
    }
}

fn run_client(
    index: usize,
    spec: ClientSpec,
    stop: &AtomicBool,
    served: &AtomicU64,
    finished: &AtomicU64,
) -> Vec<Record> {
    let started = Instant::now();
    let request = Request::get(&spec.target);
    let mut records = Vec::new();
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < MAX_LOAD_DURATION
        && (records.len() as u64) < MAX_REQUESTS_PER_CLIENT
    {
        let sent;
        let outcome = match conn.as_mut() {
            Some(c) => {
                sent = Instant::now();
                exchange(c, &request)
            }
            None => match Conn::connect(spec.addr) {
                Ok(mut c) => {
                    c.set_read_timeout(CLIENT_IO_TIMEOUT)
                        .expect("set_read_timeout");
                    sent = Instant::now();
                    let outcome = exchange(&mut c, &request);
                    conn = Some(c);
                    outcome
                }
                Err(err) => {
                    sent = Instant::now();
                    Err(describe("connect", &err))
                }
            },
        };
        let done = Instant::now();
        let (outcome, reuse) = match outcome {
            Ok((outcome, reuse)) => (outcome, reuse),
            Err(err) => (Outcome::Error(err), false),
        };
        if !reuse {
            conn = None;
        }
        let failed_connect = matches!(&outcome, Outcome::Error(e) if e.starts_with("connect"));
        if outcome.is_ok() {
            served.fetch_add(1, Ordering::Relaxed);
        }
        finished.fetch_add(1, Ordering::Relaxed);
        records.push(Record {
            client: index,
            sent,
            done,
            outcome,
        });
        if failed_connect {
            std::thread::sleep(RECONNECT_PAUSE);
        }
    }
    records
}

/// One request on `conn`: the outcome and whether the connection may be reused.
fn exchange(conn: &mut Conn, request: &Request) -> Result<(Outcome, bool), String> {
    conn.send(request).map_err(|e| describe("send", &e))?;
    let resp = conn
        .read_response(&request.method)
        .map_err(|e| describe("read", &e))?;
    let status = resp.status();
    if resp.is_cut_off() {
        return Ok((Outcome::CutOff { status }, false));
    }
    let reuse = !resp.head.has_token("connection", "close");
    Ok((
        Outcome::Response {
            status,
            body: resp.text(),
        },
        reuse,
    ))
}

/// Everything the load recorded, in the order the requests were sent.
pub struct Tally {
    pub records: Vec<Record>,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.records.len()
    }

    /// Complete 200 responses.
    pub fn ok(&self) -> usize {
        self.records.iter().filter(|r| r.outcome.is_ok()).count()
    }

    /// Everything that was not a complete 200.
    pub fn failures(&self) -> Vec<&Record> {
        self.records.iter().filter(|r| !r.outcome.is_ok()).collect()
    }

    /// Outcome label → count (`200`, `502`, `error: read: closed before a response`, ...).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.records {
            *counts.entry(r.outcome.label()).or_insert(0) += 1;
        }
        counts
    }

    /// The first word of every 200 body → count (the lifecycle app answers `VERSION PID`).
    pub fn versions(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for r in self.records.iter().filter(|r| r.outcome.is_ok()) {
            let body = r.outcome.body().unwrap_or_default();
            let version = body.split_whitespace().next().unwrap_or_default();
            *counts.entry(version.to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// The distinct worker pids that answered (second word of every 200 body).
    pub fn pids(&self) -> std::collections::BTreeSet<u32> {
        self.records
            .iter()
            .filter(|r| r.outcome.is_ok())
            .filter_map(|r| r.outcome.body()?.split_whitespace().nth(1)?.parse().ok())
            .collect()
    }

    /// A one-line summary for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "{} requests: {:?}; versions {:?}; {} distinct pids",
            self.total(),
            self.counts(),
            self.versions(),
            self.pids().len()
        )
    }

    /// Assert that every request got a complete 200.
    pub fn assert_no_failures(&self, context: &str) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "{context}: {} of {} requests failed ({}); first failures: {:?}",
            failures.len(),
            self.total(),
            self.summary(),
            failures.iter().take(10).collect::<Vec<_>>()
        );
    }
}
