//! Apply a layer tar to a directory in overlay format: OCI whiteouts become char 0/0 devices
//! (or `.wh.` files where mknod is refused) and opaque xattrs; hostile entries are refused;
//! rootless, what cannot be applied goes to `user.containers.override_stat`.

use super::fsutil::{self, OPAQUE_TRUSTED, OPAQUE_USER, OVERRIDE_XATTR, WH_OPAQUE, WH_PREFIX};
use super::{ImageError, Result};
use crate::fs::override_stat::{self, Special, StatOverride};
use crate::sys::{at, xattr};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tar::EntryType;

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Unprivileged: keep owners, modes and devices in the override xattr.
    pub rootless: bool,
    /// Refuse any entry bigger than this many bytes.
    pub max_entry_size: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            rootless: !fsutil::is_root(),
            max_entry_size: 64 << 30,
        }
    }
}

/// What happened while applying.
#[derive(Debug, Default)]
pub struct ApplyStats {
    /// Entries applied.
    pub entries: u64,
    /// Entries neutralised (with a message each).
    pub warnings: Vec<String>,
}

fn refused(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Refused {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A reader that, once `inner` ends, yields the zeros a tar stream may lack at its end: some
/// tools (umoci's rootless insert, for one) write layers that stop right after the last
/// entry's data, without its block padding and the end-of-archive blocks. The zeros are not
/// part of `inner`, so a digest computed around `inner` is unaffected.
struct PadAtEof<R> {
    inner: R,
    pad_left: usize,
    at_eof: bool,
}

impl<R: Read> PadAtEof<R> {
    fn new(inner: R) -> Self {
        PadAtEof {
            inner,
            pad_left: 512 + 1024,
            at_eof: false,
        }
    }
}

impl<R: Read> Read for PadAtEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.at_eof {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.at_eof = true;
        }
        let n = buf.len().min(self.pad_left);
        buf[..n].fill(0);
        self.pad_left -= n;
        Ok(n)
    }
}

