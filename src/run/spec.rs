//! Image config + run options -> the process to start, as Docker combines them: argv from
//! Entrypoint and Cmd, the environment (PATH default, HOSTNAME, TERM, HOME), the working
//! directory, and the user (name or uid[:gid]) looked up in the image's /etc/passwd and
//! /etc/group.

use super::{Result, RunError};
use crate::store::RunConfig;
use serde_json::Value;

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an image config says about the process (its `config` object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageDefaults {
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Cmd.
    pub cmd: Vec<String>,
    /// Env (`K=V`).
    pub env: Vec<String>,
    /// WorkingDir ("" when unset).
    pub workdir: String,
    /// User ("" when unset).
    pub user: String,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        // A shell-form string (seen in hand-made configs) is run by /bin/sh -c.
        Some(Value::String(s)) if !s.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), s.clone()]
        }
        _ => Vec::new(),
    }
}

impl ImageDefaults {
    /// Read them from a whole image config (`{"config": {...}, ...}`).
    pub fn from_image_config(cfg: &crate::image::config::ImageConfig) -> Self {
        Self::from_config_object(cfg.raw("config").or_else(|| cfg.raw("Config")))
    }

    /// Read them from the `config` object of an image config (as JSON).
    pub fn from_config_object(c: Option<&Value>) -> Self {
        let get = |k: &str| c.and_then(|c| c.get(k));
        let text = |k: &str| get(k).and_then(Value::as_str).unwrap_or("").to_string();
        ImageDefaults {
            entrypoint: strings(get("Entrypoint")),
            cmd: strings(get("Cmd")),
            env: strings(get("Env")),
            workdir: text("WorkingDir"),
            user: text("User"),
        }
    }
}

/// argv: the entrypoint (`--entrypoint` replaces the image's and clears its Cmd) followed by
/// the command (CMD given on the command line replaces the image's Cmd).
pub fn argv(img: &ImageDefaults, run: &RunConfig) -> Result<Vec<String>> {
    let (entrypoint, default_cmd) = match &run.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (img.entrypoint.clone(), img.cmd.clone()),
    };
    let cmd = if run.cmd.is_empty() {
        default_cmd
    } else {
        run.cmd.clone()
    };
    let mut argv = entrypoint;
    argv.extend(cmd);
    if argv.is_empty() {
        return Err(RunError::Invalid(
            "no command specified (the image has no Entrypoint or Cmd; give one after the image)"
                .into(),
        ));
    }
    Ok(argv)
}

/// The working directory: `-w`, else the image's WorkingDir, else `/`.
pub fn workdir(img: &ImageDefaults, run: &RunConfig) -> Result<String> {
    let w = run
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| img.workdir.clone());
    if w.is_empty() {
        return Ok("/".into());
    }
    if !w.starts_with('/') {
        return Err(RunError::Invalid(format!(
            "the working directory '{w}' is invalid, it needs to be an absolute path"
        )));
    }
    Ok(w)
}

/// The user to run as: `-u`, else the image's User, else root.
pub fn user_spec(img: &ImageDefaults, run: &RunConfig) -> String {
    run.user
        .clone()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| img.user.clone())
}

/// Key of a `K=V` entry.
fn key(e: &str) -> &str {
    e.split_once('=').map(|(k, _)| k).unwrap_or(e)
}

/// Replace the entries of `env` that `add` sets (by key, keeping their place) or append.
pub fn merge_env(env: &mut Vec<String>, add: &[String]) {
    for a in add {
        match env.iter_mut().find(|e| key(e) == key(a)) {
            Some(e) => *e = a.clone(),
            None => env.push(a.clone()),
        }
    }
}

/// The value of `k` in `env`.
pub fn env_value<'a>(env: &'a [String], k: &str) -> Option<&'a str> {
    env.iter()
        .find(|e| key(e) == k)
        .and_then(|e| e.split_once('=').map(|(_, v)| v))
}

/// The environment of the container's process: PATH (Docker's default when the image sets
/// none), HOSTNAME, TERM with a terminal, the image's Env, the `-e` entries, HOME from the
/// user's passwd entry unless set.
pub fn environment(
    img: &ImageDefaults,
    run_env: &[String],
    hostname: &str,
    home: &str,
    tty: bool,
) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if tty {
        env.push("TERM=xterm".into());
    }
    merge_env(&mut env, &img.env);
    merge_env(&mut env, run_env);
    if env_value(&env, "HOME").is_none() {
        env.push(format!("HOME={home}"));
    }
    env
}

