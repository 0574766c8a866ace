//! Fault-injection helpers shared by `faults_disk`, `faults_kill`, `registry_hostile`, `soak`
//! and `many_mounts` (each also has `mod common;`): a size-limited tmpfs to fill, a strata-fuse
//! daemon in the foreground (so the test holds its pid and can kill -9 it), kernel overlayfs
//! mounts of an upper, tree and store checks, the FUSE daemons of a store and their RSS, and
//! tar entries.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// [`crate::common::skip`] (the one skip rule) for tests that return `()`: say why a test
/// cannot run (the caller returns); under `CI=true` it panics instead.
pub fn skip(reason: &str) {
    crate::common::skip(reason);
}

/// `strata --root ROOT ARGS...`, to be given its stdio and spawned: for a run the test kills.
pub fn strata_command(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
    c.arg("--root").arg(root).args(args);
    c
}

/// Root and /dev/fuse, or why not.
pub fn mount_ready() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root (tmpfs and FUSE mounts need root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing".into());
    }
    Ok(())
}

pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        o.status.success(),
        "command failed: {cmd}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_mountpoint(p: &Path) -> bool {
    let (Ok(a), Some(parent)) = (std::fs::metadata(p), p.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|b| a.dev() != b.dev())
}

fn umount(p: &Path) {
    for _ in 0..50 {
        if !is_mountpoint(p) {
            return;
        }
        let ok = Command::new("umount")
            .arg(p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("umount").arg("-l").arg(p).status();
}

/// A tmpfs of `size` bytes at `dir`; unmounted on drop.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn new(dir: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir tmpfs dir");
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            o.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Bytes free for an unprivileged writer (tmpfs: the same as for root).
    pub fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.dir).expect("statvfs");
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        umount(&self.dir);
    }
}

/// A strata-fuse daemon run with `-f`: the test holds its pid.
pub struct Fuse {
    pub mnt: PathBuf,
    pub child: Option<Child>,
}

impl Fuse {
    /// Mount `lowerdir` (`:`-joined), `upper` and `work` at `mnt` with extra options `extra`.
    pub fn mount(lower: &[&Path], upper: &Path, work: &Path, mnt: &Path, extra: &str) -> Fuse {
        std::fs::create_dir_all(mnt).expect("mkdir mountpoint");
        let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts.push(',');
            opts.push_str(extra);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_strata-fuse"))
            .args(["-f", "-o", &opts])
            .arg(mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn strata-fuse");
        let t0 = Instant::now();
        while !is_mountpoint(mnt) {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "strata-fuse did not mount {}",
                mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Fuse {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        }
    }

    /// kill -9 the daemon, then detach the dead mount.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }

    /// Unmount cleanly and wait for the daemon.
    pub fn unmount(&mut self) {
        umount(&self.mnt);
        if let Some(mut c) = self.child.take() {
            let t0 = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.unmount();
        }
    }
}

/// Kernel overlayfs over the same layers (`redirect_dir=on,index=on`); unmounted on drop.
pub struct Kernel {
    pub mnt: PathBuf,
}

impl Kernel {
    pub fn mount(lower: &[&Path], upper: &Path, work: &Path, mnt: &Path) -> Result<Kernel, String> {
        std::fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let lowers: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=on,index=on",
            lowers.join(":"),
            upper.display(),
            work.display()
        );
        let o = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(Kernel {
            mnt: mnt.to_path_buf(),
        })
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        umount(&self.mnt);
    }
}

/// Write `data` to `path` and fsync it (and its directory): what a completed call reports as
/// durable.
pub fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    if let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Regular files under `dir` (relative paths), recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    fn rec(base: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => rec(base, &p, out),
                Ok(t) if t.is_file() => out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf()),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    rec(dir, dir, &mut out);
    out.sort();
    out
}

/// Deterministic bytes of file number `i`.
pub fn pattern(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j.wrapping_mul(31) ^ i.wrapping_mul(7919)) as u8)
        .collect()
}

/// Calls `visit(relative path, path, metadata)` for every entry under `dir`, depth first; an
/// entry for which it returns false is left out, with everything below it.
fn walk(dir: &Path, visit: &mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> bool) {
    fn rec(base: &Path, d: &Path, visit: &mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> bool) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = p.symlink_metadata() else {
                continue;
            };
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            if visit(&rel, &p, &m) && m.is_dir() {
                rec(base, &p, visit);
            }
        }
    }
    rec(dir, dir, visit)
}

/// Every entry under `dir` with its type, mode, size, mtime and a digest of its content: the
/// lower layers must be the same before and after any workload.
pub fn tree_digest(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, &mut |rel, p, m| {
        let content = if m.is_file() {
            std::fs::read(p)
                .map(|b| strata::oci::Digest::of(&b).to_string())
                .unwrap_or_else(|e| e.to_string())
        } else if m.file_type().is_symlink() {
            std::fs::read_link(p).map_or_else(|e| e.to_string(), |t| t.display().to_string())
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {} {} {} {content}",
            m.mode(),
            m.len(),
            m.mtime(),
            m.nlink()
        ));
        true
    });
    out.sort();
    out
}

/// The store's files (relative path and size), ignoring lock files: to compare a store
/// before and after a failed command. Staging under `tmp/` counts.
pub fn store_state(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, &mut |rel, _, m| {
        if rel.ends_with("lock") {
            return false;
        }
        out.push(format!("{rel} {}", if m.is_dir() { 0 } else { m.len() }));
        true
    });
    out.sort();
    out
}

/// `strata fsck` of the store at `root` succeeds and says clean; `when` names the moment.
pub fn assert_fsck_clean(root: &Path, when: &str) {
    let o = crate::common::strata(root, &["fsck"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("clean"),
        "fsck after {when}: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The pids of the FUSE daemons of the store at `root` (the forked `strata mount` children): the
/// processes holding /dev/fuse open whose command line names the store and `mount`.
pub fn store_daemons(root: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains(&root.display().to_string()) || !cmd.contains(" mount ") {
            continue;
        }
        let holds_fuse = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/fuse")));
        if holds_fuse {
            out.push(pid);
        }
    }
    out
}

/// The resident set of process `pid` in KiB (`VmRSS`), 0 when it cannot be read.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Append a regular file `path` holding `data` to a tar: mode 0644, owner 0:0, mtime 0.
pub fn tar_append_file<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    path: impl AsRef<Path>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}
