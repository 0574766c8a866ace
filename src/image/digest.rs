//! sha256 digests: parsing, hashing readers and writers.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};

/// A validated `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parse `sha256:<hex>` (or a bare 64-hex string).
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Some(Digest(format!("sha256:{hex}")))
        } else {
            None
        }
    }
    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
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
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running sha256 with a byte count.
#[derive(Default, Clone)]
pub struct Hasher {
    h: Sha256,
    n: u64,
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b);
        self.n += b.len() as u64;
    }
    /// The digest and byte count so far.
    pub fn finish(&self) -> (Digest, u64) {
        (
            Digest(format!("sha256:{}", hex::encode(self.h.clone().finalize()))),
            self.n,
        )
    }
}

/// A reader that hashes what passes through it and reports progress.
pub struct HashReader<R> {
    inner: R,
    /// The hash of everything read so far.
    pub hasher: Hasher,
}

impl<R: Read> HashReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Hasher::default(),
        }
    }
    /// Read everything left (so the hash covers the whole stream).
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
    /// Wrap a writer.
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

/// A reader that calls back with the number of bytes read (for progress bars).
pub struct CountReader<R, F: FnMut(u64)> {
    inner: R,
    f: F,
}

impl<R: Read, F: FnMut(u64)> CountReader<R, F> {
    /// Wrap a reader.
    pub fn new(inner: R, f: F) -> Self {
        CountReader { inner, f }
    }
}

impl<R: Read, F: FnMut(u64)> Read for CountReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.f)(n as u64);
        Ok(n)
    }
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
        assert_eq!(Digest::parse(d.hex()), Some(d.clone()));
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!(Digest::parse("sha256:E3B0").is_none());
        assert!(Digest::parse(&"g".repeat(64)).is_none());
        let mut r = HashReader::new(&b"abc"[..]);
        r.drain()?;
        assert_eq!(r.hasher.finish(), (Digest::of(b"abc"), 3));
        Ok(())
    }
}
