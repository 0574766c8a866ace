//! Where a node's object lives in the layers: its upper and lower directories (with the
//! names a lower directory holds), its lower layer or metadata-only data, and the rarer parts
//! (stat override, hard-link index key), boxed apart so that a node stays small.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A lower directory merged into a union directory.
#[derive(Debug, Clone)]
pub struct LowerDir {
    pub layer: usize,
    pub fd: Arc<OwnedFd>,
    /// Hashes of the names it holds, read once on first use (lower layers never change while
    /// mounted), so lookups of absent names and whiteout-file checks cost no system call.
    /// Hashes, not names: 8 bytes a name, and a collision only costs the system call.
    names: Arc<std::sync::OnceLock<Option<NameHashes>>>,
}

/// The sorted 64-bit hashes of a directory's names.
#[derive(Debug)]
struct NameHashes(Box<[u64]>);

impl NameHashes {
    fn of<'a>(names: impl Iterator<Item = &'a [u8]>) -> NameHashes {
        let mut hashes: Vec<u64> = names.map(name_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        NameHashes(hashes.into_boxed_slice())
    }

    fn may_hold(&self, name: &[u8]) -> bool {
        self.0.binary_search(&name_hash(name)).is_ok()
    }
}

fn name_hash(name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(name)
}

impl LowerDir {
    pub fn new(layer: usize, fd: Arc<OwnedFd>) -> LowerDir {
        LowerDir {
            layer,
            fd,
            names: Default::default(),
        }
    }

    /// Record the names of the directory, read by someone listing it (lower layers never
    /// change while mounted); a no-op once known.
    pub fn learn_names<'a>(&self, names: impl Iterator<Item = &'a [u8]>) {
        let _ = self.names.set(Some(NameHashes::of(names)));
    }

    /// Whether the directory's names are known already.
    pub fn names_known(&self) -> bool {
        self.names.get().is_some()
    }

    /// Whether the directory may hold `name` (false only when it surely does not).
    pub fn may_hold(&self, name: &[u8]) -> bool {
        let names = self.names.get_or_init(|| {
            use std::os::fd::AsFd;
            crate::sys::dir::read_dir(self.fd.as_fd())
                .ok()
                .map(|entries| NameHashes::of(entries.iter().map(|e| e.name.as_slice())))
        });
        match names {
            Some(set) => set.may_hold(name),
            None => true,
        }
    }
}

/// Where a node's object lives. Changes only under the node's write lock.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// The object exists in the upper layer (a non-dir at its parent's upper dir + name).
    pub in_upper: bool,
    /// Directories: their upper and lower directories (boxed: most nodes are files).
    dirs: Option<Box<DirLayers>>,
    /// Non-directories not yet copied up: the lower layer that holds the object (an index
    /// of the union's lower layers, which are far fewer than 2^32: each holds an fd).
    lower_layer: Option<u32>,
    /// The upper directory is opaque (nothing below shows through).
    pub opaque: bool,
    /// What few nodes have: a stat override, a hard-link index key, a metacopy's data and
    /// lower path.
    extras: Option<Box<Extras>>,
    /// The object that holds the metadata (the upper one, or else the topmost lower one) has
    /// no data of its own: it is at [`NodeState::data`] (kernel overlayfs `metacopy`).
    pub metacopy: bool,
    /// Directories: the upper directory is marked `impure` (it may hold entries copied up
    /// from lower layers, whose inode numbers come from their origin).
    pub impure: bool,
    /// The object came from a lower layer (it has lower objects, or an upper copy with an
    /// origin): a directory it is moved into becomes impure.
    pub from_lower: bool,
}

/// The directories a union directory merges.
#[derive(Debug, Clone, Default)]
struct DirLayers {
    /// O_PATH fd of the upper directory once it exists.
    upper: Option<Arc<OwnedFd>>,
    /// Lower directories merged under it, topmost first.
    lowers: Box<[LowerDir]>,
    /// See [`NodeState::lower_path`].
    lower_path: Option<Arc<OsStr>>,
}

/// The rarer parts of a node's state, boxed together (most nodes have none of them).
#[derive(Debug, Clone, Default)]
struct Extras {
    /// Values recorded by a rootless unpack, shown instead of the real ones.
    over: Option<crate::fs::format::override_stat::StatOverride>,
    /// Non-directories with hard links: the object is the hard-link index entry of this key.
    indexed: Option<crate::fs::format::index::IndexKey>,
    /// Metadata-only objects: where their data is, in a lower layer.
    data: Option<DataLoc>,
    /// Files that are or may become metadata-only: see [`NodeState::lower_path`].
    lower_path: Option<Arc<OsStr>>,
}

impl NodeState {
    /// Directories: O_PATH fd of the upper directory once it exists.
    pub fn upper_dir(&self) -> Option<&Arc<OwnedFd>> {
        self.dirs.as_ref()?.upper.as_ref()
    }

    /// Directories: lower directories merged under it, topmost first.
    pub fn lower_dirs(&self) -> &[LowerDir] {
        self.dirs.as_deref().map_or(&[], |d| &d.lowers)
    }

