//! Differential runner of the mount test harness.

#[allow(unused_imports)]
use super::*;

/// An op that unmounts and remounts both sides (same dirs, same options).
pub const REMOUNT: &str = "@remount";
/// An op that unmounts both sides, turns each upper into the topmost lower layer and mounts
/// again with a fresh upper and work dir (layer rotation, as containers-storage stacks layers).
pub const ROTATE: &str = "@rotate";

/// A differential scenario: layers (topmost first), optional initial upper content, and the
/// shell command lines to run (with `sh -c`, cwd = mount root; [`REMOUNT`] remounts).
#[derive(Clone, Debug)]
pub struct Scenario {
    pub lowers: Vec<Layer>,
    pub upper: Option<Layer>,
    pub ops: Vec<String>,
    /// Compare the normalised upper dirs (default true).
    pub compare_upper: bool,
    /// Cross-mount the upper dirs at the end (default true).
    pub cross_mount: bool,
    /// Both sides copy metadata only where they can (kernel `metacopy=on`, strata
    /// `-o metacopy=on`); off by default, as in both.
    pub metacopy: bool,
}

impl Scenario {
    pub fn new(lowers: Vec<Layer>) -> Self {
        Scenario {
            lowers,
            upper: None,
            ops: Vec::new(),
            compare_upper: true,
            cross_mount: true,
            metacopy: false,
        }
    }
    /// Run with metadata-only copy-up on both sides.
    pub fn metacopy(mut self) -> Self {
        self.metacopy = true;
        self
    }
    pub fn upper(mut self, l: Layer) -> Self {
        self.upper = Some(l);
        self
    }
    pub fn op(mut self, cmd: impl Into<String>) -> Self {
        self.ops.push(cmd.into());
        self
    }
    pub fn ops<S: Into<String>>(mut self, cmds: impl IntoIterator<Item = S>) -> Self {
        self.ops.extend(cmds.into_iter().map(Into::into));
        self
    }
    pub fn no_upper_compare(mut self) -> Self {
        self.compare_upper = false;
        self
    }
}

/// Everything a differential run observed.
pub struct Outcome {
    pub kernel_options: String,
    pub kernel_steps: Vec<StepResult>,
    pub strata_steps: Vec<StepResult>,
    pub kernel_merged: Snapshot,
    pub strata_merged: Snapshot,
    pub kernel_upper: Snapshot,
    pub strata_upper: Snapshot,
    /// Every difference found (empty = strata behaved like the kernel).
    pub problems: Vec<String>,
    pub strata_log: String,
}

impl Outcome {
    /// Panic with a full report unless strata matched the kernel everywhere.
    pub fn assert_same(&self) {
        if self.problems.is_empty() {
            return;
        }
        let mut r = format!(
            "strata differs from kernel overlayfs ({}; kernel options [{}]):\n",
            strata_fuse_bin().display(),
            self.kernel_options
        );
        for p in self.problems.iter().take(60) {
            let _ = writeln!(r, "  - {p}");
        }
        if self.problems.len() > 60 {
            let _ = writeln!(r, "  ... and {} more differences", self.problems.len() - 60);
        }
        r.push_str("steps (kernel | strata):\n");
        for (k, s) in self.kernel_steps.iter().zip(self.strata_steps.iter()) {
            let _ = writeln!(
                r,
                "  $ {}\n      kernel: status {} errno [{}] stdout {:?}\n      strata: status {} errno [{}] stdout {:?} stderr {:?}",
                k.cmd,
                k.status,
                k.errno,
                k.stdout,
                s.status,
                s.errno,
                s.stdout,
                s.stderr.trim()
            );
        }
        let log = self.strata_log.trim();
        if !log.is_empty() {
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let _ = writeln!(r, "strata log (tail):\n{tail}");
        }
        panic!("{r}");
    }

    /// The kernel's result for the step whose command is `cmd` (first match).
    pub fn kernel_step(&self, cmd: &str) -> &StepResult {
        self.kernel_steps
            .iter()
            .find(|s| s.cmd == cmd)
            .expect("no such step")
    }
}

