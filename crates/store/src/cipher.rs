//! Secrets at rest: XChaCha20-Poly1305 with a random nonce per value, bound to its row and column.
//!
//! A stored value is `version (1 byte) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The
//! associated data names the column and the portal, so a value copied into another row or column
//! fails to decrypt instead of being accepted.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::{Error, Result};

const FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// The 32-byte key that encrypts portal tokens in the store. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StoreKey {
        StoreKey(bytes)
    }

    /// A key from 64 hex digits (surrounding whitespace ignored), as kept in config or a file.
    pub fn from_hex(text: &str) -> Result<StoreKey> {
        let text = text.trim();
        let invalid = || Error::InvalidKey { length: text.chars().count() };
        if text.len() != 64 || !text.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let digits = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *byte = u8::from_str_radix(digits, 16).map_err(|_| invalid())?;
        }
        Ok(StoreKey(bytes))
    }

    /// A fresh random key (for set-up commands and tests).
    pub fn generate() -> StoreKey {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        StoreKey(bytes)
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(***)")
    }
}

/// Encrypts and decrypts installation secrets.
#[derive(Clone)]
pub(crate) struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    pub(crate) fn new(key: &StoreKey) -> Cipher {
        Cipher { aead: XChaCha20Poly1305::new((&key.0).into()) }
    }

    /// Encrypts the `field` secret of installation `member_id`.
    pub(crate) fn seal(
        &self,
        member_id: &str,
        field: &'static str,
        plaintext: &str,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(member_id, field);
        let payload = Payload { msg: plaintext.as_bytes(), aad: &aad };
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&nonce);
        // Only messages beyond 256 GiB fail to encrypt; report it rather than assume it.
        let ciphertext = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), payload)
            .map_err(|_| Error::Encrypt { member_id: member_id.to_owned(), field })?;
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`Cipher::seal`] wrote for the same `member_id` and `field`.
    pub(crate) fn open(
        &self,
        member_id: &str,
        field: &'static str,
        stored: &[u8],
    ) -> Result<String> {
        let fail = || Error::Decrypt { member_id: member_id.to_owned(), field };
        let (version, rest) = stored.split_first().ok_or_else(fail)?;
        if *version != FORMAT_VERSION || rest.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = associated_data(member_id, field);
        let plaintext = self
            .aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| fail())?;
        String::from_utf8(plaintext).map_err(|_| fail())
    }
}

fn associated_data(member_id: &str, field: &str) -> Vec<u8> {
    format!("b24act-store/v1/installations.{field}/{member_id}").into_bytes()
}
