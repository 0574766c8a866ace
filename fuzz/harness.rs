//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`) and
//! by `tests/fuzz_smoke.rs`, which runs every committed seed and regression input through the
//! same functions on the stable toolchain.
//!
//! Each function takes arbitrary bytes, calls a strata entry point that reads untrusted input,
//! and asserts the properties that must hold whatever the input: no panic (any panic is a
//! finding), nothing written outside the scratch directory, paths the parsers hand back stay
//! inside the directory they were resolved against, and parsed names re-parse to themselves.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use strata::image::apply::{ApplyOptions, apply_layer};
use strata::image::{archive, compress, config::ImageConfig, docker_archive, oci_layout};
use strata::oci::{Platform, Reference};
use strata::registry::{auth, manifest};

/// Decompressed bytes a target reads at most (keeps a zstd or gzip bomb from filling the disk
/// of the machine that fuzzes).
const MAX_UNPACKED: u64 = 16 << 20;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the smoke test and the script.
pub const TARGETS: &[(&str, Target)] = &[
    ("layer_apply", layer_apply),
    ("archive_load", archive_load),
    ("docker_manifest", docker_manifest),
    ("oci_index", oci_index),
    ("image_config", image_config),
    ("registry_manifest", registry_manifest),
    ("www_authenticate", www_authenticate),
    ("auth_file", auth_file),
    ("reference", reference),
    ("mount_options", mount_options),
    ("estargz_blob", estargz_blob),
    ("estargz_toc", estargz_toc),
];

const VICTIM: &[u8] = b"must not change\n";

/// A scratch directory `outer/scratch` with a file `outer/victim` beside it: a hostile input
/// that escapes (`../victim`, `../x`) lands next to, or on, the victim.
struct Scratch {
    outer: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Option<Scratch> {
        let outer = tempfile::Builder::new()
            .prefix("strata-fuzz-")
            .tempdir()
            .ok()?;
        std::fs::create_dir(outer.path().join("scratch")).ok()?;
        std::fs::write(outer.path().join("victim"), VICTIM).ok()?;
        Some(Scratch { outer })
    }

    fn dir(&self) -> PathBuf {
        self.outer.path().join("scratch")
    }

    /// Nothing appeared beside the scratch directory and the victim is as it was.
    fn check_nothing_outside(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.outer.path())
            .expect("list the outer directory")
            .map(|e| {
                e.expect("outer entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["scratch", "victim"],
            "an entry escaped the scratch dir"
        );
        let victim = self.outer.path().join("victim");
        let meta = std::fs::symlink_metadata(&victim).expect("stat the victim");
        assert!(meta.is_file(), "the victim was replaced");
        assert_eq!(meta.nlink(), 1, "the victim was hard-linked from inside");
        assert_eq!(
            meta.mode() & 0o7777,
            0o644 & !umask(),
            "the victim's mode changed"
        );
        assert_eq!(
            std::fs::read(&victim).expect("read the victim"),
            VICTIM,
            "the victim was written"
        );
    }
}

fn umask() -> u32 {
    use std::sync::OnceLock;
    static MASK: OnceLock<u32> = OnceLock::new();
    *MASK.get_or_init(|| {
        // The mode std::fs::write gave a file, inverted: no need for the umask syscall.
        let Ok(d) = tempfile::tempdir() else {
            return 0o022;
        };
        let p = d.path().join("f");
        if std::fs::write(&p, b"").is_err() {
            return 0o022;
        }
        std::fs::metadata(&p).map_or(0o022, |m| 0o666 & !m.mode() & 0o777)
    })
}

/// Decompress (gzip, zstd or plain) at most [`MAX_UNPACKED`] bytes.
fn unpack(data: &[u8]) -> Option<Vec<u8>> {
    let (_, r) = compress::decompress(data).ok()?;
    let mut out = Vec::new();
    r.take(MAX_UNPACKED).read_to_end(&mut out).ok()?;
    Some(out)
}

/// `p` is `base` joined with normal components only.
fn assert_inside(base: &Path, p: &Path) {
    let rest = p
        .strip_prefix(base)
        .unwrap_or_else(|_| panic!("{} is not under {}", p.display(), base.display()));
    assert!(
        rest.components().all(|c| matches!(c, Component::Normal(_))),
        "{} leaves {}",
        p.display(),
        base.display()
    );
}

/// A layer tar (plain, gzip or zstd) applied into a scratch directory, rootless and as root.
pub fn layer_apply(data: &[u8]) {
    let Some(tar) = unpack(data) else { return };
    for rootless in [true, false] {
        let Some(s) = Scratch::new() else { return };
        let opts = ApplyOptions {
            rootless,
            max_entry_size: 1 << 20,
        };
        let _ = apply_layer(&tar[..], &s.dir(), &opts);
        s.check_nothing_outside();
    }
}

/// An image archive as `strata load` reads it: unpack into a scratch directory, detect the
/// format, read the images and parse their configs.
pub fn archive_load(data: &[u8]) {
    let Some(tar) = unpack(data) else { return };
    let Some(s) = Scratch::new() else { return };
    let dir = s.dir();
    if archive::extract(&tar[..], &dir, &mut |_| {}).is_ok() {
        let images = match archive::detect_format(&dir) {
            Ok(archive::Format::DockerArchive) => docker_archive::read(&dir),
            Ok(archive::Format::OciLayout) => oci_layout::read(&dir, "fuzz"),
            Err(_) => Ok(Vec::new()),
        };
        for img in images.into_iter().flatten() {
            for l in &img.layers {
                assert_inside(&dir, &l.path);
            }
            let _ = ImageConfig::parse(&img.config).map(|c| c.diff_ids());
        }
    }
    s.check_nothing_outside();
}

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]},"history":[{"created_by":"fuzz"}]}"#;

