//! Tar diff: turn an overlay upper directory (or any directory) into a deterministic layer tar
//! with OCI whiteouts, and list its changes against the lower layers like `docker diff`.

use super::fsutil::{self, OVERRIDE_XATTR, WH_OPAQUE, WH_PREFIX};
use super::union;
use super::{ImageError, Result};
use crate::fs::override_stat::{self, Special};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// How to read the source directory.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// The source is an overlay upper: translate whiteouts and opaque dirs to OCI form.
    pub overlay: bool,
    /// Lower layers (topmost first), for metacopy files whose data lives below.
    pub lowers: Vec<PathBuf>,
    /// Rootless: entries owned by this uid:gid without an override xattr (files the user
    /// made, symlinks, which cannot carry `user.` xattrs) are written as owned by 0:0, as in
    /// a user namespace where the user is root.
    pub map_owner: Option<(u32, u32)>,
    /// Paths (relative) left out while they are empty placeholders: mount points a container
    /// runtime created (`/proc`, `/etc/hosts`), see [`is_placeholder`].
    pub skip: Vec<PathBuf>,
}

/// True if `rel` in `upper` is an empty regular file or an empty directory (a mount point
/// made for a container, nothing written into it).
pub fn is_placeholder(upper: &Path, rel: &Path) -> bool {
    let p = upper.join(rel);
    match p.symlink_metadata() {
        Ok(m) if m.is_file() => m.len() == 0,
        Ok(m) if m.is_dir() => fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none()),
        _ => false,
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .map_err(ImageError::io(format!("read dir {}", dir.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(ImageError::io(format!("read dir {}", dir.display())))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn ignored_xattr(name: &str) -> bool {
    name == OVERRIDE_XATTR
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name.starts_with("user.fuseoverlayfs.")
}

struct Writer<'a, W: Write> {
    b: tar::Builder<W>,
    opts: &'a DiffOptions,
    links: HashMap<(u64, u64), PathBuf>,
    /// Lower hard-linked files copied up through the overlay's hard-link index (by the lower
    /// inode): the path of their upper copy in the tar.
    indexed: HashMap<(u64, u64), PathBuf>,
}

/// Write `src` as a layer tar to `out`; the same tree gives the same bytes every time.
pub fn write_layer_tar<W: Write>(src: &Path, out: W, opts: &DiffOptions) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut w = Writer {
        b,
        opts,
        links: HashMap::new(),
        indexed: HashMap::new(),
    };
    w.walk(src, Path::new(""), None)?;
    w.indexed_lower_names(src)?;
    w.b.into_inner().map_err(ImageError::io("finish layer tar"))
}

impl<W: Write> Writer<'_, W> {
    /// Write the entries of upper dir `abs` at `rel`. `origin` is set inside a redirected
    /// (renamed) directory: the lower path whose contents merge in, written out in full.
    fn walk(&mut self, abs: &Path, rel: &Path, origin: Option<&Path>) -> Result<()> {
        for (name, in_upper) in merged_names(abs, origin, &self.opts.lowers, self.opts.overlay)? {
            let r = rel.join(&name);
            let lower_rel = origin.map(|o| o.join(&name)).unwrap_or_else(|| r.clone());
            if !in_upper {
                self.lower_subtree(&lower_rel, &r)?;
                continue;
            }
            let p = abs.join(&name);
            if origin.is_none()
                && self.opts.skip.contains(&r)
                && is_placeholder(abs, Path::new(&name))
            {
                continue;
            }
            let meta = p
                .symlink_metadata()
                .map_err(ImageError::io(format!("stat {}", p.display())))?;
            let nb = name.as_bytes();
            if self.opts.overlay {
                if fsutil::is_whiteout_dev(&meta) {
                    let mut wh = WH_PREFIX.as_bytes().to_vec();
                    wh.extend_from_slice(nb);
                    let whp = rel.join(std::ffi::OsStr::from_bytes(&wh));
                    self.empty_file(&whp, meta.mtime())?;
                    continue;
                }
                if nb == WH_OPAQUE.as_bytes() {
                    continue; // emitted with its directory
                }
                if nb.starts_with(WH_PREFIX.as_bytes()) && meta.is_file() {
                    self.empty_file(&r, meta.mtime())?;
                    continue;
                }
            }
            self.entry(&p, &r, &meta, &lower_rel)?;
            if meta.is_dir() {
                let opaque = self.opts.overlay && fsutil::is_opaque_dir(&p);
                let redirect = if self.opts.overlay && !opaque {
                    union::redirect_of(&p, origin.unwrap_or(rel))
                } else {
                    None
                };
                if opaque || redirect.is_some() {
                    self.empty_file(&r.join(WH_OPAQUE), meta.mtime())?;
                }
                let child_origin = match (opaque, redirect, origin) {
                    (true, _, _) => None,
                    (false, Some(rd), _) => Some(rd),
                    (false, None, Some(_)) => Some(lower_rel.clone()),
                    (false, None, None) => None,
                };
                self.walk(&p, &r, child_origin.as_deref())?;
            }
        }
        Ok(())
    }

    /// Write the union of the lower layers at `lower_rel` (a file or a whole tree) at `rel`.
    fn lower_subtree(&mut self, lower_rel: &Path, rel: &Path) -> Result<()> {
        let Some(i) = union::lookup(&self.opts.lowers, lower_rel) else {
            return Ok(());
        };
        let lp = self.opts.lowers[i].join(lower_rel);
        let meta = lp
            .symlink_metadata()
            .map_err(ImageError::io(format!("stat {}", lp.display())))?;
        self.entry(&lp, rel, &meta, lower_rel)?;
        if meta.is_dir() {
            for n in union::list_dir(&self.opts.lowers, lower_rel) {
                self.lower_subtree(&lower_rel.join(&n), &rel.join(&n))?;
            }
        }
        Ok(())
    }

    fn empty_file(&mut self, rel: &Path, mtime: i64) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.max(0) as u64);
        self.b
            .append_data(&mut h, rel, io::empty())
            .map_err(ImageError::io(format!("write tar {}", rel.display())))
    }

    fn entry(&mut self, p: &Path, rel: &Path, meta: &fs::Metadata, lower_rel: &Path) -> Result<()> {
        let ctx = |what: &str| ImageError::io(format!("{what} {}", p.display()));
        let (mut uid, mut gid, mut mode) = (meta.uid(), meta.gid(), meta.mode() & 0o7777);
        let mut special: Option<(Special, u64)> = None;
        if let Some((u, g)) = self.opts.map_owner {
            if uid == u {
                uid = 0;
            }
            if gid == g {
                gid = 0;
            }
        }
        let mut xattrs: Vec<(String, Vec<u8>)> = Vec::new();
        let ft = meta.file_type();
        for xn in fsutil::list_xattrs(p).map_err(ctx("list xattrs of"))? {
            if xn == OVERRIDE_XATTR {
                if let Some(v) = fsutil::get_xattr(p, &xn).map_err(ctx("read xattr of"))?
                    && let Some(o) = override_stat::parse(&v)
                {
                    (uid, gid, mode, special) = (o.uid, o.gid, o.perm, o.dev);
                }
                continue;
            }
            if ignored_xattr(&xn) {
                continue;
            }
            if let Some(v) = fsutil::get_xattr(p, &xn).map_err(ctx("read xattr of"))? {
                xattrs.push((xn, v));
            }
        }
        if !xattrs.is_empty() {
            let pax: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            self.b
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(ctx("write pax header for"))?;
        }
        let mut h = Header::new_gnu();
        h.set_uid(uid as u64);
        h.set_gid(gid as u64);
        h.set_mode(mode);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let tname = if ft.is_dir() {
            let mut s = rel.as_os_str().to_owned();
            s.push("/");
            PathBuf::from(s)
        } else {
            rel.to_path_buf()
        };
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            return self
                .b
                .append_data(&mut h, &tname, io::empty())
                .map_err(ctx("write tar"));
        }
        if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            let target = fs::read_link(p).map_err(ctx("readlink"))?;
            return self
                .b
                .append_link(&mut h, &tname, &target)
                .map_err(ctx("write tar"));
        }
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || special.is_some() {
            let (kind, maj, min) = match special {
                Some((k, dev)) => {
                    let kind = match k {
                        Special::Char => EntryType::Char,
                        Special::Block => EntryType::Block,
                        Special::Fifo => EntryType::Fifo,
                    };
                    (kind, libc::major(dev), libc::minor(dev))
                }
                None if ft.is_fifo() => (EntryType::Fifo, 0, 0),
                None => {
                    let k = if ft.is_char_device() {
                        EntryType::Char
                    } else {
                        EntryType::Block
                    };
                    (k, libc::major(meta.rdev()), libc::minor(meta.rdev()))
                }
            };
            if ft.is_file() || ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                h.set_entry_type(kind);
                h.set_device_major(maj).map_err(ctx("device major of"))?;
                h.set_device_minor(min).map_err(ctx("device minor of"))?;
                return self
                    .b
                    .append_data(&mut h, &tname, io::empty())
                    .map_err(ctx("write tar"));
            }
        }
        // Regular file.
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                h.set_entry_type(EntryType::Link);
                return self
                    .b
                    .append_link(&mut h, &tname, &first)
                    .map_err(ctx("write tar"));
            }
            self.links.insert(key, rel.to_path_buf());
            if let Some(lower) = self
                .opts
                .overlay
                .then(|| indexed_origin(p, lower_rel, &self.opts.lowers))
                .flatten()
            {
                self.indexed.insert(lower, rel.to_path_buf());
            }
        }
        let data_path = self.data_source(p, lower_rel)?;
        // Never follow a symlink swapped in since the walk saw a regular file here.
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&data_path)
                .map_err(ctx("open"))?
        };
        let fmeta = f.metadata().map_err(ctx("stat"))?;
        if data_path == p && (fmeta.dev(), fmeta.ino()) != (meta.dev(), meta.ino()) {
            return Err(ImageError::Format(format!(
                "{} changed while the layer was written",
                p.display()
            )));
        }
        let len = fmeta.len();
        h.set_entry_type(EntryType::Regular);
        h.set_size(len);
        self.b
            .append_data(&mut h, &tname, io::Read::take(f, len))
            .map_err(ctx("write tar"))
    }

    /// The other names of indexed files (see [`linked_lower_names`]), written as hard links
    /// to the upper copy, as a mount of the layers shows them.
    fn indexed_lower_names(&mut self, upper: &Path) -> Result<()> {
        for (rel, target) in linked_lower_names(upper, &self.opts.lowers, &self.indexed)? {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Link);
            h.set_size(0);
            // (a hard link takes its metadata from its target)
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            self.b
                .append_link(&mut h, &rel, &target)
                .map_err(ImageError::io(format!("write tar {}", rel.display())))?;
        }
        Ok(())
    }

    /// Metacopy files keep their data in a lower layer.
    fn data_source(&self, p: &Path, lower_rel: &Path) -> Result<PathBuf> {
        let meta_copy = ["trusted.overlay.metacopy", "user.overlay.metacopy"]
            .iter()
            .any(|n| fsutil::get_xattr(p, n).ok().flatten().is_some());
        if !meta_copy || self.opts.lowers.is_empty() {
            return Ok(p.to_path_buf());
        }
        match union::lookup(&self.opts.lowers, lower_rel) {
            Some(i) => Ok(self.opts.lowers[i].join(lower_rel)),
            None => Err(ImageError::Format(format!(
                "metacopy file {} has no data in a lower layer",
                lower_rel.display()
            ))),
        }
    }
}