/// The upper snapshot of `upper`, without whiteouts and opaque markers over paths that no
/// layer in `lowers` has (no-ops, which implementations may or may not write).
pub fn normalised_upper(upper: &Path, lowers: &[PathBuf]) -> Snapshot {
    let lower_paths: std::collections::BTreeSet<String> = lowers
        .iter()
        .flat_map(|l| snapshot(l).nodes.into_keys())
        .collect();
    normalise_upper(upper_snapshot(upper), &lower_paths)
}

pub(crate) fn normalise_upper(
    mut snap: Snapshot,
    lower_paths: &std::collections::BTreeSet<String>,
) -> Snapshot {
    snap.nodes
        .retain(|p, n| n.kind != Kind::Whiteout || lower_paths.contains(p));
    for (p, n) in snap.nodes.iter_mut() {
        if n.opaque && !lower_paths.contains(p) {
            n.opaque = false;
        }
    }
    snap
}

pub(crate) struct Side {
    pub(crate) lowers: Vec<PathBuf>,
    pub(crate) upper: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) mnt: PathBuf,
}

pub(crate) fn prepare_side(
    ws: &Workspace,
    base: &Path,
    name: &str,
    n: usize,
    with_upper: bool,
) -> Side {
    let side = ws.mkdir(name);
    let mut lowers = Vec::new();
    for i in 0..n {
        let dst = side.join(format!("lower{i}"));
        sh(&format!(
            "cp -a {} {}",
            shq(&base.join(format!("lower{i}")).display().to_string()),
            shq(&dst.display().to_string())
        ));
        lowers.push(dst);
    }
    let upper = side.join("upper");
    if with_upper {
        sh(&format!(
            "cp -a {} {}",
            shq(&base.join("upper").display().to_string()),
            shq(&upper.display().to_string())
        ));
    } else {
        fs::create_dir(&upper).expect("upper");
    }
    let work = side.join("work");
    fs::create_dir(&work).expect("work");
    let mnt = side.join("mnt");
    fs::create_dir(&mnt).expect("mnt");
    Side {
        lowers,
        upper,
        work,
        mnt,
    }
}

/// Bind-mount `dir` on itself read-only (the workspace unmounts it when it is dropped).
pub(crate) fn bind_read_only(dir: &Path) {
    use rustix::mount::{MountFlags, mount_bind, mount_remount};
    mount_bind(dir, dir).unwrap_or_else(|e| panic!("bind mount {}: {e}", dir.display()));
    mount_remount(dir, MountFlags::BIND | MountFlags::RDONLY, "")
        .unwrap_or_else(|e| panic!("remount {} read-only: {e}", dir.display()));
    let probe = dir.join(".strata-test-ro-probe");
    assert!(
        fs::write(&probe, b"x").is_err(),
        "{} is still writable after its read-only bind mount",
        dir.display()
    );
}

pub(crate) fn lower_snapshots(s: &Side) -> Vec<Snapshot> {
    s.lowers
        .iter()
        .map(|l| {
            snapshot_with(
                l,
                SnapOpts {
                    mtime: true,
                    raw_xattrs: true,
                    upper: false,
                },
            )
        })
        .collect()
}

/// `later` must show the hard-link groups of `first`, and the inode number of every path that
/// `first` shows, except those in `exempt` (which the kernel itself does not keep).
pub(crate) fn check_same_identity(
    first: &Snapshot,
    later: &Snapshot,
    exempt: &std::collections::BTreeSet<String>,
    what: &str,
    problems: &mut Vec<String>,
) {
    if first.link_groups() != later.link_groups() {
        problems.push(format!(
            "{what}: hard-link groups {:?}, the session showed {:?}",
            later.link_groups(),
            first.link_groups()
        ));
    }
    for p in first.ino_changes(later) {
        if !exempt.contains(&p) {
            problems.push(format!(
                "{what}: st_ino of {p} is {}, the session showed {} (the kernel keeps it)",
                later.inos[&p], first.inos[&p]
            ));
        }
    }
}

