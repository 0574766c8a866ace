//! The id maps of a container's user namespace: container root = the user, container ids
//! 1..N = the user's /etc/subuid and /etc/subgid ranges (written by the setuid `newuidmap` /
//! `newgidmap`, as rootless podman does), or, when a range or the tools are missing, a
//! single-uid map (written directly) with a one-line warning naming what is missing.

use super::{Result, RunError};
use crate::store::{IdMap, IdRange};
use std::path::{Path, PathBuf};

/// True for root of the initial user namespace (no user namespace is needed then).
pub fn is_real_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| {
        let f: Vec<&str> = m.split_whitespace().collect();
        f == ["0", "0", "4294967295"]
    })
}

/// The ranges `name` (or `uid`, numerically) has in a subuid/subgid file: (start, count).
pub fn subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            if f.len() != 3 || (f[0] != name && f[0] != id.to_string()) {
                return None;
            }
            let (start, count) = (f[1].parse::<u32>().ok()?, f[2].parse::<u32>().ok()?);
            (count > 0).then_some((start, count))
        })
        .collect()
}

/// A map with the user as root and `ranges` for ids 1 and up.
fn ranged(host: u32, ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut out = vec![IdRange {
        container: 0,
        host,
        size: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in ranges {
        out.push(IdRange {
            container: next,
            host: start,
            size: count,
        });
        next = next.saturating_add(count);
    }
    out
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The map for the calling user: `None` as real root (no user namespace); otherwise the
/// map and, for a single-uid map, the warning to print.
pub fn choose() -> Result<Option<(IdMap, Option<String>)>> {
    if is_real_root() {
        return Ok(None);
    }
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let subuid = subordinate_ranges(&read("/etc/subuid"), &name, uid);
    let subgid = subordinate_ranges(&read("/etc/subgid"), &name, uid);
    let missing = if subuid.is_empty() {
        Some(format!("no range for {name} in /etc/subuid"))
    } else if subgid.is_empty() {
        Some(format!("no range for {name} in /etc/subgid"))
    } else if find_tool("newuidmap").is_none() || find_tool("newgidmap").is_none() {
        Some("newuidmap/newgidmap not found (Debian package uidmap)".to_string())
    } else {
        None
    };
    Ok(Some(match missing {
        None => (
            IdMap {
                uids: ranged(uid, &subuid),
                gids: ranged(gid, &subgid),
            },
            None,
        ),
        Some(why) => (
            IdMap {
                uids: ranged(uid, &[]),
                gids: ranged(gid, &[]),
            },
            Some(format!(
                "warning: single-uid user namespace (container root = {name}, no other users): {why}"
            )),
        ),
    }))
}

/// True if `map` needs the setuid helpers (more than the caller's own id).
fn needs_helpers(map: &IdMap) -> bool {
    map.uids.len() > 1 || map.gids.len() > 1
}

fn map_args(ranges: &[IdRange]) -> Vec<String> {
    ranges
        .iter()
        .flat_map(|r| [r.container, r.host, r.size])
        .map(|n| n.to_string())
        .collect()
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

/// Write `map` for the user namespace of process `pid` (a child that has just unshared it).
pub fn apply(pid: u32, map: &IdMap) -> Result<()> {
    if needs_helpers(map) {
        for (tool, ranges) in [("newuidmap", &map.uids), ("newgidmap", &map.gids)] {
            let bin = find_tool(tool).ok_or_else(|| {
                RunError::Unavailable(format!("{tool} not found (Debian package uidmap)"))
            })?;
            let out = std::process::Command::new(&bin)
                .arg(pid.to_string())
                .args(map_args(ranges))
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(RunError::io(format!("run {}", bin.display())))?;
            if !out.status.success() {
                return Err(RunError::Unavailable(format!(
                    "{tool} {pid} {} failed: {}",
                    map_args(ranges).join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        return Ok(());
    }
    let proc = Path::new("/proc").join(pid.to_string());
    let write = |name: &str, text: &str| {
        std::fs::write(proc.join(name), text).map_err(RunError::io(format!(
            "write {text:?} to /proc/{pid}/{name}"
        )))
    };
    write("setgroups", "deny")?;
    write("uid_map", &map_text(&map.uids))?;
    write("gid_map", &map_text(&map.gids))
}

/// The container id of host id `host` under `ranges`.
pub fn to_container(ranges: &[IdRange], host: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        (host >= r.host && host - r.host < r.size).then(|| r.container + (host - r.host))
    })
}

/// The host id of container id `id` under `ranges`.
pub fn to_host(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        (id >= r.container && id - r.container < r.size).then(|| r.host + (id - r.container))
    })
}

/// True if container gid `gid` is mapped in this process's user namespace.
pub fn gid_mapped_here(gid: u32) -> bool {
    std::fs::read_to_string("/proc/self/gid_map").is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            f.len() == 3 && (gid as u64) >= f[0] && (gid as u64) < f[0] + f[2]
        })
    })
}

/// True if this process's user namespace allows setgroups(2) (not "deny").
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() == "allow")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subuid_ranges_and_mapping() {
        let text = "tests:100000:65536\nme:165536:65536\n1002:300000:10\nbad:line\n";
        assert_eq!(
            subordinate_ranges(text, "me", 1002),
            [(165536, 65536), (300000, 10)]
        );
        assert!(subordinate_ranges(text, "other", 7).is_empty());
        let m = ranged(1002, &[(165536, 65536)]);
        assert_eq!(to_container(&m, 1002), Some(0));
        assert_eq!(to_container(&m, 165536 + 99), Some(100));
        assert_eq!(to_host(&m, 100), Some(165635));
        assert_eq!(to_container(&m, 5), None);
        assert_eq!(map_args(&m), ["0", "1002", "1", "1", "165536", "65536"]);
    }
}
