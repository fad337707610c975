//! The control messages between the gateway and a worker process, as JSON: the worker's
//! configuration (its `argv`) and its start-up answer, `Ready` or `Fatal` (payloads of the
//! control frames of those kinds). Both sides use these structs, so a field cannot drift.
//!
//! serde_json writes a struct's fields in declaration order; they are declared in alphabetical
//! order so the text on the wire is the one `json!` wrote before these types existed.

use serde::{Deserialize, Serialize};

/// What the gateway tells a worker to serve, as JSON in the worker's `argv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The WSGI callable, `module:callable`.
    pub app: String,
    /// The directory to start in and put first on `sys.path`, if any.
    pub chdir: Option<String>,
    /// The app's name, for logs.
    pub name: String,
    /// The Unix socket the worker listens on for the gateway's connections.
    pub socket: String,
    /// Threads serving requests (WSGI's `multithread` when more than one).
    pub threads: usize,
    /// The app's worker processes (WSGI's `multiprocess` when more than one).
    pub workers: usize,
}

/// A worker's word that its app is imported and its socket listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub app: String,
    pub pid: u32,
    /// The protocol version of the worker module ([`crate::VERSION`] of its build).
    pub proto: u8,
    /// The interpreter's version, e.g. `3.12.3`.
    pub python: String,
}

/// A worker's word that it cannot serve: the app failed to import, or its socket to bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fatal {
    /// One line: what failed.
    #[serde(default = "Fatal::unknown_error")]
    pub error: String,
    #[serde(default)]
    pub proto: u8,
    /// The Python traceback, empty when the failure was not a Python exception.
    #[serde(default)]
    pub traceback: String,
}

impl Fatal {
    fn unknown_error() -> String {
        "the worker failed".to_owned()
    }

    /// A `Fatal` payload as well as it can be read. The gateway reads what it can of one from a
    /// module of an unknown build rather than lose its error.
    pub fn read_leniently(payload: &[u8]) -> Fatal {
        serde_json::from_slice(payload).unwrap_or_else(|_| Fatal {
            error: Fatal::unknown_error(),
            proto: 0,
            traceback: String::new(),
        })
    }
}

/// The JSON text of a control message. It cannot fail: the messages hold only strings and
/// integers, which serde_json always writes.
fn to_json(message: &impl Serialize) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

impl WorkerConfig {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Ready {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Fatal {
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The protocol version a `Ready` or `Fatal` payload names, if it names one. Read before
/// anything else in it: a module of another build may mean something else by the rest.
pub fn payload_version(payload: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Versioned {
        proto: Option<u64>,
    }
    serde_json::from_slice::<Versioned>(payload)
        .ok()
        .and_then(|v| v.proto)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_text_is_what_json_wrote() {
        let config = WorkerConfig {
            app: "shop.wsgi:application".into(),
            chdir: None,
            name: "shop".into(),
            socket: "/tmp/sluice-x/a0w0g1-0.sock".into(),
            threads: 4,
            workers: 2,
        };
        let text = config.to_json();
        assert_eq!(
            text,
            r#"{"app":"shop.wsgi:application","chdir":null,"name":"shop","socket":"/tmp/sluice-x/a0w0g1-0.sock","threads":4,"workers":2}"#
        );
        assert_eq!(serde_json::from_str::<WorkerConfig>(&text).unwrap(), config);
        assert!(serde_json::from_str::<WorkerConfig>(
            r#"{"app":"a:b","chdir":"/srv","name":"a","socket":"/s","threads":1,"workers":1,"extra":1}"#
        )
        .is_err());

        let ready = Ready {
            app: "shop".into(),
            pid: 42,
            proto: crate::VERSION,
            python: "3.12.3".into(),
        };
        let text = ready.to_json();
        assert_eq!(
            text,
            format!(
                r#"{{"app":"shop","pid":42,"proto":{},"python":"3.12.3"}}"#,
                crate::VERSION
            )
        );
        assert_eq!(
            payload_version(text.as_bytes()),
            Some(crate::VERSION.into())
        );

        let fatal = Fatal {
            error: "ImportError: no module named shop".into(),
            proto: crate::VERSION,
            traceback: "Traceback ...".into(),
        };
        let text = fatal.to_json();
        assert_eq!(
            text,
            format!(
                r#"{{"error":"ImportError: no module named shop","proto":{},"traceback":"Traceback ..."}}"#,
                crate::VERSION
            )
        );
        assert_eq!(Fatal::read_leniently(text.as_bytes()), fatal);
    }

    #[test]
    fn a_payload_of_an_unknown_build_is_read_as_far_as_it_goes() {
        assert_eq!(payload_version(b"not json"), None);
        assert_eq!(payload_version(br#"{"proto":"6"}"#), None);
        assert_eq!(payload_version(br#"{"error":"x"}"#), None);
        assert_eq!(payload_version(br#"{"proto":5,"python":3}"#), Some(5));
        let old = Fatal::read_leniently(br#"{"error":"boom"}"#);
        assert_eq!((old.error.as_str(), old.traceback.as_str()), ("boom", ""));
        let garbage = Fatal::read_leniently(b"\xff");
        assert_eq!(garbage.error, "the worker failed");
    }
}