/// Every entry of the merged dir (upper `abs` over the lowers at `origin`) as added at `rel`.
fn added_merged(
    abs: &Path,
    rel: &Path,
    origin: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> Result<()> {
    for (name, in_upper) in merged_names(abs, Some(origin), lowers, true)? {
        let r = rel.join(&name);
        let lo = origin.join(&name);
        out.push(Change::Added(r.clone()));
        let p = abs.join(&name);
        let is_dir = if in_upper {
            p.symlink_metadata().is_ok_and(|m| m.is_dir())
        } else {
            union::lookup(lowers, &lo).is_some_and(|i| {
                lowers[i]
                    .join(&lo)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_dir())
            })
        };
        if !is_dir {
            continue;
        }
        if in_upper && fsutil::is_opaque_dir(&p) {
            added_merged(&p, &r, &lo, &[], out)?;
        } else {
            let child = if in_upper {
                union::redirect_of(&p, origin).unwrap_or(lo)
            } else {
                lo
            };
            added_merged(&p, &r, &child, lowers, out)?;
        }
    }
    Ok(())
}

/// The names of an upper dir, sorted bytewise, each with "is in the upper dir". With an
/// `origin` (inside a redirected dir) the lower names there are merged in, and upper
/// whiteouts are applied to them instead of being listed.
fn merged_names(
    abs: &Path,
    origin: Option<&Path>,
    lowers: &[PathBuf],
    overlay: bool,
) -> Result<Vec<(OsString, bool)>> {
    // Inside a redirected dir, a directory may exist only below (no upper dir).
    let upper = if origin.is_some() && abs.symlink_metadata().is_err() {
        Vec::new()
    } else {
        sorted_entries(abs)?
    };
    let Some(o) = origin.filter(|_| overlay) else {
        return Ok(upper.into_iter().map(|n| (n, true)).collect());
    };
    let mut hidden = std::collections::HashSet::new();
    let mut out: Vec<(OsString, bool)> = Vec::new();
    for n in upper {
        let nb = n.as_bytes();
        let meta = abs
            .join(&n)
            .symlink_metadata()
            .map_err(ImageError::io(format!("stat {}", abs.join(&n).display())))?;
        if fsutil::is_whiteout_dev(&meta) {
            hidden.insert(n);
        } else if nb == WH_OPAQUE.as_bytes() {
        } else if let Some(h) = nb
            .strip_prefix(WH_PREFIX.as_bytes())
            .filter(|_| meta.is_file())
        {
            hidden.insert(OsString::from(std::ffi::OsStr::from_bytes(h)));
        } else {
            hidden.insert(n.clone());
            out.push((n, true));
        }
    }
    for n in union::list_dir(lowers, o) {
        if !hidden.contains(&n) {
            out.push((n, false));
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// For upper file `p` copied up through the hard-link index (it carries an `overlay.origin`
/// and a lower file with several links is under its name `lower_rel`): that lower inode.
fn indexed_origin(p: &Path, lower_rel: &Path, lowers: &[PathBuf]) -> Option<(u64, u64)> {
    if lowers.is_empty() {
        return None;
    }
    let has_origin = ["trusted.overlay.origin", "user.overlay.origin"]
        .iter()
        .any(|n| fsutil::get_xattr(p, n).ok().flatten().is_some());
    if !has_origin {
        return None;
    }
    let i = union::lookup(lowers, lower_rel)?;
    let m = lowers[i].join(lower_rel).symlink_metadata().ok()?;
    (m.is_file() && m.nlink() > 1).then(|| (m.dev(), m.ino()))
}

/// Lower names of indexed inodes (keys of `indexed`, valued by the path of their upper copy)
/// that the union still shows from the lower layer: through the hard-link index they show the
/// upper copy. Returns (name, path of the upper copy), sorted.
fn linked_lower_names(
    upper: &Path,
    lowers: &[PathBuf],
    indexed: &HashMap<(u64, u64), PathBuf>,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    if indexed.is_empty() {
        return Ok(Vec::new());
    }
    let mut stack = vec![upper.to_path_buf()];
    stack.extend(lowers.iter().cloned());
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (i, layer) in lowers.iter().enumerate() {
        let mut names = Vec::new();
        files_with_inodes(layer, Path::new(""), indexed, &mut names)?;
        for (rel, target) in names {
            // Shown by the union from this very layer and path (not replaced, deleted, hidden
            // by an opaque dir, or shadowed by a higher lower layer).
            let Some(r) = union::resolve(&stack, &rel) else {
                continue;
            };
            if r.top == i + 1 && r.paths[r.top] == rel && rel != target {
                found.push((rel, target));
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Regular files under `layer`/`rel` whose inode is a key of `inodes`: (path, its value).
fn files_with_inodes(
    layer: &Path,
    rel: &Path,
    inodes: &HashMap<(u64, u64), PathBuf>,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    let dir = layer.join(rel);
    for name in sorted_entries(&dir)? {
        let r = rel.join(&name);
        let Ok(m) = layer.join(&r).symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            files_with_inodes(layer, &r, inodes, out)?;
        } else if m.is_file()
            && m.nlink() > 1
            && let Some(target) = inodes.get(&(m.dev(), m.ino()))
        {
            out.push((r, target.clone()));
        }
    }
    Ok(())
}

/// One line of `strata diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `A path`
    Added(PathBuf),
    /// `C path`
    Changed(PathBuf),
    /// `D path`
    Deleted(PathBuf),
}

impl Change {
    /// The path the change is about.
    pub fn path(&self) -> &Path {
        match self {
            Change::Added(p) | Change::Changed(p) | Change::Deleted(p) => p,
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (c, p) = match self {
            Change::Added(p) => ('A', p),
            Change::Changed(p) => ('C', p),
            Change::Deleted(p) => ('D', p),
        };
        write!(f, "{c} /{}", p.display())
    }
}

/// The changes an upper directory makes over `lowers` (topmost first), in path order.
pub fn changes(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    let mut indexed = HashMap::new();
    changes_in(upper, Path::new(""), lowers, &mut out, &mut indexed)?;
    // Lower names that show a file changed through the hard-link index changed too.
    let linked = linked_lower_names(upper, lowers, &indexed)?;
    if !linked.is_empty() {
        out.extend(linked.into_iter().map(|(rel, _)| Change::Changed(rel)));
        // (depth-first over sorted names is the order of paths compared by component)
        out.sort_by(|a, b| a.path().cmp(b.path()));
    }
    Ok(out)
}

/// The changes under upper dir `abs` (at `rel`) into `out`; upper files copied up through the
/// hard-link index into `indexed` (their lower inode and path).
fn changes_in(
    abs: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
    indexed: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    for name in sorted_entries(abs)? {
        let p = abs.join(&name);
        let r = rel.join(&name);
        let meta = p
            .symlink_metadata()
            .map_err(ImageError::io(format!("stat {}", p.display())))?;
        let nb = name.as_bytes();
        if nb == WH_OPAQUE.as_bytes() {
            continue;
        }
        let (target, deleted) = if fsutil::is_whiteout_dev(&meta) {
            (r.clone(), true)
        } else if let Some(h) = nb
            .strip_prefix(WH_PREFIX.as_bytes())
            .filter(|_| meta.is_file())
        {
            (rel.join(std::ffi::OsStr::from_bytes(h)), true)
        } else {
            (r.clone(), false)
        };
        let in_lower = union::lookup(lowers, &target).is_some();
        if deleted {
            if in_lower {
                out.push(Change::Deleted(target));
            }
            continue;
        }
        out.push(if in_lower {
            Change::Changed(r.clone())
        } else {
            Change::Added(r.clone())
        });
        if meta.is_dir() {
            let opaque = fsutil::is_opaque_dir(&p);
            if !opaque && let Some(origin) = union::redirect_of(&p, rel) {
                // A renamed directory: everything in it is new at this path.
                added_merged(&p, &r, &origin, lowers, out)?;
                continue;
            }
            if in_lower && opaque {
                for n in union::list_dir(lowers, &r) {
                    if p.join(&n).symlink_metadata().is_err() {
                        out.push(Change::Deleted(r.join(n)));
                    }
                }
            }
            changes_in(&p, &r, if opaque { &[] } else { lowers }, out, indexed)?;
        } else if meta.is_file()
            && meta.nlink() > 1
            && let Some(lower) = indexed_origin(&p, &r, lowers)
        {
            indexed.entry(lower).or_insert(r);
        }
    }
    Ok(())
}
