//! The admin bind (`admin:` in YAML, `--admin` on the command line; off unless set): `/metrics`
//! for Prometheus, `/healthz` (the gateway is alive and answering) and `/readyz` (every app has
//! a worker in rotation, and the gateway is not stopping), for load balancers and orchestrators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderValue, StatusCode};

use crate::app::AppState;
use crate::metrics::{AppGauges, Metrics};

/// What the admin endpoints read: the metrics and the generation of apps serving now.
pub(crate) struct Admin {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) apps: ArcSwap<Vec<Arc<AppState>>>,
    /// Set when a stop begins: `/readyz` fails so load balancers move on first.
    pub(crate) stopping: AtomicBool,
}

impl Admin {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Admin {
        Admin {
            metrics,
            apps: ArcSwap::from_pointee(Vec::new()),
            stopping: AtomicBool::new(false),
        }
    }
}

pub(crate) fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin)
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let apps = admin.apps.load();
    let gauges: Vec<AppGauges<'_>> = apps
        .iter()
        .map(|app| AppGauges {
            name: &app.config.name,
            alive: app.workers.alive_count(),
            threads: app.config.threads,
            busy: app.busy.load(Ordering::Relaxed),
        })
        .collect();
    let text = admin.metrics.render(&gauges);
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Arc<Admin>>) -> (StatusCode, String) {
    if admin.stopping.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
    }
    let apps = admin.apps.load();
    let waiting: Vec<&str> = apps
        .iter()
        .filter(|app| app.workers.alive_count() == 0)
        .map(|app| app.config.name.as_str())
        .collect();
    if apps.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
    } else if waiting.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no worker ready: {}\n", waiting.join(", ")),
        )
    }
}
