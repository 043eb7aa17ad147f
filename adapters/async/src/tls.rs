//! TLS for `wss://`, written once over futures-io (rustls with the `ring`
//! provider; no OpenSSL), so tokio and smol servers and clients share it.
//!
//! [`ServerTls`] goes in [`ServerConfig::tls`](crate::ServerConfig::tls):
//! every accepted connection then does its TLS handshake (within the
//! handshake timeout) before the HTTP upgrade. [`ClientTls`] goes in
//! [`ClientConfig::tls`](crate::ClientConfig::tls) for `wss://` URLs; without
//! it the Mozilla root certificates are trusted.

use std::fmt;
use std::sync::Arc;

use futures_rustls::rustls;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::{TlsAcceptor, TlsConnector};

/// Why TLS settings could not be built.
#[derive(Debug)]
pub enum TlsError {
    /// No certificate in the PEM input.
    NoCertificate,
    /// The PEM input did not hold a usable private key.
    BadKey(String),
    /// rustls refused the configuration (a key that does not match, say).
    Config(String),
    /// A server name that is neither a DNS name nor an IP address.
    BadServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NoCertificate => f.write_str("no certificate found in the PEM input"),
            TlsError::BadKey(e) => write!(f, "no usable private key in the PEM input: {e}"),
            TlsError::Config(e) => write!(f, "TLS configuration refused: {e}"),
            TlsError::BadServerName(n) => write!(f, "invalid TLS server name {n:?}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// rustls with *ring* (no C toolchain beyond ring's own). rustls 0.23.48
/// deprecates this constructor because ring has no post-quantum key
/// exchange; the key exchanges it offers (X25519, P-256, P-384) are those of
/// every earlier 0.23 release.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A server's certificate chain and key.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl ServerTls {
    /// From a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), as `certbot` or `openssl` write them.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain = certs(cert_chain)?;
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // gRPC clients ask for h2; WebSocket clients and HTTP/1.1 for
        // http/1.1 (or nothing).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// From a rustls configuration of your own (client certificates, ALPN,
    /// a certificate resolver...). List `h2` (and `http/1.1`) in its
    /// `alpn_protocols` for gRPC clients: a connection that negotiates `h2`
    /// is served as HTTP/2.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
        }
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

/// Which servers a client trusts.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl ClientTls {
    /// Trusts the Mozilla root certificates (what browsers trust).
    pub fn webpki_roots() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(roots).expect("the ring provider supports the default protocol versions")
    }

    /// Trusts only the certificates of a PEM file: a private CA (servers
    /// whose chain it signed, for their name), or a server's own
    /// self-signed certificate, pinned: a server presenting exactly one of
    /// these certificates is trusted whatever its name, dates and
    /// constraints say (`openssl req -x509` makes certificates marked as a
    /// CA, which certificate validation refuses as a server's own).
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let pinned = certs(pem)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in &pinned {
            // A certificate rustls cannot use as a root may still be pinned.
            let _ = roots.add(cert.clone());
        }
        let provider = provider();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .ok();
        let verifier = Arc::new(PinnedOrCa {
            verifier,
            pinned,
            provider,
        });
        let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self::from_rustls(Arc::new(config)))
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<Self, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// From a rustls configuration of your own (client certificates...).
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            connector: TlsConnector::from(config),
        }
    }

    pub(crate) fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

/// Certificate checks of [`ClientTls::from_ca_pem`]: chain validation
/// against the given certificates as roots, or else the server's own
/// certificate equal to one of them. Handshake signatures are always
/// checked with the provider's algorithms.
#[derive(Debug)]
struct PinnedOrCa {
    /// `None` when no given certificate can serve as a root.
    verifier: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let validated = match &self.verifier {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        match validated {
            Err(_)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientTls")
    }
}

/// The name a `wss://` URL's host is checked against.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::BadServerName(host.into()))
}
