//! Snapshots of the mount test harness.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
    /// Only in upper snapshots: a char 0/0 or `.wh.NAME` whiteout.
    Whiteout,
}

/// What a snapshot records about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including suid/sgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    /// Regular files only: the full content.
    pub content: Option<Vec<u8>>,
    pub target: Option<String>,
    /// Device numbers of char/block devices.
    pub rdev: Option<(u32, u32)>,
    /// Sorted, without `security.*` and overlay-internal names (unless raw).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Non-directories only (merged snapshots).
    pub nlink: Option<u64>,
    /// Upper snapshots: the opaque marker found ("opaque"), if any.
    pub opaque: bool,
    /// Upper snapshots: an `overlay.redirect` xattr is present.
    pub redirect: bool,
    /// Only with [`SnapOpts::mtime`].
    pub mtime: Option<(i64, i64)>,
}

/// Options of [`snapshot_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapOpts {
    /// Record mtimes (all entries).
    pub mtime: bool,
    /// Keep every xattr, overlay-internal and security ones included.
    pub raw_xattrs: bool,
    /// Upper-dir mode: normalise whiteouts and opaque markers, drop nlink.
    pub upper: bool,
}

/// A snapshot: path ("/" for the root, "/a/b" below it) -> node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, Node>,
    /// st_ino of every path (kept apart from the nodes: two implementations over copies of
    /// the same layers show different numbers, one implementation across remounts the same).
    pub inos: BTreeMap<String, u64>,
}

impl Snapshot {
    /// The groups of non-directory paths that share one inode (hard links), two or more.
    pub fn link_groups(&self) -> std::collections::BTreeSet<Vec<String>> {
        let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.kind != Kind::Dir
                && let Some(i) = self.inos.get(p)
            {
                by_ino.entry(*i).or_default().push(p.clone());
            }
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    }

    /// The paths present in both snapshots whose inode numbers differ.
    pub fn ino_changes(&self, later: &Snapshot) -> std::collections::BTreeSet<String> {
        self.inos
            .iter()
            .filter(|(p, i)| later.inos.get(*p).is_some_and(|j| j != *i))
            .map(|(p, _)| p.clone())
            .collect()
    }

    pub fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }
    /// The names of the paths, in order.
    pub fn paths(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

pub(crate) fn internal_xattr(name: &str) -> bool {
    name.starts_with("security.")
        || name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
}

pub(crate) fn upper_internal_xattr(name: &str) -> bool {
    internal_xattr(name)
        || name.starts_with("user.fuseoverlayfs.")
        || name.starts_with("user.containers.")
}

pub(crate) fn node_of(path: &Path, md: &fs::Metadata, opts: SnapOpts) -> Node {
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::Socket
    };
    let mut xattrs = BTreeMap::new();
    for name in list_xattrs(path) {
        let skip = if opts.raw_xattrs {
            false
        } else if opts.upper {
            upper_internal_xattr(&name)
        } else {
            internal_xattr(&name)
        };
        if !skip {
            xattrs.insert(name.clone(), get_xattr(path, &name).unwrap_or_default());
        }
    }
    let rdev = matches!(kind, Kind::Char | Kind::Block)
        .then(|| (libc::major(md.rdev()), libc::minor(md.rdev())));
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: (kind == Kind::File).then(|| md.size()),
        content: (kind == Kind::File)
            .then(|| fs::read(path).unwrap_or_else(|e| format!("<unreadable: {e}>").into_bytes())),
        target: (kind == Kind::Symlink).then(|| {
            fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        rdev,
        xattrs,
        nlink: (kind != Kind::Dir && !opts.upper).then(|| md.nlink()),
        opaque: false,
        redirect: false,
        mtime: opts.mtime.then(|| (md.mtime(), md.mtime_nsec())),
    }
}

pub(crate) fn whiteout_node() -> Node {
    Node {
        kind: Kind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        size: None,
        content: None,
        target: None,
        rdev: None,
        xattrs: BTreeMap::new(),
        nlink: None,
        opaque: false,
        redirect: false,
        mtime: None,
    }
}

pub(crate) fn walk(
    root: &Path,
    rel: &str,
    opts: SnapOpts,
    out: &mut BTreeMap<String, Node>,
    inos: &mut BTreeMap<String, u64>,
) {
    let path = if rel == "/" {
        root.to_path_buf()
    } else {
        root.join(&rel[1..])
    };
    let md = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) => panic!("lstat {}: {e}", path.display()),
    };
    let mut node = node_of(&path, &md, opts);
    inos.insert(rel.to_string(), md.ino());
    if opts.upper {
        if node.kind == Kind::Char && node.rdev == Some((0, 0)) {
            out.insert(rel.to_string(), whiteout_node());
            return;
        }
        if node.kind == Kind::Dir {
            for name in [
                "trusted.overlay.opaque",
                "user.overlay.opaque",
                "user.fuseoverlayfs.opaque",
            ] {
                if get_xattr(&path, name).as_deref() == Some(b"y") {
                    node.opaque = true;
                }
            }
            node.redirect = get_xattr(&path, "trusted.overlay.redirect").is_some()
                || get_xattr(&path, "user.overlay.redirect").is_some();
        }
        // A metadata-only copy (kernel `metacopy`) has no data of its own: its bytes are
        // holes, and whether an implementation copied data or only metadata is its choice
        // (the merged view, compared separately, shows the data).
        if node.kind == Kind::File
            && (get_xattr(&path, "trusted.overlay.metacopy").is_some()
                || get_xattr(&path, "user.overlay.metacopy").is_some())
        {
            node.content = None;
        }
    }
    let is_dir = node.kind == Kind::Dir;
    out.insert(rel.to_string(), node);
    if !is_dir {
        return;
    }
    let mut names: Vec<String> = fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", path.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for name in names {
        let child = if rel == "/" {
            format!("/{name}")
        } else {
            format!("{rel}/{name}")
        };
        if opts.upper {
            // `.wh..opq` is an extra marker fuse-overlayfs writes beside `.wh..wh..opq`
            if name == ".wh..wh..opq" || name == ".wh..opq" {
                if let Some(n) = out.get_mut(rel) {
                    n.opaque = true;
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let key = if rel == "/" {
                    format!("/{hidden}")
                } else {
                    format!("{rel}/{hidden}")
                };
                out.insert(key, whiteout_node());
                continue;
            }
        }
        walk(root, &child, opts, out, inos);
    }
}

