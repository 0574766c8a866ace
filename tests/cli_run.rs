//! `strata run` and its companions, for real: as root, as an unprivileged user with
//! /etc/subuid ranges (the rootless path, through newuidmap) and as one without (the
//! single-uid fallback). Images come from buildah (tests/fixtures/make-run-images.sh);
//! Entrypoint/Cmd/Env/WorkingDir/User combinations are compared with podman (root, vfs,
//! runc) running the same archives; the seeds' loop runs on a Debian minbase image
//! (scripts/debian-minbase.sh, cached) with apt-get from the machine's package source, and
//! the committed image is saved and run by podman.
//!
//! Needs root (to make the users, open /dev/fuse and /dev/net/tun to everyone, run podman).
//! A test that cannot run prints `SKIPPED: reason`; with CI=true it fails instead.

mod common;

use common::skip;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const USER: &str = "strata-test";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Why these tests cannot run here, or `None`.
fn missing() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (the tests make users and open devices)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    for t in ["buildah", "skopeo", "setpriv", "newuidmap", "newgidmap"] {
        if !common::have(t) {
            return Some(format!(
                "{t} is not installed (scripts/setup.sh installs it)"
            ));
        }
    }
    if !Path::new("/usr/bin/busybox").exists() && !common::have("busybox") {
        return Some("busybox-static is not installed".into());
    }
    None
}

fn ready() -> bool {
    match missing() {
        None => true,
        Some(r) => {
            skip(&r);
            false
        }
    }
}

/// The test images (docker-archives plain.tar, ep.tar, nopath.tar), built once.
fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("run-images-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-run-images.sh");
        let o = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .output()
            .expect("run make-run-images.sh");
        assert!(
            o.status.success(),
            "make-run-images.sh failed: {}",
            text(&o.stderr)
        );
        dir
    })
}

/// A workspace every test user can traverse.
fn workspace(name: &str) -> PathBuf {
    let d = common::tmpdir(name);
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod workspace");
    d
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").arg(flag).arg(name).output().ok()?;
        out.status.success().then_some(())?;
        text(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The first id of `name`'s range in a subordinate id file, adding a free range if none.
fn ensure_range(file: &str, name: &str) -> u32 {
    let _guard = RANGES.lock().unwrap_or_else(|e| e.into_inner());
    let content = fs::read_to_string(file).unwrap_or_default();
    let mut end = 100_000u64;
    for l in content.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() != 3 {
            continue;
        }
        if f[0] == name {
            return f[1].parse().expect("subordinate range start");
        }
        if let (Ok(s), Ok(c)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
            end = end.max(s + c);
        }
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(file)
        .expect("open subordinate id file");
    writeln!(f, "{name}:{end}:65536").expect("add a range");
    end as u32
}

static RANGES: Mutex<()> = Mutex::new(());

/// Who runs strata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    /// The rootless user with subordinate ranges: (uid, gid, first subuid, first subgid).
    Ranged(u32, u32, u32, u32),
    /// A user without ranges (single-uid map): (uid, gid).
    Single(u32, u32),
}

/// Make /dev/fuse (and /dev/net/tun, for pasta) usable by everyone, as on a stock system.
fn open_devices() {
    for d in ["/dev/fuse", "/dev/net/tun"] {
        if Path::new(d).exists() {
            let _ = fs::set_permissions(d, fs::Permissions::from_mode(0o666));
        }
    }
}

/// The rootless test user (made if missing), with /etc/subuid and /etc/subgid ranges.
fn ranged_user() -> Who {
    if user_ids(USER).is_none() {
        let _ = Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", USER])
            .status();
    }
    let (uid, gid) = user_ids(USER).unwrap_or_else(|| panic!("cannot create the user {USER}"));
    open_devices();
    Who::Ranged(
        uid,
        gid,
        ensure_range("/etc/subuid", USER),
        ensure_range("/etc/subgid", USER),
    )
}

/// `nobody`, who has no subordinate ranges: the single-uid fallback.
fn single_user() -> Option<Who> {
    let (uid, gid) = user_ids("nobody")?;
    let listed = |f: &str| {
        fs::read_to_string(f).unwrap_or_default().lines().any(|l| {
            l.split(':')
                .next()
                .is_some_and(|n| n == "nobody" || n == uid.to_string())
        })
    };
    if listed("/etc/subuid") || listed("/etc/subgid") {
        return None;
    }
    open_devices();
    Some(Who::Single(uid, gid))
}

/// One strata store used by one user.
struct Strata {
    root: PathBuf,
    home: PathBuf,
    who: Who,
}

impl Strata {
    fn new(ws: &Path, who: Who) -> Strata {
        let root = ws.join("store");
        let home = ws.join("home");
        for d in [&root, &home] {
            fs::create_dir_all(d).expect("mkdir");
            if let Some((u, g)) = who.ids() {
                std::os::unix::fs::chown(d, Some(u), Some(g)).expect("chown");
            }
        }
        Strata { root, home, who }
    }

    fn command(&self, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_strata");
        let mut c = match self.who.ids() {
            None => Command::new(bin),
            Some((u, g)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={g}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(bin);
                c
            }
        };
        c.arg("--root").arg(&self.root).args(args);
        c.env("HOME", &self.home).env_remove("XDG_DATA_HOME");
        c.current_dir(&self.home);
        c
    }

    fn out(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run strata")
    }

    fn out_in(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run strata");
        let mut stdin = c.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        c.wait_with_output().expect("wait strata")
    }

    /// Run strata; it must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.out(args);
        assert!(
            o.status.success(),
            "strata {args:?} ({:?}) failed with {}: {}{}",
            self.who,
            o.status,
            text(&o.stderr),
            text(&o.stdout)
        );
        text(&o.stdout)
    }

    /// Run strata; returns (exit code, stdout, stderr).
    fn code(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.out(args);
        (
            o.status.code().unwrap_or(-1),
            text(&o.stdout),
            text(&o.stderr),
        )
    }

    fn load_images(&self) {
        for t in ["plain", "ep", "nopath"] {
            let p = images().join(format!("{t}.tar"));
            self.ok(&["load", "-q", "-i", p.to_str().expect("path")]);
        }
    }

    /// The directory of container `name` in the store.
    fn container_dir(&self, name: &str) -> PathBuf {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["ps", "-a", "--format", "json"])).expect("ps json");
        let id = v
            .as_array()
            .and_then(|a| a.iter().find(|c| c["Name"] == name))
            .and_then(|c| c["Id"].as_str())
            .unwrap_or_else(|| panic!("no container {name}"))
            .to_string();
        self.root.join("containers").join(id)
    }

    /// The run record of container `name`.
    fn record(&self, name: &str) -> serde_json::Value {
        let p = self.container_dir(name).join("container.json");
        serde_json::from_slice(&fs::read(p).expect("read container.json")).expect("json")
    }

    fn container_count(&self) -> usize {
        self.ok(&["ps", "-a", "-q"]).lines().count()
    }

    /// The host uid of container uid `id` for this user.
    fn host_uid(&self, id: u32) -> u32 {
        match self.who {
            Who::Root => id,
            Who::Ranged(u, _, start, _) => {
                if id == 0 {
                    u
                } else {
                    start + id - 1
                }
            }
            Who::Single(u, _) => {
                assert_eq!(id, 0, "single-uid maps only root");
                u
            }
        }
    }
}

