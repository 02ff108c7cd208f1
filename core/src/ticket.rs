//! SPICE ticket authentication: the server's RSA-1024 key and the check of
//! the password the client encrypts with it.
//!
//! The client encrypts `password + NUL` with RSA-OAEP (SHA-1, MGF1-SHA-1,
//! empty label) under the public key sent in the link reply; the ciphertext
//! is always 128 bytes.

use rsa::pkcs8::EncodePublicKey;
use rsa::{Oaep, PrivateKey};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::proto::consts::TICKET_PUBKEY_BYTES;

/// RSA modulus size required by the protocol.
const KEY_BITS: usize = 1024;

/// Errors of ticket key handling.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// Generating the RSA key failed (RNG failure).
    #[error("RSA-1024 key generation failed: {0}")]
    KeyGeneration(rsa::Error),
    /// Encoding the public key as SubjectPublicKeyInfo failed.
    #[error("public key DER encoding failed: {0}")]
    Encoding(String),
    /// The DER encoding does not have the 162-byte layout clients expect.
    #[error("public key DER is {0} bytes, expected 162")]
    UnexpectedDerLength(usize),
    /// The ciphertext could not be decrypted (wrong length, bad padding or
    /// not made with this key).
    #[error("ticket decryption failed")]
    Decryption,
}

/// The server's ticket key pair: a fresh RSA-1024 key with exponent 65537.
pub struct TicketKey {
    private: PrivateKey,
    public_der: [u8; TICKET_PUBKEY_BYTES],
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey").finish_non_exhaustive()
    }
}

impl TicketKey {
    /// Generates a new key with the operating system RNG.
    pub fn generate() -> Result<Self, TicketError> {
        let private = PrivateKey::new(&mut getrandom::SysRng, KEY_BITS)
            .map_err(TicketError::KeyGeneration)?;
        let der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| TicketError::Encoding(e.to_string()))?;
        let public_der: [u8; TICKET_PUBKEY_BYTES] = der
            .as_bytes()
            .try_into()
            .map_err(|_| TicketError::UnexpectedDerLength(der.as_bytes().len()))?;
        Ok(Self {
            private,
            public_der,
        })
    }

    /// The public key as X.509 SubjectPublicKeyInfo DER, exactly 162 bytes,
    /// for the link reply.
    pub fn public_der(&self) -> [u8; TICKET_PUBKEY_BYTES] {
        self.public_der
    }

    /// Decrypts a client ticket (RSA-OAEP, SHA-1, MGF1-SHA-1, empty label).
    /// Returns the plaintext: password bytes followed by a NUL.
    pub fn decrypt_ticket(&self, ciphertext: &[u8]) -> Result<Vec<u8>, TicketError> {
        self.private
            .decrypt(Oaep::<Sha1>::new(), ciphertext)
            .map_err(|_| TicketError::Decryption)
    }
}

