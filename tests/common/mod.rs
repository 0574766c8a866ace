//! Shared helpers of the CLI tests: run `strata`, build the test images with buildah/skopeo
//! once, describe a directory tree (names, types, modes, owners, contents, xattrs) for
//! comparisons, and compute the union view of stored layers without mounting.
#![allow(dead_code)]

mod skip;
pub use skip::skip;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn strata(root: &Path, args: &[&str]) -> Output {
    strata_env(root, args, &[])
}

pub fn strata_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.arg("--root").arg(root).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run strata")
}

/// Run and require success; returns stdout.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let o = strata(root, args);
    assert!(
        o.status.success(),
        "strata {:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Build the fixture images once; `None` (with a printed reason) when a tool is missing.
pub fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        for t in ["buildah", "skopeo", "umoci"] {
            if !have(t) {
                skip(&format!("{t} is not installed"));
                return None;
            }
        }
        if !Path::new("/usr/bin/busybox").exists() && !have("busybox") {
            skip("busybox-static is not installed");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fixtures-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-images.sh");
        let mut o = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run make-images.sh");
        if !o.status.success() {
            // Kernel overlay may be unavailable: vfs still gives both images (without opaque dirs).
            let _ = std::fs::remove_dir_all(&dir);
            o = Command::new("sh")
                .arg(&script)
                .arg(&dir)
                .env("DRIVER", "vfs")
                .output()
                .expect("run make-images.sh");
        }
        assert!(
            o.status.success(),
            "make-images.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(dir)
    })
    .as_deref()
}

/// Remove scratch dirs of earlier test processes that are gone (names end in `-<pid>`).
fn sweep() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Ok(rd) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                // Older fixture runs may have left containers-storage's overlay bind mount.
                let _ = Command::new("umount")
                    .arg(e.path().join("buildah/root/overlay"))
                    .output();
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

pub fn tmpdir(name: &str) -> PathBuf {
    sweep();
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn policy(dir: &Path) -> PathBuf {
    let p = dir.join("policy.json");
    std::fs::write(&p, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    p
}

pub fn run(cmd: &mut Command) -> String {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for n in strata::image::fsutil::list_xattrs(p).unwrap_or_default() {
        if n.starts_with("trusted.overlay.")
            || n.starts_with("user.overlay.")
            || n == "user.containers.override_stat"
        {
            continue;
        }
        if let Ok(Some(v)) = strata::image::fsutil::get_xattr(p, &n) {
            m.insert(n, v);
        }
    }
    m
}

/// One line per entry: path type mode uid:gid content-or-target xattrs.
fn describe(p: &Path, rel: &str) -> String {
    let m = p.symlink_metadata().unwrap();
    let ft = m.file_type();
    let (mut uid, mut gid, mut mode) = (m.uid(), m.gid(), m.mode() & 0o7777);
    let mut kind = if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_symlink() {
        format!("symlink->{}", std::fs::read_link(p).unwrap().display())
    } else if ft.is_file() {
        let data = std::fs::read(p).unwrap();
        format!("file:{}", strata::oci::Digest::of(&data).short())
    } else if ft.is_char_device() || ft.is_block_device() {
        format!("dev:{}:{}", libc::major(m.rdev()), libc::minor(m.rdev()))
    } else {
        "fifo".into()
    };
    if let Ok(Some(v)) = strata::image::fsutil::get_xattr(p, "user.containers.override_stat") {
        let o = strata::fs::override_stat::parse(&v).unwrap();
        (uid, gid, mode) = (o.uid, o.gid, o.perm);
        match o.dev {
            Some((strata::fs::override_stat::Special::Fifo, _)) => kind = "fifo".into(),
            Some((_, dev)) => kind = format!("dev:{}:{}", libc::major(dev), libc::minor(dev)),
            None => {}
        }
    }
    if ft.is_symlink() {
        mode = 0o777;
    }
    format!("{rel} {kind} {mode:04o} {uid}:{gid} {:?}", xattrs(p))
}

/// Description of a plain directory tree (sorted, root excluded).
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        out.push(describe(&e.path(), &r));
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), &r, out);
        }
    }
}

/// Description of the union of layer dirs (topmost first), computed without a mount.
pub fn union_tree(layers: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    union_walk(layers, Path::new(""), &mut out);
    out.sort();
    out
}

fn union_walk(layers: &[PathBuf], rel: &Path, out: &mut Vec<String>) {
    for name in strata::image::union::list_dir(layers, rel) {
        let r = rel.join(&name);
        let i = strata::image::union::lookup(layers, &r).unwrap();
        let p = layers[i].join(&r);
        out.push(describe(&p, &r.to_string_lossy()));
        if p.symlink_metadata().unwrap().is_dir() {
            union_walk(layers, &r, out);
        }
    }
}

/// Every file under a directory with its size, for "nothing changed" checks.
pub fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn rec(d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                let m = p.symlink_metadata().unwrap();
                out.push(format!(
                    "{} {}",
                    p.display(),
                    if m.is_dir() { 0 } else { m.len() }
                ));
                if m.is_dir() {
                    rec(&p, out);
                }
            }
        }
    }
    rec(dir, &mut out);
    out.retain(|l| !l.contains("/tmp/") && !l.ends_with("/lock 0"));
    out.sort();
    out
}

/// The layer dirs (topmost first) of an image in a store, via the library.
pub fn image_layers(root: &Path, image: &str) -> Vec<PathBuf> {
    let s = strata::store::Store::open(root).unwrap();
    let img = s.resolve_image(image).unwrap();
    s.image_lowerdirs(&img)
}

/// What other tools see of a stored image: `strata save` it to a docker-archive in `work`,
/// `skopeo copy` that to an OCI layout, and `umoci unpack` it; returns the rootfs.
pub fn saved_rootfs(root: &Path, image: &str, work: &Path) -> PathBuf {
    let da = work.join("saved.tar");
    ok(root, &["save", "-o", da.to_str().unwrap(), image]);
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(policy(work))
        .arg("copy")
        .arg("-q")
        .arg(format!("docker-archive:{}", da.display()))
        .arg(format!("oci:{}:saved", work.join("sk").display())));
    umoci_rootfs(&work.join("sk"), "saved", &work.join("saved-bundle"))
}

/// `umoci unpack` an OCI layout's `tag` into `dest`; returns the rootfs.
pub fn umoci_rootfs(layout: &Path, tag: &str, dest: &Path) -> PathBuf {
    run(Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(dest));
    dest.join("rootfs")
}