/// `manifest.json` of a docker-archive whose other members (`config.json`, `layer.tar`,
/// `blobs/sha256/...`) exist.
pub fn docker_manifest(data: &[u8]) {
    let Some(s) = Scratch::new() else { return };
    let dir = s.dir();
    let prepared = std::fs::write(dir.join("config.json"), CONFIG).is_ok()
        && std::fs::write(dir.join("layer.tar"), [0u8; 1024]).is_ok()
        && std::fs::write(dir.join("manifest.json"), data).is_ok();
    if !prepared {
        return;
    }
    if let Ok(images) = docker_archive::read(&dir) {
        for img in images {
            for l in &img.layers {
                assert_inside(&dir, &l.path);
            }
            for t in &img.tags {
                let again = strata::image::names::key(t).expect("a stored tag re-parses");
                assert_eq!(&again, t, "a stored tag is its own key");
            }
        }
    }
    s.check_nothing_outside();
}

/// The blobs of a small OCI layout: (digest hex, bytes).
fn oci_blobs() -> Vec<(String, Vec<u8>)> {
    use strata::oci::Digest;
    let layer = vec![0u8; 1024];
    let ld = Digest::of(&layer);
    let cd = Digest::of(CONFIG);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{ld}","size":1024}}]}}"#,
        CONFIG.len()
    );
    let md = Digest::of(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        manifest.len()
    );
    let id = Digest::of(index.as_bytes());
    vec![
        (ld.hex().to_string(), layer),
        (cd.hex().to_string(), CONFIG.to_vec()),
        (md.hex().to_string(), manifest.into_bytes()),
        (id.hex().to_string(), index.into_bytes()),
    ]
}

/// `index.json` of an OCI layout holding a nested index, a manifest, a config and a layer.
pub fn oci_index(data: &[u8]) {
    let Some(s) = Scratch::new() else { return };
    let dir = s.dir();
    let blobs = dir.join("blobs/sha256");
    if std::fs::create_dir_all(&blobs).is_err() {
        return;
    }
    for (hex, bytes) in oci_blobs() {
        if std::fs::write(blobs.join(hex), bytes).is_err() {
            return;
        }
    }
    let prepared = std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .is_ok()
        && std::fs::write(dir.join("index.json"), data).is_ok();
    if !prepared {
        return;
    }
    if let Ok(images) = oci_layout::read(&dir, "fuzz") {
        for img in images {
            for l in &img.layers {
                assert_inside(&dir, &l.path);
            }
        }
    }
    s.check_nothing_outside();
}