impl Who {
    fn ids(self) -> Option<(u32, u32)> {
        match self {
            Who::Root => None,
            Who::Ranged(u, g, _, _) | Who::Single(u, g) => Some((u, g)),
        }
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        // Leave no container running behind a failed assertion.
        if let Ok(o) = self.command(&["ps", "-a", "-q"]).output() {
            for id in text(&o.stdout).lines() {
                let _ = self.command(&["rm", "-f", id]).output();
            }
        }
    }
}

/// Wait up to `secs` for `cond`.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(c) = fs::read(e.path().join("cmdline"))
            && text(&c).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// The entries (path -> "uid:gid") of the top layer of `image` as `strata save` writes it.
fn top_layer_owners(s: &Strata, image: &str) -> BTreeMap<String, String> {
    let tar = s
        .home
        .join(format!("save-{}.tar", image.replace([':', '/'], "-")));
    s.ok(&["save", "-o", tar.to_str().expect("path"), image]);
    let manifest = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg("manifest.json")
        .output()
        .expect("tar");
    let m: serde_json::Value = serde_json::from_slice(&manifest.stdout).expect("manifest");
    let top = m[0]["Layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l.as_str())
        .expect("layers")
        .to_string();
    let layer = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg(&top)
        .output()
        .expect("tar");
    let mut a = tar::Archive::new(&layer.stdout[..]);
    let mut out = BTreeMap::new();
    for e in a.entries().expect("layer entries") {
        let e = e.expect("entry");
        let h = e.header();
        let p = e.path().expect("path").to_string_lossy().into_owned();
        out.insert(
            p.trim_end_matches('/').to_string(),
            format!("{}:{}", h.uid().expect("uid"), h.gid().expect("gid")),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Basics, as root, rootless with ranges, and with a single-uid map
// ---------------------------------------------------------------------------------------------

fn basics(who: Who, ws: &Path) {
    let s = Strata::new(ws, who);
    s.load_images();
    let img = "localhost/run:plain";

    // output, exit codes
    assert_eq!(s.ok(&["run", "--rm", img, "echo", "hi"]), "hi\n");
    assert_eq!(
        s.ok(&["run", "--rm", img]),
        "default-cmd\n",
        "the image's Cmd"
    );
    let (c, _, _) = s.code(&["run", "--rm", img, "sh", "-c", "exit 3"]);
    assert_eq!(c, 3, "exit 3");
    let (c, _, err) = s.code(&["run", "--rm", img, "nosuchcmd"]);
    assert_eq!(c, 127, "command not found: {err}");
    assert!(
        err.contains("nosuchcmd") && err.contains("not found"),
        "{err}"
    );
    let (c, _, err) = s.code(&["run", "--rm", img, "/etc/motd"]);
    assert_eq!(c, 126, "not executable: {err}");
    assert!(err.contains("permission denied"), "{err}");
    let (c, _, _) = s.code(&["run", "--rm", img, "sh", "-c", "kill -9 $$"]);
    assert_eq!(c, 137, "kill -9 from inside");
    assert_eq!(s.container_count(), 0, "--rm left containers");

    // bad input: one line, exit 125 (126 for a user the image lacks), nothing made
    let bad: [(&[&str], &str, i32); 5] = [
        (&["run", "nosuch:image", "true"], "no such image", 125),
        (
            &["run", "-u", "nosuchuser", img, "true"],
            "unable to find user nosuchuser",
            126,
        ),
        (
            &["run", "-v", "/nonexistent/src:/x", img, "true"],
            "/nonexistent/src",
            125,
        ),
        (
            &["run", "-w", "relative", img, "true"],
            "absolute path",
            125,
        ),
        (
            &["run", "--network", "bogus", img, "true"],
            "unknown network",
            125,
        ),
    ];
    for (args, want, code) in bad {
        let (c, out, err) = s.code(args);
        assert_eq!(c, code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // a command not found (127) leaves no container either
    s.code(&["run", img, "nosuchcmd"]);
    assert_eq!(s.container_count(), 0, "bad input left a container");
    s.ok(&["run", "-d", "--name", "taken", img, "sleep", "30"]);
    let (c, _, err) = s.code(&["run", "--name", "taken", img, "true"]);
    assert_eq!(c, 125, "{err}");
    assert!(err.contains("already exists"), "{err}");
    s.ok(&["rm", "-f", "taken"]);

    // -e, --env-file, -w, -u
    let envfile = ws.join("env.list");
    fs::write(&envfile, "# comment\nFILEVAR=from-file\nFOO=file\n").expect("env file");
    let out = s.ok(&[
        "run",
        "--rm",
        "--env-file",
        envfile.to_str().expect("path"),
        "-e",
        "FOO=cli",
        "-w",
        "/data100",
        img,
        "sh",
        "-c",
        "echo $FOO $FILEVAR; pwd",
    ]);
    assert_eq!(out, "cli from-file\n/data100\n");
    // a working directory the image lacks is made (as Docker does)
    assert_eq!(
        s.ok(&["run", "--rm", "-w", "/new/dir", img, "pwd"]),
        "/new/dir\n"
    );
    if who != Who::Root {
        // (root of a single-uid namespace cannot become another user)
    }
    if !matches!(who, Who::Single(..)) {
        let out = s.ok(&["run", "--rm", "-u", "u", img, "sh", "-c", "id; echo $HOME"]);
        assert_eq!(
            out,
            "uid=1000(u) gid=1000(u) groups=29(audio),50(staff),1000(u)\n/home/u\n"
        );
    }

    // -v rw and ro
    let shared = ws.join("shared");
    fs::create_dir_all(&shared).expect("mkdir");
    fs::write(shared.join("in"), "from host\n").expect("write");
    if let Some((u, g)) = who.ids() {
        std::os::unix::fs::chown(&shared, Some(u), Some(g)).expect("chown");
        std::os::unix::fs::chown(shared.join("in"), Some(u), Some(g)).expect("chown");
    }
    let rw = format!("{}:/mnt/rw", shared.display());
    let ro = format!("{}:/mnt/ro:ro", shared.display());
    let out = s.ok(&[
        "run", "--rm", "-v", &rw, "-v", &ro, img, "sh", "-c",
        "cat /mnt/rw/in; echo new > /mnt/rw/out; echo x > /mnt/ro/no 2>/dev/null && echo ro-writable || echo ro-refused",
    ]);
    assert_eq!(out, "from host\nro-refused\n");
    assert_eq!(
        fs::read_to_string(shared.join("out")).expect("out"),
        "new\n"
    );
    assert!(!shared.join("no").exists());

    // stdin passed through
    let o = s.out_in(&["run", "--rm", "-i", img, "cat"], b"x\ny\n");
    assert_eq!(text(&o.stdout), "x\ny\n", "{}", text(&o.stderr));

    // pid namespace: the command is the child of pid 1; the host is not visible
    let out = s.ok(&[
        "run",
        "--rm",
        img,
        "sh",
        "-c",
        "echo $$ $PPID; ls /proc | grep -c '^[0-9]'",
    ]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(&f[..2], ["2", "1"], "{out}");
    assert!(
        f[2].parse::<u32>().expect("count") <= 4,
        "host processes visible: {out}"
    );
    let host = s.ok(&[
        "run",
        "--rm",
        "--pid",
        "host",
        img,
        "sh",
        "-c",
        "ls /proc | grep -c '^[0-9]'",
    ]);
    assert!(
        host.trim().parse::<u32>().expect("count") > 4,
        "--pid host: {host}"
    );
    // hostname = short ID, or --hostname; host root not reachable
    let out = s.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        img,
        "sh",
        "-c",
        "hostname; cat /etc/hostname; ls /work 2>&1 | head -1",
    ]);
    assert!(out.starts_with("box\nbox\n"), "{out}");
    assert!(
        out.contains("No such file"),
        "the host's /work is visible: {out}"
    );

    // the image's owners, as the container sees them
    let out = s.ok(&["run", "--rm", img, "ls", "-ln", "/", "/home"]);
    let owner = |name: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{}:{}", f[2], f[3])
            })
            .unwrap_or_else(|| panic!("{name} not listed: {out}"))
    };
    assert_eq!(owner("bin"), "0:0", "{out}");
    assert_eq!(owner("etc"), "0:0", "{out}");
    if matches!(who, Who::Single(..)) {
        // other ids are not mapped in a single-uid namespace
        assert_eq!(owner("data100"), "65534:65534", "{out}");
    } else {
        assert_eq!(owner("data100"), "100:100", "{out}");
        assert_eq!(owner("u"), "1000:1000", "{out}");
    }
    let out = s.ok(&["run", "--rm", img, "ls", "-ln", "/bin/su-test"]);
    assert!(out.starts_with("-rwsr-xr-x"), "setuid bit: {out}");

    // files made inside: mapped owners in the upper; the committed layer speaks in the
    // container's ids
    let script = if matches!(who, Who::Single(..)) {
        "echo a > /made-root; chown 100:100 /made-root 2>/dev/null && echo chowned || echo refused"
    } else {
        "echo a > /made-root; echo b > /made-100; chown 100:100 /made-100; chown 1000:50 /data100; echo done"
    };
    let out = s.ok(&["run", "--name", "owners", img, "sh", "-c", script]);
    let upper = s.container_dir("owners").join("upper");
    let md = |p: &str| fs::symlink_metadata(upper.join(p)).expect("stat upper file");
    assert_eq!(
        md("made-root").uid(),
        s.host_uid(0),
        "owner of a file root made"
    );
    if matches!(who, Who::Single(..)) {
        assert_eq!(out, "refused\n", "chown to an unmapped uid");
    } else {
        assert_eq!(out, "done\n");
        assert_eq!(md("made-100").uid(), s.host_uid(100), "owner in the upper");
        let diff = s.ok(&["diff", "owners"]);
        let lines: Vec<&str> = diff.lines().collect();
        assert_eq!(
            lines,
            ["C /data100", "A /made-100", "A /made-root"],
            "{diff}"
        );
        s.ok(&["commit", "owners", "owners:1"]);
        let owners = top_layer_owners(&s, "owners:1");
        assert_eq!(
            owners.get("made-root").map(String::as_str),
            Some("0:0"),
            "{owners:?}"
        );
        assert_eq!(
            owners.get("made-100").map(String::as_str),
            Some("100:100"),
            "{owners:?}"
        );
        assert_eq!(
            owners.get("data100").map(String::as_str),
            Some("1000:50"),
            "{owners:?}"
        );
        for p in [
            "proc",
            "dev",
            "sys",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
        ] {
            assert!(
                !owners.contains_key(p),
                "mount point {p} in the layer: {owners:?}"
            );
        }
        let out = s.ok(&["run", "--rm", "owners:1", "ls", "-ln", "/made-100"]);
        assert!(out.contains(" 100 ") && out.contains(" 100 "), "{out}");
    }
    s.ok(&["rm", "owners"]);
    assert_eq!(s.container_count(), 0);
    assert_eq!(
        fs::read_dir(s.root.join("containers")).expect("ls").count(),
        0,
        "rm left container directories"
    );
}

#[test]
fn basics_as_root() {
    if !ready() {
        return;
    }
    basics(Who::Root, &workspace("run-basics-root"));
}

#[test]
fn basics_rootless() {
    if !ready() {
        return;
    }
    let who = ranged_user();
    basics(who, &workspace("run-basics-rootless"));
}

#[test]
fn basics_single_uid_fallback() {
    if !ready() {
        return;
    }
    let Some(who) = single_user() else {
        skip("nobody has subordinate id ranges here; no user for the single-uid fallback");
        return;
    };
    let ws = workspace("run-single");
    let s = Strata::new(&ws, who);
    s.load_images();
    let o = s.out(&[
        "run",
        "--rm",
        "localhost/run:plain",
        "cat",
        "/proc/self/uid_map",
    ]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning line: {err}");
    assert!(
        warnings[0].contains("single-uid") && warnings[0].contains("/etc/subuid"),
        "the warning names what is missing: {err}"
    );
    let map: Vec<String> = text(&o.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(map, ["0", "65534", "1"], "single-uid map");
    drop(s);
    basics(who, &ws.join("more"));
}

// ---------------------------------------------------------------------------------------------
// Entrypoint/Cmd/Env/WorkingDir/User as podman runs them
// ---------------------------------------------------------------------------------------------

/// Root podman with vfs storage and runc, all in a temporary directory, in a private mount
/// namespace where /var/lib is an overlay on a tmpfs (podman keeps caches there).
struct Podman {
    holder: Child,
    dir: PathBuf,
}

impl Podman {
    fn new() -> Option<Podman> {
        if !common::have("podman") || !common::have("runc") {
            return None;
        }
        // (podman refuses a run root longer than 50 characters: keep it all short, in /tmp)
        let dir = tempfile::Builder::new()
            .prefix("strata-pm-")
            .tempdir_in("/tmp")
            .ok()?
            .keep();
        let dir = dir.as_path();
        fs::create_dir_all(dir.join("tmp")).ok()?;
        fs::create_dir_all(dir.join("varlib")).ok()?;
        fs::write(
            dir.join("containers.conf"),
            "[containers]\nnetns = \"none\"\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .ok()?;
        let s = dir.join("varlib").display().to_string();
        let script = format!(
            "set -e\nmount -t tmpfs tmpfs '{s}'\nmkdir '{s}/u' '{s}/w'\n\
             mount -t overlay overlay -o lowerdir=/var/lib,upperdir='{s}/u',workdir='{s}/w' /var/lib\n\
             echo ready\nexec sleep 100000"
        );
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = [0u8; 6];
        let mut out = holder.stdout.take()?;
        if out.read_exact(&mut line).is_err() || &line != b"ready\n" {
            let _ = holder.kill();
            let _ = holder.wait();
            return None;
        }
        Some(Podman {
            holder,
            dir: dir.to_path_buf(),
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = &self.dir;
        Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg("podman")
            .arg("--storage-driver=vfs")
            .arg(format!("--root={}", d.join("root").display()))
            .arg(format!("--runroot={}", d.join("runroot").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("TMPDIR", d.join("tmp"))
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed: {}",
            text(&o.stderr)
        );
        text(&o.stdout)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af"]);
        let _ = self.run(&["rmi", "-af"]);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What both print, normalised: the lines of output without those that name the container
/// (HOSTNAME=), podman's own marker (container=podman) and podman's TERM without a terminal.
fn normalised(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| {
            !l.starts_with("HOSTNAME=") && !l.starts_with("container=") && !l.starts_with("TERM=")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn config_combinations_match_podman() {
    if !ready() {
        return;
    }
    let ws = workspace("run-vs-podman");
    let Some(p) = Podman::new() else {
        skip("podman/runc unavailable or its private mount namespace cannot be made");
        return;
    };
    for t in ["plain", "ep", "nopath"] {
        p.ok(&[
            "load",
            "-q",
            "-i",
            images().join(format!("{t}.tar")).to_str().expect("p"),
        ]);
    }
    let root = Strata::new(&ws.join("root"), Who::Root);
    root.load_images();
    let rootless = Strata::new(&ws.join("rootless"), ranged_user());
    rootless.load_images();
    let env = "env | sort";
    let cases: Vec<Vec<&str>> = vec![
        vec!["localhost/run:ep"],
        vec!["localhost/run:ep", "x", "y"],
        vec!["--entrypoint", "/bin/echo", "localhost/run:ep"],
        vec![
            "--entrypoint",
            "",
            "localhost/run:ep",
            "echo",
            "no-entrypoint",
        ],
        vec![
            "--entrypoint",
            "/bin/sh",
            "localhost/run:ep",
            "-c",
            "pwd; id; echo $HOME $FOO",
        ],
        vec![
            "--entrypoint",
            "/bin/sh",
            "-u",
            "33",
            "localhost/run:ep",
            "-c",
            "id; echo $HOME",
        ],
        vec![
            "--entrypoint",
            "/bin/sh",
            "-u",
            "www:staff",
            "localhost/run:ep",
            "-c",
            "id; echo $HOME",
        ],
        // (podman also writes a passwd entry for a uid the image lacks: compare the ids only)
        vec![
            "--entrypoint",
            "/bin/sh",
            "-u",
            "4242",
            "localhost/run:ep",
            "-c",
            "id -u; id -g; id -G",
        ],
        vec![
            "--entrypoint",
            "/bin/sh",
            "-u",
            "0:1000",
            "-w",
            "/tmp",
            "localhost/run:ep",
            "-c",
            "id; pwd",
        ],
        vec!["localhost/run:plain"],
        vec!["localhost/run:plain", "sh", "-c", env],
        vec![
            "-e",
            "FOO=x",
            "-e",
            "NEW=1",
            "-u",
            "u",
            "localhost/run:plain",
            "sh",
            "-c",
            env,
        ],
        vec!["--entrypoint", "/bin/sh", "localhost/run:ep", "-c", env],
        vec!["localhost/run:nopath"],
        vec!["localhost/run:nopath", "sh", "-c", env],
    ];
    for case in &cases {
        let mut args = vec!["run", "--rm"];
        args.extend(case);
        let theirs = p.run(&args);
        let want = normalised(&text(&theirs.stdout));
        for s in [&root, &rootless] {
            let ours = s.out(&args);
            assert_eq!(
                ours.status.code(),
                theirs.status.code(),
                "exit status of {args:?} ({:?}): {}",
                s.who,
                text(&ours.stderr)
            );
            assert_eq!(
                normalised(&text(&ours.stdout)),
                want,
                "output of {args:?} ({:?}), podman's stderr: {}, ours: {}",
                s.who,
                text(&theirs.stderr),
                text(&ours.stderr)
            );
        }
    }
    // Exit codes of commands that cannot run, as podman's.
    for case in [
        vec!["localhost/run:plain", "nosuchcmd"],
        vec!["localhost/run:plain", "/etc/motd"],
        vec!["-u", "nosuch", "localhost/run:plain", "true"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(&case);
        let theirs = p.run(&args).status.code();
        for s in [&root, &rootless] {
            assert_eq!(s.out(&args).status.code(), theirs, "{args:?} ({:?})", s.who);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Detached containers: logs, exec, stop, start, kill, a killed supervisor, commit while running
// ---------------------------------------------------------------------------------------------

fn lifecycle(who: Who, ws: &Path) {
    let s = Strata::new(ws, who);
    s.load_images();
    let img = "localhost/run:plain";
    let id = s.ok(&[
        "run", "-d", "--name", "svc", img, "sh", "-c",
        "echo started; echo oops >&2; echo data > /state; trap 'echo got-term; exit 143' TERM; while true; do sleep 0.1; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 32, "run -d prints the ID: {id}");
    let ps = s.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.ends_with(" svc"))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(line.contains("Up "), "{ps}");
    assert!(
        line.contains("\"sh -c echo started;"),
        "COMMAND column: {ps}"
    );

    // logs -f follows until the container stops
    let mut follow = s
        .command(&["logs", "-f", "svc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs -f");
    wait_for("the log has the output", 10, || {
        s.ok(&["logs", "svc"]).contains("started")
    });
    let both = s.out(&["logs", "svc"]);
    assert_eq!(text(&both.stdout), "started\n");
    assert_eq!(text(&both.stderr), "oops\n");
    assert_eq!(s.ok(&["logs", "--tail", "1", "svc"]), "");

    // exec sees the container's files and processes, with its environment
    let out = s.ok(&[
        "exec",
        "svc",
        "sh",
        "-c",
        "cat /state; ps -o pid,args | grep -c 'while true'; echo $FOO",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "data", "{out}");
    assert!(lines[1].parse::<u32>().expect("count") >= 1, "{out}");
    assert_eq!(lines[2], "bar", "{out}");
    assert_eq!(s.code(&["exec", "svc", "sh", "-c", "exit 7"]).0, 7);
    assert_eq!(s.code(&["exec", "svc", "nosuch"]).0, 127);
    let o = s.out_in(
        &["exec", "-i", "svc", "sh", "-c", "cat > /from-exec"],
        b"piped\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    s.ok(&[
        "exec",
        "-d",
        "svc",
        "sh",
        "-c",
        "sleep 0.2; echo later > /detached",
    ]);
    wait_for("exec -d ran", 10, || {
        s.code(&["exec", "svc", "cat", "/detached"]).1 == "later\n"
    });
    if !matches!(who, Who::Single(..)) {
        assert_eq!(
            s.ok(&[
                "exec",
                "-u",
                "u",
                "-w",
                "/home/u",
                "svc",
                "sh",
                "-c",
                "id -u; pwd"
            ]),
            "1000\n/home/u\n"
        );
    }

    // commit while running: paused, the base config kept, -c changes it
    let c_out = s.out(&[
        "commit",
        "-a",
        "me",
        "-m",
        "running",
        "-c",
        "ENV ADDED=1",
        "svc",
        "svc:1",
    ]);
    assert!(c_out.status.success(), "{}", text(&c_out.stderr));
    assert!(
        !text(&c_out.stderr).contains("without pausing"),
        "{}",
        text(&c_out.stderr)
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "svc:1"])).expect("inspect");
    let cfg = &inspect[0]["Config"];
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["sh", "-c", "echo default-cmd"]),
        "{cfg}"
    );
    let env = cfg["Env"].to_string();
    assert!(env.contains("FOO=bar") && env.contains("ADDED=1"), "{env}");
    assert_eq!(inspect[0]["Author"], "me");
    assert_eq!(
        s.ok(&["run", "--rm", "svc:1", "cat", "/state", "/from-exec"]),
        "data\npiped\n"
    );

    // two runs of one container at once are refused
    let (c, _, err) = s.code(&["__supervise", &id]);
    assert_eq!(c, 125, "{err}");
    assert!(s.code(&["rm", "svc"]).0 != 0, "rm of a running container");

    // stop: SIGTERM reaches the process (143), logs -f ends
    let t = Instant::now();
    s.ok(&["stop", "svc"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop waited for SIGKILL"
    );
    let status = follow.wait().expect("logs -f");
    assert!(status.success());
    let mut followed = String::new();
    follow
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut followed)
        .expect("read");
    assert_eq!(followed, "started\ngot-term\n");
    assert_eq!(s.ok(&["wait", "svc"]), "143\n");
    let ps = s.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (143) "), "{ps}");
    assert!(
        !s.ok(&["ps"]).contains(" svc"),
        "ps without -a lists an exited container"
    );

    // start keeps the changes
    s.ok(&["start", "svc"]);
    // (the command rewrites /state as it starts again; /from-exec was written only by exec)
    assert_eq!(s.ok(&["exec", "svc", "cat", "/from-exec"]), "piped\n");
    s.ok(&["kill", "-s", "KILL", "svc"]);
    assert_eq!(s.ok(&["wait", "svc"]), "137\n");
    assert!(s.ok(&["ps", "-a"]).contains("Exited (137)"));
    s.ok(&["start", "svc"]);

    // kill -9 of the supervisor: the container goes with it; ps -a and rm -f clean up
    let rec = s.record("svc");
    let sup = rec["run"]["supervisor_pid"]
        .as_u64()
        .expect("supervisor pid") as i32;
    let init = rec["run"]["init_pid"].as_u64().expect("init pid") as u32;
    assert!(Path::new(&format!("/proc/{init}")).exists());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_for("the container's processes are gone", 10, || {
        processes_with(&id).is_empty() && !Path::new(&format!("/proc/{init}")).exists()
    });
    let ps = s.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    s.ok(&["rm", "-f", "svc"]);
    assert_eq!(s.container_count(), 0);

    // start -a runs an exited container again attached, with its exit status
    let (c, out, _) = s.code(&[
        "run",
        "--name",
        "once",
        img,
        "sh",
        "-c",
        "echo run-$(cat /n 2>/dev/null || echo 1); echo 2 > /n; exit 4",
    ]);
    assert_eq!((c, out.as_str()), (4, "run-1\n"));
    let (c, out, _) = s.code(&["start", "-a", "once"]);
    assert_eq!((c, out.as_str()), (4, "run-2\n"));
    s.ok(&["rm", "once"]);

    // attach: the output of a running container, and its stdin (made with -i)
    s.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        img,
        "sh",
        "-c",
        "while read l; do echo got-$l; done; echo eof",
    ]);
    let o = s.out_in(&["attach", "echoer"], b"a\nb\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "got-a\ngot-b\neof\n");
    assert_eq!(s.ok(&["wait", "echoer"]), "0\n");
    s.ok(&["rm", "echoer"]);

    // a killed `strata run`: the container lives on (ps shows it), rm -f ends it
    let mut fg = s
        .command(&["run", "--name", "fg", img, "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strata run");
    wait_for("the foreground run is up", 10, || {
        s.ok(&["ps"]).contains(" fg")
    });
    fg.kill().expect("kill strata run");
    let _ = fg.wait();
    assert!(
        s.ok(&["ps"])
            .lines()
            .any(|l| l.ends_with(" fg") && l.contains("Up "))
    );
    let fg_id = s.record("fg")["id"].as_str().expect("id").to_string();
    s.ok(&["rm", "-f", "fg"]);
    wait_for("nothing of the killed run is left", 10, || {
        processes_with(&fg_id).is_empty()
    });

    // rm -f of a running container stops it first
    s.ok(&["run", "-d", "--name", "gone", img, "sleep", "1000"]);
    s.ok(&["rm", "-f", "gone"]);
    assert_eq!(s.container_count(), 0);
    wait_for("no process of the removed container", 10, || {
        processes_with("sleep 1000").is_empty()
    });
}

#[test]
fn lifecycle_as_root() {
    if !ready() {
        return;
    }
    lifecycle(Who::Root, &workspace("run-life-root"));
}

#[test]
fn lifecycle_rootless() {
    if !ready() {
        return;
    }
    lifecycle(ranged_user(), &workspace("run-life-rootless"));
}

// ---------------------------------------------------------------------------------------------
// Published ports through pasta, rootless
// ---------------------------------------------------------------------------------------------

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

#[test]
fn published_ports() {
    if !ready() {
        return;
    }
    if !common::have("pasta") {
        skip("pasta is not installed (Debian package passt)");
        return;
    }
    let who = ranged_user();
    let ws = workspace("run-ports");
    // as root too (pasta gets the network namespace as a bound file there)
    let r = Strata::new(&ws.join("root"), Who::Root);
    r.load_images();
    r.ok(&[
        "run",
        "-d",
        "--name",
        "rootweb",
        "-p",
        "127.0.0.1:18082:80",
        "localhost/run:plain",
        "sh",
        "-c",
        "mkdir /w; echo as-root > /w/index.html; exec httpd -f -p 80 -h /w",
    ]);
    wait_for("the root container answers", 10, || {
        http_get(18082).is_some_and(|b| b == "as-root\n")
    });
    r.ok(&["rm", "-f", "rootweb"]);
    wait_for("port 18082 is free", 10, || {
        std::net::TcpListener::bind(("127.0.0.1", 18082)).is_ok()
    });
    let s = Strata::new(&ws, who);
    s.load_images();
    let img = "localhost/run:plain";
    for (name, port) in [("web1", "18080"), ("web2", "18081")] {
        let script = format!(
            "mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 8080 -h /www"
        );
        s.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "-p",
            &format!("{port}:8080"),
            img,
            "sh",
            "-c",
            &script,
        ]);
    }
    wait_for("both ports answer", 10, || {
        http_get(18080).is_some_and(|b| b == "web1\n")
            && http_get(18081).is_some_and(|b| b == "web2\n")
    });
    let ps = s.ok(&["ps"]);
    assert!(
        ps.contains("0.0.0.0:18080->8080/tcp") && ps.contains("0.0.0.0:18081->8080/tcp"),
        "{ps}"
    );
    // the container's own network: outbound through pasta, its own loopback
    let out = s.ok(&[
        "exec",
        "web1",
        "sh",
        "-c",
        "ip -o link | grep -c ': lo:'; wget -q -O - http://127.0.0.1:8080/",
    ]);
    assert_eq!(out, "1\nweb1\n");
    // outbound through pasta (when the host itself reaches the machine's package source)
    let url = "http://deb.debian.org/debian/dists/bookworm/Release";
    if Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-m", "10", url])
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = s.ok(&[
            "exec",
            "web1",
            "sh",
            "-c",
            &format!("wget -q -O - {url} | grep -c ^Codename"),
        ]);
        assert_eq!(out, "1\n", "outbound from a private network");
    } else {
        eprintln!("(no outbound check: the host cannot reach {url})");
    }
    s.ok(&["stop", "web1", "web2"]);
    wait_for("the ports are free", 10, || {
        std::net::TcpListener::bind(("0.0.0.0", 18080)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", 18081)).is_ok()
    });
    wait_for("pasta exited", 10, || {
        processes_with("pasta").iter().all(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| !text(&c).contains("18080:8080"))
                .unwrap_or(true)
        })
    });
    // --network none: only a loopback
    let out = s.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "ip -o link | wc -l",
    ]);
    assert_eq!(out.trim(), "1");
    s.ok(&["rm", "web1", "web2"]);
}

// ---------------------------------------------------------------------------------------------
// run -it through a real pty
// ---------------------------------------------------------------------------------------------

struct Pty {
    master: fs::File,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Start `cmd` on the slave of a new pty (rows x cols) as its controlling terminal.
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> (Pty, Child) {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let master = fs::File::from(pty.master);
        let slave = fs::File::from(pty.slave);
        cmd.stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        strata::sys::process::new_session_on_terminal(&mut cmd);
        let child = cmd.spawn().expect("spawn on the pty");
        let out = Arc::new(Mutex::new(Vec::new()));
        let (o, mut rd) = (out.clone(), master.try_clone().expect("dup"));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = rd.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        (Pty { master, out }, child)
    }

    fn output(&self) -> String {
        text(&self.out.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn send(&mut self, s: &[u8]) {
        self.master.write_all(s).expect("write to the pty");
    }

    fn expect(&self, what: &str) {
        wait_for(
            &format!("{what:?} on the terminal (got {:?})", self.output()),
            15,
            || self.output().contains(what),
        );
    }

    fn resize(&self, rows: u16, cols: u16) {
        use std::os::fd::AsFd;
        let _ = strata::sys::term::set_window_size(self.master.as_fd(), rows, cols);
    }
}

#[test]
fn interactive_tty_rootless() {
    if !ready() {
        return;
    }
    let who = ranged_user();
    let ws = workspace("run-tty");
    let s = Strata::new(&ws, who);
    s.load_images();
    let (mut pty, mut child) = Pty::spawn(
        s.command(&[
            "run",
            "--rm",
            "-it",
            "--name",
            "tty1",
            "localhost/run:plain",
            "sh",
        ]),
        30,
        100,
    );
    pty.expect("# ");
    pty.send(b"tty; echo T=$TERM; stty size; echo mark-$((40+2))\n");
    pty.expect("mark-42");
    let out = pty.output();
    assert!(
        out.contains("/dev/pts/0"),
        "a pty of the container's devpts: {out}"
    );
    assert!(out.contains("T=xterm") && out.contains("30 100"), "{out}");
    // Ctrl-C reaches the process, not strata
    pty.send(b"sleep 30; echo slept\n");
    wait_for("sleep runs", 15, || {
        !processes_with("sleep\u{0}30\u{0}").is_empty()
    });
    // (the shell makes it the terminal's foreground job right after forking it)
    std::thread::sleep(Duration::from_millis(700));
    let before = pty.output().matches("# ").count();
    pty.send(b"\x03");
    // (the line discipline drops typed-ahead input on ^C: wait for the next prompt)
    wait_for("a prompt after ^C", 15, || {
        pty.output().matches("# ").count() > before
    });
    pty.send(b"echo after-$((1+1))\n");
    pty.expect("after-2");
    assert!(!pty.output().contains("\nslept"), "{}", pty.output());
    // the window size follows the caller's (SIGWINCH)
    pty.resize(40, 120);
    if let Some(pid) = Some(child.id() as i32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGWINCH,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    pty.send(b"stty size; exit 3\n");
    pty.expect("40 120");
    let st = child.wait().expect("wait");
    assert_eq!(st.code(), Some(3), "{}", pty.output());
    assert_eq!(s.container_count(), 0, "--rm");
    // and exec -t into a running container
    s.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "localhost/run:plain",
        "sleep",
        "1000",
    ]);
    let (mut pty, mut child) = Pty::spawn(s.command(&["exec", "-it", "bg", "sh"]), 24, 80);
    pty.expect("# ");
    pty.send(b"tty; stty size; exit 5\n");
    pty.expect("24 80");
    assert_eq!(
        child.wait().expect("wait").code(),
        Some(5),
        "{}",
        pty.output()
    );
    assert!(pty.output().contains("/dev/pts/"), "{}", pty.output());
    s.ok(&["rm", "-f", "bg"]);
}

// ---------------------------------------------------------------------------------------------
// Machines that cannot run a container say why
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_user_namespaces_and_fuse_are_named() {
    if !ready() {
        return;
    }
    let ws = workspace("run-refusals");
    let who = ranged_user();
    let s = Strata::new(&ws, who);
    s.load_images();
    let bin = env!("CARGO_BIN_EXE_strata");
    let store = s.root.display().to_string();
    let ns = Strata::new(&ws.join("ns"), Who::Root);
    ns.load_images();
    let ns_store = ns.root.display().to_string();
    // user.max_user_namespaces=0 in a namespace of our own (root there is not real root)
    let o = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && exec {bin} --root {ns_store} run --rm localhost/run:plain true"
        ))
        .output()
        .expect("unshare");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("user.max_user_namespaces=0"), "{err}");
    // /dev/fuse not accessible: a root-only file bound over it in a mount namespace
    let fake = ws.join("fuse-0600");
    fs::write(&fake, "").expect("write");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o600)).expect("chmod");
    let (uid, gid) = who.ids().expect("ids");
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /dev/fuse && exec setpriv --reuid={uid} --regid={gid} --clear-groups -- {bin} --root {store} run --rm localhost/run:plain true",
            fake.display()
        ))
        .env("HOME", &s.home)
        .output()
        .expect("unshare");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("/dev/fuse") && err.contains("ermission denied"),
        "{err}"
    );
    assert_eq!(s.container_count(), 0, "a refused run left a container");
}

// ---------------------------------------------------------------------------------------------
// The seeds' loop on Debian, rootless: run -d, exec apt-get install, commit, stop, run the
// new image, save it and run it in podman
// ---------------------------------------------------------------------------------------------

/// The cached Debian minbase rootfs tar (built by scripts/debian-minbase.sh once).
fn debian_minbase() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-minbase.sh");
    let o = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !o.status.success() {
        return Err(format!(
            "scripts/debian-minbase.sh failed: {}",
            text(&o.stderr).trim()
        ));
    }
    Ok(PathBuf::from(text(&o.stdout).trim()))
}

