//! SIP over TLS (RFC 3261 §26.2): the server side's rustls configuration, built from the PEM
//! files `[sip]` names, and swapped whole on SIGHUP so a renewed certificate is served to new
//! connections without a restart (connections already open keep theirs).
//!
//! With `sip.tls_client_ca` the handshake requires a client certificate signed by that CA
//! (mutual TLS, how SBCs authenticate to an SRS); without it any client may connect. Framing
//! and everything above it are the TCP code's (`transport`); this module only builds configs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::SipConfig;

/// Why a TLS configuration could not be built. Each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM object.
    #[error("{key} {path}: {reason}")]
    File { key: &'static str, path: PathBuf, reason: String },
    /// rustls refused the combination (a key that does not match the certificate, …).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle could not become a verifier.
    #[error("sip.tls_client_ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
    /// A TLS listener without certificate or key (check-config catches this first).
    #[error("{0} is needed for a tls: listener")]
    Missing(&'static str),
}

/// The current server configuration of all TLS listeners, replaceable while they run.
#[derive(Debug)]
pub struct TlsContext {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsContext {
    /// Builds the context from `[sip]`'s TLS files.
    pub fn new(sip: &SipConfig) -> Result<Self, TlsError> {
        Ok(TlsContext { current: RwLock::new(server_config(sip)?) })
    }

    /// An acceptor with the configuration current at this moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        TlsAcceptor::from(config)
    }

    /// Reads the files again; on error the old configuration stays.
    pub fn reload(&self, sip: &SipConfig) -> Result<(), TlsError> {
        let config = server_config(sip)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }
}

fn server_config(sip: &SipConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = sip.tls_certificate.as_deref().ok_or(TlsError::Missing("sip.tls_certificate"))?;
    let key_path = sip.tls_private_key.as_deref().ok_or(TlsError::Missing("sip.tls_private_key"))?;
    let certs = read_certs("sip.tls_certificate", cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::File {
        key: "sip.tls_private_key",
        path: key_path.into(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &sip.tls_client_ca {
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("sip.tls_client_ca", ca_path)? {
                roots.add(cert)?;
            }
            builder.with_client_cert_verifier(WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File { key, path: path.into(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in it".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
    }

    fn sip(cert: &str, key: &str, ca: Option<&str>) -> SipConfig {
        SipConfig {
            tls_certificate: Some(fixture(cert)),
            tls_private_key: Some(fixture(key)),
            tls_client_ca: ca.map(fixture),
            ..SipConfig::default()
        }
    }

    #[test]
    fn fixture_certificate_builds_with_and_without_client_verification() {
        TlsContext::new(&sip("server.pem", "server.key", None)).unwrap();
        TlsContext::new(&sip("server.pem", "server.key", Some("client-ca.pem"))).unwrap();
    }

    #[test]
    fn a_bad_file_names_its_key_and_reload_keeps_the_old_config() {
        let e = TlsContext::new(&sip("server.key", "server.key", None)).unwrap_err().to_string();
        assert!(e.contains("sip.tls_certificate") && e.contains("server.key"), "{e}");
        let e = TlsContext::new(&sip("server.pem", "server.pem", None)).unwrap_err().to_string();
        assert!(e.contains("sip.tls_private_key"), "{e}");
        let ctx = TlsContext::new(&sip("server.pem", "server.key", None)).unwrap();
        assert!(ctx.reload(&sip("server.pem", "missing.key", None)).is_err());
        // The old configuration still serves.
        let _ = ctx.acceptor();
        assert!(ctx.reload(&sip("server.pem", "client.key", None)).is_err(), "a key that does not belong to the certificate");
    }
}