/// Run a scenario on kernel overlayfs and on strata over identical copies of its layers and
/// compare per-step results, merged trees and normalised upper dirs; then cross-mount (strata
/// over the kernel's upper, the kernel over strata's) and compare those merged trees with the
/// kernel's; and check no lower layer was modified (strata's are read-only bind mounts).
pub fn differential(sc: &Scenario) -> Outcome {
    let ws = Workspace::new();
    let base = ws.mkdir("base");
    for (i, l) in sc.lowers.iter().enumerate() {
        l.build(&base.join(format!("lower{i}")));
    }
    if let Some(u) = &sc.upper {
        u.build(&base.join("upper"));
    }
    let n = sc.lowers.len();
    let mut k = prepare_side(&ws, &base, "kernel", n, sc.upper.is_some());
    let mut s = prepare_side(&ws, &base, "strata", n, sc.upper.is_some());
    // strata reads its lower layers through read-only bind mounts: a write to a lower layer
    // fails there (EROFS) and shows as a difference from the kernel, which has them writable.
    for l in &s.lowers {
        bind_read_only(l);
    }
    let mut k_lowers_before = lower_snapshots(&k);
    let mut s_lowers_before = lower_snapshots(&s);
    let mut rotations = 0;
    let mut problems = Vec::new();

    let strata_opts: Vec<&str> = if sc.metacopy {
        vec!["metacopy=on"]
    } else {
        Vec::new()
    };
    let kernel_mount = |lowers: &[PathBuf], upper: &Path, work: &Path, mnt: &Path| {
        if sc.metacopy {
            KernelOverlay::mount_with(
                lowers,
                Some((upper, work)),
                mnt,
                "redirect_dir=on,index=on,metacopy=on",
                &[],
            )
        } else {
            KernelOverlay::mount(lowers, Some((upper, work)), mnt, &[])
        }
    };
    let mut kmount = kernel_mount(&k.lowers, &k.upper, &k.work, &k.mnt)
        .unwrap_or_else(|e| panic!("kernel overlay mount failed: {e}"));
    let kopts = kmount.options.clone();
    let mut smount = FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts)
        .unwrap_or_else(|e| panic!("strata mount failed: {e}"));
    let mut strata_log = String::new();

    let kstate = ws.mkdir("kernel/state");
    let sstate = ws.mkdir("strata/state");
    let mut kernel_steps = Vec::new();
    let mut strata_steps = Vec::new();
    for cmd in &sc.ops {
        if cmd == REMOUNT || cmd == ROTATE {
            kmount.unmount();
            strata_log.push_str(&smount.log_text());
            if let Err(e) = smount.unmount() {
                problems.push(format!("step {cmd}: strata unmount: {e}"));
            }
            if cmd == ROTATE {
                rotations += 1;
                for (side, name) in [(&mut k, "kernel"), (&mut s, "strata")] {
                    let upper = ws.mkdir(&format!("{name}/upper-r{rotations}"));
                    let work = ws.mkdir(&format!("{name}/work-r{rotations}"));
                    let old = std::mem::replace(&mut side.upper, upper);
                    side.work = work;
                    side.lowers.insert(0, old);
                }
                bind_read_only(&s.lowers[0]);
                // The rotated layers are lower layers now: they too must stay untouched.
                k_lowers_before = lower_snapshots(&k);
                s_lowers_before = lower_snapshots(&s);
            }
            kmount = KernelOverlay::mount_with(
                &k.lowers,
                Some((&k.upper, &k.work)),
                &k.mnt,
                &kopts,
                &[],
            )
            .unwrap_or_else(|e| panic!("kernel overlay remount failed: {e}"));
            smount = FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts)
                .unwrap_or_else(|e| panic!("strata remount failed: {e}"));
            let ok = StepResult {
                cmd: cmd.clone(),
                status: 0,
                stdout: String::new(),
                errno: String::new(),
                stderr: String::new(),
            };
            kernel_steps.push(ok.clone());
            strata_steps.push(ok);
            continue;
        }
        let kr = run_step_as(&k.mnt, cmd, None, Some(&kstate));
        let sr = run_step_as(&s.mnt, cmd, None, Some(&sstate));
        if kr.status != sr.status {
            problems.push(format!(
                "step `{cmd}`: exit status kernel {} vs strata {}",
                kr.status, sr.status
            ));
        }
        if kr.errno != sr.errno {
            problems.push(format!(
                "step `{cmd}`: errors kernel [{}] vs strata [{}]",
                kr.errno, sr.errno
            ));
        }
        if kr.stdout != sr.stdout {
            problems.push(format!(
                "step `{cmd}`: stdout kernel {:?} vs strata {:?}",
                kr.stdout, sr.stdout
            ));
        }
        kernel_steps.push(kr);
        strata_steps.push(sr);
    }

    let kernel_merged = snapshot(&k.mnt);
    let strata_merged = snapshot(&s.mnt);
    problems.extend(
        diff(&kernel_merged, &strata_merged, "kernel", "strata")
            .into_iter()
            .map(|d| format!("merged {d}")),
    );
    if kernel_merged.link_groups() != strata_merged.link_groups() {
        problems.push(format!(
            "hard-link groups: kernel {:?} vs strata {:?}",
            kernel_merged.link_groups(),
            strata_merged.link_groups()
        ));
    }

    kmount.unmount();
    strata_log.push_str(&smount.log_text());
    if let Err(e) = smount.unmount() {
        problems.push(format!("strata unmount: {e}"));
    }

    // A whiteout or opaque marker over a path that no lower layer has is a no-op: drop those
    // before comparing, so only meaningful format differences count.
    let lower_paths: std::collections::BTreeSet<String> = k_lowers_before
        .iter()
        .flat_map(|snap| snap.nodes.keys().cloned())
        .collect();
    let kernel_upper = normalise_upper(upper_snapshot(&k.upper), &lower_paths);
    let strata_upper = normalise_upper(upper_snapshot(&s.upper), &lower_paths);
    if sc.compare_upper {
        problems.extend(
            diff(&kernel_upper, &strata_upper, "kernel", "strata")
                .into_iter()
                .map(|d| format!("upper {d}")),
        );
    }

    // What a remount shows is what the session showed: the tree, the hard-link groups and
    // every inode number the kernel keeps across its own remount.
    let kernel_remounted = {
        let m =
            KernelOverlay::mount_with(&k.lowers, Some((&k.upper, &k.work)), &k.mnt, &kopts, &[])
                .unwrap_or_else(|e| panic!("kernel overlay remount failed: {e}"));
        let snap = snapshot(&k.mnt);
        m.unmount();
        snap
    };
    let kernel_moved = kernel_merged.ino_changes(&kernel_remounted);
    match FuseMount::mount(&s.lowers, Some((&s.upper, &s.work)), &s.mnt, &strata_opts) {
        Ok(m) => {
            let again = snapshot(&s.mnt);
            strata_log.push_str(&m.log_text());
            if let Err(e) = m.unmount() {
                problems.push(format!("strata unmount after remount: {e}"));
            }
            problems.extend(
                diff(&strata_merged, &again, "strata", "strata-remounted")
                    .into_iter()
                    .map(|d| format!("after a remount {d}")),
            );
            check_same_identity(
                &strata_merged,
                &again,
                &kernel_moved,
                "strata after a remount",
                &mut problems,
            );
        }
        Err(e) => problems.push(format!("strata remount: {e}")),
    }

    // STRATA_TEST_NO_CROSS_MOUNT=1 leaves the cross-mount out (only for validating the harness
    // against other mount programs, e.g. fuse-overlayfs 1.x, which shows an empty root over a
    // kernel upper dir carrying `trusted.overlay.origin`).
    let no_cross = std::env::var_os("STRATA_TEST_NO_CROSS_MOUNT").is_some_and(|v| v == "1");
    if sc.cross_mount && !no_cross {
        // strata over the kernel's upper
        // the original workdirs: they hold the hard-link index (kernel `index=on`)
        let w = k.work.clone();
        let m = ws.mkdir("kernel/mnt-x");
        match FuseMount::mount(&k.lowers, Some((&k.upper, &w)), &m, &strata_opts) {
            Ok(fm) => {
                let snap = snapshot(&m);
                problems.extend(
                    diff(&kernel_merged, &snap, "kernel", "strata-over-kernel-upper")
                        .into_iter()
                        .map(|d| format!("cross-mount (strata over the kernel's upper) {d}")),
                );
                check_same_identity(
                    &kernel_merged,
                    &snap,
                    &kernel_moved,
                    "strata over the kernel's upper",
                    &mut problems,
                );
                strata_log.push_str(&fm.log_text());
                if let Err(e) = fm.unmount() {
                    problems.push(format!("cross-mount strata unmount: {e}"));
                }
            }
            Err(e) => problems.push(format!(
                "cross-mount: strata cannot mount the kernel's upper: {e}"
            )),
        }
        // the kernel over strata's upper
        let w = s.work.clone();
        let m = ws.mkdir("strata/mnt-x");
        match kernel_mount(&s.lowers, &s.upper, &w, &m) {
            Ok(km) => {
                if km.options != kopts {
                    problems.push(format!(
                        "cross-mount: kernel overlayfs needed fallback options [{}] instead of [{kopts}] for strata's upper/workdir",
                        km.options
                    ));
                }
                let snap = snapshot(&m);
                problems.extend(
                    diff(&kernel_merged, &snap, "kernel", "kernel-over-strata-upper")
                        .into_iter()
                        .map(|d| format!("cross-mount (kernel over strata's upper) {d}")),
                );
                // Both read the same files: the kernel must show the numbers strata showed.
                check_same_identity(
                    &strata_merged,
                    &snap,
                    &kernel_moved,
                    "the kernel over strata's upper",
                    &mut problems,
                );
                km.unmount();
            }
            Err(e) => problems.push(format!(
                "cross-mount: kernel overlayfs refuses strata's upper: {e}"
            )),
        }
        // Without metacopy, strata's upper is one that a kernel with its default options
        // (redirects followed, no index, no metacopy) reads exactly as it reads its own.
        if !sc.metacopy {
            let (mk, ms) = (ws.mkdir("kernel/mnt-d"), ws.mkdir("strata/mnt-d"));
            match (
                KernelOverlay::mount_with(&k.lowers, Some((&k.upper, &k.work)), &mk, "", &[]),
                KernelOverlay::mount_with(&s.lowers, Some((&s.upper, &s.work)), &ms, "", &[]),
            ) {
                (Ok(a), Ok(b)) => {
                    let (mut sa, mut sb) = (snapshot(&mk), snapshot(&ms));
                    // Without the index, the kernel shows a lower hard link's names that are
                    // not in the upper with their old data; which names of a group are in the
                    // upper is not the same (FUSE's setattr and link name no path).
                    let linked: std::collections::BTreeSet<String> = k_lowers_before
                        .iter()
                        .flat_map(|l| {
                            l.nodes
                                .iter()
                                .filter(|(_, n)| n.nlink.is_some_and(|c| c > 1))
                                .map(|(p, _)| p.clone())
                                .collect::<Vec<_>>()
                        })
                        .chain(kernel_merged.link_groups().into_iter().flatten())
                        .collect();
                    sa.nodes.retain(|p, _| !linked.contains(p));
                    sb.nodes.retain(|p, _| !linked.contains(p));
                    problems.extend(
                        diff(
                            &sa,
                            &sb,
                            "kernel-defaults-over-kernel-upper",
                            "kernel-defaults-over-strata-upper",
                        )
                        .into_iter()
                        .map(|d| format!("kernel with default options {d}")),
                    );
                    a.unmount();
                    b.unmount();
                }
                (Err(e), _) => problems.push(format!("kernel defaults over its own upper: {e}")),
                (_, Err(e)) => problems.push(format!(
                    "kernel overlayfs with default options refuses strata's upper: {e}"
                )),
            }
        }
    }

    for (side, before, lowers) in [
        ("kernel", &k_lowers_before, &k.lowers),
        ("strata", &s_lowers_before, &s.lowers),
    ] {
        for (i, (b, l)) in before.iter().zip(lowers.iter()).enumerate() {
            let after = snapshot_with(
                l,
                SnapOpts {
                    mtime: true,
                    raw_xattrs: true,
                    upper: false,
                },
            );
            for d in diff(b, &after, "before", "after") {
                problems.push(format!("{side} lower{i} was modified: {d}"));
            }
        }
    }

    Outcome {
        kernel_options: kopts,
        kernel_steps,
        strata_steps,
        kernel_merged,
        strata_merged,
        kernel_upper,
        strata_upper,
        problems,
        strata_log,
    }
}
