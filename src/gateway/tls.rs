//! TLS with ALPN `h2` and `http/1.1` (rustls, ring). The HTTP layer
//! auto-detects the protocol from the first bytes, so ALPN only has to be
//! advertised.

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::error::GatewayError;
use crate::config::TlsConfig;

fn err(path: &std::path::Path, reason: impl ToString) -> GatewayError {
    GatewayError::Tls {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, e))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM certificate found"));
    }
    Ok(certs)
}

fn key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, GatewayError> {
    let pem = std::fs::read(path).map_err(|e| err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| err(path, e))?
        .ok_or_else(|| err(path, "no PEM private key found"))
}

/// The acceptor for `[gateway.tls]`.
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, GatewayError> {
    if let Some(why) = crate::secret::too_open(&tls.key) {
        return Err(err(&tls.key, why));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&tls.cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs(&tls.cert)?, key(&tls.key)?)
        .map_err(|e| err(&tls.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
