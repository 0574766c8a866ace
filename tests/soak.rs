//! Soak: workers doing random creates, writes, truncates, renames (of files, of lower
//! directories and of new ones), hard links, unlinks, chmods, mkdirs, rmdirs and reads over a
//! layered tree on one strata mount, each checking every read against its own model of what
//! the tree must hold. At the end the whole tree is compared with the model, again after a
//! remount, and on kernel overlayfs over the same upper; the daemon's open descriptors and
//! RSS must stay flat.
//!
//! Short by default (4 workers, 12 s); the soak is
//! `STRATA_SOAK_WORKERS=8 STRATA_SOAK_SECS=600 cargo test --release --test soak -- --nocapture`.

mod common;
mod faultkit;

use faultkit::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What one worker's directory must hold: directories, and files as (inode id, mode); the
/// contents by inode id (hard links share one).
#[derive(Default, Clone)]
struct Model {
    dirs: Vec<PathBuf>,
    files: BTreeMap<PathBuf, (usize, u32)>,
    data: BTreeMap<usize, Vec<u8>>,
    next_id: usize,
}

impl Model {
    fn add_file(&mut self, p: PathBuf, data: Vec<u8>, mode: u32) {
        let id = self.next_id;
        self.next_id += 1;
        self.data.insert(id, data);
        self.files.insert(p, (id, mode));
    }
    fn children(&self, d: &Path) -> usize {
        self.files.keys().filter(|p| p.parent() == Some(d)).count()
            + self.dirs.iter().filter(|p| p.parent() == Some(d)).count()
    }
}

fn lower_tree(lower: &Path, w: usize) -> Model {
    let mut m = Model::default();
    let base = lower.join(format!("w{w}"));
    for d in ["", "ldir", "ldir/sub", "other"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
        if !d.is_empty() {
            m.dirs.push(PathBuf::from(d));
        }
    }
    for i in 0..12 {
        let rel = PathBuf::from(match i % 3 {
            0 => format!("f{i}"),
            1 => format!("ldir/f{i}"),
            _ => format!("ldir/sub/f{i}"),
        });
        let data = pattern(w * 100 + i, 500 + i * 300);
        std::fs::write(base.join(&rel), &data).unwrap();
        std::fs::set_permissions(base.join(&rel), std::fs::Permissions::from_mode(0o644)).unwrap();
        m.add_file(rel, data, 0o644);
    }
    // A hard-linked pair in the lower layer.
    std::fs::hard_link(base.join("f0"), base.join("other/f0-link")).unwrap();
    let id = m.files[Path::new("f0")].0;
    m.files.insert(PathBuf::from("other/f0-link"), (id, 0o644));
    m
}

/// Compare the tree at `root` with the model.
fn check(root: &Path, m: &Model, who: &str) {
    let mut seen_dirs = Vec::new();
    let mut seen_files = BTreeMap::new();
    fn walk(base: &Path, d: &Path, dirs: &mut Vec<PathBuf>, files: &mut BTreeMap<PathBuf, u32>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                dirs.push(rel);
                walk(base, &p, dirs, files);
            } else {
                files.insert(rel, md.permissions().mode() & 0o7777);
            }
        }
    }
    walk(root, root, &mut seen_dirs, &mut seen_files);
    let mut want_dirs = m.dirs.clone();
    want_dirs.sort();
    seen_dirs.sort();
    assert_eq!(seen_dirs, want_dirs, "{who}: directories differ");
    let want: BTreeMap<_, _> = m
        .files
        .iter()
        .map(|(p, (_, mode))| (p.clone(), *mode))
        .collect();
    assert_eq!(seen_files, want, "{who}: files or modes differ");
    for (p, (id, _)) in &m.files {
        let got = std::fs::read(root.join(p)).unwrap();
        assert!(got == m.data[id], "{who}: {} has other data", p.display());
    }
}

