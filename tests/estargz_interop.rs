//! eStargz interop with the upstream Go library (containerd/stargz-snapshotter `estargz`,
//! Debian's golang-github-containerd-stargz-snapshotter-dev, built in GOPATH mode): a blob
//! built by upstream reads identically in strata, and a blob strata wrote passes upstream's
//! TOC and chunk verification with the same listing.

#[path = "common/skip.rs"]
mod skip_rule;

use sha2::{Digest as _, Sha256};
use skip_rule::skip;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use strata::estargz::blob::LocalBlob;
use strata::estargz::index::{NodeKind, Whiteouts};
use strata::estargz::{WriteOptions, write_estargz};
use strata::oci::Digest;

const GOPATH: &str = "/usr/share/gocode";
const UPSTREAM: &str = "/usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz";

fn tmp(name: &str) -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("estargz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create tmp dir");
    d
}

/// Builds the Go helper, or says why it cannot be built.
fn go_helper(dir: &Path) -> Result<PathBuf, String> {
    if Command::new("go").arg("version").output().is_err() {
        return Err("go is not installed (apt-get install golang-go)".into());
    }
    if !Path::new(UPSTREAM).join("estargz.go").exists() {
        return Err(format!(
            "{UPSTREAM} is missing (apt-get install golang-github-containerd-stargz-snapshotter-dev)"
        ));
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/estargz-interop/main.go");
    let bin = dir.join("estargz-interop");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build of the interop helper failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bin)
}

