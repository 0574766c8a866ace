//! A container's log (`ROOT/containers/<id>/container.log`): one JSON object per line, as
//! Docker's json-file driver writes them (`{"log":"hi\n","stream":"stdout","time":"..."}`);
//! the supervisor appends, `strata logs` reads (with `--tail` and `-f`).

use super::{Result, RunError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Which output a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output (and a terminal's output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log entry: a line (with its newline) or the unterminated end of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text.
    pub log: String,
    /// Its stream.
    pub stream: Stream,
    /// When it was written (RFC 3339).
    pub time: String,
}

/// Appends entries to a log file.
pub struct LogWriter {
    file: std::fs::File,
}

impl LogWriter {
    /// Open (create) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(RunError::io(format!("open {}", path.display())))?;
        Ok(LogWriter { file })
    }

    /// Log `data` read from `stream`: one entry per line.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let time = super::state::now();
        let mut out = Vec::new();
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let e = Entry {
                log: String::from_utf8_lossy(piece).into_owned(),
                stream,
                time: time.clone(),
            };
            if let Ok(mut j) = serde_json::to_vec(&e) {
                j.push(b'\n');
                out.extend(j);
            }
        }
        let _ = self.file.write_all(&out);
    }
}

/// Reads a log from an offset on, complete lines only (for `-f`).
pub struct LogReader {
    file: std::fs::File,
    offset: u64,
}

impl LogReader {
    /// Open the log at `path` (a missing log reads as empty).
    pub fn open(path: &Path) -> Result<Option<Self>> {
        match std::fs::File::open(path) {
            Ok(file) => Ok(Some(LogReader { file, offset: 0 })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RunError::io(format!("open {}", path.display()))(e)),
        }
    }

    /// The entries written since the last call.
    pub fn next_entries(&mut self) -> Result<Vec<Entry>> {
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(RunError::io("read the log"))?;
        let mut buf = Vec::new();
        self.file
            .read_to_end(&mut buf)
            .map_err(RunError::io("read the log"))?;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        Ok(buf[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect())
    }
}

/// The last `n` entries of `entries` (all with `None`).
pub fn tail(mut entries: Vec<Entry>, n: Option<usize>) -> Vec<Entry> {
    if let Some(n) = n
        && entries.len() > n
    {
        entries.drain(..entries.len() - n);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_tail() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("log");
        let mut w = LogWriter::open(&p)?;
        w.write(Stream::Stdout, b"one\ntwo\nthr");
        w.write(Stream::Stderr, b"err\n");
        let mut r = LogReader::open(&p)?.ok_or("no log")?;
        let all = r.next_entries()?;
        let texts: Vec<&str> = all.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(texts, ["one\n", "two\n", "thr", "err\n"]);
        assert_eq!(all[3].stream, Stream::Stderr);
        assert!(r.next_entries()?.is_empty());
        w.write(Stream::Stdout, b"more\n");
        assert_eq!(r.next_entries()?.len(), 1);
        assert_eq!(tail(all, Some(2)).len(), 2);
        Ok(())
    }
}
