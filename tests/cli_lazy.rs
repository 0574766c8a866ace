//! Lazy pull end to end against a real `docker-registry` on 127.0.0.1, reached through a
//! byte-counting proxy of the test's own: an image pushed as eStargz is pulled with
//! `--lazy` (only footer and TOC cross the wire), mounted (its layer served by the lazy
//! filesystem under the union), read and compared with a full pull; a corrupted chunk gives
//! EIO and never wrong data; a registry that goes away gives EIO quickly and the mount stays
//! up; the background completion turns the layer into an ordinary one that fsck finds clean.

mod common;
#[path = "registry_support/mod.rs"]
mod support;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A TCP proxy on 127.0.0.1 counting the bytes the registry sends; `down` refuses new
/// connections and cuts the open ones.
struct Proxy {
    port: u16,
    bytes: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().expect("proxy addr").port();
        let bytes = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicBool::new(false));
        let (b, d) = (bytes.clone(), down.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(c);
                    continue;
                }
                let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (b, d) = (b.clone(), d.clone());
                let (c2, u2) = match (c.try_clone(), u.try_clone()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => continue,
                };
                let d1 = d.clone();
                std::thread::spawn(move || pipe(c2, u2, None, d1));
                std::thread::spawn(move || pipe(u, c, Some(b), d));
            }
        });
        Proxy { port, bytes, down }
    }
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Option<Arc<AtomicU64>>,
    down: Arc<AtomicBool>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 65536];
    loop {
        if down.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// pids of the `lazy-serve` daemons of the store at `root`.
fn lazy_daemons(root: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("lazy-serve") && cmd.contains(root.to_string_lossy().as_ref()) {
            out.push(pid);
        }
    }
    out
}

