//! `prune`, `fsck`, `explain`: store maintenance and debugging.

use super::OutFormat;
use crate::store::Store;

/// `strata prune`.
pub fn prune(store: &Store, quiet: bool) -> anyhow::Result<i32> {
    let r = store.prune()?;
    if !quiet {
        for i in &r.images {
            println!("Deleted image: {i}");
        }
        for l in &r.layers {
            println!("Deleted layer: {l}");
        }
        println!(
            "Removed {} images, {} layers, {} blobs, {} temporary entries",
            r.images.len(),
            r.layers.len(),
            r.blobs.len(),
            r.temp
        );
    }
    Ok(0)
}

/// `strata fsck`: exit 0 when clean, 1 otherwise.
pub fn fsck(store: &Store, format: OutFormat) -> anyhow::Result<i32> {
    let r = store.fsck()?;
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for e in &r.errors {
            println!("error: {e}");
        }
        for n in &r.notes {
            println!("note: {n}");
        }
        println!(
            "{}: {} blobs, {} layers, {} images checked, {} errors",
            if r.clean() { "clean" } else { "DAMAGED" },
            r.blobs,
            r.layers,
            r.images,
            r.errors.len()
        );
    }
    Ok(if r.clean() { 0 } else { 1 })
}

/// `strata explain TARGET PATH`.
pub fn explain(store: &Store, target: &str, path: &str, format: OutFormat) -> anyhow::Result<i32> {
    let rows = store.explain(target, path)?;
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<21} {:<36} STATUS", "LAYER (top first)", "ENTRY");
    for r in rows {
        let l = if r.layer.starts_with("sha256:") {
            r.layer[..19].to_string()
        } else {
            r.layer.clone()
        };
        println!("{:<21} {:<36} {}", l, r.entry, r.status);
    }
    Ok(0)
}
