//! The unionmount-testsuite (github.com/amir73il/unionmount-testsuite, 58 tests of open,
//! rename, link, rmdir... semantics, with layer rotation in `--ov=N`) on strata, through
//! `scripts/unionmount.sh`. Kernel overlayfs passes all of them in every mode here, so strata
//! must too; a test strata fails is checked again on the kernel, and only one the kernel passes
//! fails this test. Modes: `--ov=3 --samefs` (every test, with up to three rotations of the
//! upper into the lower stack) and `--ov=3 --samefs --meta --verify`, one after another (each
//! runs several suite processes). `--ov` and `--ov=2` take as long again and find nothing
//! these two do not: `scripts/unionmount.sh --mode '--ov --samefs' --mode '--ov=2 --samefs'`
//! runs them (and every other mode) by hand.
//!
//! The suite is not part of this repository: it is looked for at `$UNIONMOUNT_TESTSUITE`,
//! default `${STRATA_TEST_CACHE:-/var/cache/strata-test}/unionmount-testsuite`, and cloned
//! there (pinned commit) when missing. If it cannot be had the test prints `SKIPPED` and
//! passes, except with `CI=true`, where a missing suite is a missing install step and fails;
//! `STRATA_TEST_NO_UNIONMOUNT=1` leaves the test out explicitly. Logs are kept in
//! `$CARGO_TARGET_TMPDIR/unionmount/IMPL/MODE/`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// One mode at a time: each already runs several suite processes at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/unionmount.sh")
}

fn suite_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UNIONMOUNT_TESTSUITE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("STRATA_TEST_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/strata-test"));
    cache.join("unionmount-testsuite")
}

/// The suite's checkout, fetched by the script if missing; `Err` says why there is none.
fn suite() -> Result<PathBuf, String> {
    let dir = suite_dir();
    if dir.join("run").is_file() {
        return Ok(dir);
    }
    let out = Command::new(script())
        .arg("--fetch-only")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() && dir.join("run").is_file() {
        return Ok(dir);
    }
    Err(format!(
        "the unionmount-testsuite is not at {} and could not be fetched: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The suite, or `None` after printing why not (`common::skip`: under `CI=true` a missing suite
/// fails, as a missing install step; only `STRATA_TEST_NO_UNIONMOUNT=1` leaves it out there).
fn should_run() -> Option<PathBuf> {
    if std::env::var_os("STRATA_TEST_NO_UNIONMOUNT").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: STRATA_TEST_NO_UNIONMOUNT=1");
        return None;
    }
    if !common::ready() {
        return None;
    }
    match suite() {
        Ok(dir) => Some(dir),
        Err(why) => {
            common::skip(&format!(
                "{why} (STRATA_TEST_NO_UNIONMOUNT=1 leaves this test out)"
            ));
            None
        }
    }
}

/// One test's outcome from results.tsv.
struct Outcome {
    passed: bool,
    message: String,
}

/// Run the script for one implementation and mode; the outcomes by test name.
fn run(impl_: &str, mode: &str, tests: &[&str]) -> (BTreeMap<String, Outcome>, PathBuf) {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("unionmount");
    let mut cmd = Command::new(script());
    cmd.args(["--impl", impl_, "--out"])
        .arg(&out)
        .env("UNIONMOUNT_TESTSUITE", suite_dir())
        .stdin(Stdio::null());
    if impl_ != "kernel" {
        cmd.arg("--bin").arg(common::strata_fuse_bin());
    }
    let mut args: Vec<&str> = mode.split_whitespace().collect();
    args.extend_from_slice(tests);
    cmd.arg("--mode").arg(args.join(" "));
    let res = cmd.output().expect("spawn scripts/unionmount.sh");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    eprint!("{stdout}");
    let slug: String = args
        .iter()
        .filter(|a| a.starts_with('-'))
        .map(|a| a.trim_start_matches('-').replace('=', ""))
        .collect::<Vec<_>>()
        .join("-");
    let dir = out.join(impl_).join(slug);
    let tsv = std::fs::read_to_string(dir.join("results.tsv")).unwrap_or_else(|e| {
        panic!(
            "no results from scripts/unionmount.sh ({}; {e}):\n{stdout}\n{stderr}",
            res.status
        )
    });
    let outcomes: BTreeMap<String, Outcome> = tsv
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            (f.len() >= 2).then(|| {
                (
                    f[0].to_string(),
                    Outcome {
                        passed: f[1] == "pass",
                        message: f.get(3).unwrap_or(&"").to_string(),
                    },
                )
            })
        })
        .collect();
    let failed = outcomes.values().filter(|o| !o.passed).count();
    assert!(
        !outcomes.is_empty() && (failed == 0) == res.status.success(),
        "scripts/unionmount.sh exited {} with {failed} failures in {}:\n{stdout}\n{stderr}",
        res.status,
        dir.display()
    );
    (outcomes, dir)
}

fn check_mode(mode: &str) {
    let Some(_suite) = should_run() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (strata, dir) = run("strata", mode, &[]);
    let failed: Vec<&str> = strata
        .iter()
        .filter(|(_, o)| !o.passed)
        .map(|(t, _)| t.as_str())
        .collect();
    if failed.is_empty() {
        return;
    }
    // the same tests on the kernel: only what it passes counts against strata
    let (kernel, kdir) = run("kernel", mode, &failed);
    let regressions: Vec<String> = failed
        .iter()
        .filter(|t| kernel.get(**t).is_some_and(|o| o.passed))
        .map(|t| {
            format!(
                "  {t}: {}\n    log: {}/{t}.log",
                strata[*t].message,
                dir.display()
            )
        })
        .collect();
    let both: Vec<&&str> = failed
        .iter()
        .filter(|t| !kernel.get(**t).is_some_and(|o| o.passed))
        .collect();
    if !both.is_empty() {
        eprintln!(
            "failed on kernel overlayfs too (not counted): {both:?}, logs in {}",
            kdir.display()
        );
    }
    assert!(
        regressions.is_empty(),
        "unionmount-testsuite {mode}: strata fails {} of {} tests that kernel overlayfs \
         passes:\n{}",
        regressions.len(),
        strata.len(),
        regressions.join("\n")
    );
}

#[test]
fn ov3_samefs() {
    check_mode("--ov=3 --samefs");
}

/// metacopy=on (opt-in in strata, so only this mode makes metacopy files) with the suite's
/// stricter inode-number checks, over the deepest rotation.
#[test]
fn ov3_samefs_meta_verify() {
    check_mode("--ov=3 --samefs --meta --verify");
}
