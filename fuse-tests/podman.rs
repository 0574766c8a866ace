//! podman with strata-fuse as the `mount_program` of its overlay storage driver, as root and
//! rootless: import a busybox image, run a container that writes and deletes files, inspect
//! the container diff, commit it, run the new image, mount it, save it, and check that every
//! container and image mount was made and served by strata-fuse.
//!
//! Everything lives in a temporary directory: storage.conf and containers.conf (pointed at by
//! CONTAINERS_STORAGE_CONF and CONTAINERS_CONF), the storage (graph root and run root), podman's
//! tmp dir and, rootless, HOME and XDG_RUNTIME_DIR. Containers and images are removed and
//! leftover mounts unmounted on the way out, also when a step fails.
//!
//! The rootless test runs podman as the user `strata-test` (created if missing). podman uses
//! the user's /etc/subuid and /etc/subgid ranges (through newuidmap) when it has some, and its
//! single-uid mapping when not; the image only holds files owned by root, so both work.

mod common;

use common::{sh, shq};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "strata-test";
const MOTD: &str = "hello from strata\n";

/// Why these tests cannot run here (not root, podman missing), or `None`.
fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (the tests set up users and storage)".into());
    }
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("podman is not installed (apt-get install podman runc uidmap)".into()),
    }
}

