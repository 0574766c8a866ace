//! Command-line parsing for `strata-fuse`, compatible with fuse-overlayfs:
//! `-o lowerdir=A:B,upperdir=U,workdir=W[,opt...] [-f] [-d] MOUNTPOINT`.

use std::path::PathBuf;
use std::time::Duration;

use crate::fs::mounting::config::{MountConfig, MountError};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Mount(Box<MountConfig>),
    Version,
    Help,
}

/// Options accepted for compatibility and ignored (with a warning).
const IGNORED: &[&str] = &[
    "fast_ino",
    "noacl",
    "squash_to_root",
    "squash_to_uid",
    "squash_to_gid",
    "uidmapping",
    "gidmapping",
    "xattr_permissions",
    "static_nlink",
    "writeback",
    "plugins",
    "redirect_dir",
    "index",
    "userxattr",
    "xino",
    "default_permissions",
    "noxattrs",
    "rw",
    "exec",
    "atime",
    "async",
];

/// A boolean option's value: 1/0, on/off, yes/no, true/false.
fn flag_value(key: &str, v: &str) -> Result<bool, MountError> {
    match v {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err(MountError::Invalid(format!(
            "{key}={v}: expected on or off (1 or 0)"
        ))),
    }
}

/// FUSE mount options passed through to the kernel.
const PASSED: &[&str] = &[
    "allow_other",
    "allow_root",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "noexec",
    "noatime",
    "nodiratime",
    "relatime",
    "ro",
    "sync",
    "dirsync",
];

