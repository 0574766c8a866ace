//! Byte ranges of one blob of one repository, for lazy layers: each request bounded in time
//! (the client's `request_timeout`), failures that may pass (unreachable registry, broken
//! transfer, HTTP 5xx and 429) retried a bounded number of times with a growing pause, and
//! every answer checked to be exactly the bytes asked for. Bytes fetched are counted.

use crate::oci::{Digest, Reference};
use crate::registry::client::{Client, ClientOptions};
use crate::registry::error::{Error, Result};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often and how patiently a range is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Further attempts after the first.
    pub retries: u32,
    /// Pause before the first retry; doubled each time.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Reads ranges of one blob.
pub struct RangeReader {
    client: Client,
    repository: String,
    digest: Digest,
    size: u64,
    policy: RetryPolicy,
    fetched: AtomicU64,
    requests: AtomicU64,
}

/// Whether an error may pass if the request is sent again.
fn transient(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Interrupted { .. } => true,
        Error::Status { status, .. } => *status >= 500 || *status == 429,
        Error::Protocol { detail, .. } => !detail.contains("not supported"),
        _ => false,
    }
}

impl RangeReader {
    /// Connects to the registry of `reference` for blob `digest` of `size` bytes.
    pub fn connect(
        reference: &Reference,
        opts: &ClientOptions,
        digest: Digest,
        size: u64,
        policy: RetryPolicy,
    ) -> Result<RangeReader> {
        let client = Client::new(reference.registry(), opts)?
            .for_repository(reference.repository(), opts)?;
        Ok(RangeReader {
            client,
            repository: reference.repository().to_string(),
            digest,
            size,
            policy,
            fetched: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes received so far, and requests made.
    pub fn fetched(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    fn once(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let r = self
            .client
            .fetch_range(&self.repository, &self.digest, offset, len)?;
        let mut buf = Vec::with_capacity(len.min(64 << 20) as usize);
        let got = r.take(len).read_to_end(&mut buf);
        self.fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
        got.map_err(|e| Error::Interrupted {
            host: self.client.host().to_string(),
            what: format!("range {offset}+{len} of blob {}", self.digest),
            detail: e.to_string(),
        })?;
        if buf.len() as u64 != len {
            return Err(Error::Interrupted {
                host: self.client.host().to_string(),
                what: format!("range {offset}+{len} of blob {}", self.digest),
                detail: format!("received {} bytes", buf.len()),
            });
        }
        Ok(buf)
    }

    /// Exactly `len` bytes of the blob from `offset`, retried as the policy says.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(Error::Protocol {
                host: self.client.host().to_string(),
                detail: format!(
                    "range {offset}+{len} outside blob {} of {} bytes",
                    self.digest, self.size
                ),
            });
        }
        let mut pause = self.policy.backoff;
        let mut attempt = 0;
        loop {
            match self.once(offset, len) {
                Ok(b) => return Ok(b),
                Err(e) if attempt < self.policy.retries && transient(&e) => {
                    log::debug!("range {offset}+{len} of {}: {e}; retrying", self.digest);
                    std::thread::sleep(pause);
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_failures_are_retried() {
        let host = || "h".to_string();
        assert!(transient(&Error::Unreachable {
            host: host(),
            detail: "refused".into()
        }));
        assert!(transient(&Error::Interrupted {
            host: host(),
            what: "x".into(),
            detail: "eof".into()
        }));
        for status in [500, 502, 503, 429] {
            assert!(transient(&Error::Status {
                host: host(),
                status,
                what: "x".into(),
                detail: String::new()
            }));
        }
        for status in [400, 401, 403, 404, 416] {
            assert!(!transient(&Error::Status {
                host: host(),
                status,
                what: "x".into(),
                detail: String::new()
            }));
        }
        assert!(!transient(&Error::Protocol {
            host: host(),
            detail: "range requests on blob x are not supported".into()
        }));
        assert!(!transient(&Error::WrongCredentials {
            host: host(),
            from: String::new()
        }));
    }
}
