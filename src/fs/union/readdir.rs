//! Merged directory listings: upper entries first, then each lower directory's entries not
//! already seen, whiteouts and opaque markers applied and never shown. Inode numbers match
//! what lookup reports, so readdir's d_ino equals stat's st_ino.

use rustc_hash::FxHashSet as HashSet;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{Errno, FileType};

use crate::fs::format::whiteout::{self, OPAQUE_FILE, WH_PREFIX};
use crate::fs::tables::handles::DirEntry;
use crate::fs::tables::layer::Place;
use crate::fs::tables::node::Node;
use crate::fs::union::FsError;
use crate::fs::union::getattr;
use crate::fs::union::{FsResult, Union};
use crate::sys::{at, dir};

/// Classify a raw entry: Some(hidden name) for whiteouts, None for a normal entry.
enum Kind {
    Marker,
    Whiteout(Vec<u8>),
    Entry(FileType),
}

fn classify(dir: &std::os::fd::OwnedFd, e: &dir::RawDirEntry) -> FsResult<Kind> {
    if e.name == OPAQUE_FILE {
        return Ok(Kind::Marker);
    }
    if let Some(rest) = e.name.strip_prefix(WH_PREFIX) {
        return Ok(Kind::Whiteout(rest.to_vec()));
    }
    let kind = match getattr::file_type_of_dtype(e.dtype) {
        Some(FileType::CharDevice) | None => {
            let st = match at::stat_at_opt(dir.as_fd(), OsStr::from_bytes(&e.name))? {
                Some(st) => st,
                None => return Ok(Kind::Marker),
            };
            if whiteout::is_whiteout_dev(&st) {
                return Ok(Kind::Whiteout(e.name.clone()));
            }
            getattr::file_type(st.st_mode)
        }
        Some(k) => k,
    };
    Ok(Kind::Entry(kind))
}

impl Union {
    /// The merged listing of directory `node` (without `.` and `..`).
    pub fn list_dir(&self, node: &Arc<Node>) -> FsResult<Vec<DirEntry>> {
        let st = node.state.read().clone();
        let mut seen: HashSet<Vec<u8>> = HashSet::default();
        let mut out: Vec<DirEntry> = Vec::new();

        if let Some(udir) = st.upper_dir() {
            for e in dir::read_dir(udir.as_fd())? {
                match classify(udir, &e)? {
                    Kind::Marker => {}
                    Kind::Whiteout(name) => {
                        seen.insert(name);
                    }
                    Kind::Entry(kind) => {
                        if !seen.insert(e.name.clone()) {
                            continue;
                        }
                        let known = self.nodes.child_id(node.id, OsStr::from_bytes(&e.name));
                        let ino = match known {
                            Some(ino) => ino,
                            // Directories may be merged or moved, and an impure directory
                            // holds copied-up entries: lookup knows their inode numbers (the
                            // kernel looks them up too). Anything else shows its own.
                            None if kind == FileType::Directory || st.impure => {
                                match self.resolve(node, OsStr::from_bytes(&e.name)) {
                                    Ok(Some(n)) => n.ino,
                                    Ok(None) => continue,
                                    Err(_) => self.layers.ino(Place::Upper, e.ino),
                                }
                            }
                            None => self.layers.ino(Place::Upper, e.ino),
                        };
                        out.push(DirEntry {
                            name: OsStr::from_bytes(&e.name).to_os_string(),
                            ino,
                            kind,
                        });
                    }
                }
            }
        }
        if !st.opaque {
            for ld in st.lower_dirs() {
                let mut hidden_here = Vec::new();
                let entries = dir::read_dir(ld.fd.as_fd())?;
                if !ld.names_known() {
                    // Lookups of the names just listed need not list the directory again.
                    ld.learn_names(entries.iter().map(|e| e.name.as_slice()));
                }
                for e in entries {
                    match classify(&ld.fd, &e)? {
                        Kind::Marker => {}
                        Kind::Whiteout(name) => hidden_here.push(name),
                        Kind::Entry(kind) => {
                            if !seen.insert(e.name.clone()) {
                                continue;
                            }
                            let ino = self.layers.ino(Place::Lower(ld.layer), e.ino);
                            out.push(DirEntry {
                                name: OsStr::from_bytes(&e.name).to_os_string(),
                                ino,
                                kind,
                            });
                        }
                    }
                }
                for name in hidden_here {
                    seen.insert(name);
                }
            }
        }
        // Names the kernel already knows carry their node's id (a synthetic one on collision).
        for e in out.iter_mut() {
            if let Some(id) = self.nodes.child_id(node.id, &e.name) {
                e.ino = id;
            }
        }
        // Directories first: a walk goes into each of them, so a names-only READDIRPLUS gives
        // them with attributes, and the kernel has them before the names of the other entries.
        out.sort_by_key(|e| e.kind != FileType::Directory);
        Ok(out)
    }

    /// Whether directory `node` shows no entries at all.
    pub fn dir_is_empty(&self, node: &Arc<Node>) -> FsResult<bool> {
        Ok(self.list_dir(node)?.is_empty())
    }
}

impl Union {
    /// The listing of directory `node` for a read at `offset`: offsets 1 and 2 are `.` and
    /// `..`, entry `i` of the list has offset `i + 3`. A read from 0 lists afresh and keeps
    /// the listing for the reads that follow; a read past its end forgets it.
    pub fn listing_at(&self, node: &Arc<Node>, offset: u64) -> FsResult<Arc<Vec<DirEntry>>> {
        if !node.is_dir() {
            return Err(FsError(Errno::ENOTDIR));
        }
        if offset != 0
            && let Some(list) = self.listings.get(node.id)
        {
            // The last entry has offset len + 2: a read from there finds the end.
            if offset >= list.len() as u64 + 2 {
                self.listings.done(node.id);
            }
            return Ok(list);
        }
        let list = Arc::new(self.list_dir(node)?);
        if offset < list.len() as u64 + 2 {
            self.listings.keep(node.id, list.clone());
        }
        Ok(list)
    }
}