fn go(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run the Go helper");
    assert!(
        out.status.success(),
        "estargz-interop {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// name, type, content, link target, mode.
type Entry<'a> = (&'a str, tar::EntryType, Vec<u8>, Option<&'a str>, u32);

fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let entries: Vec<Entry> = vec![
        ("etc/", tar::EntryType::Directory, vec![], None, 0o755),
        (
            "etc/hostname",
            tar::EntryType::Regular,
            b"box\n".to_vec(),
            None,
            0o644,
        ),
        (
            "etc/motd",
            tar::EntryType::Regular,
            b"hello from a layer\n".to_vec(),
            None,
            0o600,
        ),
        ("usr/", tar::EntryType::Directory, vec![], None, 0o755),
        ("usr/bin/", tar::EntryType::Directory, vec![], None, 0o755),
        ("usr/bin/tool", tar::EntryType::Regular, big, None, 0o4755),
        (
            "usr/bin/empty",
            tar::EntryType::Regular,
            vec![],
            None,
            0o644,
        ),
        (
            "usr/bin/sh",
            tar::EntryType::Symlink,
            vec![],
            Some("tool"),
            0o777,
        ),
        (
            "usr/bin/tool2",
            tar::EntryType::Link,
            vec![],
            Some("usr/bin/tool"),
            0o4755,
        ),
        ("tmp/", tar::EntryType::Directory, vec![], None, 0o1777),
    ];
    for (name, kind, data, link, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(if name.starts_with("etc") { 0 } else { 1000 });
        h.set_gid(50);
        h.set_mtime(1_650_000_000);
        match link {
            Some(l) => b.append_link(&mut h, name, l).expect("link"),
            None => b.append_data(&mut h, name, &data[..]).expect("entry"),
        }
    }
    b.into_inner().expect("tar")
}

/// strata's listing of a blob, in the Go helper's format.
fn listing(blob: &LocalBlob) -> Vec<String> {
    let idx = &blob.toc.index;
    let mut lines = Vec::new();
    let mut stack = vec![(String::new(), 0usize)];
    while let Some((path, id)) = stack.pop() {
        let NodeKind::Dir(children) = &idx.nodes[id].kind else {
            continue;
        };
        for (name, &c) in children {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let n = &idx.nodes[c];
            let (kind, size, link, sum) = match &n.kind {
                NodeKind::Dir(_) => ("dir", String::new(), String::new(), String::new()),
                NodeKind::Reg(_) => {
                    let data = blob.read_file(c).expect("read file");
                    assert_eq!(data.len() as u64, n.size);
                    (
                        "reg",
                        n.size.to_string(),
                        String::new(),
                        hex::encode(Sha256::digest(&data)),
                    )
                }
                NodeKind::Symlink(t) => ("symlink", String::new(), t.clone(), String::new()),
                NodeKind::Char(..) => ("char", String::new(), String::new(), String::new()),
                NodeKind::Block(..) => ("block", String::new(), String::new(), String::new()),
                NodeKind::Fifo => ("fifo", String::new(), String::new(), String::new()),
            };
            lines.push(format!(
                "{p} {kind} {size} {:o} {} {} {} {link} {sum}",
                n.mode, n.uid, n.gid, n.mtime
            ));
            stack.push((p, c));
        }
    }
    lines.sort();
    lines
}

fn gunzip_digest(path: &Path) -> Digest {
    let f = std::fs::File::open(path).expect("open blob");
    let mut d = flate2::read::MultiGzDecoder::new(f);
    let mut all = Vec::new();
    d.read_to_end(&mut all).expect("gunzip blob");
    Digest::of(&all)
}

#[test]
fn upstream_and_strata_read_each_others_blobs() {
    let dir = tmp("interop");
    let bin = match go_helper(&dir) {
        Ok(b) => b,
        Err(why) => {
            skip(&why);
            return;
        }
    };
    let tar_path = dir.join("layer.tar");
    std::fs::write(&tar_path, sample_tar()).expect("write tar");

    // (a) upstream builds, strata reads.
    let up = dir.join("upstream.blob");
    let out = go(
        &bin,
        &[
            "build",
            tar_path.to_str().unwrap_or_default(),
            up.to_str().unwrap_or_default(),
            "65536",
            "etc/motd",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("helper JSON");
    let toc = Digest::parse(v["tocDigest"].as_str().unwrap_or_default()).expect("toc digest");
    let diff = Digest::parse(v["diffID"].as_str().unwrap_or_default()).expect("diff id");
    assert_eq!(
        gunzip_digest(&up),
        diff,
        "upstream's diffID is the gunzipped blob's sha256"
    );
    let ours = LocalBlob::open("upstream", &up, Some(&toc), Whiteouts::Raw)
        .expect("strata reads upstream's blob");
    assert!(
        ours.toc.index.prefetch_end.is_some(),
        "upstream put a prefetch landmark"
    );
    let theirs = go(
        &bin,
        &["verify", up.to_str().unwrap_or_default(), toc.as_str()],
    );
    let theirs: Vec<String> = theirs.lines().map(str::to_string).collect();
    let mine = listing(&ours);
    assert_eq!(
        mine, theirs,
        "strata and upstream list upstream's blob alike"
    );
    assert!(
        mine.iter()
            .any(|l| l.starts_with("usr/bin/tool reg 200000 4755 1000 50")),
        "{mine:#?}"
    );
    // The wrong annotation is refused.
    assert!(LocalBlob::open("upstream", &up, Some(&Digest::of(b"x")), Whiteouts::Raw).is_err());

    // (b) strata writes, upstream reads and verifies every chunk.
    let st = dir.join("strata.blob");
    let mut f = std::fs::File::create(&st).expect("create blob");
    let w = write_estargz(
        std::fs::File::open(&tar_path).expect("open tar"),
        &mut f,
        &WriteOptions {
            chunk_size: 65536,
            prefetch: vec!["etc/motd".to_string()],
            level: 6,
        },
    )
    .expect("strata writes eStargz");
    drop(f);
    assert_eq!(gunzip_digest(&st), w.diff_id);
    let theirs = go(
        &bin,
        &[
            "verify",
            st.to_str().unwrap_or_default(),
            w.toc_digest.as_str(),
        ],
    );
    let theirs: Vec<String> = theirs.lines().map(str::to_string).collect();
    let back = LocalBlob::open("strata", &st, Some(&w.toc_digest), Whiteouts::Raw).expect("reopen");
    assert_eq!(
        listing(&back),
        theirs,
        "upstream lists strata's blob as strata does"
    );
    assert_eq!(listing(&back), mine, "both blobs hold the same tree");
    let _ = std::fs::remove_dir_all(&dir);
}
