//! Progress reporting of blob transfers: a trait the CLI implements with bars, and a
//! plain-lines implementation.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

/// Receives per-blob transfer events. Called from several download threads at once.
pub trait Progress: Sync {
    /// A transfer of `digest` (`total` bytes if known) starts; `what` is "layer", "config"...
    fn start(&self, digest: &str, what: &str, total: Option<u64>);
    /// `bytes` more bytes of `digest` moved.
    fn advance(&self, digest: &str, bytes: u64);
    /// The transfer of `digest` finished and was verified.
    fn finish(&self, digest: &str);
    /// `digest` needs no transfer: the destination already has it.
    fn already_exists(&self, digest: &str, what: &str);
    /// A free-form status line (e.g. "Writing manifest").
    fn message(&self, _line: &str) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str) {}
    fn already_exists(&self, _: &str, _: &str) {}
}

/// Prints one line per event to a writer (stderr by default), Docker-style
/// (`<short digest>: Pulling layer`, `Already exists`, `Pull complete`), and a line per
/// tenth of a blob transferred.
pub struct PlainProgress {
    out: Mutex<Box<dyn Write + Send>>,
    verb: &'static str,
    blobs: Mutex<HashMap<String, BlobState>>,
}

/// Bytes done, total if known, last tenth printed.
type BlobState = (u64, Option<u64>, u64);

impl PlainProgress {
    /// Lines to stderr; `verb` is "Pulling" or "Pushing".
    pub fn stderr(verb: &'static str) -> Self {
        Self::new(Box::new(std::io::stderr()), verb)
    }

    /// Lines to any writer.
    pub fn new(out: Box<dyn Write + Send>, verb: &'static str) -> Self {
        PlainProgress {
            out: Mutex::new(out),
            verb,
            blobs: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: &str) {
        if let Ok(mut out) = self.out.lock() {
            // Progress output is best effort: a closed stderr must not fail the transfer.
            let _ = writeln!(out, "{text}");
        }
    }
}

/// The 12-hex-digit short form used in progress lines.
pub fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}

impl Progress for PlainProgress {
    fn start(&self, digest: &str, what: &str, total: Option<u64>) {
        let size = total.map(|t| format!(" ({t} bytes)")).unwrap_or_default();
        if let Ok(mut b) = self.blobs.lock() {
            b.insert(digest.to_string(), (0, total, 0));
        }
        self.line(&format!("{}: {} {what}{size}", short(digest), self.verb));
    }
    fn advance(&self, digest: &str, bytes: u64) {
        let report = self.blobs.lock().ok().and_then(|mut b| {
            let (done, total, last) = b.get_mut(digest)?;
            *done += bytes;
            let total = (*total).filter(|t| *t > 0)?;
            let tenth = (*done).min(total) * 10 / total;
            if tenth > *last && tenth < 10 {
                *last = tenth;
                Some((*done, total, tenth))
            } else {
                None
            }
        });
        if let Some((done, total, tenth)) = report {
            let verb = if self.verb == "Pushing" {
                "Uploading"
            } else {
                "Downloading"
            };
            self.line(&format!(
                "{}: {verb} {}0% ({done}/{total} bytes)",
                short(digest),
                tenth
            ));
        }
    }
    fn finish(&self, digest: &str) {
        if let Ok(mut b) = self.blobs.lock() {
            b.remove(digest);
        }
        let done = if self.verb == "Pushing" {
            "Pushed"
        } else {
            "Pull complete"
        };
        self.line(&format!("{}: {done}", short(digest)));
    }
    fn already_exists(&self, digest: &str, what: &str) {
        let what = if what == "layer" {
            "Layer already exists"
        } else {
            "Already exists"
        };
        let what = if self.verb == "Pulling" {
            "Already exists"
        } else {
            what
        };
        self.line(&format!("{}: {what}", short(digest)));
    }
    fn message(&self, line: &str) {
        self.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(b);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let p = PlainProgress::new(Box::new(Shared(buf.clone())), "Pulling");
        let d = format!("sha256:{}", "ab".repeat(32));
        let e = format!("sha256:{}", "cd".repeat(32));
        p.already_exists(&e, "layer");
        p.start(&d, "layer", Some(1000));
        for _ in 0..10 {
            p.advance(&d, 100);
        }
        p.finish(&d);
        let text = String::from_utf8(buf.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cdcdcdcdcdcd: Already exists");
        assert_eq!(lines[1], "abababababab: Pulling layer (1000 bytes)");
        assert_eq!(lines[2], "abababababab: Downloading 10% (100/1000 bytes)");
        assert_eq!(lines.len(), 2 + 9 + 1);
        assert_eq!(lines[11], "abababababab: Pull complete");
    }
}
