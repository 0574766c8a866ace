//! Pull: fetch an image from a registry into an OCI image layout, skipping the layers the
//! caller already has, downloading the others in parallel, each streamed to a temporary file
//! while hashed and renamed into place only once verified.

use crate::lockfile::{self, Mode};
use crate::oci::Reference;
use crate::oci::digest::Hasher;
use crate::oci::media::{IMAGE_NAME, REF_NAME};
use crate::oci::{self, Descriptor, Digest, MediaType, Platform};
use crate::progress::{ALREADY_EXISTS, Progress};
use crate::registry::TRANSFER_COMPLETE;
use crate::registry::client::{Client, ClientOptions, ReqBody, Scope};
use crate::registry::error::{Error, Result};
use crate::registry::layout;
use crate::registry::manifest::{self, Manifest};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use ureq::http::{self, StatusCode};

/// Options of a pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Connection and credentials.
    pub client: ClientOptions,
    /// Platform to pick from an index (`--platform`); default: the host's.
    pub platform: Option<Platform>,
    /// The `org.opencontainers.image.ref.name` to record in `index.json`; default: the tag
    /// (or the digest for a by-digest reference).
    pub ref_name: Option<String>,
    /// Parallel layer downloads.
    pub max_parallel: usize,
    /// Fetch from this registry (`host[:port]`, e.g. a pull-through cache of the reference's
    /// registry) instead of the reference's own; the layout still records the original name.
    pub mirror: Option<String>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            client: ClientOptions::default(),
            platform: None,
            ref_name: None,
            max_parallel: 3,
            mirror: None,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The ref name recorded in the layout's `index.json`.
    pub ref_name: String,
    /// Digest of the image manifest written (the platform's manifest for an index).
    pub manifest_digest: Digest,
    /// Media type of that manifest (Docker schema 2 or OCI, as the registry sent it).
    pub manifest_media_type: MediaType,
    /// Digest of the index / manifest list the tag pointed at, if it was one.
    pub index_digest: Option<Digest>,
    /// Digest of the image config.
    pub config_digest: Digest,
    /// Every layer digest of the image, bottom first.
    pub layers: Vec<Digest>,
    /// Layers skipped because `have_blob` said the caller has them (not in the layout).
    pub skipped: Vec<Digest>,
    /// Blobs (config, layers) fetched over the network by this pull.
    pub downloaded: Vec<Digest>,
    /// Bytes received for manifests and blobs.
    pub bytes_downloaded: u64,
}