    pub fn set_upper_dir(&mut self, fd: Option<Arc<OwnedFd>>) {
        self.change_dirs(fd.is_some(), |d| d.upper = fd);
    }

    pub fn set_lower_dirs(&mut self, lowers: Box<[LowerDir]>) {
        self.change_dirs(!lowers.is_empty(), |d| d.lowers = lowers);
    }

    /// Change the directories (`sets`: the change gives a value rather than clearing one),
    /// boxing them when one appears and dropping the box when none is left; clearing what is
    /// not there allocates nothing.
    fn change_dirs(&mut self, sets: bool, change: impl FnOnce(&mut DirLayers)) {
        if !sets && self.dirs.is_none() {
            return;
        }
        let dirs = self.dirs.get_or_insert_default();
        change(dirs);
        if dirs.upper.is_none() && dirs.lowers.is_empty() && dirs.lower_path.is_none() {
            self.dirs = None;
        }
    }

    /// Directories and (possibly) metadata-only files: the path of the object in the union's
    /// lower namespace (relative to the lower roots), its parent's lower path and its name or
    /// what its upper `redirect` says. A redirect written when the object moves names this
    /// path, as kernel overlayfs does. Other files do not keep it.
    pub fn lower_path(&self) -> Option<&Arc<OsStr>> {
        self.dirs
            .as_ref()
            .and_then(|d| d.lower_path.as_ref())
            .or_else(|| self.extras.as_ref()?.lower_path.as_ref())
    }

    /// Set the lower path of a directory (`dir`) or of a file.
    pub fn set_lower_path(&mut self, dir: bool, path: Option<Arc<OsStr>>) {
        if dir {
            self.change_dirs(path.is_some(), |d| d.lower_path = path);
        } else {
            self.change_extras(path.is_some(), |e| e.lower_path = path);
        }
    }

    /// Values recorded by a rootless unpack, shown instead of the real ones.
    pub fn over(&self) -> Option<&crate::fs::format::override_stat::StatOverride> {
        self.extras.as_ref()?.over.as_ref()
    }

    /// Non-directories with hard links: the hard-link index key of the object.
    pub fn indexed(&self) -> Option<&crate::fs::format::index::IndexKey> {
        self.extras.as_ref()?.indexed.as_ref()
    }

    /// Metadata-only objects: where their data is, in a lower layer.
    pub fn data(&self) -> Option<&DataLoc> {
        self.extras.as_ref()?.data.as_ref()
    }

    pub fn set_over(&mut self, over: Option<crate::fs::format::override_stat::StatOverride>) {
        self.change_extras(over.is_some(), |e| e.over = over);
    }

    pub fn set_indexed(&mut self, key: Option<crate::fs::format::index::IndexKey>) {
        self.change_extras(key.is_some(), |e| e.indexed = key);
    }

    pub fn set_data(&mut self, data: Option<DataLoc>) {
        self.change_extras(data.is_some(), |e| e.data = data);
    }

    /// Change the extras, as [`NodeState::change_dirs`] does the directories.
    fn change_extras(&mut self, sets: bool, change: impl FnOnce(&mut Extras)) {
        if !sets && self.extras.is_none() {
            return;
        }
        let extras = self.extras.get_or_insert_default();
        change(extras);
        if extras.over.is_none()
            && extras.indexed.is_none()
            && extras.data.is_none()
            && extras.lower_path.is_none()
        {
            self.extras = None;
        }
    }

    /// Non-directories not yet copied up: the lower layer that holds the object.
    pub fn lower_layer(&self) -> Option<usize> {
        self.lower_layer.map(|l| l as usize)
    }

    pub fn set_lower_layer(&mut self, layer: Option<usize>) {
        self.lower_layer = layer.map(|l| l as u32);
    }
}

/// Where the data of a metadata-only file lives: a name in a directory of a lower layer.
#[derive(Debug, Clone)]
pub struct DataLoc {
    pub dir: Arc<OwnedFd>,
    pub name: Arc<OsStr>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::tables::node::empty_name;

    /// The boxes of a node's state exist only while they hold something: clearing what is not
    /// there makes none, and clearing the last value drops the box.
    #[test]
    fn the_state_boxes_come_and_go_with_their_values() {
        let mut st = NodeState::default();
        st.set_over(None);
        st.set_data(None);
        st.set_upper_dir(None);
        st.set_lower_dirs(Box::new([]));
        assert!(st.extras.is_none() && st.dirs.is_none());
        st.set_lower_path(false, Some(empty_name()));
        assert!(st.extras.is_some() && st.dirs.is_none());
        assert!(st.lower_path().is_some() && st.over().is_none());
        st.set_lower_path(false, None);
        assert!(st.extras.is_none() && st.lower_path().is_none());
        st.set_lower_path(true, Some(empty_name()));
        assert!(st.dirs.is_some() && st.extras.is_none());
        assert!(st.lower_path().is_some() && st.upper_dir().is_none());
        st.set_lower_path(true, None);
        assert!(st.dirs.is_none());
    }
}
