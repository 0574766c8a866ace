//! The daemon of one lazy layer (`strata lazy-serve DIFFID`, started by `mount --lazy`):
//! mounts the layer's filesystem at `lazy/<hex>/mnt` and serves it until unmounted; beside
//! it, one background thread fetches the prefetch files (those before `.prefetch.landmark`),
//! then, when asked, the whole blob in order, pausing while reads wait, verifies it against
//! the layer digest and diff ID and installs it as an ordinary layer of the store.

use super::fetch::{Fetcher, Remote};
use super::fs::LazyFs;
use super::{LazyError, Result};
use crate::oci::{Digest, Reference};
use crate::registry::{ClientOptions, RetryPolicy};
use crate::store::Store;
use crate::store::lazy::LazyRecord;
use fuser::{Config, MountOption, SessionACL};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How a lazy layer is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Fetch the whole blob in the background and make the layer an ordinary one.
    pub complete: bool,
    /// Time limit of one request to the registry.
    pub request_timeout: Duration,
    /// Retries of a failed request.
    pub retries: u32,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            complete: true,
            request_timeout: Duration::from_secs(20),
            retries: 2,
        }
    }
}

/// The remote of a lazy layer's record.
pub fn remote_of(rec: &LazyRecord, opts: &ServeOptions) -> Result<Remote> {
    let reference = Reference::parse(&rec.source)
        .map_err(|e| LazyError::Registry(crate::registry::Error::InvalidReference(e)))?;
    Ok(Remote {
        reference,
        client: ClientOptions {
            tls_verify: rec.tls_verify,
            connect_timeout: Duration::from_secs(5),
            read_timeout: opts.request_timeout,
            request_timeout: Some(opts.request_timeout),
            ..ClientOptions::default()
        },
        digest: rec.digest.clone(),
        size: rec.size,
        policy: RetryPolicy {
            retries: opts.retries,
            backoff: Duration::from_millis(200),
        },
    })
}

/// Mounts the lazy layer `diff_id` of `store` and serves it until it is unmounted.
pub fn serve(store: &Store, diff_id: &Digest, opts: &ServeOptions) -> Result<()> {
    let rec = store.lazy_record(diff_id)?;
    let toc = store.lazy_toc(&rec)?;
    let dir = store.lazy_dir(diff_id);
    let fetcher = Arc::new(Fetcher::new(
        toc.index,
        dir.join("chunks"),
        remote_of(&rec, opts)?,
    )?);
    let mnt = store.lazy_mountpoint(diff_id);
    std::fs::create_dir_all(&mnt).map_err(LazyError::io(format!("create {}", mnt.display())))?;
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("strata-lazy".into()),
        MountOption::Subtype("strata-lazy".into()),
        MountOption::RO,
        MountOption::DefaultPermissions,
    ];
    if crate::image::fsutil::is_root() {
        cfg.acl = SessionACL::All;
        cfg.mount_options.push(MountOption::Suid);
        cfg.mount_options.push(MountOption::Dev);
    }
    cfg.n_threads = Some(4);
    let session = fuser::Session::new(LazyFs::new(fetcher.clone()), &mnt, &cfg)
        .map_err(LazyError::io(format!("mount {}", mnt.display())))?;
    let bg = fetcher.clone();
    let bg_store = store.clone();
    let complete = opts.complete;
    std::thread::spawn(move || background(&bg_store, &rec, &bg, complete));
    session
        .run()
        .map_err(LazyError::io(format!("serve {}", mnt.display())))
}

/// Waits while reads are being served (background work has the lowest priority).
fn yield_to_reads(f: &Fetcher) {
    while f.active_reads.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn background(store: &Store, rec: &LazyRecord, f: &Fetcher, complete: bool) {
    if let Some(end) = f.index.prefetch_end {
        let n = f.index.chunks.partition_point(|c| c.offset < end);
        for i in 0..n {
            yield_to_reads(f);
            if let Err(e) = f.ensure(i..i + 1) {
                log::warn!("prefetch of {}: {e}", rec.digest);
                break;
            }
        }
    }
    if complete && let Err(e) = complete_blob(store, rec, f) {
        log::warn!("background completion of {}: {e}", rec.digest);
    }
}

/// Fetches the whole blob (after reads, in order), verifies and installs it.
fn complete_blob(store: &Store, rec: &LazyRecord, f: &Fetcher) -> Result<()> {
    use std::io::Write;
    let dir = store.lazy_dir(&rec.diff_id);
    let part = dir.join(format!(".blob-{}.partial", std::process::id()));
    let mut out = std::fs::File::create(&part)
        .map_err(LazyError::io(format!("create {}", part.display())))?;
    let mut h = crate::oci::digest::Hasher::default();
    let mut off = 0;
    const STEP: u64 = 4 << 20;
    while off < rec.size {
        yield_to_reads(f);
        let len = STEP.min(rec.size - off);
        let b = f.read_blob(off, len)?;
        h.update(&b);
        out.write_all(&b)
            .map_err(LazyError::io(format!("write {}", part.display())))?;
        off += len;
    }
    out.sync_all()
        .map_err(LazyError::io(format!("fsync {}", part.display())))?;
    drop(out);
    let (actual, _) = h.finish();
    if actual != rec.digest {
        let _ = std::fs::remove_file(&part);
        return Err(LazyError::Registry(
            crate::registry::Error::DigestMismatch {
                digest: rec.digest.clone(),
                actual,
            },
        ));
    }
    let r = store.complete_lazy_layer(rec, &part);
    let _ = std::fs::remove_file(&part);
    r.map_err(LazyError::from)
}
