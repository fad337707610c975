//! The gateway's metrics, per app, in one registry (prometheus-client), rendered by the admin
//! bind's `/metrics` in the OpenMetrics text format that Prometheus scrapes.
//!
//! Counters and histograms are updated as requests finish and keep counting across reloads (they
//! are keyed by the app's name, not its generation). Gauges that describe the current state of
//! the workers (alive, busy and idle threads) are read from the live apps at scrape time, so they
//! can never drift from the truth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the duration histograms, in seconds: 1 ms to 60 s.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    app: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    app: String,
    protocol: String,
    tls: String,
}

/// The protocols requests are counted by, in the order of [`AppMetrics::protocols`].
const PROTOCOLS: [&str; 3] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    app: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabel {
    app: String,
    state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// Why a worker was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartReason {
    /// It exited or was killed by something other than sluice.
    Crash,
    /// sluice killed it: a request ran past `timeout`.
    Timeout,
    MaxRequests,
    MaxRss,
    WorkerLifetime,
}

impl RestartReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Timeout => "timeout",
            RestartReason::MaxRequests => "max_requests",
            RestartReason::MaxRss => "max_rss",
            RestartReason::WorkerLifetime => "worker_lifetime",
        }
    }
}

/// Every metric the gateway keeps.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<ClassLabel, Counter>,
    protocols: Family<ProtocolLabel, Counter>,
    duration: HistogramFamily<AppLabel>,
    queue_wait: HistogramFamily<AppLabel>,
    queued_behind: Family<AppLabel, Counter>,
    in_flight: Family<AppLabel, Gauge>,
    restarts: Family<ReasonLabel, Counter>,
    workers_alive: Family<AppLabel, Gauge>,
    threads: Family<ThreadLabel, Gauge>,
    /// Serialises scrapes: the scrape-time gauges are cleared and refilled for each.
    scrape: Mutex<()>,
}

