//! Progress of long work: the one trait the library reports through (the CLI draws it), and
//! the byte-counting reader that feeds it. No terminal code here or below.

use std::io::{self, Read};

/// The status of an item that needed no work: the destination has it already.
pub const ALREADY_EXISTS: &str = "Already exists";

/// Receives progress reports. Items (a blob, a layer, the archive) are named by an id, a
/// digest (`sha256:...`, shown short) or a word; several may be under way at once, reported
/// from several threads.
pub trait Progress: Sync {
    /// Work on `id` starts: `action` says what (`Loading layer`), `total` bytes if known.
    fn begin(&self, id: &str, action: &str, total: Option<u64>);
    /// `n` more bytes of `id` are done.
    fn advance(&self, id: &str, n: u64);
    /// `id` ends with `status` (`Loaded`, `Transfer complete`, [`ALREADY_EXISTS`]); also for
    /// an item that needed no work and never began.
    fn finish(&self, id: &str, status: &str);
    /// A line of its own (`Loaded image: x:y`, `warning: ...`).
    fn message(&self, line: &str);
}

/// Progress that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: &str) {}
    fn message(&self, _: &str) {}
}

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
