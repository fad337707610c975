//! The context a request carries through the gateway: its id, who the client really is (after
//! believing trusted proxies), and the times its access-log line is made of. An [`Observation`]
//! sets it up before anything else sees the request, puts the id on the response, and, when
//! the response body is done (sent, cut off or abandoned), counts the request in the app's
//! metrics and writes its access-log line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use sluice_proto::Scheme;

use crate::access_log::{self, AccessRecord};
use crate::app::AppState;
use crate::config::AccessLog;
use crate::edge::forwarded;
use crate::edge::framing::request_target;
use crate::metrics::AppMetrics;

/// What the gateway knows about the client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// `None` on a Unix socket, whose peers have no address.
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) local: Option<SocketAddr>,
    /// The connection came over TLS.
    pub(crate) tls: bool,
}

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming request id that is reused.
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Set once per request by [`Observation::begin`]; the forwarder reads it from the request's extensions.
pub(crate) struct RequestContext {
    pub(crate) id: HeaderValue,
    /// The client as the outermost trusted proxy saw it, else the peer (none on a Unix socket).
    pub(crate) client: Option<SocketAddr>,
    pub(crate) scheme: Scheme,
    /// The host the outermost trusted proxy was asked for; the app sees it as `HTTP_HOST`.
    /// The request's own Host header is left as it came, for the strict checks.
    pub(crate) host: Option<HeaderValue>,
    pub(crate) timing: Timing,
}

impl RequestContext {
    pub(crate) fn id_str(&self) -> &str {
        // Only ever built from visible ASCII (see `sane_request_id` and `generate_request_id`).
        self.id.to_str().unwrap_or_default()
    }
}

/// Times the forwarder records for the log; unset until the request reaches that point.
#[derive(Default)]
pub(crate) struct Timing {
    queued_us: AtomicU64,
    python_us: AtomicU64,
}

const UNSET: u64 = 0;

impl Timing {
    /// How long the request waited for a free Python thread.
    pub(crate) fn set_queued(&self, waited: Duration) {
        self.queued_us.store(as_us(waited), Ordering::Relaxed);
    }

    /// From handing the request to Python until the end of its response.
    pub(crate) fn set_python(&self, took: Duration) {
        self.python_us.store(as_us(took), Ordering::Relaxed);
    }

    pub(crate) fn queued(&self) -> Option<Duration> {
        read_us(&self.queued_us)
    }

    pub(crate) fn python(&self) -> Option<Duration> {
        read_us(&self.python_us)
    }
}

/// Stored plus one, so that zero means "never reached".
fn as_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1) + 1
}

fn read_us(cell: &AtomicU64) -> Option<Duration> {
    match cell.load(Ordering::Relaxed) {
        UNSET => None,
        n => Some(Duration::from_micros(n - 1)),
    }
}

/// An incoming id is reused when it is short and made of characters that cannot break a log
/// line or a header (UUIDs, hex, base64, `host-123` style ids all qualify).
fn sane_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_BYTES
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(&b))
}

/// 16 hex digits: a per-process random prefix and a counter, unique without coordination.
fn generate_request_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish() as u32
    });
    let id = format!(
        "{prefix:08x}{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed) as u32
    );
    HeaderValue::from_str(&id).expect("hex is a valid header value")
}

/// A request being observed: made by [`Observation::begin`] before anything else looks at the
/// request, finished with its response.
pub(crate) struct Observation {
    started: Instant,
    id: HeaderValue,
    context: Arc<RequestContext>,
    metrics: Arc<AppMetrics>,
    access: Option<AccessRecord>,
    /// Dropped with the body, or with this if the client leaves before there is a response.
    in_flight: InFlight,
}

impl Observation {
    /// Gives the request its context (in its extensions) and starts counting it.
    pub(crate) fn begin(app: &AppState, request: &mut Request) -> Observation {
        let started = Instant::now();
        let info = *request
            .extensions()
            .get::<ConnInfo>()
            .expect("the server inserts ConnInfo");
        let edge = &app.config.edge;

        let id = match request.headers().get(X_REQUEST_ID) {
            Some(value) if sane_request_id(value) => value.clone(),
            _ => {
                let id = generate_request_id();
                // The app sees the id it will be logged under, never an insane one.
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let forwarded = forwarded::resolve(info.peer, request.headers(), &edge.forwarded_allow_ips);
        let context = Arc::new(RequestContext {
            id: id.clone(),
            client: forwarded.client.or(info.peer),
            scheme: forwarded.scheme.unwrap_or(if info.tls {
                Scheme::Https
            } else {
                Scheme::Http
            }),
            host: forwarded.host,
            timing: Timing::default(),
        });
        request.extensions_mut().insert(context.clone());

        let access = (edge.access_log != AccessLog::Off).then(|| AccessRecord {
            format: edge.access_log,
            app: app.config.name.clone(),
            method: request.method().clone(),
            target: request_target(request.extensions(), request.uri()).to_vec(),
            version: request.version(),
            tls: info.tls,
            referer: request.headers().get(http::header::REFERER).cloned(),
            user_agent: request.headers().get(http::header::USER_AGENT).cloned(),
            peer: info.peer,
        });
        let metrics = app.metrics.clone();
        metrics.received(request.version(), info.tls);
        Observation {
            started,
            id,
            context,
            in_flight: InFlight::new(&metrics),
            metrics,
            access,
        }
    }

    /// Puts the id on the response and has its body record the request when done.
    pub(crate) fn finish(self, mut response: Response) -> Response {
        response.headers_mut().insert(X_REQUEST_ID, self.id);
        let status = response.status().as_u16();
        response.map(|inner| {
            Body::new(ObservedBody {
                inner,
                bytes: 0,
                done: Some(Done {
                    started: self.started,
                    context: self.context,
                    status,
                    metrics: self.metrics,
                    access: self.access,
                    _in_flight: self.in_flight,
                }),
            })
        })
    }
}

/// A response body that counts what it yields and writes the access-log line when dropped,
/// which is when hyper is done with it: sent in full, cut off, or abandoned by the client.
struct ObservedBody {
    inner: Body,
    bytes: u64,
    done: Option<Done>,
}

/// What is recorded when the body is done.
struct Done {
    started: Instant,
    context: Arc<RequestContext>,
    status: u16,
    metrics: Arc<AppMetrics>,
    access: Option<AccessRecord>,
    _in_flight: InFlight,
}

/// Counts a request in `requests_in_flight` for as long as it lives.
struct InFlight(Arc<AppMetrics>);

impl InFlight {
    fn new(metrics: &Arc<AppMetrics>) -> InFlight {
        metrics.in_flight.inc();
        InFlight(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        let Some(done) = self.done.take() else { return };
        let total = done.started.elapsed();
        let timing = &done.context.timing;
        done.metrics.observe(done.status, total, timing.queued());
        if let Some(access) = &done.access {
            let outcome = access_log::Outcome {
                request_id: done.context.id_str(),
                client: done.context.client,
                queued: timing.queued(),
                python: timing.python(),
                status: done.status,
                bytes: self.bytes,
                total,
            };
            access_log::write(access, &outcome);
        }
    }
}