/// A resolved user: ids, supplementary groups and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids (from /etc/group membership).
    pub groups: Vec<u32>,
    /// Home directory ("/" without a passwd entry).
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) against the contents of
/// the image's /etc/passwd and /etc/group (`None` when a file is missing), as runc does: a
/// name must exist; a numeric uid need not (then gid 0, HOME=/); without an explicit group,
/// the primary group is the passwd entry's and the supplementary groups are those listing
/// the user as a member.
pub fn resolve_user(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<User> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut user = User {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: "/".into(),
    };
    let numeric_uid: Option<u32> = user_arg.parse().ok();
    let passwd = passwd.unwrap_or("");
    let found = passwd_entries(passwd).find(|e| {
        if user_arg.is_empty() {
            e.uid == 0
        } else if let Some(n) = numeric_uid {
            e.uid == n
        } else {
            e.name == user_arg
        }
    });
    let mut matched_name: Option<String> = None;
    match found {
        Some(e) => {
            matched_name = Some(e.name.to_string());
            user.uid = e.uid;
            user.gid = e.gid;
            user.home = e.home.to_string();
        }
        None if user_arg.is_empty() => {}
        None => match numeric_uid {
            Some(n) => user.uid = n,
            None => {
                return Err(RunError::Exec {
                    code: 126,
                    msg: format!(
                        "unable to find user {user_arg}: no matching entries in passwd file"
                    ),
                });
            }
        },
    }
    let group = group.unwrap_or("");
    match group_arg.filter(|g| !g.is_empty()) {
        Some(g) => {
            let numeric: Option<u32> = g.parse().ok();
            match group_entries(group).find(|e| match numeric {
                Some(n) => e.gid == n,
                None => e.name == g,
            }) {
                Some(e) => user.gid = e.gid,
                None => match numeric {
                    Some(n) => user.gid = n,
                    None => {
                        return Err(RunError::Exec {
                            code: 126,
                            msg: format!(
                                "unable to find group {g}: no matching entries in group file"
                            ),
                        });
                    }
                },
            }
        }
        None => {
            if let Some(name) = &matched_name {
                user.groups = group_entries(group)
                    .filter(|e| e.members.contains(&name.as_str()))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    // The primary group is one of the process's groups too (as podman sets them).
    user.groups.push(user.gid);
    user.groups.sort_unstable();
    user.groups.dedup();
    Ok(user)
}

/// Parse `--env-file` contents: `K=V` lines; `K` alone takes the value from `lookup` (and is
/// dropped when unset there); blank lines and `#` comments are skipped.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| env_entry(l, &lookup))
        .collect()
}

/// One `-e` entry: `K=V` as is, `K` alone from `lookup` (dropped when unset).
pub fn env_entry(e: &str, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if e.contains('=') {
        return Some(e.to_string());
    }
    lookup(e).map(|v| format!("{e}={v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img() -> ImageDefaults {
        ImageDefaults {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["a".into(), "b".into()],
            env: vec!["PATH=/bin".into(), "X=1".into()],
            workdir: "/w".into(),
            user: "".into(),
        }
    }

    #[test]
    fn entrypoint_and_cmd() -> std::result::Result<(), RunError> {
        let mut r = RunConfig::default();
        assert_eq!(argv(&img(), &r)?, ["/ep", "a", "b"]);
        r.cmd = vec!["c".into()];
        assert_eq!(argv(&img(), &r)?, ["/ep", "c"]);
        r.entrypoint = Some("/other".into());
        assert_eq!(argv(&img(), &r)?, ["/other", "c"]);
        r.cmd.clear();
        assert_eq!(argv(&img(), &r)?, ["/other"]);
        r.entrypoint = Some(String::new());
        assert!(argv(&img(), &r).is_err());
        r.cmd = vec!["sh".into()];
        assert_eq!(argv(&img(), &r)?, ["sh"]);
        Ok(())
    }

    #[test]
    fn env_order_and_defaults() {
        let e = environment(&img(), &["X=2".into(), "Y=3".into()], "h", "/root", true);
        assert_eq!(
            e,
            [
                "PATH=/bin",
                "HOSTNAME=h",
                "TERM=xterm",
                "X=2",
                "Y=3",
                "HOME=/root"
            ]
        );
        let none = ImageDefaults::default();
        let e = environment(&none, &[], "h", "/", false);
        assert_eq!(e[0], format!("PATH={DEFAULT_PATH}"));
        assert_eq!(e.last().map(String::as_str), Some("HOME=/"));
    }

    #[test]
    fn users_and_groups() -> std::result::Result<(), RunError> {
        let pw = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n";
        let gr = "root:x:0:\nwww:x:33:\nu:x:1000:\nstaff:x:50:u,www\naudio:x:29:u\n";
        let r = resolve_user("", Some(pw), Some(gr))?;
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let u = resolve_user("u", Some(pw), Some(gr))?;
        assert_eq!(
            (u.uid, u.gid, u.groups.clone()),
            (1000, 1000, vec![29, 50, 1000])
        );
        let u = resolve_user("1000", Some(pw), Some(gr))?;
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/u"));
        let n = resolve_user("4242", Some(pw), Some(gr))?;
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 0, "/"));
        let g = resolve_user("www:staff", Some(pw), Some(gr))?;
        assert_eq!((g.uid, g.gid, g.groups.clone()), (33, 50, vec![50]));
        let g = resolve_user("33:77", Some(pw), Some(gr))?;
        assert_eq!((g.uid, g.gid), (33, 77));
        assert!(resolve_user("nosuch", Some(pw), Some(gr)).is_err());
        assert!(resolve_user("u:nogroup", Some(pw), Some(gr)).is_err());
        assert!(resolve_user("nosuch", None, None).is_err());
        Ok(())
    }

    #[test]
    fn env_files() {
        let got = parse_env_file("# c\nA=1\n\n  B=two words\nC\nD\n", |k| {
            (k == "C").then(|| "from-env".to_string())
        });
        assert_eq!(got, ["A=1", "B=two words", "C=from-env"]);
    }
}
