//! Native TLS, for deployments without a TLS-terminating ingress: HTTPS and WSS served
//! directly with rustls (no OpenSSL), TLS 1.2 and 1.3 only. The certificate and key are read
//! from PEM files and read again when either file changes, so a renewed certificate is picked
//! up without a restart; a renewal that cannot be read keeps the previous certificate and is
//! logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Where the certificate and key are, and how often to look for a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// How often the files are checked for a change.
    pub reload_interval: Duration,
}

/// The certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key does not belong to the certificate, or is of an unsupported kind.
    #[error("the private key in {key} does not go with the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The current certificate, swapped in place when the files change.
pub(crate) struct ReloadingCert {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    // std RwLock: read on every handshake, written on a renewal, never held across `.await`.
    current: RwLock<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.settings.cert_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .key,
        ))
    }
}

impl ReloadingCert {
    fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let loaded = load(&settings, &provider)?;
        Ok(Self {
            settings,
            provider,
            current: RwLock::new(loaded),
        })
    }

    /// Reads the files again if either changed since the last read.
    fn reload_if_changed(&self) {
        let stamps = stamps(&self.settings);
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stamps
            == stamps;
        if unchanged {
            return;
        }
        match load(&self.settings, &self.provider) {
            Ok(loaded) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
                tracing::info!(cert = %self.settings.cert_path.display(), "TLS certificate reloaded");
            }
            // Half-written renewals are normal (the certificate and the key are not replaced
            // at the same instant): keep serving the old one and try again next time.
            Err(error) => {
                tracing::warn!(error = %error, "TLS certificate changed but cannot be used yet; keeping the previous one")
            }
        }
    }
}

/// The acceptor, and the certificate it serves, which [`Tls::watch`] keeps current.
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<ReloadingCert>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the certificate and key of `settings`.
    ///
    /// # Errors
    /// [`TlsError`] when they cannot be used.
    pub(crate) fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        let resolver = Arc::new(ReloadingCert::load(settings.clone())?);
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&resolver.provider))
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| TlsError::Mismatch {
                cert: settings.cert_path.clone(),
                key: settings.key_path.clone(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // HTTP/1.1 only, as the rest of the server.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
        })
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Looks for a renewed certificate every reload interval, until `stopping`.
    pub(crate) fn watch(&self, stopping: CancellationToken) -> tokio::task::JoinHandle<()> {
        let resolver = Arc::clone(&self.resolver);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(resolver.settings.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = tick.tick() => {
                        let resolver = Arc::clone(&resolver);
                        let _ = tokio::task::spawn_blocking(move || resolver.reload_if_changed()).await;
                    }
                }
            }
        })
    }
}

/// Checks that `settings` name a usable certificate and key, for start-up errors that say so.
///
/// # Errors
/// [`TlsError`] when they do not.
pub fn check(settings: &TlsSettings) -> Result<(), TlsError> {
    load(settings, &ring::default_provider()).map(drop)
}

fn stamps(settings: &TlsSettings) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(&settings.cert_path), modified(&settings.key_path))
}

fn load(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let stamps = stamps(settings);
    let read_error = |what, path: &Path, reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.cert_path)
        .map_err(|e| read_error("certificate", &settings.cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error("certificate", &settings.cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(read_error(
            "certificate",
            &settings.cert_path,
            "no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_path)
        .map_err(|e| read_error("private key", &settings.key_path, e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: settings.cert_path.clone(),
        key: settings.key_path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        stamps,
    })
}
