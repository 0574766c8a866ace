//! Unit tests of the union engine without FUSE and without root: a union over temporary
//! directories, its operations called directly, the merged view and the upper directory
//! checked (lookup, readdir, copy-up, renames with redirects, the hard-link index, whiteouts,
//! opaque directories, remounts).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::mounting::config::MountConfig;
use crate::fs::tables::node::{Node, ROOT_ID};
use crate::fs::union::Union;
use crate::fs::union::setattr::SetAttr;

type R = std::result::Result<(), Box<dyn std::error::Error>>;

/// Lower layers (topmost first), an upper and a work dir in one temporary directory.
struct Layers {
    dir: tempfile::TempDir,
    lowers: Vec<PathBuf>,
}

impl Layers {
    fn new(n: usize) -> std::io::Result<Layers> {
        let dir = tempfile::tempdir()?;
        let mut lowers = Vec::new();
        for i in 0..n {
            let l = dir.path().join(format!("lower{i}"));
            fs::create_dir(&l)?;
            lowers.push(l);
        }
        for d in ["upper", "work", "mnt"] {
            fs::create_dir(dir.path().join(d))?;
        }
        Ok(Layers { dir, lowers })
    }
    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }
    fn write(&self, layer: usize, p: &str, data: &str) -> std::io::Result<()> {
        let path = self.lowers[layer].join(p);
        if let Some(d) = path.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(path, data)
    }
    /// A union over the layers, as a mount would build it (nothing is mounted).
    fn union(&self) -> std::result::Result<Union, Box<dyn std::error::Error>> {
        let cfg = MountConfig::new(
            self.lowers.clone(),
            Some(self.upper()),
            Some(self.dir.path().join("work")),
            self.dir.path().join("mnt"),
        );
        Ok(crate::fs::mounting::daemon::build(
            &cfg,
            &self.lowers,
            Some(&self.upper()),
            Some(&self.dir.path().join("work")),
        )?)
    }
}

fn root(u: &Union) -> Arc<Node> {
    match u.node(ROOT_ID) {
        Ok(n) => n,
        Err(e) => panic!("no root: {e:?}"),
    }
}

/// The node at `path` (components separated by `/`).
fn walk(u: &Union, path: &str) -> std::result::Result<Arc<Node>, fuser::Errno> {
    let mut n = root(u);
    for c in path.split('/').filter(|c| !c.is_empty()) {
        n = u.lookup_attr(&n, OsStr::new(c))?.0;
    }
    Ok(n)
}

fn names(u: &Union, path: &str) -> std::result::Result<Vec<String>, Box<dyn std::error::Error>> {
    let n = walk(u, path).map_err(|e| format!("{path}: {e:?}"))?;
    let mut v: Vec<String> = u
        .list_dir(&n)
        .map_err(|e| format!("list {path}: {e:?}"))?
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

fn read(u: &Union, path: &str) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let n = walk(u, path).map_err(|e| format!("{path}: {e:?}"))?;
    let o = u
        .open(&n, libc::O_RDONLY)
        .map_err(|e| format!("open {path}: {e:?}"))?;
    let data = u
        .read(n.id, o.fh, 0, 1 << 20)
        .map_err(|e| format!("read {path}: {e:?}"))?;
    u.release(o.fh);
    Ok(String::from_utf8(data)?)
}

fn append(u: &Union, path: &str, more: &str) -> R {
    let n = walk(u, path).map_err(|e| format!("{path}: {e:?}"))?;
    let size = u.attr(&n).map_err(|e| format!("{e:?}"))?.size;
    let o = u
        .open(&n, libc::O_WRONLY)
        .map_err(|e| format!("open {path}: {e:?}"))?;
    u.write(n.id, o.fh, size, more.as_bytes())
        .map_err(|e| format!("write {path}: {e:?}"))?;
    u.release(o.fh);
    Ok(())
}

fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(p) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => p
            .parent()
            .zip(p.file_name())
            .is_some_and(|(d, n)| d.join(format!(".wh.{}", n.to_string_lossy())).exists()),
    }
}

#[test]
fn topmost_layer_wins_whiteouts_hide_and_listings_merge_once() -> R {
    let l = Layers::new(2)?;
    l.write(0, "a", "top")?;
    l.write(1, "a", "bottom")?;
    l.write(1, "b", "b")?;
    l.write(1, "gone", "x")?;
    fs::write(l.lowers[0].join(".wh.gone"), "")?;
    let u = l.union()?;
    assert_eq!(read(&u, "a")?, "top");
    assert_eq!(read(&u, "b")?, "b");
    assert_eq!(walk(&u, "gone").err(), Some(fuser::Errno::ENOENT));
    assert_eq!(walk(&u, ".wh.gone").err(), Some(fuser::Errno::ENOENT));
    assert_eq!(names(&u, "")?, ["a", "b"]);
    Ok(())
}

