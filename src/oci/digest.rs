//! sha256 digests: the one validated `sha256:<hex>` type of the image half, and the hashing of
//! bytes, streams and files into it.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

/// A validated `sha256:<64 lower-case hex digits>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Another algorithm than sha256, or none.
    #[error("digest {0:?}: only sha256 digests are supported")]
    Algorithm(String),
    /// Not 64 lower-case hex digits after `sha256:`.
    #[error("digest {0:?}: not 64 lower-case hex digits")]
    Hex(String),
}

impl Digest {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError::Algorithm(s.to_string()))?;
        Self::from_hex(hex).map_err(|_| DigestError::Hex(s.to_string()))
    }

    /// The digest whose hex digits are `hex` (a blob or layer file name).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let mut raw = [0u8; 32];
        if hex.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(hex, &mut raw).is_err()
        {
            return Err(DigestError::Hex(hex.to_string()));
        }
        Ok(Digest(format!("sha256:{hex}")))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Self::from_sha256(Sha256::digest(bytes).as_slice())
    }

    fn from_sha256(raw: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(raw)))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The first 12 hex digits, as Docker shows them.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same digest as oci-spec's type (for descriptors).
    pub fn to_oci(&self) -> Result<oci_spec::image::Digest, DigestError> {
        oci_spec::image::Digest::try_from(self.0.as_str())
            .map_err(|_| DigestError::Hex(self.0.clone()))
    }

    /// An oci-spec digest (as in a descriptor) as ours: sha256 only.
    pub fn from_oci(d: &oci_spec::image::Digest) -> Result<Digest, DigestError> {
        Self::parse(d.as_ref())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running sha256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    h: Sha256,
    n: u64,
}

impl Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b);
        self.n += b.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The digest and byte count so far.
    pub fn finish(&self) -> (Digest, u64) {
        (
            Digest::from_sha256(self.h.clone().finalize().as_slice()),
            self.n,
        )
    }
}

/// A reader that hashes what passes through it.
pub struct HashReader<R> {
    inner: R,
    /// The hash of everything read so far.
    pub hasher: Hasher,
}

impl<R: Read> HashReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Reads everything left (so the hash covers the whole stream).
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes what passes through it.
pub struct HashWriter<W> {
    inner: W,
    /// The hash of everything written so far.
    pub hasher: Hasher,
}

impl<W: Write> HashWriter<W> {
    /// Wraps a writer.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The digest and size of a whole file, streamed.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut r = HashReader::new(std::fs::File::open(path)?);
    r.drain()?;
    Ok(r.hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_hash() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let d = Digest::of(b"");
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::from_hex(d.hex())?, d);
        assert_eq!(Digest::parse(d.as_str())?, d);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(Digest::parse(d.hex()).is_err(), "no algorithm");
        assert!(Digest::parse("sha256:E3B0").is_err());
        assert!(Digest::parse(&d.as_str().to_uppercase().replace("SHA256", "sha256")).is_err());
        assert!(Digest::parse(&format!("sha512:{}", d.hex())).is_err());
        assert!(Digest::from_hex(&"g".repeat(64)).is_err());
        assert!(Digest::from_hex(&"a".repeat(63)).is_err());
        assert_eq!(Digest::from_oci(&d.to_oci()?)?, d);
        let mut r = HashReader::new(&b"abc"[..]);
        r.drain()?;
        assert_eq!(r.hasher.finish(), (Digest::of(b"abc"), 3));
        let json = serde_json::to_string(&d)?;
        assert_eq!(serde_json::from_str::<Digest>(&json)?, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
        Ok(())
    }
}