/// Snapshot a merged (or any) tree: no symlink following, internal xattrs dropped.
pub fn snapshot(root: &Path) -> Snapshot {
    snapshot_with(root, SnapOpts::default())
}

pub fn snapshot_with(root: &Path, opts: SnapOpts) -> Snapshot {
    let mut nodes = BTreeMap::new();
    let mut inos = BTreeMap::new();
    walk(root, "/", opts, &mut nodes, &mut inos);
    Snapshot { nodes, inos }
}

/// Snapshot an upper dir, normalising the on-disk format: char 0/0 and `.wh.NAME` both become
/// a [`Kind::Whiteout`] node at NAME; `trusted.overlay.opaque`, `user.overlay.opaque` and
/// `.wh..wh..opq` all set `opaque`; `overlay.redirect` sets `redirect`; origin/impure/nlink
/// xattrs and link counts are ignored. (The workdir and its index live outside the upper.)
pub fn upper_snapshot(root: &Path) -> Snapshot {
    snapshot_with(
        root,
        SnapOpts {
            upper: true,
            ..Default::default()
        },
    )
}

pub(crate) fn show_bytes(b: &[u8]) -> String {
    if b.len() <= 120 {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!(
            "{} bytes {:?}...",
            b.len(),
            String::from_utf8_lossy(&b[..80])
        )
    }
}

pub(crate) fn describe(n: &Node) -> String {
    let mut s = format!(
        "{:?} mode={:04o} uid={} gid={}",
        n.kind, n.mode, n.uid, n.gid
    );
    if let Some(c) = &n.content {
        let _ = write!(s, " content={}", show_bytes(c));
    }
    if let Some(t) = &n.target {
        let _ = write!(s, " -> {t:?}");
    }
    if let Some((a, b)) = n.rdev {
        let _ = write!(s, " rdev={a},{b}");
    }
    if n.opaque {
        s.push_str(" opaque");
    }
    if n.redirect {
        s.push_str(" redirect");
    }
    s
}

/// Every difference between two snapshots, one readable line each (empty when equal).
pub fn diff(a: &Snapshot, b: &Snapshot, la: &str, lb: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (p, na) in &a.nodes {
        let Some(nb) = b.nodes.get(p) else {
            out.push(format!("{p}: only in {la}: {}", describe(na)));
            continue;
        };
        let mut more: Vec<String> = Vec::new();
        let d = |what: &str, x: String, y: String| -> Option<String> {
            (x != y).then(|| format!("{p}: {what} differs: {la} {x} vs {lb} {y}"))
        };
        out.extend(d(
            "type",
            format!("{:?}", na.kind),
            format!("{:?}", nb.kind),
        ));
        if na.kind != nb.kind {
            continue;
        }
        if na.kind != Kind::Whiteout && na.kind != Kind::Symlink {
            out.extend(d(
                "mode",
                format!("{:04o}", na.mode),
                format!("{:04o}", nb.mode),
            ));
        }
        if na.kind != Kind::Whiteout {
            out.extend(d(
                "owner",
                format!("{}:{}", na.uid, na.gid),
                format!("{}:{}", nb.uid, nb.gid),
            ));
        }
        out.extend(d(
            "size",
            format!("{:?}", na.size),
            format!("{:?}", nb.size),
        ));
        if na.content != nb.content && na.content.is_some() && nb.content.is_some() {
            let (ca, cb) = (
                na.content.clone().unwrap_or_default(),
                nb.content.clone().unwrap_or_default(),
            );
            let first = ca
                .iter()
                .zip(cb.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(ca.len().min(cb.len()));
            more.push(format!(
                "{p}: content differs (first at byte {first}): {la} {} vs {lb} {}",
                show_bytes(&ca),
                show_bytes(&cb)
            ));
        }
        out.extend(d(
            "symlink target",
            format!("{:?}", na.target),
            format!("{:?}", nb.target),
        ));
        out.extend(d(
            "rdev",
            format!("{:?}", na.rdev),
            format!("{:?}", nb.rdev),
        ));
        if na.xattrs != nb.xattrs {
            let f = |x: &BTreeMap<String, Vec<u8>>| {
                x.iter()
                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            more.push(format!(
                "{p}: xattrs differ: {la} {{{}}} vs {lb} {{{}}}",
                f(&na.xattrs),
                f(&nb.xattrs)
            ));
        }
        out.extend(d(
            "nlink",
            format!("{:?}", na.nlink),
            format!("{:?}", nb.nlink),
        ));
        out.extend(d("opaque", na.opaque.to_string(), nb.opaque.to_string()));
        out.extend(d(
            "redirect xattr",
            na.redirect.to_string(),
            nb.redirect.to_string(),
        ));
        out.extend(d(
            "mtime",
            format!("{:?}", na.mtime),
            format!("{:?}", nb.mtime),
        ));
        out.append(&mut more);
    }
    for (p, nb) in &b.nodes {
        if !a.nodes.contains_key(p) {
            out.push(format!("{p}: only in {lb}: {}", describe(nb)));
        }
    }
    out
}