#[test]
fn an_opaque_directory_stops_the_descent() -> R {
    let l = Layers::new(2)?;
    l.write(0, "d/mine", "m")?;
    l.write(1, "d/theirs", "t")?;
    l.write(1, "open/theirs", "t")?;
    l.write(0, "open/mine", "m")?;
    fs::write(l.lowers[0].join("d/.wh..wh..opq"), "")?;
    let u = l.union()?;
    assert_eq!(names(&u, "d")?, ["mine"]);
    assert_eq!(names(&u, "open")?, ["mine", "theirs"]);
    Ok(())
}

#[test]
fn chmod_copies_the_file_up_with_its_origin_and_keeps_the_lower_untouched() -> R {
    let l = Layers::new(1)?;
    l.write(0, "dir/f", "data")?;
    let lower_ino = fs::metadata(l.lowers[0].join("dir/f"))?.ino();
    let u = l.union()?;
    let n = walk(&u, "dir/f").map_err(|e| format!("{e:?}"))?;
    let before = u.attr(&n).map_err(|e| format!("{e:?}"))?;
    let a = u
        .setattr(
            &n,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .map_err(|e| format!("setattr: {e:?}"))?;
    assert_eq!(a.perm, 0o600);
    assert_eq!(a.ino, before.ino, "the inode number survives the copy-up");
    let up = l.upper().join("dir/f");
    assert_eq!(fs::read_to_string(&up)?, "data");
    assert_eq!(fs::metadata(&up)?.mode() & 0o7777, 0o600);
    assert_ne!(
        fs::metadata(l.lowers[0].join("dir/f"))?.mode() & 0o7777,
        0o600,
        "the lower file keeps its mode"
    );
    // After a remount the copy shows its origin's inode number.
    drop(u);
    let u = l.union()?;
    let n = walk(&u, "dir/f").map_err(|e| format!("{e:?}"))?;
    let a = u.attr(&n).map_err(|e| format!("{e:?}"))?;
    assert_eq!(
        a.ino.0, lower_ino,
        "st_ino from overlay.origin after a remount"
    );
    Ok(())
}

#[test]
fn renaming_a_lower_directory_leaves_a_whiteout_and_a_redirect_that_a_remount_follows() -> R {
    let l = Layers::new(1)?;
    l.write(0, "d/x", "x")?;
    l.write(0, "d/sub/y", "y")?;
    let u = l.union()?;
    let r = root(&u);
    u.rename(&r, OsStr::new("d"), &r, OsStr::new("moved"), 0)
        .map_err(|e| format!("rename: {e:?}"))?;
    assert_eq!(names(&u, "moved")?, ["sub", "x"]);
    assert!(is_whiteout(&l.upper().join("d")), "d is whited out");
    drop(u);
    let u = l.union()?;
    assert_eq!(names(&u, "")?, ["moved"]);
    assert_eq!(read(&u, "moved/sub/y")?, "y");
    Ok(())
}

#[test]
fn lower_hard_links_share_one_copy_through_the_index() -> R {
    let l = Layers::new(1)?;
    l.write(0, "a", "shared")?;
    fs::hard_link(l.lowers[0].join("a"), l.lowers[0].join("b"))?;
    let u = l.union()?;
    append(&u, "a", "+more")?;
    assert_eq!(
        read(&u, "b")?,
        "shared+more",
        "the other name shows the copy"
    );
    let index = l.dir.path().join("work/index");
    assert_eq!(fs::read_dir(&index)?.count(), 1, "one index entry");
    assert!(
        !l.upper().join("b").exists(),
        "b is linked up only when used"
    );
    assert_eq!(fs::read_to_string(l.lowers[0].join("b"))?, "shared");
    drop(u);
    let u = l.union()?;
    assert_eq!(read(&u, "b")?, "shared+more", "after a remount too");
    Ok(())
}

#[test]
fn unlink_of_a_lower_file_stays_deleted_across_a_remount() -> R {
    let l = Layers::new(1)?;
    l.write(0, "f", "f")?;
    l.write(0, "g", "g")?;
    let u = l.union()?;
    u.unlink(&root(&u), OsStr::new("f"))
        .map_err(|e| format!("unlink: {e:?}"))?;
    assert_eq!(names(&u, "")?, ["g"]);
    assert!(is_whiteout(&l.upper().join("f")));
    drop(u);
    let u = l.union()?;
    assert_eq!(names(&u, "")?, ["g"]);
    assert_eq!(walk(&u, "f").err(), Some(fuser::Errno::ENOENT));
    Ok(())
}

#[test]
fn a_directory_made_over_a_deleted_one_is_opaque() -> R {
    let l = Layers::new(1)?;
    l.write(0, "d/old", "o")?;
    let u = l.union()?;
    let r = root(&u);
    let d = walk(&u, "d").map_err(|e| format!("{e:?}"))?;
    u.unlink(&d, OsStr::new("old"))
        .map_err(|e| format!("{e:?}"))?;
    u.rmdir(&r, OsStr::new("d"))
        .map_err(|e| format!("rmdir: {e:?}"))?;
    u.make_object(
        &r,
        OsStr::new("d"),
        crate::fs::union::names::NewObject::Dir { mode: 0o755 },
        crate::fs::union::names::Creator { uid: 0, gid: 0 },
    )
    .map_err(|e| format!("mkdir: {e:?}"))?;
    assert!(names(&u, "d")?.is_empty());
    drop(u);
    let u = l.union()?;
    assert!(names(&u, "d")?.is_empty(), "the old contents stay hidden");
    Ok(())
}

/// A union whose I/O is addressed by node, as on a mount where the kernel sends no OPEN.
fn node_io_union(l: &Layers) -> std::result::Result<Union, Box<dyn std::error::Error>> {
    let u = l.union()?;
    u.node_fds.set_enabled(true);
    Ok(u)
}

fn read_node(u: &Union, n: &Node) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let data = u
        .read(n.id, 0, 0, 1 << 20)
        .map_err(|e| format!("read node {}: {e:?}", n.id))?;
    Ok(String::from_utf8(data)?)
}

