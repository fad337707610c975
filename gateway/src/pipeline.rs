//! What every request on an app bind goes through ([`handle`]), in order: observed (its id,
//! the real client, metrics and the access log), screened by the strict checks, then answered
//! by a static file or by Python, compressed when that is on.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use crate::app::{AppState, Route};
use crate::context::Observation;
use crate::edge::{compress, static_files, strict};
use crate::forward::forward;

/// Everything an app bind does with a request, in order: observe it (id, real client, metrics
/// and access log, for refusals and static files too), refuse what the strict checks refuse,
/// then answer it (a static file, or Python), compressed when that is on and it qualifies.
///
/// Plain function calls rather than a stack of tower layers: each layer boxed and cloned on
/// every request, which measurably cost throughput on small requests.
pub(crate) async fn handle(route: Arc<Route>, mut request: Request) -> Response {
    // The edge settings of the generation serving now, looked up once; the forwarder looks
    // again after the body, which may have taken long enough for a reload.
    let app = route.load_full();
    // Checked first: the access log wants the target as sent, which the strict checks attach.
    let checked = strict::enforce(&mut request, &app.config.edge);
    let observation = Observation::begin(&app, &mut request);
    let response = match checked {
        Err(refusal) => refusal.into_response(),
        Ok(()) => match compress::wanted(&app.config.edge, request.headers()) {
            None => answer(&route, &app, request).await,
            Some(min_size) => {
                let inner = tower::service_fn(move |request: Request| {
                    let (route, app) = (route.clone(), app.clone());
                    async move { Ok::<_, Infallible>(answer(&route, &app, request).await) }
                });
                compress::compress(min_size, request, inner).await
            }
        },
    };
    observation.finish(response)
}

/// A static file when the path is under a static prefix, else the app's answer.
async fn answer(route: &Route, app: &AppState, request: Request) -> Response {
    match static_files::mount(&app.config.edge, &request) {
        Some(mount) => mount.serve(request).await,
        None => forward(route, request).await,
    }
}