/// Pulls `reference` into the OCI image layout `dest` (created if missing).
///
/// Writes `blobs/sha256/<hex>` for the manifest, the config and each layer for which
/// `have_blob(digest)` is false, then records the manifest in `index.json` under the ref
/// name. Blobs already valid in `dest` are not fetched again, and a partly downloaded blob
/// from an interrupted pull is resumed with a range request.
pub fn pull(
    reference: &Reference,
    opts: &PullOptions,
    dest: &Path,
    have_blob: &dyn Fn(&Digest) -> bool,
    progress: &dyn Progress,
) -> Result<PullResult> {
    let source = opts.mirror.as_deref().unwrap_or(reference.registry());
    let client =
        Client::new(source, &opts.client)?.for_repository(reference.repository(), &opts.client)?;
    let repo = reference.repository();
    layout::init(dest)?;
    let bytes_total = AtomicU64::new(0);

    let (bytes, media_type) = get_manifest(&client, repo, reference.manifest_ref(), reference)?;
    bytes_total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if let Some(d) = reference.digest() {
        layout::verify(d, &bytes)?;
    }
    let what = reference.to_string();
    let (media_type, parsed) = manifest::parse(&bytes, Some(&media_type), &what)?;
    let (index_digest, bytes, media_type, image) = match parsed {
        Manifest::Image(m) => (None, bytes, media_type, m),
        Manifest::Index(idx) => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let d = oci::digest_of(manifest::select(&idx, &want, &what)?)?;
            progress.message(&format!("{}: resolved {want} to {d}", what));
            let (child, ct) = get_manifest(&client, repo, d.as_str(), reference)?;
            bytes_total.fetch_add(child.len() as u64, Ordering::Relaxed);
            layout::verify(&d, &child)?;
            let (mt, m) = manifest::parse(&child, Some(&ct), d.as_str())?;
            let Manifest::Image(m) = m else {
                return Err(Error::BadManifest {
                    what: d.to_string(),
                    reason: "an index entry is itself an index".to_string(),
                });
            };
            (Some(Digest::of(&bytes)), child, mt, m)
        }
    };
    let manifest_digest = Digest::of(&bytes);
    progress.message(&format!("Digest: {manifest_digest}"));

    // Config first (small, needed by everyone), then the layers in parallel.
    let config = Blob::of(image.config())?;
    let mut downloaded = Vec::new();
    if fetch_blob(
        &client,
        repo,
        &config,
        "config",
        dest,
        progress,
        &bytes_total,
    )? {
        downloaded.push(config.digest.clone());
    }

    let blobs = image
        .layers()
        .iter()
        .map(Blob::of)
        .collect::<Result<Vec<Blob>>>()?;
    let layers: Vec<Digest> = blobs.iter().map(|l| l.digest.clone()).collect();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = Vec::new();
    for l in blobs {
        if !seen.insert(l.digest.clone()) {
            continue;
        }
        if have_blob(&l.digest) {
            progress.finish(l.digest.as_str(), ALREADY_EXISTS);
            skipped.push(l.digest);
        } else {
            queue.push(l);
        }
    }
    queue.reverse(); // pop() takes the bottom layer first
    let queue = Mutex::new(queue);
    let fetched = Mutex::new(Vec::new());
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = opts.max_parallel.clamp(1, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let Some(desc) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        return;
                    };
                    match fetch_blob(&client, repo, &desc, "layer", dest, progress, &bytes_total) {
                        Ok(true) => {
                            if let Ok(mut f) = fetched.lock() {
                                f.push(desc.digest.clone());
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut fetched = fetched.into_inner().unwrap_or_default();
    fetched.sort_by_key(|d| layers.iter().position(|l| l == d));
    downloaded.extend(fetched);

    // The manifest last: a layout never names an image whose blobs are not all in place.
    layout::write_blob(dest, &manifest_digest, &bytes)?;
    let ref_name = opts.ref_name.clone().unwrap_or_else(|| {
        reference
            .tag()
            .map(str::to_string)
            .or_else(|| reference.digest().map(Digest::to_string))
            .unwrap_or_else(|| "latest".to_string())
    });
    let mut entry = oci::descriptor(media_type.clone(), &manifest_digest, bytes.len() as u64)?;
    entry.set_annotations(Some(HashMap::from([
        (REF_NAME.to_string(), ref_name.clone()),
        (IMAGE_NAME.to_string(), reference.to_string()),
    ])));
    layout::add_to_index(dest, entry)?;
    Ok(PullResult {
        ref_name,
        manifest_digest,
        manifest_media_type: media_type,
        index_digest,
        config_digest: config.digest,
        layers,
        skipped,
        downloaded,
        bytes_downloaded: bytes_total.load(Ordering::Relaxed),
    })
}

/// A blob to fetch: what a manifest's descriptor says of it.
#[derive(Clone)]
struct Blob {
    digest: Digest,
    size: u64,
}

impl Blob {
    fn of(d: &Descriptor) -> Result<Blob> {
        Ok(Blob {
            digest: oci::digest_of(d)?,
            size: d.size(),
        })
    }
}

/// GETs a manifest by tag or digest; returns (bytes, content type).
pub(crate) fn get_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    full: &Reference,
) -> Result<(Vec<u8>, String)> {
    let url = client.url(repo, &format!("manifests/{reference}"));
    let resp = client.send(
        http::Method::GET,
        &url,
        Scope {
            repository: repo,
            push: false,
        },
        &[("Accept", manifest::ACCEPT)],
        ReqBody::Empty,
    )?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND {
        return Err(Error::ManifestUnknown {
            host: client.host().to_string(),
            reference: format!("{}/{}:{}", full.registry(), repo, reference)
                .replace(":sha256:", "@sha256:"),
        });
    }
    if status != StatusCode::OK {
        return Err(client.status_error(resp, &format!("GET manifest {reference}"), repo));
    }
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp
        .into_body()
        .with_config()
        .limit(8 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| Error::Interrupted {
            host: client.host().to_string(),
            what: format!("manifest {reference}"),
            detail: e.to_string(),
        })?;
    Ok((bytes, ct))
}

fn partial_path(dest: &Path, digest: &Digest) -> PathBuf {
    dest.join("blobs/sha256")
        .join(format!(".{}.partial", digest.hex()))
}

/// Downloads one blob into the layout unless already there and valid. Returns whether
/// anything was fetched.
fn fetch_blob(
    client: &Client,
    repo: &str,
    desc: &Blob,
    what: &str,
    dest: &Path,
    progress: &dyn Progress,
    bytes_total: &AtomicU64,
) -> Result<bool> {
    let digest = &desc.digest;
    let final_path = layout::blob_path(dest, digest);
    if layout::has_valid_blob(dest, digest, desc.size)? {
        progress.finish(digest.as_str(), ALREADY_EXISTS);
        return Ok(false);
    }
    let partial = partial_path(dest, digest);
    let mut file = open_locked(&partial)?;
    if layout::has_valid_blob(dest, digest, desc.size)? {
        // Another pull finished it while this one waited for the lock.
        let _ = std::fs::remove_file(&partial);
        progress.finish(digest.as_str(), ALREADY_EXISTS);
        return Ok(false);
    }

    // Resume: hash what an interrupted pull left, and ask only for the rest.
    let mut hasher = Hasher::default();
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > 0 && len <= desc.size {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::io("read", &partial, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.len() == desc.size && hasher.finish().0 == *digest {
            // Complete but not yet renamed when the last pull stopped.
            return finish_blob(&partial, &final_path, dest, digest, progress).map(|()| true);
        }
    }
    let have = if hasher.len() < desc.size {
        hasher.len()
    } else {
        0
    };
    let range = format!("bytes={have}-");
    let mut headers = vec![("Accept", "*/*")];
    if have > 0 {
        headers.push(("Range", range.as_str()));
    }
    let url = client.url(repo, &format!("blobs/{digest}"));
    let resp = client.send(
        http::Method::GET,
        &url,
        Scope {
            repository: repo,
            push: false,
        },
        &headers,
        ReqBody::Empty,
    )?;
    let status = resp.status();
    let resumes_at_have = resp
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(&format!("bytes {have}-")));
    let append = match status {
        StatusCode::PARTIAL_CONTENT if have > 0 && resumes_at_have => true,
        StatusCode::OK => false,
        StatusCode::NOT_FOUND => {
            return Err(Error::BlobUnknown {
                host: client.host().to_string(),
                repository: repo.to_string(),
                digest: digest.clone(),
            });
        }
        _ => return Err(client.status_error(resp, &format!("GET blob {digest}"), repo)),
    };
    if append {
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek", &partial, e))?;
    } else {
        hasher = Hasher::default();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(|e| Error::io("truncate", &partial, e))?;
    }
    progress.begin(
        digest.as_str(),
        &format!("Transferring {what}"),
        Some(desc.size),
    );
    if append {
        progress.advance(digest.as_str(), hasher.len());
    }
    let mut body = resp.into_body().into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Keep the partial file (not under the final name) for the next pull.
                let _ = file.sync_all();
                return Err(Error::Interrupted {
                    host: client.host().to_string(),
                    what: format!("blob {digest}"),
                    detail: e.to_string(),
                });
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::io("write", &partial, e))?;
        bytes_total.fetch_add(n as u64, Ordering::Relaxed);
        progress.advance(digest.as_str(), n as u64);
        if hasher.len() > desc.size {
            let _ = std::fs::remove_file(&partial);
            return Err(Error::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                actual: hasher.len(),
            });
        }
    }
    file.sync_all()
        .map_err(|e| Error::io("fsync", &partial, e))?;
    // `file` (and its lock) lives until the rename is done.
    let got = hasher.len();
    if got != desc.size {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::SizeMismatch {
            digest: digest.clone(),
            expected: desc.size,
            actual: got,
        });
    }
    let (actual, _) = hasher.finish();
    if actual != *digest {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::DigestMismatch {
            digest: digest.clone(),
            actual,
        });
    }
    finish_blob(&partial, &final_path, dest, digest, progress)?;
    Ok(true)
}

/// Renames a verified partial blob to its final name, durably.
fn finish_blob(
    partial: &Path,
    final_path: &Path,
    dest: &Path,
    digest: &Digest,
    progress: &dyn Progress,
) -> Result<()> {
    std::fs::rename(partial, final_path).map_err(|e| Error::io("rename into", final_path, e))?;
    layout::sync_dir(final_path.parent().unwrap_or(dest))?;
    progress.finish(digest.as_str(), TRANSFER_COMPLETE);
    Ok(())
}

/// Opens (creating) the partial file of a blob and locks it: one downloader per blob, so
/// another pull into the same layout waits here, then finds the blob in place. Retries when
/// the path was renamed or removed while waiting for the lock.
fn open_locked(partial: &Path) -> Result<File> {
    use std::os::unix::fs::MetadataExt;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(partial)
            .map_err(|e| Error::io("create", partial, e))?;
        lockfile::lock(&file, Mode::Exclusive).map_err(|e| Error::io("lock", partial, e))?;
        let held = file.metadata().map_err(|e| Error::io("stat", partial, e))?;
        match std::fs::metadata(partial) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", partial, e)),
        }
    }
}