/// One app's handles into [`Metrics`], fetched once so requests never look labels up.
pub(crate) struct AppMetrics {
    name: String,
    /// By status class: 1xx … 5xx.
    requests: [Counter; 5],
    /// Requests received, by protocol ([`PROTOCOLS`]) and then plain or TLS.
    protocols: [[Counter; 2]; 3],
    duration: Histogram,
    queue_wait: Histogram,
    /// Requests sent behind another on a busy worker connection (see `pool::lease`).
    pub(crate) queued_behind: Counter,
    pub(crate) in_flight: Gauge,
    restarts: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sluice");
        let requests = Family::<ClassLabel, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by app and status class (1xx to 5xx)",
            requests.clone(),
        );
        let protocols = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "requests_received",
            "Requests received, by app, protocol (HTTP/1.0, HTTP/1.1, HTTP/2.0) and TLS (true, false)",
            protocols.clone(),
        );
        let duration: HistogramFamily<AppLabel> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the end of the response body",
            duration.clone(),
        );
        let queue_wait: HistogramFamily<AppLabel> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "queue_wait_seconds",
            "Time a request waited for a free Python thread",
            queue_wait.clone(),
        );
        let queued_behind = Family::<AppLabel, Counter>::default();
        registry.register(
            "requests_queued_behind",
            "Requests sent to a busy Python thread behind the request it was answering",
            queued_behind.clone(),
        );
        let in_flight = Family::<AppLabel, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "Requests received and not yet fully answered",
            in_flight.clone(),
        );
        let restarts = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "worker_restarts",
            "Workers replaced, by reason (crash, timeout, max_requests, max_rss, worker_lifetime)",
            restarts.clone(),
        );
        let workers_alive = Family::<AppLabel, Gauge>::default();
        registry.register(
            "workers_alive",
            "Worker processes in rotation",
            workers_alive.clone(),
        );
        let threads = Family::<ThreadLabel, Gauge>::default();
        registry.register(
            "python_threads",
            "Python threads of the workers in rotation, busy with a request or idle",
            threads.clone(),
        );
        Metrics {
            registry,
            requests,
            protocols,
            duration,
            queue_wait,
            queued_behind,
            in_flight,
            restarts,
            workers_alive,
            threads,
            scrape: Mutex::new(()),
        }
    }

    pub(crate) fn for_app(&self, name: &str) -> Arc<AppMetrics> {
        let app = AppLabel { app: name.into() };
        let class = |class: &str| {
            self.requests.get_or_create_owned(&ClassLabel {
                app: name.into(),
                class: class.into(),
            })
        };
        let protocol = |protocol: &str, tls: bool| {
            self.protocols.get_or_create_owned(&ProtocolLabel {
                app: name.into(),
                protocol: protocol.into(),
                tls: tls.to_string(),
            })
        };
        let protocols = PROTOCOLS.map(|p| [protocol(p, false), protocol(p, true)]);
        Arc::new(AppMetrics {
            name: name.into(),
            protocols,
            requests: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self.duration.get_or_create_owned(&app),
            queue_wait: self.queue_wait.get_or_create_owned(&app),
            queued_behind: self.queued_behind.get_or_create_owned(&app),
            in_flight: self.in_flight.get_or_create_owned(&app),
            restarts: self.restarts.clone(),
        })
    }

    /// The text exposition, with the worker gauges set from `apps` (the generation serving now).
    pub(crate) fn render(&self, apps: &[AppGauges<'_>]) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.workers_alive.clear();
        self.threads.clear();
        for app in apps {
            let name = app.name.to_owned();
            let total = app.alive * app.threads;
            let busy = app.busy.min(total);
            self.workers_alive
                .get_or_create(&AppLabel { app: name.clone() })
                .set(app.alive as i64);
            for (state, value) in [("busy", busy), ("idle", total - busy)] {
                self.threads
                    .get_or_create(&ThreadLabel {
                        app: name.clone(),
                        state: state.into(),
                    })
                    .set(value as i64);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// What the worker gauges of one app show at a scrape.
pub(crate) struct AppGauges<'a> {
    pub(crate) name: &'a str,
    /// Workers in rotation.
    pub(crate) alive: usize,
    /// Threads per worker.
    pub(crate) threads: usize,
    /// Requests in Python now.
    pub(crate) busy: usize,
}

impl AppMetrics {
    /// A finished request: its status, its whole time, and its wait for a thread if it got
    /// that far.
    /// A request has arrived.
    pub(crate) fn received(&self, version: http::Version, tls: bool) {
        let protocol = match version {
            http::Version::HTTP_09 | http::Version::HTTP_10 => 0,
            http::Version::HTTP_11 => 1,
            _ => 2,
        };
        self.protocols[protocol][usize::from(tls)].inc();
    }

    pub(crate) fn observe(&self, status: u16, total: Duration, queued: Option<Duration>) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(total.as_secs_f64());
        if let Some(queued) = queued {
            self.queue_wait.observe(queued.as_secs_f64());
        }
    }

    pub(crate) fn restarted(&self, reason: RestartReason) {
        self.restarts
            .get_or_create(&ReasonLabel {
                app: self.name.clone(),
                reason: reason.as_str().into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class_and_timed() {
        let metrics = Metrics::new();
        let shop = metrics.for_app("shop");
        shop.observe(
            200,
            Duration::from_millis(3),
            Some(Duration::from_micros(10)),
        );
        shop.observe(204, Duration::from_millis(30), None);
        shop.observe(503, Duration::from_secs(2), Some(Duration::from_secs(1)));
        shop.restarted(RestartReason::MaxRequests);
        // Another generation of the same app shares the counters.
        metrics.for_app("shop").observe(404, Duration::ZERO, None);
        shop.received(http::Version::HTTP_11, true);
        shop.received(http::Version::HTTP_2, false);
        shop.received(http::Version::HTTP_2, false);
        let text = metrics.render(&[]);
        for line in [
            "sluice_requests_total{app=\"shop\",class=\"2xx\"} 2",
            "sluice_requests_total{app=\"shop\",class=\"4xx\"} 1",
            "sluice_requests_total{app=\"shop\",class=\"5xx\"} 1",
            "sluice_requests_total{app=\"shop\",class=\"1xx\"} 0",
            "sluice_request_duration_seconds_count{app=\"shop\"} 4",
            "sluice_request_duration_seconds_bucket{le=\"0.005\",app=\"shop\"} 2",
            "sluice_queue_wait_seconds_count{app=\"shop\"} 2",
            "sluice_worker_restarts_total{app=\"shop\",reason=\"max_requests\"} 1",
            "sluice_requests_in_flight{app=\"shop\"} 0",
            "sluice_requests_queued_behind_total{app=\"shop\"} 0",
            "sluice_requests_received_total{app=\"shop\",protocol=\"HTTP/1.1\",tls=\"true\"} 1",
            "sluice_requests_received_total{app=\"shop\",protocol=\"HTTP/1.1\",tls=\"false\"} 0",
            "sluice_requests_received_total{app=\"shop\",protocol=\"HTTP/2.0\",tls=\"false\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
