//! Response compression (gzip, br) for apps with `compress` on: tower-http's `Compression`,
//! applied per request with the current app's settings, to Python's responses and to static
//! files alike.
//!
//! What is compressed: text and structured-text types ([`is_compressible_type`]) of at least
//! `compress_min_size` bytes, or of unknown length (a streamed response), that carry no
//! `Content-Encoding`, no `Content-Range` and no `Cache-Control: no-transform`. A streamed body
//! is compressed as it flows: the encoder flushes whenever the app has nothing more for the
//! moment, so nothing waits for the end of the stream and memory stays bounded.
//!
//! What this module adds to tower-http: the content-type allowlist and size rule above; a
//! strong `ETag` turned weak on a body compressed here (the bytes are no longer the ones the
//! tag named; Django's GZipMiddleware and nginx do the same); and compression is only set up
//! for clients that accept gzip or br, because tower-http answers `406` to a client that
//! refuses every encoding including identity, and a gateway must not replace the app's status.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tower::ServiceExt;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::Compression;

use crate::config::EdgeConfig;

/// The minimum size to compress at, if this app compresses and this client accepts it.
pub(crate) fn wanted(edge: &EdgeConfig, headers: &HeaderMap) -> Option<u64> {
    (edge.compress && accepts_compression(headers)).then_some(edge.compress_min_size)
}

/// Runs `inner` (everything the app answers, static files included) and compresses its
/// response when it qualifies.
pub(crate) async fn compress<S>(min_size: u64, request: Request, inner: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send,
    S::Future: Send,
{
    // Remember which responses were encoded before they got here (precompressed static
    // siblings, an app's own gzip): their ETag is theirs to keep.
    let inner = tower::ServiceExt::map_response(inner, |mut response: Response| {
        if response.headers().contains_key(header::CONTENT_ENCODING) {
            response.extensions_mut().insert(EncodedUpstream);
        }
        response
    });
    let service = Compression::new(inner).compress_when(Compressible { min_size });
    let response = match service.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = response.into_parts();
    if parts.extensions.remove::<EncodedUpstream>().is_none()
        && parts.headers.contains_key(header::CONTENT_ENCODING)
    {
        weaken_etag(&mut parts.headers);
    }
    Response::from_parts(parts, Body::new(body))
}

#[derive(Clone, Copy)]
struct EncodedUpstream;

fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(weak) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, weak);
            }
        }
    }
}

/// Does `Accept-Encoding` give gzip or br a non-zero weight, by name or through `*`?
fn accepts_compression(headers: &HeaderMap) -> bool {
    let (mut named, mut wildcard) = (None::<bool>, None::<bool>);
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut fields = item.split(';').map(str::trim);
            let coding = fields.next().unwrap_or("");
            let accepted = fields
                .find_map(|param| param.strip_prefix("q=").or(param.strip_prefix("Q=")))
                .is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0));
            if ["gzip", "x-gzip", "br"]
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c))
            {
                named = Some(named.unwrap_or(false) || accepted);
            } else if coding == "*" {
                wildcard = Some(accepted);
            }
        }
    }
    named.or(wildcard).unwrap_or(false)
}

/// Media types worth compressing: text, and the structured text formats served as
/// `application/*` (JSON, JavaScript, XML, and their `+json` / `+xml` kin, SVG included).
/// Everything else (images, video, archives, fonts in woff/woff2, octet streams) is either
/// compressed already or unknown. `text/event-stream` is left alone: event streams are read
/// by clients that may not expect an encoded stream, and each event is tiny.
fn is_compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        "text" => subtype != "event-stream",
        "application" => {
            matches!(
                subtype,
                "json"
                    | "javascript"
                    | "x-javascript"
                    | "ecmascript"
                    | "xml"
                    | "wasm"
                    | "x-www-form-urlencoded"
                    | "graphql"
                    | "x-ndjson"
                    | "vnd.ms-fontobject"
            ) || subtype.ends_with("+json")
                || subtype.ends_with("+xml")
        }
        "image" => matches!(subtype, "svg+xml" | "x-icon" | "vnd.microsoft.icon" | "bmp"),
        "font" => matches!(subtype, "ttf" | "otf"),
        _ => false,
    }
}

/// The compression rule of one app (see the module docs).
#[derive(Clone, Copy)]
struct Compressible {
    min_size: u64,
}

impl Predicate for Compressible {
    fn should_compress<B: http_body::Body>(&self, response: &http::Response<B>) -> bool {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return false;
        }
        let headers = response.headers();
        // The declared length first: a HEAD response has an empty body but the GET's length.
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .or_else(|| response.body().size_hint().exact());
        size.is_none_or(|size| size >= self.min_size)
            && headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(is_compressible_type)
            && !headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
        accepts_compression(&headers)
    }

    #[test]
    fn accept_encoding_weights() {
        assert!(accept("gzip"));
        assert!(accept("gzip, deflate, br"));
        assert!(accept("br;q=0.5, identity"));
        assert!(accept("*"));
        assert!(accept("GZIP;Q=1"));
        assert!(accept("gzip;q=0, br"));
        assert!(!accept("identity"));
        assert!(!accept("deflate"));
        assert!(!accept("gzip;q=0"));
        assert!(!accept("gzip;q=0.000, br;q=0"));
        assert!(!accept("identity;q=0"));
        assert!(!accept("*;q=0"));
        // Named codings win over the wildcard.
        assert!(!accept("gzip;q=0, *"));
        assert!(accept("gzip, *;q=0"));
        assert!(!accept("gzip;q=x"));
        assert!(!accepts_compression(&HeaderMap::new()));
    }

    #[test]
    fn compressible_types() {
        for t in [
            "text/html; charset=utf-8",
            "text/css",
            "text/plain",
            "application/json",
            "Application/JSON",
            "application/javascript",
            "application/problem+json",
            "application/atom+xml",
            "image/svg+xml",
            "font/ttf",
        ] {
            assert!(is_compressible_type(t), "{t}");
        }
        for t in [
            "image/png",
            "image/jpeg",
            "application/octet-stream",
            "application/zip",
            "application/gzip",
            "font/woff2",
            "video/mp4",
            "text/event-stream",
            "",
            "nonsense",
        ] {
            assert!(!is_compressible_type(t), "{t}");
        }
    }

    #[test]
    fn the_rule() {
        let rule = Compressible { min_size: 1024 };
        let response = |status: u16, headers: &[(&'static str, &'static str)], body: Body| {
            let mut response = http::Response::new(body);
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(*name, HeaderValue::from_static(value));
            }
            response
        };
        let json = ("content-type", "application/json");
        let big = || Body::from(vec![b' '; 2048]);
        assert!(rule.should_compress(&response(200, &[json], big())));
        assert!(!rule.should_compress(&response(200, &[json], Body::from("{}"))));
        assert!(!rule.should_compress(&response(200, &[("content-type", "image/png")], big())));
        assert!(!rule.should_compress(&response(200, &[], big())));
        assert!(!rule.should_compress(&response(
            200,
            &[json, ("cache-control", "public, no-transform")],
            big()
        )));
        assert!(!rule.should_compress(&response(304, &[json], big())));
        // HEAD: an empty body, the length the GET would have.
        assert!(rule.should_compress(&response(
            200,
            &[json, ("content-length", "5000")],
            Body::empty()
        )));
        // A stream of unknown length.
        assert!(rule.should_compress(&response(200, &[json], Body::new(Unsized))));
    }

    /// A body whose length is unknown, like a response Python streams without Content-Length.
    struct Unsized;

    impl http_body::Body for Unsized {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Ready(None)
        }
    }
}
