//! Lazy pull: the manifest and config as a normal pull, and for each eStargz layer (one whose
//! descriptor has the toc.digest annotation) only its footer and TOC, by Range requests, the
//! TOC verified against the annotation; other layers are pulled in full.

use crate::estargz::blob::open_toc;
use crate::estargz::index::Whiteouts;
use crate::estargz::{EstargzError, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::oci::{self, Digest, MediaType, Platform, Reference};
use crate::progress::Progress;
use crate::registry::client::Client;
use crate::registry::error::{Error, Result};
use crate::registry::manifest::{self, Manifest};
use crate::registry::pull::{PullOptions, PullResult, get_manifest, pull};
use crate::registry::range::{RangeReader, RetryPolicy};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// An eStargz layer fetched lazily: what its descriptor says, and its verified tail.
#[derive(Debug, Clone)]
pub struct LazyLayerInfo {
    /// Blob digest.
    pub digest: Digest,
    /// Blob size.
    pub size: u64,
    /// The toc.digest annotation (verified).
    pub toc_digest: Digest,
    /// The uncompressed-size annotation (0 when absent).
    pub diff_size: u64,
    /// `blob[toc_offset..]`: TOC member and footer.
    pub tail: Vec<u8>,
    /// Bytes received for this layer.
    pub fetched: u64,
}

/// The image manifest `reference` names for the platform (one level of index resolved).
fn image_manifest(
    client: &Client,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<oci_spec::image::ImageManifest> {
    let repo = reference.repository();
    let what = reference.to_string();
    let (bytes, ct) = get_manifest(client, repo, reference.manifest_ref(), reference)?;
    match manifest::parse(&bytes, Some(&ct), &what)?.1 {
        Manifest::Image(m) => Ok(*m),
        Manifest::Index(idx) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let d = oci::digest_of(manifest::select(&idx, &want, &what)?)?;
            let (child, ct) = get_manifest(client, repo, d.as_str(), reference)?;
            match manifest::parse(&child, Some(&ct), d.as_str())?.1 {
                Manifest::Image(m) => Ok(*m),
                Manifest::Index(_) => Err(Error::BadManifest {
                    what: d.to_string(),
                    reason: "an index entry is itself an index".to_string(),
                }),
            }
        }
    }
}

/// Pulls `reference` into the layout `dest` like [`pull`], except that eStargz layers the
/// caller does not have are left out of the layout and returned with their verified TOC.
pub fn pull_lazy(
    reference: &Reference,
    opts: &PullOptions,
    dest: &Path,
    have_blob: &dyn Fn(&Digest) -> bool,
    progress: &dyn Progress,
) -> Result<(PullResult, Vec<LazyLayerInfo>)> {
    let source = opts.mirror.as_deref().unwrap_or(reference.registry());
    let client =
        Client::new(source, &opts.client)?.for_repository(reference.repository(), &opts.client)?;
    let m = image_manifest(&client, reference, opts.platform.as_ref())?;
    let mut range_opts = opts.client.clone();
    range_opts.request_timeout = Some(Duration::from_secs(60));
    let fetch_ref = match &opts.mirror {
        Some(mirror) => Reference::parse(&format!("{mirror}/{}", reference.repository()))?,
        None => reference.clone(),
    };
    let mut lazy = Vec::new();
    let mut seen = HashSet::new();
    for l in m.layers() {
        let digest = oci::digest_of(l)?;
        let ann = l.annotations().as_ref();
        let Some(toc) = ann.and_then(|a| a.get(TOC_DIGEST_ANNOTATION)) else {
            continue;
        };
        let gzip = matches!(
            l.media_type(),
            MediaType::ImageLayerGzip | MediaType::Other(_)
        ) || l.media_type().to_string().ends_with("gzip");
        if !gzip || have_blob(&digest) || !seen.insert(digest.clone()) {
            continue;
        }
        let toc_digest = Digest::parse(toc)?;
        let diff_size = ann
            .and_then(|a| a.get(UNCOMPRESSED_SIZE_ANNOTATION))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let reader = RangeReader::connect(
            &fetch_ref,
            &range_opts,
            digest.clone(),
            l.size(),
            RetryPolicy::default(),
        )?;
        let layer = digest.to_string();
        let mut read = |off: u64, len: u64| {
            reader.read(off, len).map_err(|e| EstargzError::Fetch {
                layer: layer.clone(),
                reason: e.to_string(),
            })
        };
        let opened = open_toc(
            &layer,
            l.size(),
            Some(&toc_digest),
            Whiteouts::Raw,
            &mut read,
        )?;
        let fetched = reader.fetched().0;
        progress.message(&format!(
            "{}: lazy: TOC of {} entries, {fetched} of {} bytes fetched",
            digest.short(),
            opened.index.nodes.len(),
            l.size()
        ));
        lazy.push(LazyLayerInfo {
            digest,
            size: l.size(),
            toc_digest,
            diff_size,
            tail: opened.tail,
            fetched,
        });
    }
    let lazy_set: HashSet<Digest> = lazy.iter().map(|l| l.digest.clone()).collect();
    let have = |d: &Digest| lazy_set.contains(d) || have_blob(d);
    let res = pull(reference, opts, dest, &have, progress)?;
    Ok((res, lazy))
}
