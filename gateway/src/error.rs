//! The gateway's request errors and the one place where they become HTTP responses.
//! Internals (tracebacks, socket errors) never reach a response body; they are logged where
//! they happen, with the request id.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// Broken or ambiguous HTTP/1.1 framing, or a Host or target the edge does not accept.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request line longer than limit_request_line")]
    RequestLineTooLong,
    #[error("request header fields beyond limit_request_fields or limit_request_field_size")]
    HeaderFieldsTooLarge,
    /// A transfer coding before `chunked` that sluice does not decode (RFC 9112 §6.1).
    #[error("transfer coding not implemented")]
    UnknownTransferCoding,
    #[error("request body larger than max_body")]
    BodyTooLarge,
    #[error("request body could not be read")]
    BadBody,
    #[error("request body arrived slower than min_body_rate")]
    BodyTooSlow,
    #[error("no Python thread free within the queue timeout")]
    QueueTimeout,
    #[error("the worker went away before answering")]
    WorkerGone,
    #[error("the request ran past its timeout")]
    UpstreamTimeout,
    #[error("the app failed before sending its response")]
    AppFailed,
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            GatewayError::Malformed(_) => (StatusCode::BAD_REQUEST, "Bad Request\n"),
            GatewayError::RequestLineTooLong => (StatusCode::URI_TOO_LONG, "URI Too Long\n"),
            GatewayError::HeaderFieldsTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large\n",
            ),
            GatewayError::UnknownTransferCoding => {
                (StatusCode::NOT_IMPLEMENTED, "Not Implemented\n")
            }
            GatewayError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large\n"),
            GatewayError::BadBody => (StatusCode::BAD_REQUEST, "Bad Request\n"),
            GatewayError::BodyTooSlow => (StatusCode::REQUEST_TIMEOUT, "Request Timeout\n"),
            GatewayError::QueueTimeout => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
            }
            GatewayError::WorkerGone => (StatusCode::BAD_GATEWAY, "Bad Gateway\n"),
            GatewayError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n"),
            GatewayError::AppFailed => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
            }
        };
        let mut response = (status, text).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self,
            GatewayError::BodyTooLarge
                | GatewayError::BadBody
                | GatewayError::BodyTooSlow
                | GatewayError::Malformed(_)
                | GatewayError::RequestLineTooLong
                | GatewayError::HeaderFieldsTooLarge
                | GatewayError::UnknownTransferCoding
        ) {
            // The rest of an unread body would be taken for the next request; after a malformed
            // head nothing on the connection can be trusted to be framed right.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
