//! `pull --lazy`, the lazy layers of `mount`, the hidden `lazy-serve` daemon command and
//! `push --compression estargz`: the CLI side of eStargz lazy pulling.

use super::registry::{PullStart, RegistryArgs, print_pulled};
use crate::oci::Digest;
use crate::registry;
use crate::store::containers::is_mounted;
use crate::store::lazy::LazySource;
use crate::store::{ContainerRecord, ImageRecord, Store};
use anyhow::Context;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `strata pull --lazy REF`: prints the image ID.
pub fn pull(
    store: &Store,
    reference: &str,
    platform: Option<&str>,
    args: &RegistryArgs,
    quiet: bool,
) -> anyhow::Result<i32> {
    let PullStart {
        reference: r,
        opts,
        tmp,
        prog,
    } = PullStart::new(store, reference, platform, args, quiet)?;
    let have = |d: &Digest| store.has_blob(d);
    let (res, lazy) = registry::pull_lazy(&r, &opts, tmp.path(), &have, &prog)
        .with_context(|| format!("lazy pull {r}"))?;
    let source = format!("{}/{}", r.registry(), r.repository());
    let map: HashMap<Digest, LazySource> = lazy
        .iter()
        .map(|l| {
            (
                l.digest.clone(),
                LazySource {
                    toc_digest: l.toc_digest.clone(),
                    diff_size: l.diff_size,
                    source: source.clone(),
                    tls_verify: opts.client.tls_verify,
                    tail: l.tail.clone(),
                },
            )
        })
        .collect();
    let md = res.manifest_digest;
    let loaded = store
        .import_pulled_layout_lazy(tmp.path(), &r.to_string(), &md, &map, &prog)
        .with_context(|| format!("import {r}"))?;
    let lazy_bytes: u64 = lazy.iter().map(|l| l.fetched).sum();
    let lazy_size: u64 = lazy.iter().map(|l| l.size).sum();
    if !quiet {
        eprintln!(
            "Lazy layers: {} ({lazy_bytes} of {lazy_size} bytes fetched); other bytes: {}",
            lazy.len(),
            res.bytes_downloaded
        );
    }
    print_pulled(&loaded, &md, quiet);
    Ok(0)
}

/// Mounts the lazy filesystem of every lazy layer of the container's image that is not
/// mounted yet (each by a `strata lazy-serve` daemon), waiting until each mount is live.
pub fn ensure_mounts(store: &Store, c: &ContainerRecord) -> anyhow::Result<()> {
    ensure_image_mounts(store, &store.image(&c.image)?)
}

