//! TLS for the tests: a throwaway certificate authority that issues server and client
//! certificates into a temp dir (rcgen), and an HTTPS/1.1 client connection (rustls) that speaks
//! through the same [`Wire`] as the plain one.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tempfile::TempDir;

use crate::http::{Request, Response, Wire, IO_TIMEOUT};

/// A certificate authority of one test, and the files it has written.
pub struct TestCa {
    dir: TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// The certificate (leaf) in DER, to compare with what a server presented.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert)
            .expect("a certificate")
            .to_vec()
    }
}

impl Default for TestCa {
    fn default() -> TestCa {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("sluice-tls-")
            .tempdir()
            .expect("temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("write the CA");
        TestCa { dir, issuer }
    }

    /// The CA's certificate (PEM): what clients trust, or what a server checks clients against.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `localhost` and 127.0.0.1, written as `NAME.pem` and
    /// `NAME.key`; `common_name` tells one issue from another.
    pub fn server(&self, name: &str, common_name: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate, for servers that verify them.
    pub fn client(&self, name: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let pair = Pair {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write the key");
        pair
    }

    /// A root store that trusts this CA alone.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.ca_file()).expect("the CA"))
            .expect("a usable CA");
        roots
    }

    /// A client configuration that trusts this CA, offers `alpn`, and presents `identity` if
    /// given.
    pub fn client_config(&self, alpn: &[&[u8]], identity: Option<&Pair>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder().with_root_certificates(self.roots());
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(pair) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(&pair.cert).expect("client cert")],
                    PrivateKeyDer::from_pem_file(&pair.key).expect("client key"),
                )
                .expect("client identity"),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// One HTTPS/1.1 connection.
pub struct TlsConn {
    wire: Wire<StreamOwned<ClientConnection, TcpStream>>,
    addr: SocketAddr,
}

impl TlsConn {
    /// Connects and completes the handshake (an error if the server refuses it).
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsConn> {
        TlsConn::connect_after(addr, config, b"")
    }

    /// [`TlsConn::connect`], with `preamble` sent in clear text before the handshake (a PROXY
    /// protocol header).
    pub fn connect_after(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        preamble: &[u8],
    ) -> io::Result<TlsConn> {
        let mut tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        tcp.write_all(preamble)?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").expect("a server name");
        let session = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|err| io::Error::new(err.kind(), format!("TLS handshake: {err}")))?;
        }
        Ok(TlsConn {
            wire: Wire::new(stream),
            addr,
        })
    }

    /// The certificate the server presented (its leaf, DER).
    pub fn server_cert(&self) -> Vec<u8> {
        self.wire
            .get_ref()
            .conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.to_vec())
            .unwrap_or_default()
    }

    /// The protocol agreed by ALPN, if any.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.wire.get_ref().conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    /// The TLS version agreed.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.wire.get_ref().conn.protocol_version()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let stream = self.wire.get_mut();
        stream.write_all(bytes)?;
        stream.flush()
    }

    pub fn request(&mut self, req: &Request) -> io::Result<Response> {
        let mut bytes = req.head_bytes(&self.addr.to_string());
        bytes.extend_from_slice(&req.body_bytes());
        self.send_raw(&bytes)?;
        self.wire.read_response(&req.method)
    }
}
