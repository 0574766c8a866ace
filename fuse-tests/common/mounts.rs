//! Mounts of the mount test harness.

#[allow(unused_imports)]
use super::*;

pub(crate) fn mountinfo_has(mnt: &Path) -> Option<String> {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let want = want.to_string_lossy().replace(' ', "\\040");
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rfind(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .map(|l| {
            // fstype follows the " - " separator
            l.split(" - ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .unwrap_or("")
                .to_string()
        })
}

/// Whether `mnt` is a mount point now; returns its fstype.
pub fn mounted_fstype(mnt: &Path) -> Option<String> {
    mountinfo_has(mnt)
}

pub(crate) fn umount(mnt: &Path, fuse: bool) {
    let first = if fuse {
        Command::new("fusermount3")
            .arg("-u")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
    } else {
        Command::new("umount")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
    };
    if !matches!(first, Ok(s) if s.success()) && mountinfo_has(mnt).is_some() {
        // busy or gone wrong: try again shortly, then lazily
        std::thread::sleep(Duration::from_millis(200));
        let ok = matches!(Command::new("umount").arg(mnt).stderr(Stdio::null()).status(), Ok(s) if s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
        }
    }
}

/// Option sets tried in order for a kernel overlay mount with an upper dir.
pub(crate) const KERNEL_OPTION_SETS: &[&str] = &[
    "redirect_dir=on,index=on",
    "redirect_dir=on,index=on,nfs_export=off",
    "redirect_dir=on",
    "",
];

/// A kernel overlayfs mount, unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
    /// The feature options the mount was made with (after any fallback).
    pub options: String,
    pub(crate) mounted: bool,
}

impl KernelOverlay {
    /// Mount with `redirect_dir=on,index=on`, falling back to fewer options when the kernel
    /// refuses (the workdir is emptied between tries). `extra` is appended (e.g. `userxattr`).
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut errors = String::new();
        // userxattr (rootless format) excludes redirect_dir/index
        let sets: &[&str] = if upper.is_some() && !extra.contains(&"userxattr") {
            KERNEL_OPTION_SETS
        } else {
            &[""]
        };
        for (i, set) in sets.iter().enumerate() {
            if i > 0
                && let Some((_, w)) = upper
            {
                let _ = fs::remove_dir_all(w);
                let _ = fs::create_dir_all(w);
            }
            match Self::mount_with(lowers, upper, mnt, set, extra) {
                Ok(m) => {
                    if i > 0 {
                        eprintln!(
                            "note: kernel overlay mounted with fallback options [{set}]: {errors}"
                        );
                    }
                    return Ok(m);
                }
                Err(e) => {
                    let _ = writeln!(errors, "[{set}] {e}");
                }
            }
        }
        Err(errors)
    }

    /// Mount with exactly these feature options (no fallback).
    pub fn mount_with(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        features: &str,
        extra: &[&str],
    ) -> Result<Self, String> {
        let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut opts = format!("lowerdir={}", lower.join(":"));
        if let Some((u, w)) = upper {
            let _ = write!(opts, ",upperdir={},workdir={}", u.display(), w.display());
        }
        if !features.is_empty() {
            let _ = write!(opts, ",{features}");
        }
        for e in extra {
            let _ = write!(opts, ",{e}");
        }
        fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(mnt)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mount -o {opts}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(KernelOverlay {
            mnt: mnt.to_path_buf(),
            options: features.to_string(),
            mounted: true,
        })
    }

    pub fn unmount(mut self) {
        self.do_unmount();
    }

    pub(crate) fn do_unmount(&mut self) {
        if self.mounted {
            self.mounted = false;
            umount(&self.mnt, false);
        }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        self.do_unmount();
    }
}