/// [`ensure_mounts`] for an image.
pub fn ensure_image_mounts(store: &Store, img: &ImageRecord) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("find the strata executable")?;
    for l in &img.layers {
        if !store.is_lazy(&l.diff_id) {
            // Completed since: the lazy copy goes once nothing mounts it.
            let dir = store.lazy_dir(&l.diff_id);
            if store.has_layer(&l.diff_id)
                && dir.exists()
                && !is_mounted(&store.lazy_mountpoint(&l.diff_id))
            {
                let _ = std::fs::remove_dir_all(&dir);
            }
            continue;
        }
        let mp = store.lazy_mountpoint(&l.diff_id);
        // One mounter at a time per layer: two commands must not stack two daemons.
        let lock_path = store.lazy_dir(&l.diff_id).join("mount.lock");
        let lock = std::fs::File::create(&lock_path)
            .with_context(|| format!("create {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("lock {}", lock_path.display()))?;
        if is_mounted(&mp) {
            continue;
        }
        let log = store.lazy_dir(&l.diff_id).join("serve.log");
        let err =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut child = Command::new(&exe)
            .arg("--root")
            .arg(store.root())
            .arg("lazy-serve")
            .arg(l.diff_id.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .process_group(0)
            .spawn()
            .context("start the lazy layer daemon")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if is_mounted(&mp) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let msg = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::bail!(
                    "lazy layer {} did not mount ({st}): {}",
                    l.diff_id,
                    msg.trim()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("lazy layer {} did not mount within 20 s", l.diff_id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// After `strata umount` of `c`: unmounts the lazy layers of its image that no other mounted
/// container uses (their daemons then exit).
pub fn release_mounts(store: &Store, c: &ContainerRecord) -> anyhow::Result<()> {
    let img = store.image(&c.image)?;
    let mut in_use = std::collections::HashSet::new();
    for o in store.containers()? {
        if o.id == c.id || !is_mounted(std::path::Path::new(&o.mountpoint)) {
            continue;
        }
        if let Ok(oi) = store.image(&o.image) {
            in_use.extend(oi.layers.iter().map(|l| l.diff_id.clone()));
        }
    }
    for l in &img.layers {
        let mp = store.lazy_mountpoint(&l.diff_id);
        if !in_use.contains(&l.diff_id) && is_mounted(&mp) {
            crate::store::containers::unmount_released(&mp, std::time::Duration::from_secs(5))?;
        }
    }
    Ok(())
}

/// `strata lazy-serve DIFFID`: serve one lazy layer in the foreground until unmounted.
pub fn serve(store: &Store, diff_id: &str, no_complete: bool) -> anyhow::Result<i32> {
    let d = Digest::parse(diff_id).with_context(|| format!("invalid diff ID {diff_id}"))?;
    // Its stderr is the layer's serve.log.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let mut opts = crate::lazy::serve::ServeOptions {
        complete: !no_complete,
        ..Default::default()
    };
    if std::env::var("STRATA_LAZY_NO_COMPLETE").is_ok_and(|v| v == "1") {
        opts.complete = false;
    }
    if let Some(t) = std::env::var("STRATA_LAZY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        opts.request_timeout = Duration::from_secs(t.max(1));
    }
    crate::lazy::serve::serve(store, &d, &opts).with_context(|| format!("serve lazy layer {d}"))?;
    Ok(0)
}

/// Rewrites the layers of the push layout at `dir` as eStargz.
pub fn convert_for_push(
    dir: &std::path::Path,
    prefetch: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let mut opts = crate::estargz::WriteOptions::default();
    if let Some(p) = prefetch {
        let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
        opts.prefetch = text
            .lines()
            .map(|l| l.trim().trim_start_matches('/').to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    crate::estargz::convert::convert_layout(dir, &opts).context("convert layers to eStargz")
}

/// `strata save --compression estargz`: the OCI layout (directory or tar) with eStargz layers.
pub fn save_estargz(
    store: &Store,
    output: Option<&std::path::Path>,
    format: super::SaveFormat,
    images: &[String],
    quiet: bool,
) -> anyhow::Result<i32> {
    use super::SaveFormat;
    let Some(out) = output else {
        anyhow::bail!("--compression estargz needs -o FILE or -o DIR");
    };
    if format == SaveFormat::Docker {
        anyhow::bail!(
            "--compression estargz needs --format oci or oci-dir (docker-archive layers are plain tars)"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("save-")
        .tempdir_in(store.root().join("tmp"))
        .context("create a scratch layout in the store")?;
    let layout = tmp.path().join("layout");
    let layout_s = layout.to_string_lossy().into_owned();
    super::transfer::save(store, Some(&layout), SaveFormat::OciDir, images, quiet)
        .with_context(|| format!("write the layout {layout_s}"))?;
    convert_for_push(&layout, None)?;
    if format == SaveFormat::OciDir {
        std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
        for rel in ["oci-layout", "index.json"] {
            std::fs::copy(layout.join(rel), out.join(rel))
                .with_context(|| format!("write {}", out.join(rel).display()))?;
        }
        let blobs = out.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
        for e in std::fs::read_dir(layout.join("blobs/sha256")).context("list blobs")? {
            let e = e.context("list blobs")?;
            std::fs::copy(e.path(), blobs.join(e.file_name())).context("copy a blob")?;
        }
        return Ok(0);
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("create a file in {}", dir.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    b.append_dir_all(".", &layout)
        .context("write the archive")?;
    let file = b
        .into_inner()
        .context("write the archive")?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("write the archive: {}", e.error()))?;
    file.persist(out)
        .with_context(|| format!("write {}", out.display()))?;
    Ok(0)
}
