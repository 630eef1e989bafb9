//! TLS identities pinned by fingerprint (docs/PROTOCOL.md "Roles and trust"): no CA, like SSH host
//! keys. An identity is a self-signed certificate; its id is the SHA-256 of
//! the certificate's SubjectPublicKeyInfo, so re-issuing a certificate for
//! the same key keeps the id. Each side lists the ids it accepts, and an
//! unknown peer is refused during the handshake with a log line naming the
//! fingerprint it presented.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::daemon::LogThrottle;
use crate::digest::Sha256Digest;

/// Why an identity could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a PEM {what}")]
    Pem { path: String, what: &'static str },
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate does not parse: {0}")]
    Parse(String),
    #[error("not a peer id: {0:?} (expected 64 hex characters, as printed by `init`)")]
    BadPeerId(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A peer's id: SHA-256 of its certificate's SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub Sha256Digest);

impl PeerId {
    /// The id of a DER certificate.
    pub fn of_cert(cert: &[u8]) -> Result<Self, IdentityError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| IdentityError::Parse(e.to_string()))?;
        Ok(Self(Sha256Digest::of(
            parsed.tbs_certificate.subject_pki.raw,
        )))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.0.to_hex())
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let cleaned: String = s.trim().chars().filter(|c| *c != ':').collect();
        cleaned
            .parse()
            .map(Self)
            .map_err(|_| IdentityError::BadPeerId(s.to_owned()))
    }
}

/// A certificate and its private key.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Identity({})",
            self.id().map(|id| id.to_string()).unwrap_or_default()
        )
    }
}

impl Identity {
    /// A new self-signed identity (ECDSA P-256). `name` goes in the subject
    /// for humans reading the certificate; nothing checks it.
    pub fn generate(name: &str) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| IdentityError::Parse(e.to_string()))?,
        })
    }

    /// This identity's id.
    pub fn id(&self) -> Result<PeerId, IdentityError> {
        PeerId::of_cert(&self.cert)
    }

    /// Loads `cert.pem` and `key.pem`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let read = |p: &Path| {
            fs::read(p).map_err(|source| IdentityError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let cert =
            CertificateDer::from_pem_slice(&read(cert_path)?).map_err(|_| IdentityError::Pem {
                path: cert_path.display().to_string(),
                what: "certificate",
            })?;
        let key =
            PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|_| IdentityError::Pem {
                path: key_path.display().to_string(),
                what: "private key",
            })?;
        Ok(Self { cert, key })
    }

    /// Writes `cert.pem` (0644) and `key.pem` (0600); never overwrites.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), IdentityError> {
        let cert_pem = pem_block("CERTIFICATE", &self.cert);
        let key_pem = pem_block("PRIVATE KEY", self.key.secret_der());
        write_new(cert_path, cert_pem.as_bytes(), 0o644)?;
        write_new(key_path, key_pem.as_bytes(), 0o600)
    }

    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

fn write_new(path: &Path, body: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(body).map_err(err)?;
    f.sync_all().map_err(err)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

/// The crypto provider used everywhere (ring; see research/toolchain.md).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process default; harmless if already done.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Accepts exactly the pinned peer ids, with a valid date, and checks the
/// handshake signatures against the presented certificate.
#[derive(Debug)]
pub struct PinnedVerifier {
    allowed: BTreeSet<PeerId>,
    algorithms: WebPkiSupportedAlgorithms,
    /// "agent" or "origin", for log lines.
    role: &'static str,
    /// Anyone can present a certificate: refusals are logged, not without bound.
    log: LogThrottle,
}

impl PinnedVerifier {
    /// Accepts the given ids; `role` names the peer kind in logs.
    pub fn new(allowed: impl IntoIterator<Item = PeerId>, role: &'static str) -> Self {
        Self {
            allowed: allowed.into_iter().collect(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            role,
            log: LogThrottle::per_second(20),
        }
    }

    fn check(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let id = PeerId(Sha256Digest::of(parsed.tbs_certificate.subject_pki.raw));
        if !self.allowed.contains(&id) {
            if let Some(more) = self.log.allow() {
                tracing::warn!(peer_id = %id, more, "refused TLS {}: id is not pinned in the config", self.role);
            }
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        let validity = parsed.validity();
        let now_secs = now.as_secs() as i64;
        if now_secs > validity.not_after.timestamp() {
            tracing::warn!(peer_id = %id, not_after = %validity.not_after, "refused TLS {}: certificate expired", self.role);
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if now_secs < validity.not_before.timestamp() {
            tracing::warn!(peer_id = %id, not_before = %validity.not_before, "refused TLS {}: certificate not yet valid", self.role);
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        Ok(())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: our identity, and only pinned clients.
pub fn server_config(
    identity: &Identity,
    verifier: PinnedVerifier,
) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(vec![identity.cert.clone()], identity.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: our identity, and only a pinned server.
pub fn client_config(
    identity: &Identity,
    verifier: PinnedVerifier,
) -> Result<Arc<rustls::ClientConfig>, IdentityError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load_keeps_id() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate("agent-1").unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        id.save(&c, &k).unwrap();
        let loaded = Identity::load(&c, &k).unwrap();
        assert_eq!(loaded.id().unwrap(), id.id().unwrap());
        assert!(id.save(&c, &k).is_err(), "never overwrites");
        let text = id.id().unwrap().to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PeerId>().unwrap(), id.id().unwrap());
        assert!("nope".parse::<PeerId>().is_err());
        install_crypto_provider();
        server_config(&loaded, PinnedVerifier::new([], "origin")).unwrap();
        client_config(&loaded, PinnedVerifier::new([], "agent")).unwrap();
    }
}
