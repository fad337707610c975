//! Static files served by the gateway itself, never by Python: each app's `static` prefixes map
//! to directories, and a request under a prefix is answered here (the file, 304, 206, 404 or
//! 405), never passed on to the app.
//!
//! tower-http's `ServeDir` does the HTTP part: content types (mime_guess), `Last-Modified` and
//! an `ETag` from size and mtime, the conditional headers (304, 412), single ranges (206, 416),
//! HEAD, `405` with `Allow`, and the `.br` / `.gz` siblings chosen by `Accept-Encoding` (with
//! `Vary`). This module adds what it lacks:
//! - confinement: `ServeDir` refuses `..` after percent-decoding but follows symlinks, so every
//!   open and stat goes through [`ConfinedBackend`], which resolves the real path and refuses
//!   anything outside the real root; backslashes are refused outright;
//! - `If-Range` (ignored by `ServeDir`, so a resumed download could splice two versions);
//! - `Cache-Control: public, max-age=N, immutable` for names carrying a content hash
//!   ([`is_hashed_name`]) when `static_hashed_max_age` is set.
//!
//! The mapping is read from the bind's current app on every request, so a reload that changes
//! it takes effect with the switch to the new generation, and the real root is resolved per
//! request, so a deploy that swaps a `current -> releases/N` symlink is followed as nginx does.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower::ServiceExt;
use tower_http::services::fs::{Backend, File, ServeDir};

use crate::config::EdgeConfig;

/// The static directory a request is for: under one of the app's static prefixes (the longest
/// that matches), it is answered from there; anything else goes on to Python.
pub(crate) fn mount(edge: &EdgeConfig, request: &Request) -> Option<Mount> {
    let path = request.uri().path();
    edge.static_dirs
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, dir)| Mount {
            prefix_len: prefix.len(),
            dir: dir.clone(),
            hashed_max_age: edge.static_hashed_max_age,
        })
}

/// One static prefix as a request under it sees it.
pub(crate) struct Mount {
    /// Length of the URL prefix, which ends with `/`.
    prefix_len: usize,
    /// The directory as configured (absolute, possibly through symlinks).
    dir: PathBuf,
    hashed_max_age: Option<Duration>,
}

impl Mount {
    pub(crate) async fn serve(self, request: Request) -> Response {
        // Keep the `/` that ends the prefix: `ServeDir` wants a path starting with one.
        let rest = &request.uri().path()[self.prefix_len - 1..];
        // A backslash is a separator somewhere (Windows, some proxies' normalisation); no file
        // name here needs one, so `..\` and `%5c` never get as far as the file system.
        if rest.contains('\\') || contains_ignore_case(rest, "%5c") {
            return StatusCode::NOT_FOUND.into_response();
        }
        let Ok(uri) = Uri::try_from(rest) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let cache_control = self
            .hashed_max_age
            .filter(|_| is_hashed_name(rest.rsplit('/').next().unwrap_or("")))
            .map(|age| {
                HeaderValue::from_str(&format!("public, max-age={}, immutable", age.as_secs()))
                    .expect("digits are a valid header value")
            });
        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        // Only when the answer might be a 206 that `If-Range` forbids is anything kept for a
        // second try.
        let retry_without_range = (parts.headers.contains_key(header::IF_RANGE)
            && parts.headers.contains_key(header::RANGE))
        .then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });

        let mut response = self.serve_dir(Request::from_parts(parts, body)).await;
        if let Some((method, uri, mut headers)) = retry_without_range {
            if response.status() == StatusCode::PARTIAL_CONTENT
                && !if_range_matches(&headers, response.headers())
            {
                // The client's partial copy is of another version: it gets the whole file.
                headers.remove(header::RANGE);
                let mut request = Request::new(Body::empty());
                *request.method_mut() = method;
                *request.uri_mut() = uri;
                *request.headers_mut() = headers;
                response = self.serve_dir(request).await;
            }
        }
        if let Some(value) = cache_control {
            if matches!(
                response.status(),
                StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            ) {
                response.headers_mut().insert(header::CACHE_CONTROL, value);
            }
        }
        response
    }

    async fn serve_dir(&self, request: Request) -> Response {
        let backend = ConfinedBackend::new(&self.dir, &request);
        serve_with(&self.dir, backend, request).await
    }
}

