//! Layer builder of the mount test harness.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Debug)]
pub(crate) enum LayerOp {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    Sparse(String, u64, Vec<(u64, Vec<u8>)>),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String, u32),
    Xattr(String, String, Vec<u8>),
    Whiteout(String),
    WhFile(String),
    OpaqueXattr(String, &'static str),
    OpqFile(String),
    Owner(String, u32, u32),
    Mode(String, u32),
    Mtime(String, i64),
}

/// A declarative layer: a list of entries written in order by [`Layer::build`]. Paths are
/// relative to the layer root; missing parent directories are created with mode 0755.
/// Mode, owner and mtime changes are applied after all entries exist (so a directory's
/// mode/mtime survive the creation of its children).
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub(crate) ops: Vec<LayerOp>,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }
    /// A directory with the given permission bits (may include setgid/sticky).
    pub fn dir(mut self, p: &str, mode: u32) -> Self {
        self.ops.push(LayerOp::Dir(p.into(), mode));
        self
    }
    /// A regular file, mode 0644.
    pub fn file(self, p: &str, content: impl AsRef<[u8]>) -> Self {
        self.file_mode(p, content, 0o644)
    }
    /// A regular file with the given mode.
    pub fn file_mode(mut self, p: &str, content: impl AsRef<[u8]>, mode: u32) -> Self {
        self.ops
            .push(LayerOp::File(p.into(), content.as_ref().to_vec(), mode));
        self
    }
    /// A sparse file of `size` bytes with data only at the given offsets.
    pub fn sparse(mut self, p: &str, size: u64, chunks: &[(u64, &[u8])]) -> Self {
        let chunks = chunks.iter().map(|(o, d)| (*o, d.to_vec())).collect();
        self.ops.push(LayerOp::Sparse(p.into(), size, chunks));
        self
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Self {
        self.ops.push(LayerOp::Symlink(p.into(), target.into()));
        self
    }
    /// A hard link `p` to the existing entry `existing`.
    pub fn hardlink(mut self, p: &str, existing: &str) -> Self {
        self.ops.push(LayerOp::Hardlink(p.into(), existing.into()));
        self
    }
    pub fn fifo(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::Fifo(p.into(), 0o644));
        self
    }
    pub fn xattr(mut self, p: &str, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.ops.push(LayerOp::Xattr(
            p.into(),
            name.into(),
            value.as_ref().to_vec(),
        ));
        self
    }
    /// A kernel-format whiteout: character device 0/0 named `p`.
    pub fn whiteout(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::Whiteout(p.into()));
        self
    }
    /// An OCI/fuse-overlayfs-style whiteout: empty file `.wh.NAME` beside the hidden `NAME`.
    pub fn wh_file(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::WhFile(p.into()));
        self
    }
    /// Mark directory `p` opaque with `trusted.overlay.opaque=y` (creating it if needed).
    pub fn opaque(mut self, p: &str) -> Self {
        self.ops
            .push(LayerOp::OpaqueXattr(p.into(), "trusted.overlay.opaque"));
        self
    }
    /// Mark directory `p` opaque with `user.overlay.opaque=y` (rootless kernel format).
    pub fn user_opaque(mut self, p: &str) -> Self {
        self.ops
            .push(LayerOp::OpaqueXattr(p.into(), "user.overlay.opaque"));
        self
    }
    /// Mark directory `p` opaque with an empty `.wh..wh..opq` file inside it.
    pub fn opq_file(mut self, p: &str) -> Self {
        self.ops.push(LayerOp::OpqFile(p.into()));
        self
    }
    pub fn owner(mut self, p: &str, uid: u32, gid: u32) -> Self {
        self.ops.push(LayerOp::Owner(p.into(), uid, gid));
        self
    }
    pub fn mode(mut self, p: &str, mode: u32) -> Self {
        self.ops.push(LayerOp::Mode(p.into(), mode));
        self
    }
    /// Set atime and mtime of `p` (applied last).
    pub fn mtime(mut self, p: &str, secs: i64) -> Self {
        self.ops.push(LayerOp::Mtime(p.into(), secs));
        self
    }

    /// Write the layer under `root` (created if missing).
    pub fn build(&self, root: &Path) {
        fs::create_dir_all(root).expect("create layer root");
        let mut late: Vec<&LayerOp> = Vec::new();
        for op in &self.ops {
            match op {
                LayerOp::Dir(p, mode) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    late.push(op);
                    let _ = mode;
                }
                LayerOp::File(p, data, _) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    fs::write(&path, data).unwrap_or_else(|e| panic!("write {p}: {e}"));
                    late.push(op);
                }
                LayerOp::Sparse(p, size, chunks) => {
                    use std::os::unix::fs::FileExt;
                    let path = root.join(p);
                    mkdirs(&path);
                    let f = fs::File::create(&path).expect("create sparse");
                    f.set_len(*size).expect("set_len");
                    for (off, d) in chunks {
                        f.write_all_at(d, *off).expect("write_at");
                    }
                }
                LayerOp::Symlink(p, t) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    std::os::unix::fs::symlink(t, &path).expect("symlink");
                }
                LayerOp::Hardlink(p, t) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    fs::hard_link(root.join(t), &path).expect("hardlink");
                }
                LayerOp::Fifo(p, mode) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    mknod(&path, libc::S_IFIFO | mode, 0, 0);
                    late.push(op);
                }
                LayerOp::Xattr(p, n, v) => set_xattr(&root.join(p), n, v),
                LayerOp::Whiteout(p) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    mknod(&path, libc::S_IFCHR, 0, 0);
                }
                LayerOp::WhFile(p) => {
                    let path = root.join(p);
                    mkdirs(&path);
                    let name = path
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned();
                    fs::write(path.with_file_name(format!(".wh.{name}")), b"").expect("wh file");
                }
                LayerOp::OpaqueXattr(p, n) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    set_xattr(&path, n, b"y");
                }
                LayerOp::OpqFile(p) => {
                    let path = root.join(p);
                    fs::create_dir_all(&path).expect("mkdir");
                    fs::write(path.join(".wh..wh..opq"), b"").expect("opq file");
                }
                LayerOp::Owner(..) | LayerOp::Mode(..) | LayerOp::Mtime(..) => late.push(op),
            }
        }
        // Owners first (chown clears suid/sgid), then modes, then times, deepest paths first
        // so that setting a child's time does not disturb its parent.
        for op in &late {
            if let LayerOp::Owner(p, u, g) = op {
                std::os::unix::fs::lchown(root.join(p), Some(*u), Some(*g)).expect("chown");
            }
        }
        for op in &late {
            match op {
                LayerOp::Dir(p, m)
                | LayerOp::File(p, _, m)
                | LayerOp::Fifo(p, m)
                | LayerOp::Mode(p, m) => {
                    fs::set_permissions(root.join(p), fs::Permissions::from_mode(*m))
                        .expect("chmod")
                }
                _ => {}
            }
        }
        let mut times: Vec<(&String, i64)> = late
            .iter()
            .filter_map(|op| match op {
                LayerOp::Mtime(p, s) => Some((p, *s)),
                _ => None,
            })
            .collect();
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (p, s) in times {
            set_mtime(&root.join(p), s);
        }
    }
}
