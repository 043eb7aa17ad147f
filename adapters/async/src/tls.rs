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
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// From a rustls configuration of your own (client certificates, ALPN,
    /// a certificate resolver...).
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

    /// Trusts only the certificates of a PEM file (a private CA, or a
    /// self-signed server certificate).
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(pem)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Self::with_roots(roots)
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
