//! Progress of long work: the byte-counting reader that feeds it.

use std::io::{self, Read};

/// A reader that calls back with the number of bytes read (for progress bars).
pub struct CountReader<R, F: FnMut(u64)> {
    inner: R,
    f: F,
}

impl<R: Read, F: FnMut(u64)> CountReader<R, F> {
    /// Wraps a reader.
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