async fn serve_with(dir: &Path, backend: ConfinedBackend, request: Request) -> Response {
    let service = ServeDir::with_backend(dir, backend)
        // An asset directory, not a site: a directory is a 404, not its index.html.
        .append_index_html_on_directories(false)
        .precompressed_br()
        .precompressed_gzip()
        // Several ranges get the whole file (allowed by RFC 9110) rather than a 416.
        .ignore_multi_range_requests(true);
    match service.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Does the request's `If-Range` name the representation in `response` (RFC 9110 13.1.5)? An
/// entity tag must match strongly; a date must equal `Last-Modified` exactly.
fn if_range_matches(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(condition) = request.get(header::IF_RANGE).map(HeaderValue::as_bytes) else {
        return true;
    };
    let condition = condition.trim_ascii();
    if condition.starts_with(b"\"") {
        response
            .get(header::ETAG)
            .is_some_and(|etag| etag.as_bytes() == condition)
    } else if condition.starts_with(b"W/") {
        false
    } else {
        response
            .get(header::LAST_MODIFIED)
            .is_some_and(|date| date.as_bytes() == condition)
    }
}

/// Does a file name carry a content hash, so that its content can never change? Yes when the
/// part before its last extension ends in `.HASH` or `-HASH`, HASH being 8 to 64 lowercase hex
/// digits with at least one digit and one letter:
/// - Django's ManifestStaticFilesStorage: `app.3f2a9c1b0e4d.css`, `app.css.3f2a9c1b0e4d.map`;
/// - webpack / Parcel `[name].[contenthash]`: `main.3f2a9c1b.js`;
/// - Rails (Sprockets, Propshaft): `application-3f2a9c1b….css`.
///
/// The digit-and-letter rule keeps dates (`report.20240101.css`) and words out; the rare real
/// hash without a letter or a digit just goes without the long cache header. Vite's base64
/// hashes (`index-BdVQ7b3x.js`) are not recognised: they cannot be told from ordinary names.
fn is_hashed_name(name: &str) -> bool {
    let Some((stem, extension)) = name.rsplit_once('.') else {
        return false;
    };
    let Some(at) = stem.rfind(['.', '-']) else {
        return false;
    };
    let (base, hash) = (&stem[..at], &stem[at + 1..]);
    !extension.is_empty()
        && !base.is_empty()
        && (8..=64).contains(&hash.len())
        && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && hash.bytes().any(|b| b.is_ascii_digit())
        && hash.bytes().any(|b| b.is_ascii_lowercase())
}

/// A file up to this size is read whole in the hop that opens it, and served from memory: one
/// chunk of `ServeDir`'s (64 KiB) anyway, and no further hops for its reads.
const SMALL_FILE_BYTES: u64 = 64 * 1024;

/// The file system as `ServeDir` sees it, confined to one directory: every path is resolved
/// (symlinks and all) and must end up inside the resolved root, or it does not exist.
///
/// One backend serves one request, and `ServeDir` asks it several things in turn: is the path
/// a directory, open it (or its `.br` / `.gz` sibling first), its metadata, then reads. Each on
/// tokio's blocking pool is two thread hand-overs; a small CSS file cost about six context
/// switches and 95 µs of gateway CPU. So the first question does all the work in one hop: it
/// resolves, opens and stats the path and the siblings the client accepts, and reads a small
/// file whole; the answers wait in `found` for the questions that follow.
#[derive(Clone)]
struct ConfinedBackend {
    root: Arc<Path>,
    /// `.br` / `.gz` siblings worth looking for with the path: the client accepts them.
    siblings: &'static [&'static str],
    /// Whether a small file's bytes are wanted (not for HEAD).
    read_small: bool,
    found: Arc<Mutex<HashMap<PathBuf, Found>>>,
    /// Blocking-pool hops taken, for the tests.
    hops: Arc<AtomicUsize>,
}

