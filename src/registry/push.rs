//! Push: upload an image from an OCI image layout to a registry. Each blob is checked with
//! HEAD first and skipped when present; missing ones go up as one streamed monolithic upload
//! (POST, then PUT with the digest); the manifest goes last with its own media type.

use crate::oci::Reference;
use crate::oci::{self, Descriptor, Digest, MediaType};
use crate::progress::{ALREADY_EXISTS, Progress};
use crate::registry::TRANSFER_COMPLETE;
use crate::registry::client::{Client, ClientOptions, ReqBody, Scope};
use crate::registry::error::{Error, Result};
use crate::registry::layout;
use crate::registry::manifest::{self, Manifest};
use std::path::Path;
use ureq::http::{self, StatusCode};

/// Options of a push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Connection and credentials.
    pub client: ClientOptions,
    /// A repository of the same registry that may hold the blobs already: they are mounted
    /// from it (cross-repository mount) instead of uploaded, e.g. the repository the image
    /// was pulled from (our pulls record it in the `io.containerd.image.name` annotation).
    pub mount_from: Option<String>,
}

/// Pushes the image `image` (a ref name, full image name or manifest digest in `index.json`;
/// `None`: the only image) from the OCI layout `layout_dir` to `dest`. Returns the digest of
/// the pushed manifest (the index's, when the layout entry is an index).
pub fn push(
    layout_dir: &Path,
    image: Option<&str>,
    dest: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let desc = layout::resolve(layout_dir, image)?;
    let desc_digest = oci::digest_of(&desc)?;
    let client = Client::new(dest.registry(), &opts.client)?
        .for_repository(dest.repository(), &opts.client)?;
    let repo = dest.repository();
    let mount_from = opts.mount_from.clone().filter(|m| m != repo);
    let target = Target {
        client: &client,
        repo,
        mount_from: mount_from.as_deref(),
    };
    let bytes = layout::read_blob(layout_dir, &desc_digest)?;
    let (media_type, parsed) = manifest::parse(
        &bytes,
        Some(desc.media_type().as_ref()),
        desc_digest.as_str(),
    )?;
    if let Manifest::Index(idx) = &parsed {
        for child in idx.manifests() {
            let cd = oci::digest_of(child)?;
            let cb = layout::read_blob(layout_dir, &cd)?;
            let (cmt, cm) = manifest::parse(&cb, Some(child.media_type().as_ref()), cd.as_str())?;
            let Manifest::Image(cm) = cm else {
                return Err(Error::BadManifest {
                    what: cd.to_string(),
                    reason: "nested indexes are not supported".to_string(),
                });
            };
            push_blobs(&target, layout_dir, cm.config(), cm.layers(), progress)?;
            put_manifest(&client, repo, cd.as_str(), &cmt, &cb)?;
        }
    }
    if let Manifest::Image(m) = &parsed {
        push_blobs(&target, layout_dir, m.config(), m.layers(), progress)?;
    }
    let digest = Digest::of(&bytes);
    if let Some(d) = dest.digest()
        && *d != digest
    {
        return Err(Error::DigestMismatch {
            digest: d.clone(),
            actual: digest,
        });
    }
    let target = dest
        .tag()
        .map_or_else(|| digest.to_string(), str::to_string);
    progress.message(&format!("Writing manifest {target}"));
    put_manifest(&client, repo, &target, &media_type, &bytes)?;
    progress.message(&format!("{target}: digest: {digest} size: {}", bytes.len()));
    Ok(digest)
}

/// Where blobs go: a repository of a registry, and a repository to mount them from.
struct Target<'a> {
    client: &'a Client,
    repo: &'a str,
    mount_from: Option<&'a str>,
}

fn push_blobs(
    target: &Target,
    dir: &Path,
    config: &Descriptor,
    layers: &[Descriptor],
    progress: &dyn Progress,
) -> Result<()> {
    for l in layers {
        push_blob(target, dir, l, "layer", progress)?;
    }
    push_blob(target, dir, config, "config", progress)
}

fn scope(repo: &str) -> Scope<'_> {
    Scope {
        repository: repo,
        push: true,
    }
}

/// Whether the registry has the blob in `repo`.
fn blob_exists(client: &Client, repo: &str, digest: &Digest) -> Result<bool> {
    let url = client.url(repo, &format!("blobs/{digest}"));
    let resp = client.send(http::Method::HEAD, &url, scope(repo), &[], ReqBody::Empty)?;
    match resp.status() {
        StatusCode::OK => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(client.status_error(resp, &format!("HEAD blob {digest}"), repo)),
    }
}

fn push_blob(
    target: &Target,
    dir: &Path,
    desc: &Descriptor,
    what: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let (client, repo) = (target.client, target.repo);
    let digest = &oci::digest_of(desc)?;
    if blob_exists(client, repo, digest)? {
        progress.finish(digest.as_str(), ALREADY_EXISTS);
        return Ok(());
    }
    let path = layout::blob_path(dir, digest);
    let size = std::fs::metadata(&path)
        .map_err(|e| Error::io("stat blob", &path, e))?
        .len();
    if size != desc.size() {
        return Err(Error::SizeMismatch {
            digest: digest.clone(),
            expected: desc.size(),
            actual: size,
        });
    }
    progress.begin(digest.as_str(), &format!("Transferring {what}"), Some(size));
    let url = match target.mount_from {
        Some(from) => client.url(repo, &format!("blobs/uploads/?mount={digest}&from={from}")),
        None => client.url(repo, "blobs/uploads/"),
    };
    let resp = client.send(http::Method::POST, &url, scope(repo), &[], ReqBody::Empty)?;
    if resp.status() == StatusCode::CREATED && target.mount_from.is_some() {
        progress.message(&format!(
            "{}: Mounted from {}",
            digest.short(),
            target.mount_from.unwrap_or_default()
        ));
        progress.finish(digest.as_str(), TRANSFER_COMPLETE);
        return Ok(());
    }
    if resp.status() != StatusCode::ACCEPTED {
        return Err(client.status_error(resp, "start blob upload", repo));
    }
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| Error::Protocol {
            host: client.host().to_string(),
            detail: "blob upload answer has no Location".to_string(),
        })?;
    let mut put_url = client.resolve_location(&location);
    put_url.push(if put_url.contains('?') { '&' } else { '?' });
    put_url.push_str("digest=");
    put_url.push_str(&digest.as_str().replace(':', "%3A"));
    let resp = client.send(
        http::Method::PUT,
        &put_url,
        scope(repo),
        &[("Content-Type", "application/octet-stream")],
        ReqBody::File(&path),
    )?;
    match resp.status() {
        StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => {}
        _ => return Err(client.status_error(resp, &format!("upload of blob {digest}"), repo)),
    }
    progress.advance(digest.as_str(), size);
    progress.finish(digest.as_str(), TRANSFER_COMPLETE);
    Ok(())
}

fn put_manifest(
    client: &Client,
    repo: &str,
    target: &str,
    media_type: &MediaType,
    bytes: &[u8],
) -> Result<()> {
    let url = client.url(repo, &format!("manifests/{target}"));
    let resp = client.send(
        http::Method::PUT,
        &url,
        scope(repo),
        &[("Content-Type", media_type.as_ref())],
        ReqBody::Bytes(bytes),
    )?;
    match resp.status() {
        StatusCode::CREATED | StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
        _ => Err(client.status_error(resp, &format!("PUT manifest {target}"), repo)),
    }
}
