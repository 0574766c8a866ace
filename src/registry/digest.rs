//! Content digests: `sha256:<hex>` parsing, hashing of bytes and streams.

use crate::registry::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::Path;

/// Hex-encodes bytes in lower case.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// The `sha256:<hex>` digest of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A running sha256 over streamed content.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `sha256:<hex>` digest.
    pub fn digest(self) -> String {
        format!("sha256:{}", hex(&self.inner.finalize()))
    }
}

/// Returns the hex part of a `sha256:<hex>` digest, or an error naming it.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad(digest, "only sha256 digests are supported"))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(digest, "not 64 lower-case hex digits"));
    }
    Ok(hex)
}

fn bad(digest: &str, reason: &str) -> Error {
    Error::BadManifest {
        what: format!("digest {digest:?}"),
        reason: reason.to_string(),
    }
}

/// Hashes a whole file, streaming; returns (digest, size).
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.digest(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(sha256_hex(&sha256_digest(b"x")).is_ok());
        assert!(sha256_hex("sha512:00").is_err());
        assert!(sha256_hex("sha256:ABC").is_err());
    }
}