/// What one path turned out to be: its metadata and, for a regular file, the file (until
/// `open` takes it); or the error kind.
type Found = Result<(std::fs::Metadata, Option<ConfinedFile>), io::ErrorKind>;

impl ConfinedBackend {
    fn new(root: &Path, request: &Request) -> ConfinedBackend {
        let accepts = |coding: &str| {
            request
                .headers()
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| contains_ignore_case(v, coding))
        };
        let siblings: &'static [&'static str] = match (accepts("br"), accepts("gzip")) {
            (true, true) => &["br", "gz"],
            (true, false) => &["br"],
            (false, true) => &["gz"],
            (false, false) => &[],
        };
        ConfinedBackend {
            root: root.into(),
            siblings,
            read_small: request.method() != http::Method::HEAD,
            found: Arc::default(),
            hops: Arc::default(),
        }
    }

    /// Runs blocking file system work on tokio's blocking pool, as `tokio::fs` does.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> IoFuture<T> {
        self.hops.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::task::spawn_blocking(work)
                .await
                .unwrap_or_else(|err| Err(io::Error::other(err)))
        })
    }

    /// Looks `path` (and its siblings) up in one hop, keeping every answer; `take` picks what
    /// the caller wants from the path's own. An answer whose file was taken already is looked
    /// up again.
    fn look_up<T: Send + 'static>(
        &self,
        path: PathBuf,
        take: fn(&mut Found) -> io::Result<T>,
    ) -> IoFuture<T> {
        let mut found = self.found.lock().expect("not poisoned");
        match found.get_mut(&path) {
            Some(Ok((metadata, None))) if metadata.is_file() => {
                found.remove(&path);
            }
            Some(answer) => return Box::pin(std::future::ready(take(answer))),
            None => {}
        }
        drop(found);
        let (root, siblings, read_small) = (self.root.clone(), self.siblings, self.read_small);
        let store = self.found.clone();
        self.blocking(move || {
            let real_root = std::fs::canonicalize(&root)?;
            let mut found = store.lock().expect("not poisoned");
            for sibling in siblings {
                let mut name = path.clone().into_os_string();
                name.push(".");
                name.push(sibling);
                let name = PathBuf::from(name);
                let answer = find(&real_root, &name, read_small);
                found.insert(name, answer);
            }
            let mut answer = find(&real_root, &path, read_small);
            let result = take(&mut answer);
            found.insert(path, answer);
            result
        })
    }
}

/// Where `path` really is, if that is inside the real root `real_root`; `NotFound` otherwise,
/// so a refused path looks exactly like a missing one (and `ServeDir` moves on to the next
/// precompressed candidate, or answers 404).
fn confine(real_root: &Path, path: &Path) -> io::Result<PathBuf> {
    let real = std::fs::canonicalize(path)?;
    if real.starts_with(real_root) {
        Ok(real)
    } else {
        tracing::debug!(path = %path.display(), real = %real.display(), "static path leaves its directory; refused");
        Err(io::ErrorKind::NotFound.into())
    }
}

/// Resolves, stats and (a regular file) opens `path`, reading it whole if it is small and
/// `read_small`.
fn find(real_root: &Path, path: &Path, read_small: bool) -> Found {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt;
    let found = (|| {
        let real = confine(real_root, path)?;
        let metadata = std::fs::metadata(&real)?;
        if !metadata.is_file() {
            return Ok((metadata, None));
        }
        // The real path has no symlinks now; O_NOFOLLOW refuses one swapped in for the last
        // component since, and O_NONBLOCK keeps a FIFO from blocking the open.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(real)?;
        // What is served is what was opened: its own metadata, not the path's.
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let content = if read_small && metadata.len() <= SMALL_FILE_BYTES {
            let mut bytes = Vec::with_capacity(metadata.len() as usize);
            file.read_to_end(&mut bytes)?;
            Content::Memory(io::Cursor::new(bytes))
        } else {
            Content::Disk(tokio::fs::File::from_std(file))
        };
        let opened = ConfinedFile {
            content,
            metadata: metadata.clone(),
        };
        Ok((metadata, Some(opened)))
    })();
    found.map_err(|err: io::Error| err.kind())
}

