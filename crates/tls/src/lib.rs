//! How OCA's clients — the agent, the CLI, the bench — trust the server they talk to
//! over TLS: one of
//!
//! - a CA file ([`Trust::CaFile`]): the server's chain must lead to a certificate in it
//!   (e.g. the private CA `oca serve` makes in its data directory);
//! - a pinned fingerprint ([`Trust::Pinned`]): the SHA-256 of a certificate that must be
//!   in the chain the server presents — the private CA's, printed by `oca serve` and
//!   put in the agent's install line; the server's certificate must chain to it and
//!   name the host, as with a CA file, so the server's certificate can be replaced
//!   (new names, renewal) without touching the agents;
//! - the system's roots ([`Trust::SystemRoots`]): for a certificate from a public or
//!   company CA.
//!
//! Everything runs on rustls with the `ring` provider.

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The SHA-256 of a certificate (its DER encoding).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// 64 hex digits, in either case, optionally grouped with `:` (as OpenSSL prints
    /// them) and prefixed `sha256:`.
    pub fn parse(text: &str) -> anyhow::Result<Fingerprint> {
        let t = text.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .unwrap_or(t);
        let digits: String = t.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&digits).ok().filter(|b| b.len() == 32);
        match bytes {
            Some(b) => Ok(Fingerprint(b.try_into().expect("32 bytes"))),
            None => bail!(
                "{text:?} is not a SHA-256 fingerprint (64 hex digits, optionally with colons)"
            ),
        }
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `sha256:` and 64 lower-case hex digits.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificates in a PEM file.
    CaFile(PathBuf),
    /// A certificate of this fingerprint in the server's chain.
    Pinned(Fingerprint),
    /// The system's root certificates.
    SystemRoots,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::CaFile(p) => write!(f, "the CA file {}", p.display()),
            Trust::Pinned(fp) => write!(f, "the pinned certificate {fp}"),
            Trust::SystemRoots => f.write_str("the system's root certificates"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file.
pub fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading the certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate (PEM)", path.display());
    }
    Ok(certs)
}

fn roots(certs: &[CertificateDer<'static>]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .context("a certificate cannot be a trust anchor")?;
    }
    Ok(roots)
}

/// A TLS client configuration that trusts what `trust` says (HTTP/1.1 only, as the
/// server speaks).
pub fn client_config(trust: &Trust) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let config = match trust {
        Trust::CaFile(path) => builder
            .with_root_certificates(roots(&read_certificates(path)?)?)
            .with_no_client_auth(),
        Trust::SystemRoots => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("loading the system's root certificates: {e}");
            }
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("no root certificate found on this system; give a CA file or a fingerprint");
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Trust::Pinned(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *fp,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Trusts a chain that holds the certificate of the pinned fingerprint: the server's
/// own certificate (accepted as pinned), or a CA certificate the server's must chain
/// to (verified as a CA file would be: signatures, validity, the host's name).
#[derive(Debug)]
struct PinnedVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Fingerprint::of(end_entity) == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let Some(anchor) = intermediates
            .iter()
            .find(|c| Fingerprint::of(c) == self.pin)
        else {
            tracing::warn!(
                pin = %self.pin,
                "the server's certificate chain holds no certificate of the pinned fingerprint"
            );
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        };
        let mut store = RootCertStore::empty();
        store
            .add(anchor.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| Fingerprint::of(c) != self.pin)
            .cloned()
            .collect();
        verifier.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let fp = Fingerprint::of(b"cert");
        let text = fp.to_string();
        assert!(
            text.starts_with("sha256:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(Fingerprint::parse(&text).unwrap(), fp);
        let colons: Vec<String> = fp.bytes().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(Fingerprint::parse(&colons.join(":")).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&hex::encode(fp.bytes())).unwrap(), fp);
        assert!(Fingerprint::parse("sha256:abcd").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }
}