fn worker(root: PathBuf, mut m: Model, seed: u64, until: Instant) -> (Model, u64) {
    let mut r = Rng(seed | 1);
    let mut ops = 0u64;
    let mut fresh = 0usize;
    while Instant::now() < until {
        ops += 1;
        let files: Vec<PathBuf> = m.files.keys().cloned().collect();
        let pick_file = |r: &mut Rng| files.get(r.below(files.len())).cloned();
        let mut dirs = m.dirs.clone();
        dirs.push(PathBuf::new());
        let dir = dirs[r.below(dirs.len())].clone();
        match r.below(11) {
            0 => {
                fresh += 1;
                let p = dir.join(format!("n{fresh}"));
                let data = pattern(seed as usize + fresh, r.below(20_000));
                std::fs::write(root.join(&p), &data).unwrap();
                std::fs::set_permissions(root.join(&p), std::fs::Permissions::from_mode(0o644))
                    .unwrap();
                m.add_file(p, data, 0o644);
            }
            1 => {
                if let Some(p) = pick_file(&mut r) {
                    let extra = pattern(ops as usize, r.below(5000));
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(root.join(&p))
                        .unwrap();
                    f.write_all(&extra).unwrap();
                    let id = m.files[&p].0;
                    m.data.get_mut(&id).unwrap().extend_from_slice(&extra);
                }
            }
            2 => {
                if let Some(p) = pick_file(&mut r) {
                    let id = m.files[&p].0;
                    let len = m.data[&id].len();
                    let n = r.below(len + 1);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(root.join(&p))
                        .unwrap()
                        .set_len(n as u64)
                        .unwrap();
                    m.data.get_mut(&id).unwrap().truncate(n);
                }
            }
            3 => {
                if let Some(p) = pick_file(&mut r) {
                    fresh += 1;
                    let to = dir.join(format!("r{fresh}"));
                    std::fs::rename(root.join(&p), root.join(&to)).unwrap();
                    let v = m.files.remove(&p).unwrap();
                    m.files.insert(to, v);
                }
            }
            4 => {
                // Rename a directory (lower ones included: redirects) to a fresh name beside it.
                if let Some(d) = m.dirs.get(r.below(m.dirs.len())).cloned() {
                    fresh += 1;
                    let to = d.with_file_name(format!("m{fresh}"));
                    std::fs::rename(root.join(&d), root.join(&to)).unwrap();
                    let re = |p: &PathBuf| match p.strip_prefix(&d) {
                        Ok(rest) => to.join(rest),
                        Err(_) => p.clone(),
                    };
                    m.dirs = m
                        .dirs
                        .iter()
                        .map(|p| if p == &d { to.clone() } else { re(p) })
                        .collect();
                    m.files = m.files.iter().map(|(p, v)| (re(p), *v)).collect();
                }
            }
            5 => {
                if let Some(p) = pick_file(&mut r) {
                    fresh += 1;
                    let to = dir.join(format!("l{fresh}"));
                    std::fs::hard_link(root.join(&p), root.join(&to)).unwrap();
                    let v = m.files[&p];
                    m.files.insert(to, v);
                }
            }
            6 => {
                if let Some(p) = pick_file(&mut r) {
                    std::fs::remove_file(root.join(&p)).unwrap();
                    m.files.remove(&p);
                }
            }
            7 => {
                if let Some(p) = pick_file(&mut r) {
                    let mode = [0o600, 0o640, 0o755, 0o444][r.below(4)];
                    std::fs::set_permissions(root.join(&p), std::fs::Permissions::from_mode(mode))
                        .unwrap();
                    let id = m.files[&p].0;
                    // Hard links share the mode.
                    for v in m.files.values_mut() {
                        if v.0 == id {
                            v.1 = mode;
                        }
                    }
                }
            }
            8 => {
                if m.dirs.len() < 30 {
                    fresh += 1;
                    let d = dir.join(format!("d{fresh}"));
                    std::fs::create_dir(root.join(&d)).unwrap();
                    m.dirs.push(d);
                }
            }
            9 => {
                if let Some(d) = m.dirs.iter().find(|d| m.children(d) == 0).cloned() {
                    std::fs::remove_dir(root.join(&d)).unwrap();
                    m.dirs.retain(|x| x != &d);
                }
            }
            _ => {
                if let Some(p) = pick_file(&mut r) {
                    let got = std::fs::read(root.join(&p)).unwrap();
                    let id = m.files[&p].0;
                    assert!(
                        got == m.data[&id],
                        "read of {} gave other data",
                        p.display()
                    );
                }
            }
        }
    }
    (m, ops)
}

