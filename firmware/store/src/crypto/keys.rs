//! Key material: the job's data key and device signing key, their wrapping with `age`
//! (to the provider's X25519 ingest recipient and to the customer's unlock code), and the
//! unlock code itself. Secret types zeroize on drop and never print their bytes.

use std::fmt;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, KeyError, Result};

/// scrypt work factor for the unlock code. The code carries 100 random bits, so the
/// KDF need not be slow to be safe; 2^15 keeps unlock well under a second.
const UNLOCK_SCRYPT_LOG_N: u8 = 15;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// A fresh random 64-bit value (session ids, set ids).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_le_bytes(b)
}

/// The secrets of one job's device set: the data key (AEAD of records and journal) and the
/// Ed25519 seed the appliance signs the seal with.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Secrets {
    /// 256-bit data key; per-session keys are derived from it.
    pub data_key: [u8; 32],
    /// Ed25519 secret seed of the device signing key.
    pub signing_seed: [u8; 32],
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

impl Secrets {
    /// Generates new random secrets.
    pub fn generate() -> Self {
        let mut s = Secrets {
            data_key: [0; 32],
            signing_seed: [0; 32],
        };
        random_bytes(&mut s.data_key);
        random_bytes(&mut s.signing_seed);
        s
    }

    /// The Ed25519 signing key.
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.signing_seed)
    }

    /// The public half of the signing key, recorded in the job and the superblock.
    pub fn verifying_key(&self) -> [u8; 32] {
        self.signing_key().verifying_key().to_bytes()
    }

    fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(&self.data_key);
        v.extend_from_slice(&self.signing_seed);
        v
    }

    fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 64 {
            return Err(KeyError::Wrong(format!(
                "the wrapped key blob holds {} bytes, expected 64",
                b.len()
            ))
            .into());
        }
        let mut s = Secrets {
            data_key: [0; 32],
            signing_seed: [0; 32],
        };
        s.data_key.copy_from_slice(&b[..32]);
        s.signing_seed.copy_from_slice(&b[32..]);
        Ok(s)
    }

    /// Wraps to the ingest station's X25519 recipient.
    pub fn wrap_to_recipient(&self, recipient: &age::x25519::Recipient) -> Result<Vec<u8>> {
        age::encrypt(recipient, &self.to_bytes()).map_err(|source| {
            KeyError::Wrap {
                to: "the ingest recipient",
                source,
            }
            .into()
        })
    }

    /// Wraps to the customer's unlock code (age scrypt recipient).
    pub fn wrap_to_code(&self, code: &UnlockCode) -> Result<Vec<u8>> {
        let mut r = age::scrypt::Recipient::new(SecretString::from(code.0.clone()));
        r.set_work_factor(UNLOCK_SCRYPT_LOG_N);
        age::encrypt(&r, &self.to_bytes()).map_err(|source| {
            KeyError::Wrap {
                to: "the unlock code",
                source,
            }
            .into()
        })
    }

    /// Unwraps with the ingest identity.
    pub fn unwrap_with_identity(blob: &[u8], identity: &age::x25519::Identity) -> Result<Self> {
        let plain =
            age::decrypt(identity, blob).map_err(|source| KeyError::WrongIdentity { source })?;
        Self::from_bytes(&zeroize::Zeroizing::new(plain))
    }

    /// Unwraps with the customer's unlock code.
    pub fn unwrap_with_code(blob: &[u8], code: &UnlockCode) -> Result<Self> {
        let mut id = age::scrypt::Identity::new(SecretString::from(code.0.clone()));
        id.set_max_work_factor(UNLOCK_SCRYPT_LOG_N + 2);
        let plain = age::decrypt(&id, blob).map_err(|_| {
            KeyError::Wrong("the unlock code is not the one printed at provisioning".into())
        })?;
        Self::from_bytes(&zeroize::Zeroizing::new(plain))
    }
}

