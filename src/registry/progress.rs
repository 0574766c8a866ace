//! Progress reporting of blob transfers: a trait the CLI implements with bars, and a
//! plain-lines implementation.

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
/// (`<short digest>: Pulling fs layer`, `Already exists`, `Pull complete`).
pub struct PlainProgress {
    out: Mutex<Box<dyn Write + Send>>,
    verb: &'static str,
}

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
        self.line(&format!("{}: {} {what}{size}", short(digest), self.verb));
    }
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, digest: &str) {
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
