//! TLS on the public listener: the `[server.tls]` section, loading the certificate chain and
//! key (PEM), the rustls acceptor (ring provider; ALPN `h2` and `http/1.1`), and swapping in
//! a new pair while serving.
//!
//! Owns which certificate a new handshake gets. A pair that does not load (unreadable, not
//! PEM, a key that does not match the certificate) is refused with the reason naming the key;
//! at start that stops the gateway, on reload the running pair stays. It must not serve
//! HTTP, know about routes, or log key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use config_types::{millis, nonzero, Invalid};
use serde::Deserialize;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// `[server.tls]`: TLS on the public listener (off when the section is absent).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate first, then any intermediates (the chain).
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_file: PathBuf,
    /// How long a new connection may take to complete the TLS handshake before it is
    /// closed (it holds a connection slot meanwhile).
    #[serde(
        rename = "handshake_timeout_ms",
        deserialize_with = "millis",
        default = "default_handshake_timeout"
    )]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl TlsConfig {
    /// Checks what types alone cannot, loading the pair; the key is relative to `[server]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        nonzero("tls.handshake_timeout_ms", self.handshake_timeout)?;
        Certs::load(self).map(drop)
    }
}

/// The ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The certificate new handshakes get; replaced by [`Certs::reload`].
pub struct Certs {
    current: ArcSwap<CertifiedKey>,
    provider: Arc<CryptoProvider>,
    pub config: TlsConfig,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs")
            .field("cert_file", &self.config.cert_file)
            .finish_non_exhaustive()
    }
}

impl Certs {
    /// Loads the pair named in `config`; `Err` names the key at fault and why.
    pub fn load(config: &TlsConfig) -> Result<Arc<Certs>, Invalid> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified(&config.cert_file, &config.key_file, &provider)?;
        Ok(Arc::new(Certs {
            current: ArcSwap::from_pointee(key),
            provider,
            config: config.clone(),
        }))
    }

    /// Loads the files again; a pair that loads is used by every handshake from now on (open
    /// connections keep theirs), one that does not is refused and the current one stays.
    pub fn reload(&self) -> Result<(), Invalid> {
        let key = certified(
            &self.config.cert_file,
            &self.config.key_file,
            &self.provider,
        )?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The acceptor: TLS 1.2 and 1.3, no client certificates, ALPN `h2` then `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(Arc::clone(self))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The DER of the certificate new handshakes get (for tests and logs: compare, never
    /// print key material).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certs>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

/// Reads and parses both files (no provider: for validation).
fn load_pair(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Invalid> {
    let certs = std::fs::read(cert_file)
        .map_err(|e| Invalid::new("tls.cert_file", format!("{}: {e}", cert_file.display())))?;
    let chain = CertificateDer::pem_slice_iter(&certs)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Invalid::new("tls.cert_file", format!("{}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(Invalid::new(
            "tls.cert_file",
            format!("{}: no CERTIFICATE in the file", cert_file.display()),
        ));
    }
    let key = std::fs::read(key_file)
        .map_err(|e| Invalid::new("tls.key_file", format!("{}: {e}", key_file.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        Invalid::new(
            "tls.key_file",
            format!("{}: no usable private key: {e}", key_file.display()),
        )
    })?;
    Ok((chain, key))
}

fn certified(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, Invalid> {
    let (chain, key) = load_pair(cert_file, key_file)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        Invalid::new(
            "tls.key_file",
            format!(
                "{}: does not fit {}: {e}",
                key_file.display(),
                cert_file.display()
            ),
        )
    })
}