#[test]
fn node_io_reads_the_lower_file_then_follows_its_copy_up() -> R {
    let l = Layers::new(1)?;
    l.write(0, "f", "lower")?;
    let u = node_io_union(&l)?;
    let n = walk(&u, "f").map_err(|e| format!("{e:?}"))?;
    assert_eq!(read_node(&u, &n)?, "lower");
    assert!(!l.upper().join("f").exists(), "a read copied the file up");
    // A write through the node copies the file up; the next read (same node, as through a
    // descriptor opened before) sees the upper copy.
    u.write(n.id, 0, 5, b"+w").map_err(|e| format!("{e:?}"))?;
    assert_eq!(fs::read_to_string(l.upper().join("f"))?, "lower+w");
    assert_eq!(read_node(&u, &n)?, "lower+w");
    assert_eq!(fs::read_to_string(l.lowers[0].join("f"))?, "lower");
    Ok(())
}

#[test]
fn node_io_keeps_an_unlinked_files_data_until_it_is_forgotten() -> R {
    let l = Layers::new(1)?;
    l.write(0, "low", "lower data")?;
    let u = node_io_union(&l)?;
    fs::write(l.upper().join("up"), "upper data")?;
    let up = walk(&u, "up").map_err(|e| format!("{e:?}"))?;
    let low = walk(&u, "low").map_err(|e| format!("{e:?}"))?;
    u.unlink(&root(&u), OsStr::new("up"))
        .map_err(|e| format!("{e:?}"))?;
    u.unlink(&root(&u), OsStr::new("low"))
        .map_err(|e| format!("{e:?}"))?;
    assert!(!l.upper().join("up").exists());
    assert_eq!(read_node(&u, &up)?, "upper data");
    assert_eq!(read_node(&u, &low)?, "lower data");
    assert_eq!(u.pinned_attr(&up).map_err(|e| format!("{e:?}"))?.size, 10);
    // Writing the unlinked lower file goes to a private copy, never to the lower layer.
    u.write(low.id, 0, 0, b"LOWER")
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(read_node(&u, &low)?, "LOWER data");
    assert_eq!(fs::read_to_string(l.lowers[0].join("low"))?, "lower data");
    u.write(up.id, 0, 0, b"UPPER")
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(read_node(&u, &up)?, "UPPER data");
    // Once the kernel forgets the nodes, nothing is kept for them.
    assert!(u.node_fds.held() >= 2, "pinned: {}", u.node_fds.held());
    let (up_id, low_id) = (up.id, low.id);
    drop((up, low));
    for id in [up_id, low_id] {
        u.nodes.forget(id, u64::MAX);
        u.node_fds.forgotten(id);
    }
    assert_eq!(u.node_fds.held(), 0);
    Ok(())
}
