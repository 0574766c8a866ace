//! Overlay lookup over a stack of layer directories (topmost first): which layer provides a
//! path, and what each layer has there. Read-only; used by diff, commit and explain.

use super::fsutil::{self, WH_PREFIX};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What one layer has at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    /// Nothing there.
    Absent,
    /// A whiteout (char 0/0 or `.wh.NAME` file) deletes the path in layers below.
    Whiteout,
    /// A directory, opaque or not.
    Dir { opaque: bool },
    /// A non-directory (file, symlink, device...).
    Other,
}

/// Classify what `layer` has at `rel`, looking only at that layer (no parent checks).
pub fn entry_at(layer: &Path, rel: &Path) -> LayerEntry {
    let p = layer.join(rel);
    if let Some(name) = rel.file_name() {
        let mut wh = WH_PREFIX.as_bytes().to_vec();
        wh.extend_from_slice(name.as_bytes());
        let whp = p.with_file_name(OsStr::from_bytes(&wh));
        if whp.symlink_metadata().is_ok_and(|m| m.is_file()) {
            return LayerEntry::Whiteout;
        }
    }
    match p.symlink_metadata() {
        Err(_) => LayerEntry::Absent,
        Ok(m) if fsutil::is_whiteout_dev(&m) => LayerEntry::Whiteout,
        Ok(m) if m.is_dir() => LayerEntry::Dir {
            opaque: fsutil::is_opaque_dir(&p),
        },
        Ok(_) => LayerEntry::Other,
    }
}

/// The index of the layer whose entry is visible at `rel` in the union, if any.
pub fn lookup(layers: &[PathBuf], rel: &Path) -> Option<usize> {
    let comps = fsutil::normal_components(rel)?;
    let (mut start, mut end) = (0usize, layers.len());
    let mut prefix = PathBuf::new();
    for c in comps {
        prefix.push(c);
        let mut found = None;
        let mut new_end = end;
        for (i, layer) in layers.iter().enumerate().take(end).skip(start) {
            match entry_at(layer, &prefix) {
                LayerEntry::Absent => continue,
                LayerEntry::Whiteout => {
                    new_end = i;
                    break;
                }
                LayerEntry::Other => {
                    found.get_or_insert(i);
                    new_end = i + 1;
                    break;
                }
                LayerEntry::Dir { opaque } => {
                    found.get_or_insert(i);
                    if opaque {
                        new_end = i + 1;
                        break;
                    }
                }
            }
        }
        let f = found?;
        start = f;
        end = new_end;
    }
    Some(start)
}

/// The names visible in the union directory `rel` (merged, whiteouts applied), sorted.
pub fn list_dir(layers: &[PathBuf], rel: &Path) -> Vec<std::ffi::OsString> {
    let mut names = std::collections::BTreeSet::new();
    let Some(top) = lookup(layers, rel) else {
        return Vec::new();
    };
    for layer in &layers[top..] {
        let d = layer.join(rel);
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name();
            if n.as_bytes().starts_with(WH_PREFIX.as_bytes()) {
                continue;
            }
            names.insert(n);
        }
        if fsutil::is_opaque_dir(&d) {
            break;
        }
    }
    names
        .into_iter()
        .filter(|n| lookup(layers, &rel.join(n)).is_some())
        .collect()
}
