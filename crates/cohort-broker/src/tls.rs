//! Loading the listener's certificate and key into a rustls acceptor (ring provider only).

use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::server::BrokerError;

pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, BrokerError> {
    let tls_err = |message: String| BrokerError::Tls(message);
    let cert_pem = std::fs::read(&config.cert)
        .map_err(|err| tls_err(format!("reading {}: {err}", config.cert.display())))?;
    let key_pem = std::fs::read(&config.key)
        .map_err(|err| tls_err(format!("reading {}: {err}", config.key.display())))?;
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| tls_err(format!("{}: {err}", config.cert.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{}: no PEM certificate found", config.cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|err| tls_err(format!("{}: {err}", config.key.display())))?
        .ok_or_else(|| tls_err(format!("{}: no PEM private key found", config.key.display())))?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| tls_err(err.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|err| {
        tls_err(format!("{} and {}: {err}", config.cert.display(), config.key.display()))
    })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
