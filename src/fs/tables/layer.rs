//! The layers of one mount, each held as a directory fd: lowers (read-only, topmost first),
//! the optional upper, and the work dir. All access goes through `*at()` calls on these fds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sys::{at, dir, handle};

/// One layer root directory.
#[derive(Debug)]
pub struct Layer {
    pub fd: std::sync::Arc<OwnedFd>,
    pub dev: u64,
    /// Index into [`Layers::devs`], used to build unique inode numbers across filesystems.
    pub fs_index: u64,
    /// Uuid of the layer's filesystem, part of the file handles in hard-link index keys.
    pub uuid: [u8; 16],
    /// The filesystem's type magic (`statfs` f_type): tells how its file handles are laid out.
    pub fs_type: i64,
}

impl Layer {
    fn open(path: &Path) -> std::io::Result<Layer> {
        let fd = at::open_dir_path(path)?;
        let st = at::fstat(fd.as_fd())?;
        Ok(Layer {
            uuid: crate::sys::handle::fs_uuid(fd.as_fd()),
            fs_type: handle::fs_type(fd.as_fd()).unwrap_or(0),
            fd: std::sync::Arc::new(fd),
            dev: st.st_dev,
            fs_index: 0,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// All layers of a mount.
#[derive(Debug)]
pub struct Layers {
    pub lowers: Vec<Layer>,
    pub upper: Option<Layer>,
    /// `WORKDIR/work`: scratch directory on the upper's filesystem.
    pub work: Option<OwnedFd>,
    /// `WORKDIR/index`: the hard-link index, shared with kernel overlayfs (see `index.rs`).
    pub index: Option<std::sync::Arc<OwnedFd>>,
    /// The index has (or may have) entries: until it does, lookups of lower hard links need
    /// not compute their index keys.
    pub index_used: std::sync::atomic::AtomicBool,
    /// Distinct st_dev values; the upper's (or the first lower's) is index 0.
    pub devs: Vec<u64>,
}

/// Where a directory entry lives: the upper layer or lower layer `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Upper,
    Lower(usize),
}

impl Layers {
    /// Open every layer root; `work` is `WORKDIR/work`, created if missing.
    pub fn open(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        workdir: Option<&Path>,
    ) -> std::io::Result<Layers> {
        let mut out = Layers {
            lowers: Vec::new(),
            upper: None,
            work: None,
            index: None,
            index_used: Default::default(),
            devs: Vec::new(),
        };
        if let Some(u) = upper {
            out.upper = Some(Layer::open(u)?);
        }
        for l in lowers {
            out.lowers.push(Layer::open(l)?);
        }
        if let Some(w) = workdir {
            let wfd = at::open_dir_path(w)?;
            out.work = Some(open_subdir(wfd.as_fd(), "work")?);
            let index = open_subdir(wfd.as_fd(), "index")?;
            out.index_used = (!dir::read_dir(index.as_fd())?.is_empty()).into();
            out.index = Some(std::sync::Arc::new(index));
        }
        let mut devs: Vec<u64> = Vec::new();
        for l in out.upper.iter_mut().chain(out.lowers.iter_mut()) {
            let idx = match devs.iter().position(|d| *d == l.dev) {
                Some(i) => i,
                None => {
                    devs.push(l.dev);
                    devs.len() - 1
                }
            };
            l.fs_index = idx as u64;
        }
        out.devs = devs;
        Ok(out)
    }

    /// The layer at `place`.
    pub fn layer(&self, place: Place) -> Option<&Layer> {
        match place {
            Place::Upper => self.upper.as_ref(),
            Place::Lower(i) => self.lowers.get(i),
        }
    }

    /// The inode number shown for an object with real inode `ino` in layer `place`: the real
    /// number when every layer shares one filesystem, else the filesystem index in the high
    /// bits (as kernel overlayfs `xino` does).
    pub fn ino(&self, place: Place, ino: u64) -> u64 {
        if self.devs.len() <= 1 {
            return ino;
        }
        let idx = self.layer(place).map(|l| l.fs_index).unwrap_or(0);
        (idx << 56) | (ino & ((1u64 << 56) - 1))
    }
}

/// Open (creating it if needed) directory `name` inside `dir`.
fn open_subdir(dir: BorrowedFd<'_>, name: &str) -> std::io::Result<OwnedFd> {
    let name = std::ffi::OsStr::new(name);
    match at::mkdir_at(dir, name, 0o700) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    at::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
}
