//! The fuzz targets in the test command.
//!
//! 1. On any toolchain: every committed seed (`fuzz/seeds/TARGET/`) and every regression input
//!    (`fuzz/regressions/TARGET/`, one per crash found so far) goes through the same function
//!    the libFuzzer binary calls (`fuzz/harness.rs`), so CI without nightly still checks them.
//! 2. When `cargo +nightly fuzz` works: each target runs under libFuzzer for
//!    `STRATA_FUZZ_SECS` seconds (default 6, two at a time, about 40 s in all; the binaries
//!    are run directly, not through `cargo fuzz run`), and any crash fails the test with the
//!    input's path. Building the instrumented targets takes minutes
//!    (3-4 on 2 cores after a change in src/, 20 from scratch), so the test builds them only
//!    when `STRATA_FUZZ_SECS` is set; otherwise it runs them when they are newer than every
//!    file in src/ and fuzz/ (after `scripts/fuzz.sh`, say) and else prints why it skips.
//!    `STRATA_TEST_NO_FUZZ=1` leaves this part out; without nightly or cargo-fuzz it prints why
//!    and is skipped (part 1 still ran).
//!
//! Longer runs: `scripts/fuzz.sh [SECONDS]`.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(rd) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn seeds_and_regressions_pass_every_target() {
    let mut total = 0;
    for (name, f) in harness::TARGETS {
        let files = inputs(name);
        assert!(
            !files.is_empty(),
            "fuzz target {name} has no seed in fuzz/seeds/{name}"
        );
        for p in &files {
            let data = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "fuzz target {name} fails on {}", p.display());
        }
        eprintln!("{name}: {} inputs", files.len());
        total += files.len();
    }
    eprintln!("{total} seed and regression inputs passed");
}

fn nightly_fuzz_available() -> Result<(), String> {
    let o = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if o.success() {
        Ok(())
    } else {
        Err("`cargo +nightly fuzz` is not available (rustup toolchain nightly and `cargo install cargo-fuzz`)".into())
    }
}

/// The newest modification time of the files under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == "corpus" || name == "artifacts" {
            continue;
        }
        let t = if p.is_dir() {
            newest(&p)
        } else {
            e.metadata().ok().and_then(|m| m.modified().ok())
        };
        if t > best {
            best = t;
        }
    }
    best
}

/// Every target binary is built and newer than the sources it is built from.
fn binaries_fresh(target_dir: &Path) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = newest(&root.join("src")).max(newest(&root.join("fuzz")));
    let bins = target_dir.join("x86_64-unknown-linux-gnu/release");
    harness::TARGETS.iter().all(|(name, _)| {
        std::fs::metadata(bins.join(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| Some(t) > sources)
    })
}

/// The last libFuzzer status line (`#N DONE cov: .. exec/s: ..`), for the log.
fn summary(stderr: &str) -> String {
    stderr
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains("cov:"))
        .unwrap_or("(no status line)")
        .to_string()
}

#[test]
fn libfuzzer_short_run_of_every_target() {
    if std::env::var("STRATA_TEST_NO_FUZZ").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: STRATA_TEST_NO_FUZZ=1");
        return;
    }
    if let Err(why) = nightly_fuzz_available() {
        eprintln!("SKIPPED: {why}; the seeds still ran on this toolchain");
        return;
    }
    let asked: Option<u64> = std::env::var("STRATA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let secs = asked.unwrap_or(6);
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("fuzz");
    if asked.is_none() && !binaries_fresh(&target_dir) {
        eprintln!(
            "SKIPPED: the libFuzzer targets in {} are missing or older than src/ or fuzz/; \
             set STRATA_FUZZ_SECS=N to build and run them (or run scripts/fuzz.sh); \
             the seeds still ran on this toolchain",
            target_dir.display()
        );
        return;
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-corpus");
    let cargo = |args: &[&str]| {
        let mut c = Command::new("cargo");
        c.arg("+nightly")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target_dir);
        for v in [
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
        ] {
            c.env_remove(v);
        }
        c
    };
    // Build only when the binaries are stale: `cargo fuzz` run from inside `cargo test` sees
    // another environment than scripts/fuzz.sh and would rebuild everything each time.
    if !binaries_fresh(&target_dir) {
        let t0 = std::time::Instant::now();
        let built = cargo(&["fuzz", "build"])
            .output()
            .expect("run cargo fuzz build");
        assert!(
            built.status.success(),
            "cargo fuzz build failed: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        eprintln!("fuzz targets built in {:.0?}", t0.elapsed());
    }
    let bins = target_dir.join("x86_64-unknown-linux-gnu/release");
    let names: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).collect();
    let mut failures = Vec::new();
    for pair in names.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|name| {
                let corpus = work.join(name);
                std::fs::create_dir_all(&corpus).expect("corpus dir");
                let artifacts = work.join("artifacts").join(name);
                std::fs::create_dir_all(&artifacts).expect("artifacts dir");
                let mut args: Vec<String> = vec![corpus.display().to_string()];
                for kind in ["seeds", "regressions"] {
                    let d = fuzz_dir().join(kind).join(name);
                    if d.is_dir() {
                        args.push(d.display().to_string());
                    }
                }
                args.push(format!("-max_total_time={secs}"));
                args.push("-rss_limit_mb=2048".into());
                args.push(format!("-artifact_prefix={}/", artifacts.display()));
                let child = Command::new(bins.join(name))
                    .args(&args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn a fuzz target");
                (*name, child)
            })
            .collect();
        for (name, child) in children {
            let o = child.wait_with_output().expect("wait for cargo fuzz run");
            let err = String::from_utf8_lossy(&o.stderr);
            eprintln!("{name}: {}", summary(&err));
            if !o.status.success() {
                let tail: Vec<&str> = err.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                failures.push(format!("{name}:\n{}", tail.join("\n")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "libFuzzer found crashes (inputs under {}):\n{}",
        work.join("artifacts").display(),
        failures.join("\n\n")
    );
}