/// A mount by the FUSE program under test (`strata_fuse_bin()`), unmounted on drop
/// (`fusermount3 -u`, falling back to `umount -l`), after which the daemon must exit.
pub struct FuseMount {
    pub mnt: PathBuf,
    /// The daemon's stdout+stderr.
    pub log: PathBuf,
    pub(crate) child: Option<Child>,
    pub(crate) mounted: bool,
    /// Set once the mount is being taken down; the watchdog then leaves the daemon alone.
    pub(crate) done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Kill a daemon still serving after `STRATA_TEST_MOUNT_TIMEOUT` seconds (default 600), so
/// that a hung filesystem fails its test (stuck calls return ENOTCONN) instead of hanging CI.
pub(crate) fn watchdog(
    pid: u32,
    mnt: PathBuf,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let secs = std::env::var("STRATA_TEST_MOUNT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(600);
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !done.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!(
                "watchdog: {} still mounted after {secs} s: killing the daemon",
                mnt.display()
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
}

/// Build the `-o` option string of a fuse-overlayfs-compatible mount program.
/// (`:` inside a lower dir path is written `\:`.)
pub fn fuse_options(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, extra: &[&str]) -> String {
    let esc = |p: &Path| p.display().to_string().replace(':', "\\:");
    let lower: Vec<String> = lowers.iter().map(|p| esc(p)).collect();
    let mut opts = format!("lowerdir={}", lower.join(":"));
    if let Some((u, w)) = upper {
        let _ = write!(opts, ",upperdir={},workdir={}", u.display(), w.display());
    }
    for e in extra {
        let _ = write!(opts, ",{e}");
    }
    opts
}

impl FuseMount {
    /// Mount as root, in the foreground (`-f`) so the harness owns the daemon process.
    pub fn mount(
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::mount_as(None, lowers, upper, mnt, extra)
    }

    /// Mount, optionally as another user (`setpriv --reuid --regid --clear-groups`).
    pub fn mount_as(
        user: Option<(u32, u32)>,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        fs::create_dir_all(mnt).map_err(|e| e.to_string())?;
        let log = mnt.with_file_name(format!(
            "{}.fuse.log",
            mnt.file_name()
                .unwrap_or(OsStr::new("mnt"))
                .to_string_lossy()
        ));
        let logf = fs::File::create(&log).map_err(|e| e.to_string())?;
        let logf2 = logf.try_clone().map_err(|e| e.to_string())?;
        let opts = fuse_options(lowers, upper, extra);
        let bin = strata_fuse_bin();
        let mut cmd = match user {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("-f").arg("-o").arg(&opts).arg(mnt);
        cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let start = Instant::now();
        loop {
            // any new mount at mnt (a FUSE one for strata; the harness self-check mounts
            // kernel overlayfs through a stand-in program)
            if mountinfo_has(mnt).is_some() {
                let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                watchdog(child.id(), mnt.to_path_buf(), done.clone());
                return Ok(FuseMount {
                    mnt: mnt.to_path_buf(),
                    log,
                    child: Some(child),
                    mounted: true,
                    done,
                });
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "{} -f -o {opts} {} exited ({st}) before mounting:\n{}",
                    bin.display(),
                    mnt.display(),
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not mount {} within 20 s:\n{}",
                    bin.display(),
                    mnt.display(),
                    fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmount and wait (up to 10 s) for the daemon to exit; Err if it had to be killed or
    /// exited with a failure status.
    pub fn unmount(mut self) -> Result<(), String> {
        self.do_unmount()
    }

    pub(crate) fn do_unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        self.mounted = false;
        umount(&self.mnt, true);
        // from here on this thread reaps and, if needed, kills the daemon itself
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => {
                    return Err(format!(
                        "daemon exited with {st} after unmount:\n{}",
                        self.log_text()
                    ));
                }
                Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("daemon did not exit within 10 s of unmount (killed)".into());
                }
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            eprintln!("warning: {}: {e}", self.mnt.display());
        }
    }
}

/// A scratch directory that lazily unmounts anything still mounted under it before removal.
pub struct Workspace {
    pub(crate) dir: Option<tempfile::TempDir>,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-test.")
            .tempdir()
            .expect("tempdir");
        Workspace { dir: Some(dir) }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("workspace").path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path().join(p)
    }
    /// Create (and return) a directory inside the workspace.
    pub fn mkdir(&self, p: &str) -> PathBuf {
        let d = self.join(p);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let root = fs::canonicalize(dir.path()).unwrap_or_else(|_| dir.path().to_path_buf());
        let prefix = root.to_string_lossy().into_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mps: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(|m| m.replace("\\040", " "))
            .collect();
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mps {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if mps.is_empty() {
            drop(dir);
        } else {
            // never delete through a mount that may still be live
            let _ = dir.keep();
        }
    }
}
