//! `strata-fuse`: the mount program, argument-compatible with fuse-overlayfs.
//!
//! `strata-fuse -o lowerdir=L1:L2,upperdir=U,workdir=W [-f] [-o debug] MOUNTPOINT`

use strata::fs::options::{self, Command};

const USAGE: &str = "usage: strata-fuse -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...] [-f] [-d] MOUNTPOINT

Mounts a union of the lower directories (the first is the topmost) under the upper
directory, with the semantics and on-disk format of kernel overlayfs. Without upperdir the
mount is read-only. It returns once the mount is live; -f serves in the foreground.

options:
  lowerdir=A:B:...   read-only layers, topmost first (\\: escapes a colon)
  upperdir=DIR       the writable layer
  workdir=DIR        scratch directory on the same filesystem as upperdir
  timeout=SECONDS    kernel cache timeout for entries and attributes (default 1)
  debug              trace every operation with its result and latency (implies -f)
  allow_other, allow_root, ro, noexec, noatime, nosuid, nodev: as for any FUSE mount
Unknown options are accepted with a warning, as fuse-overlayfs does.
Set STRATA_LOG=debug for the same trace as -o debug.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = options::parse(&args, &mut |w| eprintln!("strata-fuse: warning: {w}"));
    let cfg = match cmd {
        Ok(Command::Version) => {
            println!("strata-fuse version {}", env!("CARGO_PKG_VERSION"));
            println!("FUSE library: fuser 0.18 (pure Rust)");
            return;
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            return;
        }
        Ok(Command::Mount(cfg)) => cfg,
        Err(e) => {
            eprintln!(
                "strata-fuse: {e}\n{}",
                USAGE.lines().next().unwrap_or_default()
            );
            std::process::exit(1);
        }
    };
    let level = if cfg.debug { "debug" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("STRATA_LOG", level))
        .format_timestamp_micros()
        .init();
    let mut cfg = *cfg;
    if std::env::var("STRATA_LOG").is_ok_and(|v| v.contains("debug")) {
        cfg.debug = true;
    }
    if let Err(e) = strata::fs::mount(&cfg) {
        eprintln!("strata-fuse: {e}");
        std::process::exit(1);
    }
}
