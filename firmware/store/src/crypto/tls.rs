//! The appliance's TLS identity: a self-signed certificate and its private key, made at
//! provisioning and kept in clear in every superblock (the appliance must serve the unlock
//! page while locked, so it cannot be wrapped by the unlock code).
//!
//! Clients do not trust it through a certificate authority: they pin the SHA-256
//! fingerprint of the certificate, which provisioning records in the job file and prints on
//! the customer's unlock sheet. The key authenticates the appliance and unlocks nothing;
//! what a copy of it allows is in `docs/control-api.md`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, KeyError, Result};

/// Name in the certificate's subject alternative names. Clients pin the fingerprint and
/// ignore names: the appliance's address on the customer's network is not known in advance.
pub const CERT_NAME: &str = "odt-appliance";

/// Certificate and private key of one appliance.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsIdentity {
    /// The X.509 certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER (ECDSA P-256).
    pub key_der: SecretBytes,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (what `curl --pinnedpubkey` and
    /// Chromium's `--ignore-certificate-errors-spki-list` pin).
    pub spki_sha256: [u8; 32],
}

/// Secret bytes: zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh key pair and self-signed certificate for job `job_id`.
    pub fn generate(job_id: &str) -> Result<TlsIdentity> {
        use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
        let failed =
            |e: rcgen::Error| KeyError::Tls(format!("cannot make the TLS certificate: {e}"));
        let key = KeyPair::generate().map_err(failed)?;
        let mut params = CertificateParams::new(vec![CERT_NAME.to_string()]).map_err(failed)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ODT appliance {job_id}"));
        // rcgen's default validity (1975 to 4096) is kept on purpose: an appliance's clock
        // may be wrong, and trust comes from the pinned fingerprint, not from dates.
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok(TlsIdentity {
            cert_der: cert.der().to_vec(),
            key_der: SecretBytes(key.serialize_der()),
            spki_sha256: Sha256::digest(key.subject_public_key_info()).into(),
        })
    }

    /// SHA-256 of the certificate, as [`Fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_cert(&self.cert_der)
    }

    /// The public-key pin in curl's and Chromium's spelling: base64 of the SPKI's SHA-256.
    pub fn spki_pin(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.spki_sha256)
    }
}

/// The TLS crypto provider both sides use: rustls on `ring`, which the store already uses
/// for AES-GCM (aws-lc-rs, rustls' default, would add a C and CMake build). rustls marks it
/// deprecated because `ring` has no post-quantum key exchange: a recording of today's
/// traffic (the unlock code inside it) could be read by a future quantum computer; with a
/// copy of the devices made before their erase, that would open the data. Said in
/// `docs/control-api.md`; switch to aws-lc-rs when that risk matters more than the build.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 fingerprint of a certificate. Shown as `AB:CD:...` (as `openssl x509
/// -fingerprint -sha256` and browsers show it); parsed from that, from plain hex, with or
/// without a `sha256:` prefix, any case, colons or spaces.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER certificate.
    pub fn of_cert(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Lower-case hex without separators (for file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Fingerprint> {
        let t = s.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .or_else(|| t.strip_prefix("sha256="))
            .or_else(|| t.strip_prefix("SHA256="))
            .unwrap_or(t);
        let digits: String = t
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        let bad = || {
            KeyError::Tls(format!(
                "{s:?} is not a SHA-256 certificate fingerprint (64 hex digits, e.g. \
                 AB:CD:...; it is on the unlock sheet and in the job file)"
            ))
        };
        let bytes = hex::decode(&digits).map_err(|_| bad())?;
        Ok(Fingerprint(bytes.try_into().map_err(|_| bad())?))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_and_its_fingerprint() {
        let id = TlsIdentity::generate("odt-test").unwrap();
        let fp = id.fingerprint();
        let shown = fp.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.hex().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            format!("sha256:{}", fp.hex().to_uppercase())
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        assert!("AB:CD".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        let other = TlsIdentity::generate("odt-test").unwrap();
        assert_ne!(
            other.fingerprint(),
            fp,
            "every provisioning makes a new key"
        );
        assert!(!format!("{id:?}").contains(&hex::encode(&id.key_der.0[..8])));
        assert_eq!(id.spki_pin().len(), 44);
    }
}