/// Split on `sep`, honouring `\` escapes (`\:` in lowerdir, `\,` in option strings).
pub fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                if n != sep {
                    cur.push('\\');
                }
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Parse `args` (without the program name). Warnings go to `warn`.
pub fn parse(args: &[String], warn: &mut dyn FnMut(String)) -> Result<Command, MountError> {
    let mut cfg = MountConfig::new(Vec::new(), None, None, PathBuf::new());
    let mut mountpoint = None;
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" | "-V" => return Ok(Command::Version),
            "-h" | "--help" => return Ok(Command::Help),
            "-f" => cfg.foreground = true,
            "-d" | "--debug" => {
                cfg.debug = true;
                cfg.foreground = true;
            }
            "-o" => {
                let v = it
                    .next()
                    .ok_or_else(|| MountError::Invalid("-o needs an argument".into()))?;
                opts.extend(split_escaped(v, ','));
            }
            s if s.starts_with("-o") => opts.extend(split_escaped(&s[2..], ',')),
            s if s.starts_with('-') && s.len() > 1 => {
                warn(format!("unknown argument {s:?} ignored"));
            }
            s => {
                if mountpoint.replace(PathBuf::from(s)).is_some() {
                    return Err(MountError::Invalid(format!(
                        "more than one mountpoint given ({s:?})"
                    )));
                }
            }
        }
    }
    // Copy-ups are fsynced unless asked otherwise, or unless fsyncs are not carried out at all.
    let mut sync_copy_up = None;
    for o in opts {
        let (key, value) = match o.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (o.clone(), None),
        };
        match (key.as_str(), value) {
            ("", _) => warn("empty mount option ignored".into()),
            ("lowerdir", Some(v)) => {
                cfg.lowerdirs = split_escaped(&v, ':')
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            }
            ("upperdir", Some(v)) => cfg.upperdir = Some(PathBuf::from(v)),
            ("workdir", Some(v)) => cfg.workdir = Some(PathBuf::from(v)),
            ("debug", _) => {
                cfg.debug = true;
                cfg.foreground = true;
            }
            ("timeout", Some(v)) => {
                let secs: f64 = v.parse().map_err(|_| {
                    MountError::Invalid(format!("timeout={v}: not a number of seconds"))
                })?;
                cfg.timeout = Duration::from_secs_f64(secs.max(0.0));
            }
            ("control", Some(v)) => cfg.control_socket = Some(PathBuf::from(v)),
            ("passthrough", v) => {
                let v = v.unwrap_or_else(|| "upper".into());
                cfg.passthrough =
                    crate::fs::union::passthrough::Mode::parse(&v).ok_or_else(|| {
                        MountError::Invalid(format!("passthrough={v}: expected off, upper or all"))
                    })?;
            }
            ("fsync", Some(v)) => cfg.honor_fsync = flag_value("fsync", &v)?,
            ("open_handles", v) => {
                cfg.open_handles = Some(v.map_or(Ok(true), |v| flag_value("open_handles", &v))?)
            }
            ("metacopy", v) => cfg.metacopy = v.map_or(Ok(true), |v| flag_value("metacopy", &v))?,
            ("sync_copyup", v) => {
                sync_copy_up = Some(v.map_or(Ok(true), |v| flag_value("sync_copyup", &v))?)
            }
            ("threads", Some(v)) => {
                let n: usize = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    MountError::Invalid(format!("threads={v}: expected a positive number"))
                })?;
                cfg.threads = Some(n);
            }
            ("volatile", None) => {
                sync_copy_up = Some(false);
                cfg.honor_fsync = false;
                warn("volatile: fsync requests are not carried out".into());
            }
            ("override_stat", _) => cfg.fuse_options.push("strata:override_stat".into()),
            (k, _) if PASSED.contains(&k) => cfg.fuse_options.push(k.to_string()),
            (k, _) if IGNORED.contains(&k) => warn(format!("option {o:?} is accepted and ignored")),
            _ => warn(format!("unknown option {o:?} ignored")),
        }
    }
    cfg.sync_copy_up = sync_copy_up.unwrap_or(cfg.honor_fsync);
    cfg.mountpoint = mountpoint.ok_or_else(|| MountError::Invalid("no mountpoint given".into()))?;
    if cfg.lowerdirs.is_empty() {
        return Err(MountError::Invalid(
            "no lowerdir given (-o lowerdir=DIR[:DIR...])".into(),
        ));
    }
    Ok(Command::Mount(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> (MountConfig, Vec<String>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut warnings = Vec::new();
        match parse(&args, &mut |w| warnings.push(w)) {
            Ok(Command::Mount(c)) => (*c, warnings),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn parses_fuse_overlayfs_style_arguments() {
        let (c, w) = parse_ok(&[
            "-o",
            "lowerdir=/a\\:b:/c,upperdir=/u,workdir=/w,,volatile",
            "/mnt",
        ]);
        assert_eq!(
            c.lowerdirs,
            vec![PathBuf::from("/a:b"), PathBuf::from("/c")]
        );
        assert_eq!(c.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(c.workdir, Some(PathBuf::from("/w")));
        assert_eq!(c.mountpoint, PathBuf::from("/mnt"));
        assert_eq!(
            w.len(),
            2,
            "empty option and volatile each warn once: {w:?}"
        );
    }

    #[test]
    fn passthrough_and_fsync_options() {
        use crate::fs::union::passthrough::Mode;
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,passthrough=all,fsync=0", "/m"]);
        assert_eq!(c.passthrough, Mode::All);
        assert!(!c.honor_fsync);
        assert!(!c.sync_copy_up);
        let (c, _) = parse_ok(&["-o", "lowerdir=/a", "/m"]);
        assert_eq!(c.passthrough, Mode::Upper);
        assert!(c.honor_fsync);
        assert!(
            c.sync_copy_up,
            "copy-ups are fsynced by default, as on the kernel"
        );
        assert_eq!(c.open_handles, None, "decided at FUSE init unless given");
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,open_handles=0", "/m"]);
        assert_eq!(c.open_handles, Some(false));
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,open_handles", "/m"]);
        assert_eq!(c.open_handles, Some(true));
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,sync_copyup=0", "/m"]);
        assert!(!c.sync_copy_up && c.honor_fsync);
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,fsync=0", "/m"]);
        assert!(!c.sync_copy_up && !c.honor_fsync);
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,fsync=0,sync_copyup", "/m"]);
        assert!(c.sync_copy_up && !c.honor_fsync);
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,sync_copyup,fsync=1", "/m"]);
        assert!(c.sync_copy_up && c.honor_fsync);
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,sync_copyup=0,volatile", "/m"]);
        assert!(!c.sync_copy_up && !c.honor_fsync);
        let mut w = |_| {};
        assert!(
            parse(
                &[
                    "-o".into(),
                    "lowerdir=/a,passthrough=bogus".into(),
                    "/m".into()
                ],
                &mut w
            )
            .is_err()
        );
        assert!(
            parse(
                &["-o".into(), "lowerdir=/a,fsync=maybe".into(), "/m".into()],
                &mut w
            )
            .is_err()
        );
    }

    #[test]
    fn metacopy_is_off_unless_asked_for() {
        let (c, w) = parse_ok(&["-o", "lowerdir=/a", "/m"]);
        assert!(!c.metacopy && w.is_empty());
        for on in ["metacopy", "metacopy=on", "metacopy=1"] {
            let (c, w) = parse_ok(&["-o", &format!("lowerdir=/a,{on}"), "/m"]);
            assert!(c.metacopy, "{on}");
            assert!(w.is_empty(), "{on}: {w:?}");
        }
        let (c, _) = parse_ok(&["-o", "lowerdir=/a,metacopy=off", "/m"]);
        assert!(!c.metacopy);
        let mut w = |_| {};
        assert!(
            parse(
                &[
                    "-o".into(),
                    "lowerdir=/a,metacopy=maybe".into(),
                    "/m".into()
                ],
                &mut w
            )
            .is_err()
        );
    }

    #[test]
    fn missing_mountpoint_and_lowerdir_are_errors() {
        let mut w = |_| {};
        assert!(parse(&["-o".into(), "lowerdir=/a".into()], &mut w).is_err());
        assert!(parse(&["/mnt".into()], &mut w).is_err());
    }
}