/// Checks a decrypted ticket against the configured password.
///
/// The password is the plaintext up to the first NUL (the whole plaintext if
/// there is none). `None` accepts any ticket. The comparison runs in
/// constant time with respect to the content; lengths are compared without
/// an early exit.
pub fn check_ticket(plaintext: &[u8], expected_password: Option<&str>) -> bool {
    let Some(expected) = expected_password else {
        return true;
    };
    let given = plaintext
        .iter()
        .position(|&b| b == 0)
        .map_or(plaintext, |nul| &plaintext[..nul]);
    let expected = expected.as_bytes();
    // Compare equal-length zero-padded buffers so a length mismatch does not
    // skip the content comparison.
    let width = given.len().max(expected.len()).max(128);
    let mut a = vec![0u8; width];
    let mut b = vec![0u8; width];
    a[..given.len()].copy_from_slice(given);
    b[..expected.len()].copy_from_slice(expected);
    let same_content = a.ct_eq(&b);
    let same_len = (given.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(same_content & same_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One key shared by the tests: generation is the slow part.
    fn key() -> &'static TicketKey {
        static KEY: OnceLock<TicketKey> = OnceLock::new();
        KEY.get_or_init(|| TicketKey::generate().expect("key generation"))
    }

    fn encrypt(key: &TicketKey, plaintext: &[u8]) -> Vec<u8> {
        key.private
            .to_public_key()
            .encrypt(&mut getrandom::SysRng, Oaep::<Sha1>::new(), plaintext)
            .expect("encrypt")
    }

    #[test]
    fn public_der_has_the_expected_layout() {
        const PREFIX: [u8; 29] = [
            0x30, 0x81, 0x9F, 0x30, 0x0D, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01,
            0x01, 0x01, 0x05, 0x00, 0x03, 0x81, 0x8D, 0x00, 0x30, 0x81, 0x89, 0x02, 0x81, 0x81,
            0x00,
        ];
        let der = key().public_der();
        assert_eq!(der.len(), 162);
        assert_eq!(der[..29], PREFIX);
        assert_eq!(der[157..], [0x02, 0x03, 0x01, 0x00, 0x01]);
        // The modulus has its top bit set (hence the 0x00 sign byte).
        assert!(der[29] & 0x80 != 0);
    }

    #[test]
    fn round_trip_and_password_check() {
        let key = key();
        let ciphertext = encrypt(key, b"secret\0");
        assert_eq!(ciphertext.len(), 128);
        let plaintext = key.decrypt_ticket(&ciphertext).unwrap();
        assert_eq!(plaintext, b"secret\0");
        assert!(check_ticket(&plaintext, Some("secret")));
        assert!(!check_ticket(&plaintext, Some("Secret")));
        assert!(!check_ticket(&plaintext, Some("secret2")));
        assert!(!check_ticket(&plaintext, Some("secre")));
        assert!(!check_ticket(&plaintext, Some("")));
        assert!(check_ticket(&plaintext, None));
    }

    #[test]
    fn empty_password_is_a_single_nul() {
        let key = key();
        let plaintext = key.decrypt_ticket(&encrypt(key, &[0])).unwrap();
        assert_eq!(plaintext, [0]);
        assert!(check_ticket(&plaintext, None));
        assert!(check_ticket(&plaintext, Some("")));
        assert!(!check_ticket(&plaintext, Some("x")));
    }

    #[test]
    fn check_ticket_edge_cases() {
        // Bytes after the first NUL are ignored.
        assert!(check_ticket(b"pw\0garbage", Some("pw")));
        // No NUL: the whole plaintext is the password.
        assert!(check_ticket(b"pw", Some("pw")));
        let long = "x".repeat(300);
        assert!(check_ticket(long.as_bytes(), Some(&long)));
        assert!(!check_ticket(long.as_bytes(), Some(&long[..299])));
        assert!(!check_ticket(b"", Some("pw")));
        assert!(check_ticket(b"", Some("")));
    }

    #[test]
    fn garbage_ciphertext_is_an_error() {
        let key = key();
        assert!(key.decrypt_ticket(&[0u8; 128]).is_err());
        assert!(key.decrypt_ticket(&[0xFF; 128]).is_err());
        assert!(key.decrypt_ticket(&[]).is_err());
        assert!(key.decrypt_ticket(&[1, 2, 3]).is_err());
        assert!(key.decrypt_ticket(&[0x5A; 129]).is_err());
        let mut tampered = encrypt(key, b"pw\0");
        tampered[60] ^= 1;
        assert!(key.decrypt_ticket(&tampered).is_err());
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..20 {
            let ct: Vec<u8> = (0..128)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            assert!(key.decrypt_ticket(&ct).is_err());
        }
    }

    #[test]
    fn keys_are_fresh() {
        let other = TicketKey::generate().unwrap();
        assert_ne!(other.public_der(), key().public_der());
        // A ticket for one key does not decrypt with another.
        assert!(other.decrypt_ticket(&encrypt(key(), b"pw\0")).is_err());
    }
}