fn ready() -> bool {
    match skip_reason() {
        None => true,
        Some(r) => common::skip(&r),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (uid, gid) of a user, if it exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        if !out.status.success() {
            return None;
        }
        text(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The unprivileged test user (created if missing), with /dev/fuse usable by everyone.
fn test_user() -> (u32, u32) {
    if user_ids(USER).is_none() {
        let _ = Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", USER])
            .status();
    }
    sh("chmod 666 /dev/fuse");
    user_ids(USER).unwrap_or_else(|| panic!("cannot create the user {USER}"))
}

/// One podman installation: its configuration and storage in a temporary directory, run as
/// root or as an unprivileged user. Dropping it removes all containers and images, stops the
/// rootless pause process and unmounts whatever is left.
///
/// As root, podman runs in a private mount namespace held by a `sleep` process, in which
/// /var/lib is covered by an overlay whose upper dir is a tmpfs: podman as root keeps a blob
/// cache in /var/lib/containers/cache whatever its configuration, and the host's copy must
/// stay untouched. Its mounts (strata's included) are made in that namespace.
struct Podman {
    /// Rootless: the user podman runs as.
    user: Option<(u32, u32)>,
    /// Root: the process holding podman's mount namespace.
    holder: Option<std::process::Child>,
    /// The graph root: the storage podman uses.
    root: PathBuf,
    env: Vec<(String, PathBuf)>,
    home: PathBuf,
    /// Declared last: dropped after the namespace holder is gone.
    ws: common::Workspace,
}

impl Podman {
    fn new(user: Option<(u32, u32)>) -> Self {
        let ws = common::Workspace::new();
        // the temp dir is 0700 root: let the user traverse it
        fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = ws.mkdir("home");
        let runtime = ws.mkdir("xdg");
        let tmp = ws.mkdir("tmp");
        if let Some((uid, gid)) = user {
            for d in [&home, &runtime, &tmp] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
            }
            fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
        }
        let root = home.join("storage");
        let runroot = runtime.join("storage");
        let storage_conf = ws.join("storage.conf");
        fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\
                 rootless_storage_path = \"{}\"\n\
                 [storage.options.overlay]\nmount_program = \"{}\"\n",
                root.display(),
                runroot.display(),
                root.display(),
                env!("CARGO_BIN_EXE_strata-fuse")
            ),
        )
        .expect("write storage.conf");
        let containers_conf = ws.join("containers.conf");
        fs::write(
            &containers_conf,
            format!(
                "[containers]\nnetns = \"none\"\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\ntmp_dir = \"{}\"\nimage_copy_tmp_dir = \"{}\"\n\
                 [network]\nnetwork_config_dir = \"{}\"\n",
                runtime.join("libpod-tmp").display(),
                tmp.display(),
                runtime.join("networks").display()
            ),
        )
        .expect("write containers.conf");
        let mut env = vec![
            ("CONTAINERS_STORAGE_CONF".to_string(), storage_conf),
            ("CONTAINERS_CONF".to_string(), containers_conf),
            ("TMPDIR".to_string(), tmp),
        ];
        if user.is_some() {
            env.push(("HOME".into(), home.clone()));
            env.push(("XDG_RUNTIME_DIR".into(), runtime));
        }
        let holder = user.is_none().then(|| mount_namespace(&ws.mkdir("varlib")));
        Podman {
            user,
            holder,
            root,
            env,
            home,
            ws,
        }
    }

    /// Root: the pid whose mount namespace podman runs in.
    fn ns_pid(&self) -> Option<u32> {
        self.holder.as_ref().map(|h| h.id())
    }

    /// Run a shell command line as podman's user, with podman's environment (which points
    /// podman at this storage) and a shell function `p` that runs podman. `in_ns`: rootless,
    /// run it inside podman's user and mount namespace (`podman unshare`), where its mounts
    /// are. (No `--root`/`--runroot` options: with them podman drops the storage options of
    /// storage.conf, mount_program included, and mounts with kernel overlayfs.)
    fn shell(&self, script: &str, in_ns: bool) -> Output {
        let script = format!("p() {{ podman \"$@\"; }}\n{script}");
        let mut c = Command::new("timeout");
        c.arg("180");
        if let Some(pid) = self.ns_pid() {
            c.arg("nsenter")
                .arg(format!("--mount=/proc/{pid}/ns/mnt"))
                .arg("--");
        }
        if let Some((uid, gid)) = self.user {
            c.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--");
        }
        if in_ns && self.user.is_some() {
            c.args(["podman", "unshare", "sh", "-c", &script]);
        } else {
            c.arg("sh").arg("-c").arg(&script);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.current_dir(&self.home).stdin(Stdio::null());
        c.output().expect("spawn podman")
    }

    /// Run a shell command line (see [`Podman::shell`]) that must succeed; returns stdout.
    fn ok(&self, script: &str, in_ns: bool) -> String {
        let out = self.shell(script, in_ns);
        assert!(
            out.status.success(),
            "failed ({}{}): {script}\nstdout: {}\nstderr: {}",
            out.status,
            if self.user.is_some() {
                ", rootless"
            } else {
                ", root"
            },
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `podman ARGS` (words quoted by the caller), must succeed; returns stdout.
    fn p(&self, args: &str) -> String {
        self.ok(&format!("p {args}"), false)
    }

    /// The mount table where podman's mounts are (as root its private mount namespace,
    /// rootless its user namespace): (source, mount point, fstype) per line.
    fn mounts(&self) -> Vec<(String, String, String)> {
        let text = match self.ns_pid() {
            Some(pid) => fs::read_to_string(format!("/proc/{pid}/mounts")).expect("read mounts"),
            None => self.ok("cat /proc/self/mounts", true),
        };
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f.len() >= 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }

    fn cleanup(&self) {
        let _ = self.shell("p rm -af -t 0; p rmi -af", false);
        // the rootless pause process keeps podman's namespaces (and their mounts) alive
        for pidfile in find_named(self.ws.path(), "pause.pid") {
            let Ok(pid) = fs::read_to_string(&pidfile) else {
                continue;
            };
            let Ok(pid) = pid.trim().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if text(&cmdline).contains("catatonit") || text(&cmdline).contains("podman") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // root: unmount what is left in podman's namespace (deepest first), then end it
        if let Some(pid) = self.ns_pid() {
            let ws = self.ws.path().display().to_string();
            let table = fs::read_to_string(format!("/proc/{pid}/mounts")).unwrap_or_default();
            let mut leftovers: Vec<String> = table
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|mp| mp.starts_with(&ws))
                .map(str::to_string)
                .collect();
            leftovers.sort_by_key(|m| std::cmp::Reverse(m.len()));
            leftovers.push("/var/lib".into());
            for m in leftovers {
                let _ = Command::new("nsenter")
                    .arg(format!("--mount=/proc/{pid}/ns/mnt"))
                    .args(["umount", "-l"])
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.cleanup();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// Start a process in a new private mount namespace where /var/lib is covered by an overlay
/// with its upper and work dirs on a tmpfs mounted at `scratch`; returns it once that is done.
fn mount_namespace(scratch: &Path) -> std::process::Child {
    use std::io::BufRead;
    let s = shq(&scratch.display().to_string());
    let script = format!(
        "set -e\n\
         mount -t tmpfs tmpfs {s}\n\
         mkdir {s}/upper {s}/work\n\
         mount -t overlay overlay -o lowerdir=/var/lib,upperdir={s}/upper,workdir={s}/work /var/lib\n\
         echo ready\n\
         exec sleep 100000"
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let mut line = String::new();
    let _ = std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait unshare");
        panic!(
            "cannot set up podman's mount namespace: {}",
            text(&out.stderr)
        );
    }
    child
}

/// Every file named `name` below `dir` (no symlink following).
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            found.extend(find_named(&e.path(), name));
        } else if e.file_name() == name {
            found.push(e.path());
        }
    }
    found
}

/// The processes whose command line is `strata-fuse ... MOUNTPOINT`: (pid, effective uid).
fn strata_daemons(mountpoint: &str) -> Vec<(u32, u32)> {
    let bin = env!("CARGO_BIN_EXE_strata-fuse");
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect();
        if args.first().map(String::as_str) == Some(bin)
            && args.last().map(String::as_str) == Some(mountpoint)
            && let Ok(md) = fs::metadata(e.path())
        {
            found.push((pid, md.uid()));
        }
    }
    found
}

/// A busybox root file system as a tar file: /bin/busybox with sh, ls, cat, rm, echo, sleep
/// linked to it, and /etc/motd.
fn busybox_tar(p: &Podman) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .expect("busybox is not installed (apt-get install busybox-static)");
    let rootfs = p.ws.mkdir("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
    fs::create_dir_all(rootfs.join("etc")).expect("mkdir etc");
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    fs::create_dir_all(rootfs.join("data")).expect("mkdir data");
    fs::write(rootfs.join("data/a"), "linked\n").expect("data/a");
    for l in [
        "sh", "ls", "cat", "rm", "echo", "sleep", "test", "ln", "stat",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(l)).expect("symlink");
    }
    fs::write(rootfs.join("etc/motd"), MOTD).expect("motd");
    let tar = p.ws.join("bb.tar");
    sh(&format!(
        "tar --owner=0 --group=0 -C {} -cf {} . && chmod 644 {}",
        shq(&rootfs.display().to_string()),
        shq(&tar.display().to_string()),
        shq(&tar.display().to_string())
    ));
    tar
}

/// Wait (up to 15 s) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Assert that `dir` is mounted by strata-fuse where podman's mounts are, and that a
/// strata-fuse daemon of the expected user serves it.
fn assert_strata_mount(p: &Podman, dir: &str) {
    let mounts = p.mounts();
    let m = mounts
        .iter()
        .find(|(_, mp, _)| mp == dir)
        .unwrap_or_else(|| panic!("{dir} is not mounted; mounts:\n{mounts:#?}"));
    assert_eq!(m.0, "strata", "mount source of {dir}: {m:?}");
    assert!(
        m.2 == "fuse.strata",
        "fstype of {dir} is {} (expected fuse.strata): {m:?}",
        m.2
    );
    let daemons = strata_daemons(dir);
    assert_eq!(
        daemons.len(),
        1,
        "strata-fuse daemons serving {dir}: {daemons:?}"
    );
    let want_uid = p.user.map(|u| u.0).unwrap_or(0);
    assert_eq!(
        daemons[0].1, want_uid,
        "the strata-fuse daemon serving {dir} runs as uid {} (expected {want_uid})",
        daemons[0].1
    );
}

fn scenario(p: &Podman) {
    let tar = busybox_tar(p);
    let tar = shq(&tar.display().to_string());

    // import
    let id = p.p(&format!("import -q {tar} localhost/bb:1"));
    assert!(id.trim().starts_with("sha256:"), "import printed {id:?}");
    let images = p.p("images --format '{{.Repository}}:{{.Tag}}'");
    assert_eq!(images.trim(), "localhost/bb:1", "podman images");

    // a container that reads a lower file, writes one and deletes one
    // (and hard-links a lower file). With a mount_program, containers-storage diffs the
    // container by comparing its merged tree with the parent's (its "naive diff": mode, owner,
    // size, mtime and xattrs), and a new link changes none of those on the old name, so the
    // commit carries /data/b as a copy: fuse-overlayfs 1.10 gives the same result here. The
    // new name and its content must be there; `strata commit`, which reads the upper layer,
    // keeps the link (tests/cli_mount.rs).
    // Container names here are not hex: podman resolves a name such as `c1` to an image
    // whose ID starts with those digits before it looks for a container (`podman diff c1`
    // then diffed the image's layer whenever its ID began with c1).
    let out = p.p(
        "run --name ctr-one localhost/bb:1 /bin/sh -c 'cat /etc/motd; echo hi > /x; rm /etc/motd; ln /data/a /data/b'",
    );
    assert_eq!(out, MOTD, "output of the first container");
    let mut diff: Vec<String> = p
        .p("container diff ctr-one")
        .lines()
        .map(str::to_string)
        .collect();
    diff.sort();
    assert_eq!(
        diff,
        ["A /data/b", "A /x", "C /data", "C /etc", "D /etc/motd"],
        "podman container diff ctr-one (read from strata's upper dir)"
    );

    // commit, then run the committed image
    let id = p.p("commit -q ctr-one localhost/bb:2");
    assert_eq!(id.trim().len(), 64, "commit printed {id:?}");
    let out = p.p(
        "run --rm localhost/bb:2 sh -c 'cat /x; ls /etc; test -e /etc/motd && echo motd-present || echo motd-gone'",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"hi"), "cat /x in bb:2: {out:?}");
    assert_eq!(
        lines.last(),
        Some(&"motd-gone"),
        "/etc/motd in bb:2: {out:?}"
    );
    assert!(
        !lines.contains(&"motd"),
        "ls /etc in bb:2 lists motd: {out:?}"
    );
    let links = p.p("run --rm localhost/bb:2 sh -c 'cat /data/a /data/b'");
    assert_eq!(links, "linked\nlinked\n", "/data/a and /data/b in bb:2");

    // mount the image (in podman's namespace when rootless), look inside, unmount
    let out = p.ok(
        "set -e\n\
         M=$(p image mount localhost/bb:2)\n\
         echo \"$M\"\n\
         cat \"$M/x\"\n\
         ls \"$M/etc\" | tr '\\n' ' '; echo\n\
         test -x \"$M/bin/busybox\" && echo busybox\n\
         awk -v m=\"$M\" '$2 == m {print $1, $3}' /proc/self/mounts\n\
         p image umount localhost/bb:2 >/dev/null\n\
         if awk -v m=\"$M\" '$2 == m {f=1} END {exit !f}' /proc/self/mounts; then echo still-mounted; else echo unmounted; fi",
        true,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "image mount script output: {out:?}");
    assert!(
        lines[0].starts_with(&p.root.display().to_string()) && lines[0].ends_with("/merged"),
        "image mount path: {out:?}"
    );
    assert_eq!(lines[1], "hi", "/x in the mounted image: {out:?}");
    assert!(
        !lines[2].split(' ').any(|n| n == "motd"),
        "/etc of the mounted image lists motd: {out:?}"
    );
    assert_eq!(
        lines[3], "busybox",
        "/bin/busybox in the mounted image: {out:?}"
    );
    assert!(
        lines[4] == "strata fuse.strata",
        "the image mount was not made by strata-fuse: {out:?}"
    );
    assert_eq!(lines[5], "unmounted", "after podman image umount: {out:?}");

    // save: a docker archive with both layers; the top one holds /x and the whiteout of motd
    let save = p.home.join("bb2.tar");
    let save_q = shq(&save.display().to_string());
    p.p(&format!("save -q -o {save_q} localhost/bb:2"));
    let list = sh(&format!("tar -tf {save_q}"));
    assert!(
        list.lines().any(|l| l == "manifest.json"),
        "no manifest.json in the saved archive:\n{list}"
    );
    let manifest = sh(&format!("tar -xOf {save_q} manifest.json"));
    let layers = json_string_list(&manifest, "Layers");
    assert_eq!(layers.len(), 2, "layers in manifest.json: {manifest}");
    for l in &layers {
        assert!(
            list.lines().any(|x| x == l),
            "layer {l} of manifest.json is not in the archive:\n{list}"
        );
    }
    let top = sh(&format!("tar -xOf {save_q} {} | tar -t", shq(&layers[1])));
    let top: Vec<&str> = top
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .filter(|l| !l.is_empty() && *l != ".")
        .collect();
    let mut top_sorted = top.clone();
    top_sorted.sort();
    // besides /x and the whiteout of /etc/motd, the mount points podman made in the container
    // (the same list as on podman's native kernel overlayfs)
    assert_eq!(
        top_sorted,
        [
            "data",
            "data/b",
            "dev",
            "etc",
            "etc/.wh.motd",
            "etc/hostname",
            "etc/hosts",
            "etc/mtab",
            "proc",
            "run",
            "run/.containerenv",
            "sys",
            "x"
        ],
        "entries of the committed layer"
    );

    // a running container: its root is a strata-fuse mount served by a strata-fuse daemon
    let id = p.p("run -d --name ctr-two localhost/bb:2 sleep 60");
    assert_eq!(id.trim().len(), 64, "run -d printed {id:?}");
    let merged = p.p("container inspect ctr-two --format '{{.GraphDriver.Data.MergedDir}}'");
    let merged = merged.trim().to_string();
    assert!(
        merged.starts_with(&p.root.display().to_string()),
        "merged dir {merged} outside the storage"
    );
    assert_strata_mount(p, &merged);
    assert_eq!(
        p.p("exec ctr-two cat /x"),
        "hi\n",
        "exec in the running container"
    );
    p.p("exec ctr-two sh -c 'echo live > /y'");
    assert_eq!(
        p.p("exec ctr-two cat /y"),
        "live\n",
        "a file written in ctr-two"
    );
    p.p("stop -t 0 ctr-two");
    p.p("rm ctr-two");
    wait_until(&format!("{merged} is unmounted"), || {
        !p.mounts().iter().any(|(_, mp, _)| *mp == merged)
    });
    wait_until("its strata-fuse daemon has exited", || {
        strata_daemons(&merged).is_empty()
    });

    p.p("rm ctr-one");
    p.p("rmi localhost/bb:2 localhost/bb:1");
    assert_eq!(p.p("images -q"), "", "images left");
}

/// The strings of the first JSON array named `key` in `json` (enough for manifest.json).
fn json_string_list(json: &str, key: &str) -> Vec<String> {
    let Some(start) = json.find(&format!("\"{key}\"")) else {
        return Vec::new();
    };
    let rest = &json[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The two podman tests run one at a time. While they ran in parallel, `podman diff` now and
/// then reported the whole image as added (about one full run in four, not yet explained);
/// running them apart rules out interference between the two podman instances.
static ONE_PODMAN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn podman_as_root_runs_on_strata() {
    if !ready() {
        return;
    }
    let _serial = ONE_PODMAN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let p = Podman::new(None);
    scenario(&p);
}

#[test]
fn podman_rootless_runs_on_strata() {
    if !ready() {
        return;
    }
    let _serial = ONE_PODMAN_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let user = test_user();
    let p = Podman::new(Some(user));
    let out = p.shell("cat /proc/self/uid_map", true);
    let uid_map = text(&out.stdout);
    eprintln!(
        "rootless podman user namespace uid_map:\n{}\n{}",
        uid_map.trim_end(),
        text(&out.stderr).trim_end()
    );
    let first: Vec<&str> = uid_map.split_whitespace().take(3).collect();
    assert_eq!(
        first,
        ["0", &user.0.to_string(), "1"],
        "podman's user namespace does not map root to {USER}: {uid_map}"
    );
    scenario(&p);
}