/// An image config: parse, diff IDs, write, and the written form parses the same.
pub fn image_config(data: &[u8]) {
    let Ok(c) = ImageConfig::parse(data) else {
        return;
    };
    let ids = c.diff_ids();
    let _ = c.raw("config");
    let Ok(bytes) = c.to_bytes() else { return };
    let again = ImageConfig::parse(&bytes).expect("a written config parses");
    assert_eq!(
        again.diff_ids().ok(),
        ids.ok(),
        "diff IDs change through a write"
    );
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
    Some("application/json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("text/html"),
];

/// A manifest or index as a registry serves it (the first byte picks the Content-Type).
pub fn registry_manifest(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[sel as usize % CONTENT_TYPES.len()];
    let Ok((_, m)) = manifest::parse(body, ct, "fuzz") else {
        return;
    };
    match m {
        manifest::Manifest::Index(idx) => {
            for p in ["linux/amd64", "linux/arm64/v8", "windows/amd64"] {
                if let Ok(want) = Platform::parse(p)
                    && let Ok(d) = manifest::select(&idx, &want, "fuzz")
                {
                    let _ = strata::oci::digest_of(d);
                }
            }
            for d in idx.manifests() {
                let _ = strata::oci::digest_of(d);
            }
        }
        manifest::Manifest::Image(im) => {
            let _ = strata::oci::digest_of(im.config());
            for l in im.layers() {
                let _ = strata::oci::digest_of(l);
            }
        }
    }
}

/// A `WWW-Authenticate` header value.
pub fn www_authenticate(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Some(auth::Challenge::Bearer { realm, .. }) = auth::parse_challenge(&s) {
        assert!(
            !realm.trim().is_empty(),
            "a Bearer challenge with an empty realm"
        );
        assert!(
            s.to_ascii_lowercase().contains("realm"),
            "a realm from nowhere"
        );
    }
}

/// An auth file (`auth.json` / `~/.docker/config.json`), looked up for a few registries.
pub fn auth_file(data: &[u8]) {
    let Ok(f) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::fs::write(f.path(), data).is_err() {
        return;
    }
    for (reg, repo) in [
        ("docker.io", "library/busybox"),
        ("localhost:5000", "a/b"),
        ("quay.io", ""),
    ] {
        let _ = auth::read_credentials(f.path(), reg, repo);
    }
    let s = String::from_utf8_lossy(data);
    let _ = auth::normalize_key(&s);
    if let Some(c) = auth::Credentials::decode(&s) {
        let again = auth::Credentials::decode(&c.encoded()).expect("encoded credentials decode");
        assert_eq!(again.username, c.username);
        assert_eq!(again.password, c.password);
    }
}

/// An image reference (and a platform string): what parses writes out as a reference that
/// parses to the same written form.
pub fn reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        let w = r.written();
        let again = Reference::parse(&w)
            .unwrap_or_else(|e| panic!("written form {w:?} of {s:?} does not parse: {e}"));
        assert_eq!(again.written(), w, "written form of {s:?} is not stable");
        assert_eq!(again.registry(), r.registry());
        assert_eq!(again.repository(), r.repository());
        assert_eq!(again.tag(), r.tag());
        assert_eq!(again.digest(), r.digest());
        let _ = r.api_host();
        let _ = r.manifest_ref();
        let _ = r.name();
    }
    let _ = Reference::parse_tag(s);
    let _ = Platform::parse(s);
}