fn daemon_stats(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (fds, vm_rss_kib(pid))
}

#[test]
fn random_work_over_a_layered_tree_matches_the_model_after_remounts() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let workers = env("STRATA_SOAK_WORKERS", 4) as usize;
    let secs = env("STRATA_SOAK_SECS", 12);
    let work = common::tmpdir("soak");
    let lower = work.join("lower");
    let models: Vec<Model> = (0..workers).map(|w| lower_tree(&lower, w)).collect();
    let lower_before = tree_digest(&lower);
    let (upper, wdir, mnt) = (work.join("upper"), work.join("work"), work.join("mnt"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&wdir).unwrap();
    let mut m = Fuse::mount(&[&lower], &upper, &wdir, &mnt, "");
    let pid = m.child.as_ref().map(|c| c.id()).unwrap();
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let handles: Vec<_> = models
        .into_iter()
        .enumerate()
        .map(|(w, model)| {
            let root = mnt.join(format!("w{w}"));
            std::thread::spawn(move || worker(root, model, 0x9e37_79b9 + w as u64 * 7919, until))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs.min(2)));
    let early = daemon_stats(pid);
    let mut peak = early;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        let s = daemon_stats(pid);
        peak = (peak.0.max(s.0), peak.1.max(s.1));
    }
    let results: Vec<(Model, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let late = daemon_stats(pid);
    // Once the kernel forgets its inodes, the daemon's nodes go and their memory is given
    // back: what stays is the daemon's own, not what the run piled up.
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "2").is_ok();
    std::thread::sleep(Duration::from_secs(3));
    let after_drop = daemon_stats(pid);
    let ops: u64 = results.iter().map(|r| r.1).sum();
    eprintln!(
        "{workers} workers, {secs} s: {ops} ops ({:.0}/s); daemon fds {} -> {} (peak {}), RSS {} -> {} KiB (peak {}); after drop_caches: fds {}, RSS {} KiB{}",
        ops as f64 / secs as f64,
        early.0,
        late.0,
        peak.0,
        early.1,
        late.1,
        peak.1,
        after_drop.0,
        after_drop.1,
        if dropped {
            ""
        } else {
            " (not dropped: /proc/sys/vm/drop_caches not writable)"
        }
    );
    if dropped {
        assert!(
            after_drop.1 <= early.1 + 16 * 1024,
            "the daemon kept memory after the kernel forgot its inodes: {} KiB early, {} KiB after drop_caches",
            early.1,
            after_drop.1
        );
    }
    assert!(
        late.0 <= early.0 + 64,
        "the daemon's descriptors grew: {early:?} -> {late:?}"
    );
    assert!(
        late.1 <= early.1 * 2 + 64 * 1024,
        "the daemon's RSS grew: {} -> {} KiB",
        early.1,
        late.1
    );
    for (w, (model, _)) in results.iter().enumerate() {
        check(
            &mnt.join(format!("w{w}")),
            model,
            &format!("strata, worker {w}"),
        );
    }
    m.unmount();
    let mut m = Fuse::mount(&[&lower], &upper, &wdir, &mnt, "");
    for (w, (model, _)) in results.iter().enumerate() {
        check(
            &mnt.join(format!("w{w}")),
            model,
            &format!("strata remounted, worker {w}"),
        );
    }
    m.unmount();
    match Kernel::mount(&[&lower], &upper, &wdir, &work.join("kmnt")) {
        Ok(k) => {
            for (w, (model, _)) in results.iter().enumerate() {
                check(
                    &k.mnt.join(format!("w{w}")),
                    model,
                    &format!("kernel, worker {w}"),
                );
            }
        }
        Err(e) => skip(&format!("kernel overlayfs refuses the upper: {e}")),
    }
    assert!(
        tree_digest(&lower) == lower_before,
        "the lower layer changed"
    );
}
