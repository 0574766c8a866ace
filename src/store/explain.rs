//! `explain`: for a path in an image or container, which layer provides it and what every
//! layer has there (present, whited out, hidden by an opaque dir above).

use super::{Result, Store};
use crate::image::union::{self, LayerEntry};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One layer's view of the path.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainRow {
    /// `upper` or the layer's diff ID.
    pub layer: String,
    /// What the layer holds there.
    pub entry: String,
    /// Its effect in the union (provides / hidden by ... / whiteout / absent).
    pub status: String,
}

impl Store {
    /// Explain `path` in an image or a container (containers are looked up first).
    pub fn explain(&self, target: &str, path: &str) -> Result<Vec<ExplainRow>> {
        let (mut dirs, mut names): (Vec<PathBuf>, Vec<String>) = (Vec::new(), Vec::new());
        let img = match self.container(target) {
            Ok(c) => {
                dirs.push(self.container_dir(&c).join("upper"));
                names.push("upper".into());
                self.image(&c.image)?
            }
            Err(_) => self.resolve_image(target)?,
        };
        for l in img.layers.iter().rev() {
            names.push(l.diff_id.to_string());
        }
        dirs.extend(self.image_lowerdirs(&img));
        let rel = Path::new(path.trim_start_matches('/'));
        let resolved = union::resolve(&dirs, rel);
        let visible = resolved.as_ref().map(|r| r.top);
        // Each layer's own path for it (a renamed dir above sends lower layers elsewhere).
        let paths: Vec<PathBuf> = match &resolved {
            Some(r) => r.paths.clone(),
            None => vec![rel.to_path_buf(); dirs.len()],
        };
        let mut rows = Vec::new();
        let mut blocked: Option<String> = None;
        for (i, dir) in dirs.iter().enumerate() {
            let lrel = &paths[i];
            let comps: Vec<_> = lrel.components().collect();
            let entry = union::entry_at(dir, lrel);
            let what = match &entry {
                LayerEntry::Absent => "absent".to_string(),
                LayerEntry::Whiteout => "whiteout".to_string(),
                LayerEntry::Dir { opaque: true } => "opaque directory".to_string(),
                LayerEntry::Dir { opaque: false } => "directory".to_string(),
                LayerEntry::Other if lrel != rel => {
                    format!("{} (at /{})", kind_of(&dir.join(lrel)), lrel.display())
                }
                LayerEntry::Other => kind_of(&dir.join(lrel)),
            };
            let status = if visible == Some(i) {
                "provides the path".to_string()
            } else if entry == LayerEntry::Absent {
                "-".to_string()
            } else if let Some(b) = &blocked {
                b.clone()
            } else if entry == LayerEntry::Whiteout {
                "whiteout: deletes the path in the layers below".to_string()
            } else {
                match visible {
                    Some(v) if v < i => format!("hidden by {}", short(&names[v])),
                    _ => "not visible".to_string(),
                }
            };
            // What this layer does to the layers below it.
            if blocked.is_none() {
                let mut prefix = PathBuf::new();
                for (k, c) in comps.iter().enumerate() {
                    prefix.push(c);
                    let last = k + 1 == comps.len();
                    match union::entry_at(dir, &prefix) {
                        LayerEntry::Whiteout => {
                            blocked = Some(format!(
                                "hidden: whiteout of /{} in {}",
                                prefix.display(),
                                short(&names[i])
                            ));
                            break;
                        }
                        LayerEntry::Dir { opaque: true } => {
                            blocked = Some(format!(
                                "hidden by opaque dir /{} in {}",
                                prefix.display(),
                                short(&names[i])
                            ));
                            break;
                        }
                        LayerEntry::Other if !last => {
                            blocked = Some(format!(
                                "hidden: /{} is not a directory in {}",
                                prefix.display(),
                                short(&names[i])
                            ));
                            break;
                        }
                        LayerEntry::Other => {
                            blocked = Some(format!(
                                "hidden by /{} in {}",
                                prefix.display(),
                                short(&names[i])
                            ));
                        }
                        _ => {}
                    }
                }
            }
            rows.push(ExplainRow {
                layer: names[i].clone(),
                entry: what,
                status,
            });
        }
        Ok(rows)
    }
}

fn short(s: &str) -> &str {
    s.get(..19).unwrap_or(s)
}

fn kind_of(p: &Path) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match p.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => {
            format!(
                "symlink -> {}",
                std::fs::read_link(p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        }
        Ok(m) if m.is_file() => format!("file ({} bytes, mode {:04o})", m.len(), m.mode() & 0o7777),
        Ok(m) if m.file_type().is_char_device() => "char device".into(),
        Ok(m) if m.file_type().is_block_device() => "block device".into(),
        Ok(_) => "special file".into(),
        Err(_) => "absent".into(),
    }
}
