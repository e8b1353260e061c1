//! Trusting a vCenter: its certificate is verified against the system's trust store, or
//! pinned by the SHA-256 thumbprint the operator gives. Whatever certificate the server
//! shows is kept, so that a refusal can print its thumbprint and subject for the operator
//! to check and pin. Nothing is trusted silently.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest as _;

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The system's trust store, and the certificate must name the host.
    System,
    /// Exactly the certificate with this SHA-256 (`--thumbprint`).
    Sha256([u8; 32]),
    /// Exactly the certificate with this SHA-1: an ESXi host's certificate as vCenter
    /// reports it in an upload lease (vCenter itself was trusted first).
    Sha1([u8; 20]),
}

/// Parses a thumbprint: hex, with or without colons (or spaces), in any case.
pub fn parse_thumbprint(s: &str) -> Result<[u8; 32], String> {
    let hex_digits: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| {
        format!("--thumbprint {s:?} is not hexadecimal (expected 64 hex digits, colons allowed)")
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "--thumbprint {s:?} has {} bytes; a SHA-256 thumbprint has 32 (64 hex digits). \
             A 20-byte one is SHA-1, which is not accepted",
            bytes.len()
        )
    })
}

/// A thumbprint as vSphere shows them: upper-case hex pairs joined by colons.
pub fn format_thumbprint(t: &[u8]) -> String {
    t.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The certificate a server showed.
#[derive(Debug, Clone)]
pub struct Seen {
    /// SHA-256 of the certificate (DER).
    pub sha256: [u8; 32],
    /// Its subject, readable.
    pub subject: String,
    /// Its issuer, readable.
    pub issuer: String,
}

impl Seen {
    fn of(der: &[u8]) -> Seen {
        let (subject, issuer) = match x509_parser::parse_x509_certificate(der) {
            Ok((_, c)) => (c.subject().to_string(), c.issuer().to_string()),
            Err(_) => ("(unreadable)".into(), "(unreadable)".into()),
        };
        Seen {
            sha256: sha2::Sha256::digest(der).into(),
            subject,
            issuer,
        }
    }
}

/// Verifies per [`Pin`] and remembers the last certificate shown.
#[derive(Debug)]
pub struct Verifier {
    pin: Pin,
    system: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Option<Seen>>,
}

impl Verifier {
    /// A verifier for `pin`; for [`Pin::System`] the system trust store is loaded.
    pub fn new(pin: Pin) -> Result<Arc<Verifier>, String> {
        // ring, as the store already uses; rustls deprecates it only for its lack of
        // post-quantum key exchange, which vCenter does not offer either.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let system = if pin == Pin::System {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(
                    "the system trust store has no certificates (is ca-certificates installed?): \
                     pin the vCenter certificate with --thumbprint"
                        .into(),
                );
            }
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the system trust store: {e}"))?,
            )
        } else {
            None
        };
        Ok(Arc::new(Verifier {
            pin,
            system,
            provider,
            seen: Mutex::new(None),
        }))
    }

    /// The last certificate a server showed.
    pub fn seen(&self) -> Option<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A rustls client configuration verifying with this verifier.
    pub fn client_config(self: &Arc<Self>) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(self.clone())
                .with_no_client_auth(),
        )
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Seen::of(end_entity);
        let sha256 = seen.sha256;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        match &self.pin {
            Pin::Sha256(want) if *want == sha256 => Ok(ServerCertVerified::assertion()),
            Pin::Sha256(_) => Err(rustls::Error::General(
                "its certificate does not match the --thumbprint given".into(),
            )),
            Pin::Sha1(want) => {
                let got: [u8; 20] = sha1::Sha1::digest(end_entity.as_ref()).into();
                if got == *want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(
                        "its certificate does not match the thumbprint vCenter gave for it".into(),
                    ))
                }
            }
            Pin::System => self
                .system
                .as_ref()
                .expect("built with the system roots")
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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
    fn thumbprints_in_any_spelling() {
        let t = [0xabu8; 32];
        let colons = format_thumbprint(&t);
        assert_eq!(&colons[..6], "AB:AB:");
        assert_eq!(parse_thumbprint(&colons), Ok(t));
        assert_eq!(parse_thumbprint(&colons.to_lowercase()), Ok(t));
        assert_eq!(parse_thumbprint(&hex::encode(t)), Ok(t));
        assert!(
            parse_thumbprint("zz")
                .unwrap_err()
                .contains("not hexadecimal")
        );
        let sha1 = format_thumbprint(&[1u8; 20]);
        assert!(parse_thumbprint(&sha1).unwrap_err().contains("SHA-1"));
    }
}
