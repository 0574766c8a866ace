//! `load`, `save` and `import`: moving images in and out of the store.

use super::SaveFormat;
use super::progress::CliProgress;
use crate::image::docker_archive::{self, DirSink, Sink, TarSink};
use crate::image::oci_layout;
use crate::store::Store;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

fn name_hint(p: Option<&Path>) -> String {
    let stem = p
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = stem.split('.').next().unwrap_or("image").to_lowercase();
    let clean: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
        .collect();
    // The name of images an OCI layout names by tag only: it must be a reference's name.
    if crate::oci::Reference::parse_tag(&clean).is_ok() {
        clean
    } else {
        "image".into()
    }
}

/// `strata load [-i FILE]`.
pub fn load(store: &Store, input: Option<&Path>, quiet: bool) -> anyhow::Result<i32> {
    let prog = CliProgress::new(quiet);
    let hint = name_hint(input);
    let recs = match input {
        Some(p) if p.is_dir() => store
            .load_dir(p, &hint, &prog)
            .with_context(|| format!("load {}", p.display()))?,
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
            store
                .load_archive(f, &hint, &prog)
                .with_context(|| format!("load {}", p.display()))?
        }
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            anyhow::bail!("refusing to read an archive from a terminal: use -i FILE or a pipe")
        }
        None => store
            .load_archive(std::io::stdin().lock(), &hint, &prog)
            .context("load from stdin")?,
    };
    for r in &recs {
        if quiet {
            println!("{}", r.image.id);
        } else if r.tags.is_empty() {
            println!("Loaded image ID: {}", r.image.id);
        }
        if !quiet {
            for t in &r.tags {
                println!("Loaded image: {t}");
            }
        }
    }
    Ok(0)
}

/// `strata save [-o FILE] [--format F] IMAGE...`.
pub fn save(
    store: &Store,
    output: Option<&Path>,
    format: SaveFormat,
    images: &[String],
    quiet: bool,
) -> anyhow::Result<i32> {
    // Held until the archive is written: no rmi/prune may delete a blob we still read.
    let _lock = store.lock_shared()?;
    let exports = store.export_images(images)?;
    let prog = CliProgress::new(quiet);
    let total: u64 = exports
        .iter()
        .flat_map(|e| e.layers.iter())
        .map(|l| {
            if format == SaveFormat::Docker {
                l.diff_size
            } else {
                l.size
            }
        })
        .sum();
    use crate::progress::Progress;
    prog.begin("save", "Writing", Some(total));
    let mut adv = |n: u64| prog.advance("save", n);
    let write = |sink: &mut dyn Sink, adv: &mut dyn FnMut(u64)| -> anyhow::Result<()> {
        match format {
            SaveFormat::Docker => docker_archive::write(&exports, sink, adv)?,
            SaveFormat::Oci | SaveFormat::OciDir => oci_layout::write(&exports, sink, adv)?,
        }
        Ok(())
    };
    match (format, output) {
        (SaveFormat::OciDir, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            write(&mut DirSink(dir.to_path_buf()), &mut adv)?;
        }
        (SaveFormat::OciDir, None) => anyhow::bail!("--format oci-dir needs -o DIR"),
        (_, Some(p)) => {
            // Write next to the target and rename, so a failed save leaves no partial file.
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("create a file in {}", dir.display()))?;
            let mut sink = TarSink::new(std::io::BufWriter::new(tmp));
            write(&mut sink, &mut adv)?;
            let tmp = sink
                .finish()?
                .into_inner()
                .map_err(|e| anyhow::anyhow!("write {}: {}", p.display(), e.error()))?;
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("fsync {}", p.display()))?;
            tmp.persist(p)
                .with_context(|| format!("write {}", p.display()))?;
        }
        (_, None) if std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            anyhow::bail!("refusing to write an archive to a terminal: use -o FILE or a pipe")
        }
        (_, None) => {
            let stdout = std::io::stdout().lock();
            let mut sink = TarSink::new(std::io::BufWriter::new(stdout));
            write(&mut sink, &mut adv)?;
            sink.finish()?.flush().context("write stdout")?;
        }
    }
    prog.finish("save", "Saved");
    Ok(0)
}

/// `strata import SOURCE [NAME:TAG]`.
pub fn import(
    store: &Store,
    source: &Path,
    reference: Option<&str>,
    quiet: bool,
) -> anyhow::Result<i32> {
    let prog = CliProgress::new(quiet);
    let rec = store
        .import_rootfs(source, reference, &prog)
        .with_context(|| format!("import {}", source.display()))?;
    println!("{}", rec.id);
    Ok(0)
}