fn rng_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn make_rootfs(dir: &Path) {
    for d in ["etc", "usr/lib", "usr/share/doc", "bin"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::write(dir.join("etc/motd"), "hello from a lazy layer\n").expect("write");
    std::fs::write(dir.join("etc/hostname"), "lazy\n").expect("write");
    std::fs::write(dir.join("usr/lib/big.bin"), rng_bytes(24 << 20, 7)).expect("write");
    std::fs::write(dir.join("usr/lib/other.bin"), rng_bytes(6 << 20, 9)).expect("write");
    std::fs::write(dir.join("usr/share/doc/README"), "docs\n".repeat(1000)).expect("write");
    std::os::unix::fs::symlink("../usr/lib/big.bin", dir.join("bin/big")).expect("symlink");
    std::fs::hard_link(dir.join("etc/motd"), dir.join("etc/motd.hard")).expect("link");
    if Path::new("/bin/busybox").exists() {
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    }
}

fn unmount_all(store: &Path, mounts: &[PathBuf]) {
    for m in mounts {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(m)
            .stderr(std::process::Stdio::null())
            .status();
    }
    if let Ok(rd) = std::fs::read_dir(store.join("lazy")) {
        for e in rd.flatten() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(e.path().join("mnt"))
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Reads a file with a deadline: Ok(bytes) or the error kind's raw OS error.
fn read_timed(p: &Path, limit: Duration) -> (Result<Vec<u8>, i32>, Duration) {
    let t = Instant::now();
    let r = std::fs::read(p).map_err(|e| e.raw_os_error().unwrap_or(-1));
    let el = t.elapsed();
    assert!(el < limit, "read of {} took {el:?}", p.display());
    (r, el)
}

fn lazy_blob_path(reg: &support::Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.dir
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Whether these tests can run here (a registry, root, /dev/fuse); says why not otherwise.
fn ready() -> bool {
    if let Some(why) = support::skip_reason() {
        return skip(&why);
    }
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return skip("needs root and /dev/fuse to mount");
    }
    true
}

#[test]
fn lazy_pull_mount_read_corrupt_and_outage() {
    if !ready() {
        return;
    }
    let work = tmpdir("lazy");
    let reg = support::Registry::start(&work, None).expect("start docker-registry");
    let proxy = Proxy::start(reg.port);
    let host = proxy.host();
    let net = [
        "--tls-verify=false",
        "--authfile",
        "/nonexistent/strata-test-auth.json",
    ];
    let a = work.join("a");
    let rootfs = work.join("rootfs");
    make_rootfs(&rootfs);
    ok(
        &a,
        &[
            "import",
            rootfs.to_str().unwrap_or_default(),
            "localhost/lazy:1",
        ],
    );
    let dest = format!("{host}/test/lazy:1");
    let prefetch = work.join("prefetch.txt");
    std::fs::write(&prefetch, "etc/motd\n").expect("write prefetch list");
    let mut args = vec!["push", "--compression", "estargz", "--prefetch-file"];
    args.push(prefetch.to_str().unwrap_or_default());
    args.extend(net);
    args.extend(["localhost/lazy:1", dest.as_str()]);
    ok(&a, &args);

    // `save --compression estargz`: an OCI layout whose layer is eStargz (annotated), which
    // loads as an ordinary image.
    let saved = work.join("saved");
    ok(
        &a,
        &[
            "save",
            "--format",
            "oci-dir",
            "--compression",
            "estargz",
            "-o",
            saved.to_str().unwrap_or_default(),
            "localhost/lazy:1",
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.join("index.json")).expect("index"))
            .expect("index JSON");
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .to_string();
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(saved.join("blobs/sha256").join(md)).expect("manifest"),
    )
    .expect("manifest JSON");
    assert!(
        m["layers"][0]["annotations"]["containerd.io/snapshot/stargz/toc.digest"].is_string(),
        "{m}"
    );
    // Every blob of the layout has one mode (the eStargz blob is not left 0600).
    let modes: std::collections::BTreeSet<u32> = std::fs::read_dir(saved.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| {
            use std::os::unix::fs::PermissionsExt;
            e.metadata().expect("stat blob").permissions().mode() & 0o777
        })
        .collect();
    assert_eq!(modes.len(), 1, "modes of the saved blobs: {modes:?}");
    let e = work.join("e");
    ok(&e, &["load", "-i", saved.to_str().unwrap_or_default()]);
    assert_eq!(ok(&e, &["images", "-q"]).lines().count(), 1);

    // Full pull for reference (and its byte count).
    let full = work.join("full");
    let before = proxy.bytes.load(Ordering::Relaxed);
    let mut args = vec!["pull"];
    args.extend(net);
    args.push(dest.as_str());
    ok(&full, &args);
    let full_bytes = proxy.bytes.load(Ordering::Relaxed) - before;

    // Lazy pull: a tiny fraction of the bytes.
    let b = work.join("b");
    let before = proxy.bytes.load(Ordering::Relaxed);
    let mut args = vec!["pull", "--lazy"];
    args.extend(net);
    args.push(dest.as_str());
    let id = ok(&b, &args);
    let lazy_bytes = proxy.bytes.load(Ordering::Relaxed) - before;
    eprintln!("full pull: {full_bytes} bytes; lazy pull: {lazy_bytes} bytes");
    assert!(full_bytes > 30 << 20, "full pull moved {full_bytes}");
    assert!(
        lazy_bytes * 100 < full_bytes,
        "lazy pull moved {lazy_bytes} of {full_bytes}"
    );
    let fsck = ok(&b, &["fsck"]);
    assert!(fsck.contains("0 errors"), "{fsck}");

    let lazy_dirs: Vec<PathBuf> = std::fs::read_dir(b.join("lazy"))
        .expect("lazy dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(lazy_dirs.len(), 1, "one lazy layer");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lazy_dirs[0].join("lazy.json")).expect("record"))
            .expect("record JSON");
    let blob_digest = rec["digest"].as_str().unwrap_or_default().to_string();

    // Mount without background completion first: the corruption and outage paths.
    let mp = work.join("m1");
    let env = [
        ("STRATA_LAZY_NO_COMPLETE", "1"),
        ("STRATA_LAZY_TIMEOUT", "5"),
    ];
    let o = strata_env(
        &b,
        &[
            "mount",
            "--lazy",
            id.trim(),
            mp.to_str().unwrap_or_default(),
        ],
        &env,
    );
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut mounts = vec![mp.clone()];
    let t0 = Instant::now();
    let motd = std::fs::read_to_string(mp.join("etc/motd")).expect("read motd");
    eprintln!("first read after mount: {:?}", t0.elapsed());
    assert_eq!(motd, "hello from a lazy layer\n");
    assert_eq!(
        std::fs::read_link(mp.join("bin/big")).expect("readlink"),
        Path::new("../usr/lib/big.bin")
    );
    assert!(!mp.join(".prefetch.landmark").exists() && !mp.join("stargz.index.json").exists());
    let m1 = std::fs::metadata(mp.join("etc/motd")).expect("stat");
    let m2 = std::fs::metadata(mp.join("etc/motd.hard")).expect("stat");
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&m1), 2);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&m1),
        std::os::unix::fs::MetadataExt::ino(&m2)
    );
    let small = proxy.bytes.load(Ordering::Relaxed) - before;
    assert!(small * 20 < full_bytes, "reading small files moved {small}");

    let imgs: serde_json::Value =
        serde_json::from_str(&ok(&b, &["images", "--format", "json"])).expect("images JSON");
    assert_eq!(imgs[0]["Partial"]["LazyLayers"], 1, "{imgs}");
    assert!(
        imgs[0]["Partial"]["FetchedBytes"].as_u64().unwrap_or(0) > 0,
        "{imgs}"
    );

    // Same bytes as the full pull, for the docs file.
    let fmp = work.join("fm");
    ok(
        &full,
        &["mount", id.trim(), fmp.to_str().unwrap_or_default()],
    );
    mounts.push(fmp.clone());
    for f in ["usr/share/doc/README", "etc/hostname"] {
        assert_eq!(
            std::fs::read(mp.join(f)).expect("lazy read"),
            std::fs::read(fmp.join(f)).expect("full read"),
            "{f}"
        );
    }

    // Corrupt a chunk of other.bin in the registry's storage: EIO, never wrong data.
    let blob = lazy_blob_path(&reg, &blob_digest);
    let mut data = std::fs::read(&blob).expect("registry blob");
    let len = data.len();
    // other.bin's chunks lie after big.bin's (sorted tar order): flip bytes near the end,
    // before the TOC.
    let toc_off = {
        let f = &data[len - 51..];
        u64::from_str_radix(std::str::from_utf8(&f[16..32]).unwrap_or("0"), 16).unwrap_or(0)
            as usize
    };
    for i in (toc_off - 3_000_000..toc_off - 2_000_000).step_by(4096) {
        data[i] ^= 0x55;
    }
    std::fs::write(&blob, &data).expect("corrupt");
    let (r, _) = read_timed(&mp.join("usr/lib/other.bin"), Duration::from_secs(30));
    assert_eq!(r.err(), Some(libc::EIO), "a corrupt chunk must give EIO");
    // Undo: the next read succeeds and matches.
    for i in (toc_off - 3_000_000..toc_off - 2_000_000).step_by(4096) {
        data[i] ^= 0x55;
    }
    std::fs::write(&blob, &data).expect("restore");
    let good = std::fs::read(mp.join("usr/lib/other.bin")).expect("read after repair");
    assert_eq!(good, rng_bytes(6 << 20, 9));

    // The registry goes away: EIO within the bounded retries, the mount stays up, and the
    // next read after it comes back succeeds.
    proxy.down.store(true, Ordering::SeqCst);
    let (r, el) = read_timed(&mp.join("usr/lib/big.bin"), Duration::from_secs(40));
    assert_eq!(
        r.err(),
        Some(libc::EIO),
        "an unreachable registry must give EIO"
    );
    eprintln!("EIO after {el:?} with the registry gone");
    assert_eq!(
        std::fs::read_to_string(mp.join("etc/motd")).expect("cached file still reads"),
        motd
    );
    proxy.down.store(false, Ordering::SeqCst);
    let big = std::fs::read(mp.join("bin/big")).expect("read after the registry is back");
    assert_eq!(big, rng_bytes(24 << 20, 7));
    assert_eq!(
        big,
        std::fs::read(fmp.join("usr/lib/big.bin")).expect("full read")
    );

    // `run` serves the lazy layers the same way.
    if rootfs.join("bin/busybox").exists() {
        let out = ok(
            &b,
            &[
                "run",
                "--rm",
                "--lazy",
                id.trim(),
                "/bin/busybox",
                "cat",
                "/etc/motd",
            ],
        );
        assert_eq!(out, motd);
    }

    // A full pull of the same image into a lazy store completes the layer.
    let c = work.join("c");
    let mut args = vec!["pull", "--lazy"];
    args.extend(net);
    args.push(dest.as_str());
    ok(&c, &args);
    let mut args = vec!["pull"];
    args.extend(net);
    args.push(dest.as_str());
    ok(&c, &args);
    let fsck = ok(&c, &["fsck"]);
    assert!(
        fsck.contains("0 errors") && fsck.contains("1 layers"),
        "{fsck}"
    );

    // Background completion: a second lazy store, mounted with completion on.
    unmount_all(&b, &mounts);
    std::thread::sleep(Duration::from_millis(300));
    let mp2 = work.join("m2");
    ok(
        &b,
        &[
            "mount",
            "--lazy",
            id.trim(),
            mp2.to_str().unwrap_or_default(),
        ],
    );
    mounts = vec![mp2.clone(), fmp.clone()];
    let deadline = Instant::now() + Duration::from_secs(60);
    let layer_json = b
        .join("layers")
        .join(
            rec["diff_id"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("sha256:"),
        )
        .join("layer.json");
    while !layer_json.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let completed = layer_json.exists();
    unmount_all(&b, &mounts);
    unmount_all(&full, &[fmp]);
    assert!(completed, "the background fetch completes the layer");
    let fsck = ok(&b, &["fsck"]);
    assert!(
        fsck.contains("0 errors") && fsck.contains("1 layers"),
        "{fsck}"
    );
    assert!(
        b.join("blobs/sha256")
            .join(blob_digest.trim_start_matches("sha256:"))
            .exists()
    );

    // kill -9 of a daemon in the middle of its background fetch: fsck finds the store clean
    // and the layer mounts and reads again.
    let d = work.join("d");
    let mut args = vec!["pull", "--lazy"];
    args.extend(net);
    args.push(dest.as_str());
    ok(&d, &args);
    let mp3 = work.join("m3");
    ok(&d, &["mount", id.trim(), mp3.to_str().unwrap_or_default()]);
    // The prefetch list (etc/motd, before the landmark) is fetched without any read.
    let chunks = std::fs::read_dir(d.join("lazy"))
        .expect("lazy dir")
        .flatten()
        .map(|e| e.path().join("chunks"))
        .next()
        .expect("a lazy layer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = || std::fs::read_dir(&chunks).map(|r| r.count()).unwrap_or(0);
    while count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count(),
        1,
        "the one prefetch chunk is cached before any read"
    );
    let _ = std::fs::read(mp3.join("usr/lib/other.bin")).expect("read");
    let pids = lazy_daemons(&d);
    assert_eq!(pids.len(), 1, "one lazy daemon");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    );
    std::thread::sleep(Duration::from_millis(200));
    unmount_all(&d, &[mp3]);
    let fsck = ok(&d, &["fsck"]);
    assert!(fsck.contains("0 errors"), "{fsck}");
    let mp4 = work.join("m4");
    ok(&d, &["mount", id.trim(), mp4.to_str().unwrap_or_default()]);
    let again = std::fs::read(mp4.join("usr/lib/other.bin")).expect("read after kill");
    unmount_all(&d, &[mp4]);
    assert_eq!(again, rng_bytes(6 << 20, 9));
    rootless(&host, &net);
    let _ = std::fs::remove_dir_all(&work);
}