/// Copy `r` into the new, empty file `f`, leaving holes where whole blocks are zero: a
/// sparse tar entry (written densely by the tar reader) or a layer that is a gzip bomb of
/// zeros then takes the disk space of its real data, not of its apparent size. Returns the
/// bytes copied (the file's size).
fn copy_sparse<R: Read>(r: &mut R, f: &mut std::fs::File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    const BLOCK: usize = 64 * 1024;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    let mut hole = false;
    loop {
        // Fill a whole block (short reads would split holes and data oddly).
        let mut n = 0;
        while n < BLOCK {
            match r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            f.seek(SeekFrom::Current(n as i64))?;
            hole = true;
        } else {
            f.write_all(&buf[..n])?;
            hole = false;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    if hole {
        // A trailing hole: set the size the seeks did not.
        f.set_len(total)?;
    }
    Ok(total)
}

/// Apply the tar stream `reader` into the existing directory `dest`.
/// The stream is read to its end (so a hashing reader around it sees every byte).
pub fn apply_layer<R: Read>(reader: R, dest: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let root =
        at::open_dir_read(dest).map_err(ImageError::io(format!("open {}", dest.display())))?;
    let mut stats = ApplyStats::default();
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let mut archive = tar::Archive::new(PadAtEof::new(reader));
    let entries = archive
        .entries()
        .map_err(ImageError::io("read layer tar"))?;
    for entry in entries {
        let mut entry = entry.map_err(ImageError::io("read layer tar entry"))?;
        let raw = entry
            .path()
            .map_err(ImageError::io("read tar entry name"))?
            .into_owned();
        apply_entry(&root, &mut entry, &raw, opts, &mut stats, &mut dir_times)?;
        stats.entries += 1;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(ImageError::io("read layer tar trailer"))?;
    // Directory times last, deepest first, so creating children does not change them.
    dir_times.sort_by_key(|d| std::cmp::Reverse(d.0.components().count()));
    for (p, t) in dir_times {
        if let Some(comps) = fsutil::normal_components(&p)
            && let Some((name, parents)) = comps.split_last()
            && let Ok(pfd) = fsutil::walk_dirs(root.as_fd(), parents, false)
        {
            let _ = fsutil::set_mtime_at(pfd.as_fd(), name, t);
        }
    }
    Ok(stats)
}

fn apply_entry<R: Read>(
    root: &OwnedFd,
    entry: &mut tar::Entry<'_, R>,
    raw: &Path,
    opts: &ApplyOptions,
    stats: &mut ApplyStats,
    dir_times: &mut Vec<(PathBuf, i64)>,
) -> Result<()> {
    if raw.has_root() {
        stats.warnings.push(format!(
            "{}: absolute path made relative to the layer",
            raw.display()
        ));
    }
    let Some(comps) = fsutil::normal_components(raw) else {
        return Err(refused(raw, "path contains '..'"));
    };
    let hdr = entry.header().clone();
    // The real size (for sparse entries larger than what the tar stores).
    let size = hdr
        .size()
        .map_err(ImageError::io("tar entry size"))?
        .max(entry.size());
    if size > opts.max_entry_size {
        return Err(refused(
            raw,
            format!(
                "entry size {size} exceeds the limit of {} bytes",
                opts.max_entry_size
            ),
        ));
    }
    let Some((name, parents)) = comps.split_last() else {
        // The root itself ("./"): nothing to create.
        return Ok(());
    };
    let rel: PathBuf = comps.iter().collect();
    // Parents the tar does not list are made 0755 root:root, as other unpackers do.
    let mut implicit = |pfd: BorrowedFd<'_>, n: &OsStr| -> io::Result<()> {
        if opts.rootless {
            fsutil::set_xattr(&fsutil::proc_path(pfd, n), OVERRIDE_XATTR, b"0:0:0755")
        } else {
            at::chown_at(pfd, n, 0, 0)
        }
    };
    let parent =
        fsutil::walk_dirs_with(root.as_fd(), parents, true, &mut implicit).map_err(|e| {
            refused(
                raw,
                format!("parent path is unusable ({e}); paths through a symlink are refused"),
            )
        })?;
    let pfd = parent.as_fd();
    let name_b = name.as_bytes();

    // Whiteouts.
    if name_b == WH_OPAQUE.as_bytes() {
        let xattr = if opts.rootless {
            OPAQUE_USER
        } else {
            OPAQUE_TRUSTED
        };
        xattr::set_xattr(pfd, xattr.as_bytes(), b"y", 0)
            .map_err(ImageError::io(format!("mark {} opaque", rel.display())))?;
        return Ok(());
    }
    if let Some(hidden) = name_b.strip_prefix(WH_PREFIX.as_bytes()) {
        let hidden = OsStr::from_bytes(hidden);
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/')
        {
            return Err(refused(raw, "invalid whiteout name"));
        }
        fsutil::remove_at(pfd, hidden)
            .map_err(ImageError::io(format!("replace {}", rel.display())))?;
        match at::mknod_at(pfd, hidden, libc::S_IFCHR, 0) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                // Unprivileged and no whiteout devices: keep the OCI `.wh.` file (fuse-overlayfs reads it).
                fsutil::create_file_at(pfd, name, 0o000)
                    .map_err(ImageError::io(format!("create whiteout {}", rel.display())))?;
            }
            Err(e) => return Err(ImageError::io(format!("create whiteout {}", rel.display()))(e)),
        }
        return Ok(());
    }

    let mode = hdr.mode().map_err(ImageError::io("tar entry mode"))? & 0o7777;
    let uid = hdr.uid().map_err(ImageError::io("tar entry uid"))? as u32;
    let gid = hdr.gid().map_err(ImageError::io("tar entry gid"))? as u32;
    let mtime = hdr.mtime().unwrap_or(0) as i64;
    let kind = hdr.entry_type();
    let ctx = |what: &str| ImageError::io(format!("{what} {}", rel.display()));

    let existing = at::stat_at_opt(pfd, name).map_err(ctx("stat"))?;
    let existing_is_dir = existing.is_some_and(|st| at::is_dir(&st));
    if existing.is_some() && !(kind == EntryType::Directory && existing_is_dir) {
        fsutil::remove_at(pfd, name).map_err(ctx("replace"))?;
    }
    // In rootless mode the real mode must let us (the owner) keep working in the tree.
    let real_mode = |m: u32, min: u32| if opts.rootless { (m & 0o777) | min } else { m };
    let mut override_type: Option<(Special, u64)> = None;
    let mut is_symlink = false;
    match kind {
        EntryType::Directory => {
            if !existing_is_dir {
                at::mkdir_at(pfd, name, 0o700).map_err(ctx("mkdir"))?;
            }
            dir_times.push((rel.clone(), mtime));
        }
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            if kind == EntryType::GNUSparse {
                stats
                    .warnings
                    .push(format!("{}: sparse entry written densely", rel.display()));
            }
            let mut f = fsutil::create_file_at(pfd, name, 0o600).map_err(ctx("create"))?;
            let n = copy_sparse(&mut entry.take(size), &mut f).map_err(ctx("write"))?;
            if n != size {
                return Err(refused(raw, "truncated entry"));
            }
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(ctx("read link target"))?
                .ok_or_else(|| refused(raw, "symlink without target"))?;
            at::symlink_at(target.as_os_str(), pfd, name).map_err(ctx("symlink"))?;
            is_symlink = true;
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(ctx("read link target"))?
                .ok_or_else(|| refused(raw, "hardlink without target"))?
                .into_owned();
            let Some(tcomps) = fsutil::normal_components(&target) else {
                return Err(refused(
                    raw,
                    format!(
                        "hardlink target {} points outside the layer",
                        target.display()
                    ),
                ));
            };
            let Some((tname, tparents)) = tcomps.split_last() else {
                return Err(refused(raw, "hardlink to the layer root"));
            };
            let tdir = fsutil::walk_dirs(root.as_fd(), tparents, false).map_err(|e| {
                refused(
                    raw,
                    format!(
                        "hardlink target {} is not in the layer: {e}",
                        target.display()
                    ),
                )
            })?;
            match at::stat_at_opt(tdir.as_fd(), tname).map_err(ctx("stat link target"))? {
                Some(st) if !at::is_dir(&st) => {}
                _ => {
                    return Err(refused(
                        raw,
                        format!(
                            "hardlink target {} is not a file in the layer",
                            target.display()
                        ),
                    ));
                }
            }
            at::link_at(tdir.as_fd(), tname, pfd, name).map_err(ctx("link"))?;
            // The link shares the target's metadata; nothing more to set.
            return Ok(());
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let major = hdr.device_major().ok().flatten().unwrap_or(0);
            let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
            let (fmt, special) = match kind {
                EntryType::Char => (libc::S_IFCHR, Special::Char),
                EntryType::Block => (libc::S_IFBLK, Special::Block),
                _ => (libc::S_IFIFO, Special::Fifo),
            };
            let dev = libc::makedev(major, minor);
            match at::mknod_at(pfd, name, fmt | 0o600, dev) {
                Ok(()) => {}
                Err(e)
                    if opts.rootless
                        && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) =>
                {
                    fsutil::create_file_at(pfd, name, 0o600)
                        .map_err(ctx("create device placeholder"))?;
                    override_type = Some((special, dev));
                }
                Err(e) => return Err(ctx("mknod")(e)),
            }
        }
        other => {
            stats.warnings.push(format!(
                "{}: unsupported tar entry type {:?} skipped",
                rel.display(),
                other
            ));
            return Ok(());
        }
    }

    // Extended attributes from PAX headers.
    let ppath = fsutil::proc_path(pfd, name);
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(xname) = key.strip_prefix("SCHILY.xattr.") {
                if xname == OVERRIDE_XATTR
                    || xname.starts_with("trusted.overlay.")
                    || xname.starts_with("user.overlay.")
                {
                    stats.warnings.push(format!(
                        "{}: xattr {xname} from the tar ignored",
                        rel.display()
                    ));
                    continue;
                }
                if let Err(e) = fsutil::set_xattr(&ppath, xname, ext.value_bytes()) {
                    stats
                        .warnings
                        .push(format!("{}: xattr {xname} not set: {e}", rel.display()));
                }
            }
        }
    }

    // Owner and mode.
    if opts.rootless {
        if !is_symlink {
            let min = if kind == EntryType::Directory {
                0o700
            } else {
                0o600
            };
            at::chmod_at(pfd, name, real_mode(mode, min)).map_err(ctx("chmod"))?;
            let v = override_stat::format(&StatOverride {
                uid,
                gid,
                perm: mode,
                dev: override_type,
            });
            fsutil::set_xattr(&ppath, OVERRIDE_XATTR, v.as_bytes())
                .map_err(ctx("set override xattr on"))?;
        }
    } else {
        at::chown_at(pfd, name, uid, gid).map_err(ctx("chown"))?;
        if !is_symlink {
            // chmod after chown: chown clears setuid/setgid.
            at::chmod_at(pfd, name, mode).map_err(ctx("chmod"))?;
        }
    }
    if kind != EntryType::Directory {
        let _ = fsutil::set_mtime_at(pfd, name, mtime);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir()?;
        for (name, data) in [
            ("zeros", vec![0u8; 8 << 20]),
            ("tail", {
                let mut v = vec![0u8; 8 << 20];
                v.extend_from_slice(b"end");
                v
            }),
            ("head", {
                let mut v = b"start".to_vec();
                v.resize(3 << 20, 0);
                v
            }),
            ("empty", Vec::new()),
        ] {
            let p = dir.path().join(name);
            let mut f = std::fs::File::create(&p)?;
            assert_eq!(copy_sparse(&mut &data[..], &mut f)?, data.len() as u64);
            drop(f);
            assert!(std::fs::read(&p)? == data, "{name}: content differs");
            // At most two 64 KiB blocks hold data.
            assert!(
                std::fs::metadata(&p)?.blocks() * 512 <= 2 * 64 * 1024 + 8192,
                "{name}: zeros were written"
            );
        }
        Ok(())
    }

    #[test]
    fn tar_without_final_padding_and_end_blocks_applies()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut builder = tar::Builder::new(Vec::new());
        let data = b"hello";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        builder.append_data(&mut h, "f", &data[..])?;
        let full = builder.into_inner()?;
        // Cut right after the entry's data: no padding, no end-of-archive blocks.
        let cut = &full[..512 + data.len()];
        let dir = tempfile::tempdir()?;
        apply_layer(cut, dir.path(), &ApplyOptions::default())?;
        assert_eq!(std::fs::read(dir.path().join("f"))?, data);
        Ok(())
    }
}
