//! Unpack an outer archive (a docker-archive or an OCI layout tar, plain or compressed) into a
//! private scratch directory: only regular files and directories, symlinks inside the archive
//! turned into hardlinks, anything else refused. Then tell which format it holds.

use super::compress;
use super::fsutil;
use super::{ImageError, Result};
use crate::sys::at;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The two image archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `docker save`: manifest.json.
    DockerArchive,
    /// OCI image layout: oci-layout + index.json.
    OciLayout,
}

/// Which format the directory holds (docker's manifest.json wins when both are there).
pub fn detect_format(dir: &Path) -> Result<Format> {
    if dir.join("manifest.json").is_file() {
        Ok(Format::DockerArchive)
    } else if dir.join("index.json").is_file() {
        Ok(Format::OciLayout)
    } else {
        Err(ImageError::Format(format!(
            "{} is neither a docker-archive (no manifest.json) nor an OCI layout (no index.json)",
            dir.display()
        )))
    }
}

fn lexical_join(base: &Path, target: &Path) -> Option<PathBuf> {
    let mut out: Vec<std::ffi::OsString> = base.iter().map(|c| c.to_os_string()).collect();
    if target.has_root() {
        return None;
    }
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n.to_os_string()),
            std::path::Component::ParentDir => {
                out.pop()?;
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.iter().collect())
}

/// Extract `reader` into the empty directory `dest`; `progress` gets byte counts.
pub fn extract<R: Read>(reader: R, dest: &Path, progress: &mut dyn FnMut(u64)) -> Result<()> {
    let counting = crate::progress::CountReader::new(reader, progress);
    let (_, inner) = compress::decompress(counting).map_err(ImageError::io("read archive"))?;
    let mut ar = tar::Archive::new(inner);
    let root =
        at::open_dir_read(dest).map_err(ImageError::io(format!("open {}", dest.display())))?;
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in ar.entries().map_err(ImageError::io("read archive"))? {
        let mut entry = entry.map_err(ImageError::io("read archive entry"))?;
        let path = entry
            .path()
            .map_err(ImageError::io("archive entry name"))?
            .into_owned();
        let comps = fsutil::normal_components(&path).ok_or_else(|| ImageError::Refused {
            path: path.display().to_string(),
            reason: "path contains '..'".into(),
        })?;
        let Some((name, parents)) = comps.split_last() else {
            continue;
        };
        let refuse = |reason: String| ImageError::Refused {
            path: path.display().to_string(),
            reason,
        };
        let dir =
            fsutil::walk_dirs(root.as_fd(), parents, true).map_err(|e| refuse(e.to_string()))?;
        let rel: PathBuf = comps.iter().collect();
        match entry.header().entry_type() {
            tar::EntryType::Directory => match at::mkdir_at(dir.as_fd(), name, 0o755) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ImageError::io(format!("extract {}", rel.display()))(e)),
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fsutil::create_file_at(dir.as_fd(), name, 0o644)
                    .map_err(|e| refuse(format!("cannot create: {e}")))?;
                io::copy(&mut entry, &mut f)
                    .map_err(ImageError::io(format!("extract {}", rel.display())))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ImageError::io("archive link target"))?
                    .ok_or_else(|| refuse("link without target".into()))?
                    .into_owned();
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                let resolved = lexical_join(&base, &target).ok_or_else(|| {
                    refuse(format!(
                        "link target {} leaves the archive",
                        target.display()
                    ))
                })?;
                links.push((rel, resolved));
            }
            other => {
                return Err(refuse(format!(
                    "unexpected entry type {other:?} in an image archive"
                )));
            }
        }
    }
    for (link, target) in links {
        let t = dest.join(&target);
        let meta = t.symlink_metadata().map_err(|_| ImageError::Refused {
            path: link.display().to_string(),
            reason: format!("link target {} is not in the archive", target.display()),
        })?;
        if !meta.is_file() {
            continue;
        }
        std::fs::hard_link(&t, dest.join(&link))
            .map_err(ImageError::io(format!("extract {}", link.display())))?;
    }
    Ok(())
}

/// Resolve a member path named by an archive's metadata, refusing `..` and absolute paths.
pub fn member(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.has_root() || fsutil::normal_components(p).is_none() {
        return Err(ImageError::Format(format!(
            "archive names a member outside itself: {name:?}"
        )));
    }
    Ok(dir.join(p))
}
