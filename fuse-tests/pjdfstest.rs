//! The pjdfstest POSIX suite on strata and on kernel overlayfs (`redirect_dir=on,index=on`),
//! each over an empty lower dir with a fresh upper and work dir, run side by side: every test
//! strata fails must fail on the kernel too. (`scripts/pjdfstest.sh` compares more peers.)
//!
//! Needs the `pjdfstest` binary (on PATH, in /opt/pjdfstest/bin or ~/.cargo/bin; `PJDFSTEST`
//! overrides): `cargo install pjdfstest --locked --root ~/.cargo` (scripts/setup.sh does).
//! pjdfstest switches to the users `nobody` and `tests`; `tests` is created if missing.

mod common;

use common::{FuseMount, KernelOverlay, Workspace};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTALL: &str = "cargo install pjdfstest --locked --root ~/.cargo";

fn pjdfstest_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PJDFSTEST").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("pjdfstest"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push(PathBuf::from("/opt/pjdfstest/bin/pjdfstest"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/pjdfstest"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The users pjdfstest switches to: `nobody` must exist, `tests` is created if missing.
fn ensure_users() {
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(exists("nobody"), "pjdfstest needs the user nobody");
    if !exists("tests") {
        let st = Command::new("useradd")
            .args(["-M", "-U", "-s", "/usr/sbin/nologin", "tests"])
            .status()
            .expect("spawn useradd");
        assert!(st.success(), "useradd tests: {st}");
    }
}

/// One pjdfstest run: the failing test names and the summary counts.
#[derive(Debug)]
struct Run {
    failed: BTreeSet<String>,
    passed: u32,
    failed_count: u32,
    total: u32,
    output: String,
}

/// `cd MNT && pjdfstest -p MNT`, parsed.
fn run_suite(bin: &Path, mnt: &Path) -> Run {
    let out = Command::new("timeout")
        .arg("600")
        .arg(bin)
        .arg("-p")
        .arg(mnt)
        .current_dir(mnt)
        .stdin(Stdio::null())
        .output()
        .expect("spawn pjdfstest");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = output
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| {
            panic!(
                "pjdfstest on {} did not finish ({}):\n{}\n{}",
                mnt.display(),
                out.status,
                output,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "Summary: 2 failed, 48 skipped, 348 passed, 0 expected failures, 398 total"
    let count = |word: &str| -> u32 {
        let words: Vec<&str> = summary
            .split([' ', ','])
            .filter(|w| !w.is_empty())
            .collect();
        words
            .windows(2)
            .find(|w| w[1] == word)
            .and_then(|w| w[0].parse().ok())
            .unwrap_or_else(|| panic!("no `{word}` count in {summary:?}"))
    };
    let failed: BTreeSet<String> = output
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let run = Run {
        failed,
        passed: count("passed"),
        failed_count: count("failed"),
        total: count("total"),
        output,
    };
    assert_eq!(
        run.failed.len() as u32,
        run.failed_count,
        "FAILED lines vs the summary on {}:\n{}",
        mnt.display(),
        run.output
    );
    run
}

#[test]
fn strata_fails_no_pjdfstest_the_kernel_passes() {
    let Some(bin) = pjdfstest_bin() else {
        common::skip(&format!(
            "pjdfstest is not installed (install it with: {INSTALL})"
        ));
        return;
    };
    if !common::ready() {
        return;
    }
    ensure_users();
    let ws = Workspace::new();
    // pjdfstest runs parts of the suite as nobody and tests: they must reach the mounts
    fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let side = |name: &str| -> (Vec<PathBuf>, PathBuf, PathBuf, PathBuf) {
        let d = ws.mkdir(name);
        let dirs: Vec<PathBuf> = ["lower", "upper", "work", "mnt"]
            .iter()
            .map(|s| ws.mkdir(&format!("{name}/{s}")))
            .collect();
        for p in std::iter::once(&d).chain(dirs.iter()) {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        (
            vec![dirs[0].clone()],
            dirs[1].clone(),
            dirs[2].clone(),
            dirs[3].clone(),
        )
    };
    let (kl, ku, kw, kmnt) = side("kernel");
    let (sl, su, sw, smnt) = side("strata");
    // redirect_dir=on,index=on (with fewer options where the kernel refuses them)
    let km = KernelOverlay::mount(&kl, Some((&ku, &kw)), &kmnt, &[])
        .unwrap_or_else(|e| panic!("kernel overlay mount failed: {e}"));
    let kopts = km.options.clone();
    let sm = FuseMount::mount(&sl, Some((&su, &sw)), &smnt, &[])
        .unwrap_or_else(|e| panic!("strata mount failed: {e}"));

    // the suite mostly sleeps: run both at once
    let (kernel, strata) = std::thread::scope(|s| {
        let k = s.spawn(|| run_suite(&bin, &kmnt));
        let st = s.spawn(|| run_suite(&bin, &smnt));
        (
            k.join().expect("kernel run panicked"),
            st.join().expect("strata run panicked"),
        )
    });
    let log = sm.log_text();
    km.unmount();
    let unmounted = sm.unmount();

    eprintln!("kernel overlayfs options: {kopts}");
    eprintln!(
        "pjdfstest: strata {}/{} passed, kernel overlayfs {}/{} passed ({} tests, skipped ones included)",
        strata.passed,
        strata.passed + strata.failed_count,
        kernel.passed,
        kernel.passed + kernel.failed_count,
        strata.total
    );
    eprintln!("strata fails: {:?}", strata.failed);
    eprintln!("kernel fails: {:?}", kernel.failed);
    assert_eq!(
        strata.total, kernel.total,
        "the two runs did not run the same tests"
    );
    assert!(
        strata.passed > 0 && kernel.passed > 0,
        "pjdfstest passed nothing:\n{}\n{}",
        strata.output,
        kernel.output
    );
    let only_strata: Vec<&String> = strata.failed.difference(&kernel.failed).collect();
    let only_kernel: Vec<&String> = kernel.failed.difference(&strata.failed).collect();
    eprintln!("failed only on kernel overlayfs: {only_kernel:?}");
    assert!(
        only_strata.is_empty(),
        "tests strata fails that kernel overlayfs passes: {only_strata:#?}\n\
         (failed only on the kernel: {only_kernel:?})\nstrata log:\n{log}"
    );
    unmounted.unwrap_or_else(|e| panic!("strata unmount: {e}"));
}