#[test]
fn debian_loop_rootless() {
    if !ready() {
        return;
    }
    let tar = match debian_minbase() {
        Ok(t) => t,
        Err(e) => {
            skip(&e);
            return;
        }
    };
    let ws = workspace("run-debian");
    let who = ranged_user();
    let s = Strata::new(&ws, who);
    let t = Instant::now();
    s.ok(&["import", tar.to_str().expect("path"), "deb:1"]);
    eprintln!("import: {:?}", t.elapsed());
    s.ok(&["run", "-d", "--name", "web", "deb:1", "sleep", "infinity"]);
    let o = s.out(&[
        "exec",
        "web",
        "sh",
        "-c",
        "apt-get update -q && apt-get install -y -q --no-install-recommends hello",
    ]);
    let log = format!("{}{}", text(&o.stdout), text(&o.stderr));
    if !o.status.success()
        && (log.contains("Temporary failure resolving") || log.contains("Could not connect"))
    {
        skip(&format!(
            "the machine's Debian package source is unreachable: {log}"
        ));
        return;
    }
    assert!(
        o.status.success(),
        "apt-get in the container failed:\n{log}"
    );
    eprintln!("import + apt-get: {:?}", t.elapsed());
    assert!(log.contains("Setting up hello"), "{log}");
    assert!(
        !log.contains("unsandboxed"),
        "apt could not switch to _apt: {log}"
    );
    // apt's download user owns its partial dir (copied up from the image: its owner is kept
    // in the override xattr of the rootless layer, or as the mapped host uid)
    let partial = s
        .container_dir("web")
        .join("upper/var/cache/apt/archives/partial");
    let apt_uid = s
        .ok(&["exec", "web", "id", "-u", "_apt"])
        .trim()
        .parse::<u32>()
        .expect("uid");
    let real = fs::metadata(&partial).expect("partial dir").uid();
    let over = strata::image::fsutil::get_xattr(&partial, "user.containers.override_stat")
        .ok()
        .flatten()
        .map(|v| text(&v));
    assert!(
        real == s.host_uid(apt_uid)
            || over
                .as_deref()
                .is_some_and(|o| o.starts_with(&format!("{apt_uid}:"))),
        "owner of {}: {real}, override {over:?}",
        partial.display()
    );
    assert_eq!(
        s.ok(&[
            "exec",
            "web",
            "stat",
            "-c",
            "%U",
            "/var/cache/apt/archives/partial"
        ]),
        "_apt\n"
    );
    s.ok(&["commit", "-a", "me", "-m", "installed", "web", "img:2"]);
    let hist = s.ok(&["history", "img:2"]);
    assert!(
        hist.contains("installed") || hist.contains("strata commit"),
        "{hist}"
    );
    s.ok(&["stop", "web"]);
    assert_eq!(s.ok(&["run", "--rm", "img:2", "hello"]), "Hello, world!\n");
    // the saved image runs in podman too
    eprintln!("loop up to save: {:?}", t.elapsed());
    let saved = s.home.join("img2.tar");
    s.ok(&["save", "-o", saved.to_str().expect("path"), "img:2"]);
    fs::set_permissions(&saved, fs::Permissions::from_mode(0o644)).expect("chmod");
    let Some(p) = Podman::new() else {
        skip("podman/runc unavailable for the last step");
        return;
    };
    let t = Instant::now();
    p.ok(&["load", "-q", "-i", saved.to_str().expect("path")]);
    eprintln!("podman load: {:?}", t.elapsed());
    assert_eq!(
        p.ok(&[
            "run",
            "--rm",
            "localhost/img:2",
            "sh",
            "-c",
            "hello; stat -c %U /var/cache/apt/archives/partial"
        ]),
        "Hello, world!\n_apt\n"
    );
    eprintln!("podman load + run: {:?}", t.elapsed());
    s.ok(&["rm", "web"]);
}