/// The customer's unlock code: 20 Crockford base32 characters (100 bits) in four groups,
/// e.g. `7K2QD-M9XTA-04HFR-ZP6WE`. Input is normalised (case, spaces, I/L→1, O→0).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct UnlockCode(String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl UnlockCode {
    /// Generates a fresh random code.
    pub fn generate() -> Self {
        let mut raw = [0u8; 20];
        random_bytes(&mut raw);
        let mut s = String::with_capacity(23);
        for (i, b) in raw.iter().enumerate() {
            if i > 0 && i % 5 == 0 {
                s.push('-');
            }
            s.push(CROCKFORD[(*b & 31) as usize] as char);
        }
        raw.zeroize();
        UnlockCode(s)
    }

    /// The code as printed for the customer. Handle with care: it is a secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for UnlockCode {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self> {
        let mut chars = String::new();
        for c in input.chars() {
            let c = c.to_ascii_uppercase();
            let c = match c {
                'I' | 'L' => '1',
                'O' => '0',
                '-' | ' ' | '\t' | '\n' | '\r' => continue,
                c => c,
            };
            if !CROCKFORD.contains(&(c as u8)) || !c.is_ascii() {
                return Err(KeyError::Wrong(format!(
                    "an unlock code has only letters and digits, found {c:?}"
                ))
                .into());
            }
            chars.push(c);
        }
        if chars.len() != 20 {
            return Err(KeyError::Wrong(format!(
                "an unlock code has 20 letters and digits (like 7K2QD-M9XTA-04HFR-ZP6WE), got {}",
                chars.len()
            ))
            .into());
        }
        let mut s = String::with_capacity(23);
        for (i, c) in chars.chars().enumerate() {
            if i > 0 && i % 5 == 0 {
                s.push('-');
            }
            s.push(c);
        }
        chars.zeroize();
        Ok(UnlockCode(s))
    }
}

impl fmt::Debug for UnlockCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockCode(<redacted>)")
    }
}

/// Reads an age X25519 identity (the ingest secret) from its text form.
pub fn parse_identity(text: &str) -> Result<age::x25519::Identity> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| KeyError::Wrong("no AGE-SECRET-KEY line in the identity file".into()))?;
    age::x25519::Identity::from_str(line)
        .map_err(|e| KeyError::Wrong(format!("the ingest identity is malformed: {e}")).into())
}

/// Formats an identity for its key file (the caller writes it with mode 0600).
pub fn identity_file_text(id: &age::x25519::Identity) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(format!(
        "# ODT ingest identity: keep secret, never leaves the ingest station\n# public: {}\n{}\n",
        id.to_public(),
        id.to_string().expose_secret()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn code_roundtrip_and_normalise() {
        let c = UnlockCode::generate();
        assert_eq!(c.expose().len(), 23);
        let lower = c.expose().to_lowercase().replace('-', " ");
        assert!(UnlockCode::from_str(&lower).unwrap() == c);
        assert!(UnlockCode::from_str("ABC").is_err());
        assert!(UnlockCode::from_str("ABCDE-ABCDE-ABCDE-ABCD!").is_err());
        assert!(!format!("{c:?}").contains(&c.expose()[..5]));
    }

    #[test]
    fn wrap_unwrap() {
        let s = Secrets::generate();
        let id = age::x25519::Identity::generate();
        let code = UnlockCode::generate();
        let w1 = s.wrap_to_recipient(&id.to_public()).unwrap();
        let w2 = s.wrap_to_code(&code).unwrap();
        assert_eq!(
            Secrets::unwrap_with_identity(&w1, &id).unwrap().data_key,
            s.data_key
        );
        assert_eq!(
            Secrets::unwrap_with_code(&w2, &code).unwrap().signing_seed,
            s.signing_seed
        );
        let other = age::x25519::Identity::generate();
        let wrong_key = |r: Result<Secrets>| matches!(r.map_err(Error::into_kind), Err(ErrorKind::Key(k)) if k.is_wrong_key());
        assert!(wrong_key(Secrets::unwrap_with_identity(&w1, &other)));
        let wrong = UnlockCode::generate();
        assert!(wrong_key(Secrets::unwrap_with_code(&w2, &wrong)));
    }
}