/// `strata ps -a` marks a container of a lazily pulled image as partial (text and JSON), as
/// `strata images` does the image, and no longer once a full pull completes the layer.
#[test]
fn ps_shows_a_container_of_a_lazy_image_as_partial_until_a_pull_completes_it() {
    if !ready() {
        return;
    }
    let work = tmpdir("lazy-ps");
    let reg = support::Registry::start(&work, None).expect("start docker-registry");
    let host = reg.host();
    let net = [
        "--tls-verify=false",
        "--authfile",
        "/nonexistent/strata-test-auth.json",
    ];
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/motd"), "partial\n").expect("write");
    std::fs::write(rootfs.join("etc/data.bin"), rng_bytes(3 << 20, 11)).expect("write");
    let a = work.join("a");
    ok(
        &a,
        &[
            "import",
            rootfs.to_str().unwrap_or_default(),
            "localhost/lazy-ps:1",
        ],
    );
    let dest = format!("{host}/test/lazy-ps:1");
    let mut args = vec!["push", "--compression", "estargz"];
    args.extend(net);
    args.extend(["localhost/lazy-ps:1", dest.as_str()]);
    ok(&a, &args);

    let b = work.join("b");
    let mut args = vec!["pull", "--lazy"];
    args.extend(net);
    args.push(dest.as_str());
    let id = ok(&b, &args);
    // A container of the lazy image, which reads a file (so some data is fetched), then is
    // unmounted and stays.
    let mp = work.join("m");
    let o = strata_env(
        &b,
        &[
            "mount",
            "--name",
            "lazy-ps-c",
            id.trim(),
            mp.to_str().unwrap_or_default(),
        ],
        &[("STRATA_LAZY_NO_COMPLETE", "1")],
    );
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let motd = std::fs::read_to_string(mp.join("etc/motd"));
    ok(&b, &["umount", "lazy-ps-c"]);
    unmount_all(&b, std::slice::from_ref(&mp));
    assert_eq!(motd.expect("read motd"), "partial\n");

    let row = |text: &str| {
        text.lines()
            .find(|l| l.contains("lazy-ps-c"))
            .unwrap_or_default()
            .to_string()
    };
    let table = ok(&b, &["ps", "-a"]);
    assert!(
        row(&table).contains("(partial: 1 lazy layers, ") && row(&table).contains(" fetched)"),
        "{table}"
    );
    let js: serde_json::Value =
        serde_json::from_str(&ok(&b, &["ps", "-a", "--format", "json"])).expect("ps JSON");
    let c = js
        .as_array()
        .and_then(|v| v.iter().find(|c| c["Name"] == "lazy-ps-c"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(c["Partial"]["LazyLayers"], 1, "{js}");
    assert!(
        c["Partial"]["FetchedBytes"].as_u64().unwrap_or(0) > 0,
        "{js}"
    );
    // The same numbers as `strata images` gives the image.
    let imgs: serde_json::Value =
        serde_json::from_str(&ok(&b, &["images", "--format", "json"])).expect("images JSON");
    assert_eq!(imgs[0]["Partial"], c["Partial"], "{imgs} vs {js}");

    // A full pull completes the layer: the container is no longer partial.
    let mut args = vec!["pull"];
    args.extend(net);
    args.push(dest.as_str());
    ok(&b, &args);
    let table = ok(&b, &["ps", "-a"]);
    assert!(
        row(&table).contains("lazy-ps-c") && !table.contains("partial"),
        "{table}"
    );
    let js: serde_json::Value =
        serde_json::from_str(&ok(&b, &["ps", "-a", "--format", "json"])).expect("ps JSON");
    assert!(
        js.as_array()
            .is_some_and(|v| v.iter().all(|c| c.get("Partial").is_none())),
        "{js}"
    );
    ok(&b, &["rm", "lazy-ps-c"]);
    assert!(ok(&b, &["fsck"]).contains("0 errors"));
    let _ = std::fs::remove_dir_all(&work);
}

/// The same lazy pull, mount and read as the unprivileged user `strata-test` (fusermount3
/// for both the lazy layer and the union), then `strata run` of the lazy image in the
/// user's namespaces (its command reads lazy files).
fn rootless(host: &str, net: &[&str]) {
    let exists = || {
        std::process::Command::new("id")
            .args(["-u", "strata-test"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        let _ = std::process::Command::new("useradd")
            .args(["-m", "-U", "-s", "/bin/sh", "strata-test"])
            .status();
    }
    // FUSE as a user needs the device open to all, as distributions ship it.
    let _ = std::fs::set_permissions(
        "/dev/fuse",
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    );
    if !exists() {
        {
            skip("rootless part: the user strata-test cannot be made");
            return;
        }
    }
    let dir = PathBuf::from(format!("/tmp/strata-lazy-rootless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("rootless dir");
    let bin = dir.join("strata");
    std::fs::copy(env!("CARGO_BIN_EXE_strata"), &bin).expect("copy strata");
    std::fs::write(dir.join("expected"), rng_bytes(6 << 20, 9)).expect("expected");
    let script = format!(
        "set -e; cd {d}; export XDG_RUNTIME_DIR={d}; S={d}/strata; \
         $S --root {d}/s pull -q --lazy {net} {host}/test/lazy:1 >/dev/null; \
         $S --root {d}/s mount {host}/test/lazy:1 {d}/m >/dev/null; \
         cat {d}/m/etc/motd; cmp {d}/m/usr/lib/other.bin {d}/expected && echo same; \
         stat -c %u {d}/m/usr/lib/other.bin; \
         $S --root {d}/s run --rm {host}/test/lazy:1 /bin/busybox sh -c \
         'cat /etc/motd.hard; cmp /usr/lib/big.bin /bin/big && echo run-same'",
        d = dir.display(),
        net = net.join(" "),
    );
    let _ = std::process::Command::new("chown")
        .args(["-R", "strata-test"])
        .arg(&dir)
        .status();
    let out = std::process::Command::new("su")
        .args(["strata-test", "-s", "/bin/sh", "-c", &script])
        .output()
        .expect("run as strata-test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mine: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir.to_string_lossy().as_ref()))
        .collect();
    mine.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mine {
        let _ = std::process::Command::new("umount")
            .args(["-l", m])
            .status();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "rootless lazy pull/mount: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text, "hello from a lazy layer\nsame\n0\nhello from a lazy layer\nrun-same\n",
        "rootless lazy read, then strata run of the lazy image"
    );
}

/// Builds the upstream Go helper of tests/fixtures/estargz-interop, or says why not.
fn go_helper(dir: &Path) -> Result<PathBuf, String> {
    let upstream = "/usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz";
    if !Path::new(upstream).join("estargz.go").exists() {
        return Err(format!("{upstream} is missing"));
    }
    let bin = dir.join("estargz-interop");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/estargz-interop/main.go");
    let out = std::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOPATH", "/usr/share/gocode")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .map_err(|e| format!("go is not usable: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

/// An eStargz layer made by upstream's Go writer, put in a registry with skopeo, pulled
/// lazily and mounted by strata: its files read back as in the source tar.
#[test]
fn upstream_estargz_mounts_lazily() {
    if !ready() {
        return;
    }
    let work = tmpdir("lazy-upstream");
    let bin = match go_helper(&work) {
        Ok(b) => b,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    // The source tar.
    let big = rng_bytes(3 << 20, 11);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("etc/", &b""[..], 0o755),
        ("etc/motd", &b"made by upstream\n"[..], 0o644),
        ("usr/", &b""[..], 0o755),
        ("usr/big", &big[..], 0o600),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if name.ends_with('/') {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).expect("tar entry");
    }
    let tar_path = work.join("layer.tar");
    std::fs::write(&tar_path, b.into_inner().expect("tar")).expect("write tar");
    // Upstream builds the eStargz blob.
    let layout = work.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    let blob_tmp = work.join("blob");
    let out = std::process::Command::new(&bin)
        .args([
            "build",
            tar_path.to_str().unwrap_or_default(),
            blob_tmp.to_str().unwrap_or_default(),
            "1048576",
        ])
        .output()
        .expect("run the Go helper");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    let blob = std::fs::read(&blob_tmp).expect("blob");
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = strata::oci::Digest::of(bytes);
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), bytes).expect("blob");
        (d.to_string(), bytes.len())
    };
    let (ld, ls) = put(&blob);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [v["diffID"]]},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).expect("config"));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls,
            "annotations": {"containerd.io/snapshot/stargz/toc.digest": v["tocDigest"]},
        }],
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).expect("manifest"));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index"),
    )
    .expect("index");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let reg = support::Registry::start(&work, None).expect("start docker-registry");
    let dest = format!("{}/test/upstream:1", reg.host());
    let pol = policy(&work);
    run(std::process::Command::new("skopeo")
        .arg("--policy")
        .arg(&pol)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{dest}")));
    let s = work.join("s");
    let id = ok(
        &s,
        &[
            "pull",
            "--lazy",
            "--tls-verify=false",
            "--authfile",
            "/nonexistent/a.json",
            &dest,
        ],
    );
    let lazy = std::fs::read_dir(s.join("lazy"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(lazy, 1, "upstream's layer is pulled lazily");
    assert!(
        !s.join("layers")
            .read_dir()
            .is_ok_and(|mut r| r.next().is_some()),
        "no layer unpacked"
    );
    let mp = work.join("m");
    let env = [("STRATA_LAZY_NO_COMPLETE", "1")];
    let o = strata_env(
        &s,
        &["mount", id.trim(), mp.to_str().unwrap_or_default()],
        &env,
    );
    assert!(
        o.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let motd = std::fs::read_to_string(mp.join("etc/motd"));
    let data = std::fs::read(mp.join("usr/big"));
    let landmark = mp.join(".no.prefetch.landmark").exists();
    unmount_all(&s, &[mp]);
    assert_eq!(motd.expect("read motd"), "made by upstream\n");
    assert!(
        data.expect("read big") == big,
        "usr/big reads as in the tar"
    );
    assert!(!landmark, "the landmark is hidden");
    let _ = std::fs::remove_dir_all(&work);
}