/// strata-fuse's command line: `-o STRING MOUNTPOINT`, and NUL-separated extra arguments.
pub fn mount_options(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let mut args: Vec<String> = vec!["-o".into()];
    args.extend(s.split('\0').map(str::to_string));
    args.push("/mnt/fuzz".into());
    let _ = strata::fs::options::parse(&args, &mut |_| {});
    let _ = strata::fs::options::split_escaped(&s, ':');
    if let Some(o) = strata::fs::override_stat::parse(data) {
        let again =
            strata::fs::override_stat::parse(strata::fs::override_stat::format(&o).as_bytes());
        assert_eq!(again, Some(o), "override_stat round trip");
    }
}

/// Checks what an opened eStargz TOC promises whatever the blob: every node's path is clean
/// (relative, no `.`/`..`/empty component), a directory's children are the nodes named below it
/// (or hard links), every chunk lies before the TOC, and reading a file's chunks (each verified against its
/// chunkDigest) never yields more bytes than the chunk declares.
fn check_estargz(blob: &[u8], opened: &strata::estargz::blob::OpenedToc) {
    use strata::estargz::NodeKind;
    let idx = &opened.index;
    for (i, n) in idx.nodes.iter().enumerate() {
        if i == 0 {
            assert!(n.path.is_empty(), "root node named {:?}", n.path);
            continue;
        }
        assert!(
            !n.path.starts_with('/')
                && n.path
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
            "unclean node path {:?}",
            n.path
        );
    }
    for n in &idx.nodes {
        let NodeKind::Dir(children) = &n.kind else {
            continue;
        };
        for (name, &child) in children {
            let want = if n.path.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", n.path)
            };
            let c = &idx.nodes[child];
            // A hard-linked file is one node, named by its first path.
            assert!(
                c.path == want || (!matches!(c.kind, NodeKind::Dir(_)) && c.nlink > 1),
                "child {name} of {:?} is the node {:?}",
                n.path,
                c.path
            );
        }
    }
    let mut budget: u64 = MAX_UNPACKED;
    for c in &idx.chunks {
        assert!(
            c.offset <= c.end && c.end <= idx.toc_offset,
            "chunk {}..{} outside the blob's payload (TOC at {})",
            c.offset,
            c.end,
            idx.toc_offset
        );
        if budget < c.size {
            break;
        }
        budget -= c.size;
        let end = (c.fetch_end().min(blob.len() as u64)) as usize;
        let start = (c.offset as usize).min(end);
        if let Ok(data) = idx.decode_chunk(c, &blob[start..end]) {
            assert!(
                data.len() as u64 <= c.size,
                "chunk of {} bytes decoded to {}",
                c.size,
                data.len()
            );
        }
    }
}

/// A whole eStargz blob: footer, TOC member, TOC validation, then every chunk.
pub fn estargz_blob(data: &[u8]) {
    use strata::estargz::blob::open_toc;
    use strata::estargz::index::Whiteouts;
    for whiteouts in [Whiteouts::Raw, Whiteouts::Overlay("trusted.overlay.opaque")] {
        let mut read = |off: u64, len: u64| -> strata::estargz::Result<Vec<u8>> {
            let end = off.saturating_add(len).min(data.len() as u64) as usize;
            Ok(data[(off as usize).min(end)..end].to_vec())
        };
        if let Ok(opened) = open_toc("fuzz", data.len() as u64, None, whiteouts, &mut read) {
            check_estargz(data, &opened);
        }
    }
}

/// TOC JSON (`stargz.index.json`), wrapped into a TOC member and footer after a payload of
/// one gzip member, so that every input reaches the TOC's validation.
pub fn estargz_toc(data: &[u8]) {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let payload = {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        if gz.write_all(b"hello estargz\n").is_err() {
            return;
        }
        match gz.finish() {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    let member = {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        {
            let mut ar = tar::Builder::new(&mut gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            if ar.append_data(&mut h, "stargz.index.json", data).is_err() || ar.finish().is_err() {
                return;
            }
        }
        match gz.finish() {
            Ok(b) => b,
            Err(_) => return,
        }
    };
    let mut blob = payload;
    let toc_offset = blob.len() as u64;
    blob.extend_from_slice(&member);
    blob.extend_from_slice(&strata::estargz::footer_bytes(toc_offset));
    estargz_blob(&blob);
}
