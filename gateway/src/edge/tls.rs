//! TLS termination with rustls: a TLS bind's certificate chain, key and client CAs, read into a
//! `rustls::ServerConfig` at start and again on SIGHUP, and the handshake of each connection.
//!
//! TLS 1.2 and 1.3 only, with rustls's default cipher suites and key exchanges (aws-lc-rs: AEAD
//! suites only, forward secrecy, post-quantum X25519MLKEM768 first). A bind keeps its current `ServerConfig` in a [`TlsSetting`]: a reload that reads
//! the files again swaps it for new connections, and connections already open keep the pair they
//! shook hands with. A file that is missing, unreadable, not PEM, or a key that does not match
//! its certificate is an error naming the file, so start-up stops and a reload keeps the old pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{HttpVersions, TlsFiles};

/// The application protocols offered in ALPN, most preferred first.
fn alpn_protocols(http: HttpVersions) -> Vec<Vec<u8>> {
    let offered: &[&[u8]] = match http {
        HttpVersions::Auto => &[b"h2", b"http/1.1"],
        HttpVersions::Http1 => &[b"http/1.1"],
        HttpVersions::Http2 => &[b"h2"],
    };
    offered.iter().map(|p| p.to_vec()).collect()
}

/// Why a bind's TLS files could not be used; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {why}", path.display())]
    File { path: PathBuf, why: String },
    #[error(
        "the private key in {} does not match the certificate in {}",
        keyfile.display(),
        certfile.display()
    )]
    KeyMismatch { certfile: PathBuf, keyfile: PathBuf },
    #[error("{} with {}: {why}", certfile.display(), keyfile.display())]
    Unusable {
        certfile: PathBuf,
        keyfile: PathBuf,
        why: String,
    },
}

fn file_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// Reads a bind's files into a server configuration that offers the `http` versions.
pub(crate) fn load(files: &TlsFiles, http: HttpVersions) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&files.certfile)?;
    let key = PrivateKeyDer::from_pem_file(&files.keyfile).map_err(|err| {
        let why = match err {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key (PEM) found".to_owned(),
            other => format!("cannot read the private key: {other}"),
        };
        file_error(&files.keyfile, why)
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| file_error(&files.certfile, err))?;
    let builder = match &files.ca_certs {
        None => builder.with_no_client_auth(),
        Some(ca_certs) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_certs)? {
                roots
                    .add(cert)
                    .map_err(|err| file_error(ca_certs, format!("not a usable CA: {err}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| file_error(ca_certs, err))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                certfile: files.certfile.clone(),
                keyfile: files.keyfile.clone(),
            },
            other => TlsError::Unusable {
                certfile: files.certfile.clone(),
                keyfile: files.keyfile.clone(),
                why: other.to_string(),
            },
        })?;
    config.alpn_protocols = alpn_protocols(http);
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file, at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| file_error(path, format!("cannot read: {err}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| file_error(path, format!("not a PEM certificate file: {err}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate (PEM) found"));
    }
    Ok(certs)
}

/// Reads the files of every TLS bind of `config`, as start-up would (`sluice check`).
pub fn check(config: &crate::Config) -> Result<(), TlsError> {
    for app in &config.apps {
        for files in app.binds.iter().filter_map(|bind| bind.tls.as_ref()) {
            load(files, app.edge.http)?;
        }
    }
    Ok(())
}

/// What a bind answers with now: TLS with this configuration, or plain HTTP. Read once per
/// accepted connection; a reload stores a new value.
#[derive(Default)]
pub(crate) struct TlsSetting(ArcSwapOption<ServerConfig>);

impl TlsSetting {
    pub(crate) fn new(config: Option<Arc<ServerConfig>>) -> TlsSetting {
        TlsSetting(ArcSwapOption::new(config))
    }

    pub(crate) fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.load_full()
    }

    pub(crate) fn set(&self, config: Option<Arc<ServerConfig>>) {
        self.0.store(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let files = |certfile: &Path, keyfile: &Path| TlsFiles {
            certfile: certfile.to_owned(),
            keyfile: keyfile.to_owned(),
            ca_certs: None,
        };
        let err = load(&files(&missing, &junk), HttpVersions::Auto)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        let err = load(&files(&junk, &junk), HttpVersions::Auto)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate"), "{err}");
        assert!(err.starts_with(&junk.display().to_string()), "{err}");
    }
}
