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

/// Where the union entry at a path lives.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The layer whose entry is visible.
    pub top: usize,
    /// Layers `top..end` contribute (for a directory: merged unless opaque).
    pub end: usize,
    /// The path to look at in each layer: a renamed directory (`overlay.redirect`) sends the
    /// layers below it to its origin.
    pub paths: Vec<PathBuf>,
}

/// Resolve `rel` through the layers (topmost first) with overlay semantics.
pub fn resolve(layers: &[PathBuf], rel: &Path) -> Option<Resolved> {
    let comps = fsutil::normal_components(rel)?;
    let mut paths = vec![PathBuf::new(); layers.len()];
    let (mut start, mut end) = (0usize, layers.len());
    for c in comps {
        // Every layer's path follows (also outside the range, for explain's display).
        for p in paths.iter_mut() {
            p.push(c);
        }
        let mut found = None;
        let mut new_end = end;
        for i in start..end {
            match entry_at(&layers[i], &paths[i]) {
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
                LayerEntry::Dir { opaque: true } => {
                    found.get_or_insert(i);
                    new_end = i + 1;
                    break;
                }
                LayerEntry::Dir { opaque: false } => {
                    found.get_or_insert(i);
                    // A relative redirect names a sibling in the parent's lower location.
                    let below = paths.get(i + 1).unwrap_or(&paths[i]);
                    let parent = below.parent().map(Path::to_path_buf).unwrap_or_default();
                    if let Some(origin) = redirect_of(&layers[i].join(&paths[i]), &parent) {
                        for p in paths.iter_mut().skip(i + 1) {
                            p.clone_from(&origin);
                        }
                    }
                }
            }
        }
        start = found?;
        end = new_end;
    }
    Some(Resolved {
        top: start,
        end,
        paths,
    })
}

/// The index of the layer whose entry is visible at `rel` in the union, if any.
pub fn lookup(layers: &[PathBuf], rel: &Path) -> Option<usize> {
    resolve(layers, rel).map(|r| r.top)
}

/// The names visible in the union directory `rel` (merged, whiteouts applied), sorted.
pub fn list_dir(layers: &[PathBuf], rel: &Path) -> Vec<std::ffi::OsString> {
    let mut names = std::collections::BTreeSet::new();
    let Some(r) = resolve(layers, rel) else {
        return Vec::new();
    };
    for (layer, path) in layers.iter().zip(&r.paths).take(r.end).skip(r.top) {
        let d = layer.join(path);
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

/// Where a redirected (renamed) directory takes its lower contents from, as the kernel and
/// the strata driver record it: `/abs/path`, or a name relative to the parent's origin.
pub fn redirect_of(dir: &Path, parent_origin: &Path) -> Option<PathBuf> {
    for n in ["trusted.overlay.redirect", "user.overlay.redirect"] {
        if let Ok(Some(v)) = fsutil::get_xattr(dir, n) {
            let v = Path::new(OsStr::from_bytes(&v)).to_path_buf();
            let p = match v.strip_prefix("/") {
                Ok(abs) => abs.to_path_buf(),
                Err(_) => parent_origin.join(v),
            };
            return fsutil::normal_components(&p).map(|c| c.iter().collect());
        }
    }
    None
}