type IoFuture<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

impl Backend for ConfinedBackend {
    type File = ConfinedFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = IoFuture<ConfinedFile>;
    type MetadataFuture = IoFuture<std::fs::Metadata>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        self.look_up(path, |found| match found {
            Ok((_, file)) => file.take().ok_or_else(|| io::ErrorKind::NotFound.into()),
            Err(kind) => Err((*kind).into()),
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        self.look_up(path, |found| match found {
            Ok((metadata, _)) => Ok(metadata.clone()),
            Err(kind) => Err((*kind).into()),
        })
    }
}

/// An open regular file inside a static directory: small ones already read.
struct ConfinedFile {
    content: Content,
    metadata: std::fs::Metadata,
}

enum Content {
    Memory(io::Cursor<Vec<u8>>),
    Disk(tokio::fs::File),
}

impl AsyncRead for ConfinedFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.content {
            Content::Memory(bytes) => Pin::new(bytes).poll_read(cx, buf),
            Content::Disk(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for ConfinedFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match &mut self.content {
            Content::Memory(bytes) => Pin::new(bytes).start_seek(position),
            Content::Disk(file) => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.content {
            Content::Memory(bytes) => Pin::new(bytes).poll_complete(cx),
            Content::Disk(file) => Pin::new(file).poll_complete(cx),
        }
    }
}

impl File for ConfinedFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> = std::future::Ready<io::Result<std::fs::Metadata>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        std::future::ready(Ok(self.metadata.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_are_recognised() {
        for name in [
            "app.3f2a9c1b0e4d.css",
            "main.3f2a9c1b.js",
            "app.css.3f2a9c1b0e4d.map",
            "application-4d5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f.css",
            "chunk.0a1b2c3d4e5f6a7b8c9d.js",
        ] {
            assert!(is_hashed_name(name), "{name}");
        }
        for name in [
            "app.css",
            "report.20240101.css",
            "jquery-3.7.1.min.js",
            "app.deadbeefcafe.css",
            "app.3F2A9C1B0E4D.css",
            "app.3f2a9c1.css",
            ".3f2a9c1b0e4d.css",
            "3f2a9c1b0e4d",
            "app.3f2a9c1b0e4d.",
            "index-BdVQ7b3x.js",
            "app.3f2a9c1b0e4d.css.gz.x",
            // 65 hex digits: longer than any digest in use.
            "application-4d5f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1.css",
        ] {
            assert!(!is_hashed_name(name), "{name}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_tag_or_the_exact_date() {
        let mut response = HeaderMap::new();
        response.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        response.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 01 Jul 2025 10:00:00 GMT"),
        );
        let check = |value: &'static str| {
            let mut request = HeaderMap::new();
            request.insert(header::IF_RANGE, HeaderValue::from_static(value));
            if_range_matches(&request, &response)
        };
        assert!(check("\"abc\""));
        assert!(!check("\"abd\""));
        assert!(!check("W/\"abc\""));
        assert!(check("Tue, 01 Jul 2025 10:00:00 GMT"));
        assert!(!check("Tue, 01 Jul 2025 10:00:01 GMT"));
        assert!(if_range_matches(&HeaderMap::new(), &response));
    }

    #[test]
    fn confinement_follows_symlinks_and_refuses_the_way_out() {
        use std::os::unix::fs::symlink;
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("static");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::write(root.join("css/app.css"), "body{}").unwrap();
        std::fs::write(top.path().join("secret.txt"), "secret").unwrap();
        symlink(root.join("css/app.css"), root.join("inside.css")).unwrap();
        symlink(top.path().join("secret.txt"), root.join("outside.txt")).unwrap();
        symlink(top.path(), root.join("up")).unwrap();
        // The root itself reached through a symlink, as in `current -> releases/N`.
        symlink(&root, top.path().join("current")).unwrap();

        let real_root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            confine(&real_root, &root.join("inside.css")).unwrap(),
            real_root.join("css/app.css")
        );
        let via_link = top.path().join("current");
        assert_eq!(
            confine(
                &std::fs::canonicalize(&via_link).unwrap(),
                &via_link.join("css/app.css")
            )
            .unwrap(),
            real_root.join("css/app.css")
        );
        for escape in ["outside.txt", "up/secret.txt", "css/../../secret.txt"] {
            let err = confine(&real_root, &root.join(escape)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{escape}");
        }
    }

    /// Serves `path` from `dir` the way `Mount` does; returns the status, the
    /// Content-Encoding, the body and the blocking-pool hops it took.
    async fn get(
        dir: &Path,
        method: &str,
        path: &str,
        accept: &str,
    ) -> (StatusCode, Option<String>, Vec<u8>, usize) {
        use http_body_util::BodyExt as _;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::ACCEPT_ENCODING, accept)
            .body(Body::empty())
            .unwrap();
        let backend = ConfinedBackend::new(dir, &request);
        let hops = backend.hops.clone();
        let response = serve_with(dir, backend, request).await;
        let status = response.status();
        let coding = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, coding, body.to_vec(), hops.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_small_file_costs_one_hop_to_the_blocking_pool_and_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let small: Vec<u8> = (0..SMALL_FILE_BYTES).map(|i| (i % 251) as u8).collect();
        let large: Vec<u8> = (0..3 * SMALL_FILE_BYTES + 7)
            .map(|i| (i % 241) as u8)
            .collect();
        std::fs::write(dir.path().join("app.css"), &small).unwrap();
        std::fs::write(dir.path().join("app.css.gz"), b"gzipped").unwrap();
        std::fs::write(dir.path().join("big.js"), &large).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();

        // Before, each of: is-it-a-directory, open (per precompressed candidate), the open
        // file's metadata and every read was a hop of its own.
        let (status, coding, body, hops) = get(dir.path(), "GET", "/app.css", "").await;
        assert_eq!((status, coding, hops), (StatusCode::OK, None, 1));
        assert!(body == small);
        let (status, coding, body, hops) = get(dir.path(), "GET", "/app.css", "gzip, br").await;
        assert_eq!(
            (status, coding.as_deref(), hops),
            (StatusCode::OK, Some("gzip"), 1)
        );
        assert_eq!(body, b"gzipped");
        let (status, _, body, hops) = get(dir.path(), "HEAD", "/app.css", "").await;
        assert_eq!((status, body.len(), hops), (StatusCode::OK, 0, 1));
        for missing in ["/nothing.css", "/sub", "/sub/"] {
            let (status, _, _, hops) = get(dir.path(), "GET", missing, "br").await;
            assert_eq!((status, hops), (StatusCode::NOT_FOUND, 1), "{missing}");
        }
        // Opening a path twice gives two files, the second looked up again.
        let request = Request::new(Body::empty());
        let backend = ConfinedBackend::new(dir.path(), &request);
        for _ in 0..2 {
            let mut file = backend.open(dir.path().join("app.css")).await.unwrap();
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut file, &mut got)
                .await
                .unwrap();
            assert!(got == small);
        }
        assert_eq!(backend.hops.load(Ordering::Relaxed), 2);
        // A large file is read in chunks as it goes out; all of it arrives.
        let (status, _, body, _) = get(dir.path(), "GET", "/big.js", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == large);
    }
}
