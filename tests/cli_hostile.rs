//! Hostile layer tars: `..`, absolute paths, writes through a symlink, hardlinks out of the
//! layer, absurd sizes. Each is refused or neutralised with a clear message, nothing is
//! written outside the store, and a refused import leaves the store clean.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A raw tar entry: name (written byte for byte), type, link target, size, data.
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    size: u64,
    data: &'a [u8],
}

fn raw_tar(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_size(e.size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        size: data.len() as u64,
        data,
    }
}

fn import(work: &Path, name: &str, tar: &[u8]) -> (bool, String, PathBuf) {
    let root = work.join(format!("store-{name}"));
    let p = work.join(format!("{name}.tar"));
    std::fs::write(&p, tar).unwrap();
    let o = strata(
        &root,
        &["import", p.to_str().unwrap(), &format!("hostile:{name}")],
    );
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        root,
    )
}

fn assert_clean_and_empty(root: &Path) {
    assert!(ok(root, &["images", "-q"]).trim().is_empty());
    let f = ok(root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "staging left behind"
    );
}

#[test]
fn dotdot_is_refused() {
    let work = tmpdir("hostile-dotdot");
    let (okk, err, root) = import(&work, "dotdot", &raw_tar(&[file("../../escaped", b"x")]));
    assert!(!okk);
    assert!(err.contains("..") && err.contains("escaped"), "{err}");
    assert!(!work.join("escaped").exists() && !work.parent().unwrap().join("escaped").exists());
    assert_clean_and_empty(&root);
}

#[test]
fn absolute_path_is_neutralised_inside_the_layer() {
    let work = tmpdir("hostile-abs");
    let target = work.join("abs-target");
    let name = format!("{}/file", target.display());
    let (okk, err, root) = import(&work, "abs", &raw_tar(&[file(&name, b"inside")]));
    assert!(okk, "{err}");
    assert!(err.contains("absolute path made relative"), "{err}");
    assert!(!target.exists(), "wrote outside the store");
    let layers = image_layers(&root, "hostile:abs");
    let inside = layers[0].join(name.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"inside");
}

#[test]
fn write_through_symlink_is_refused() {
    let work = tmpdir("hostile-symlink");
    let outside = work.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let tar = raw_tar(&[
        Raw {
            name: "link",
            kind: tar::EntryType::Symlink,
            link: outside.to_str().unwrap(),
            size: 0,
            data: b"",
        },
        file("link/pwned", b"x"),
    ]);
    let (okk, err, root) = import(&work, "symlink", &tar);
    assert!(!okk);
    assert!(
        err.contains("link/pwned") && err.contains("symlink"),
        "{err}"
    );
    assert!(!outside.join("pwned").exists(), "wrote through a symlink");
    assert_clean_and_empty(&root);
    // A directory replaced by a symlink, then written into.
    let tar = raw_tar(&[
        Raw {
            name: "d/",
            kind: tar::EntryType::Directory,
            link: "",
            size: 0,
            data: b"",
        },
        Raw {
            name: "d",
            kind: tar::EntryType::Symlink,
            link: outside.to_str().unwrap(),
            size: 0,
            data: b"",
        },
        file("d/pwned2", b"x"),
    ]);
    let (okk, _, _) = import(&work, "symlink2", &tar);
    assert!(!okk);
    assert!(!outside.join("pwned2").exists());
}

#[test]
fn hardlink_outside_the_layer_is_refused() {
    let work = tmpdir("hostile-hardlink");
    let secret = work.join("secret");
    std::fs::write(&secret, "secret").unwrap();
    for (n, link) in [
        ("rel", "../../../../../../../../etc/passwd".to_string()),
        ("abs", secret.to_string_lossy().into_owned()),
    ] {
        let tar = raw_tar(&[Raw {
            name: "hl",
            kind: tar::EntryType::Link,
            link: &link,
            size: 0,
            data: b"",
        }]);
        let (okk, err, root) = import(&work, n, &tar);
        assert!(!okk, "{n}: hardlink accepted");
        assert!(err.contains("hardlink"), "{err}");
        assert_clean_and_empty(&root);
    }
    assert_eq!(std::fs::metadata(&secret).unwrap().len(), 6);
    // A hardlink inside the layer is fine.
    let tar = raw_tar(&[
        file("a", b"data"),
        Raw {
            name: "b",
            kind: tar::EntryType::Link,
            link: "a",
            size: 0,
            data: b"",
        },
    ]);
    let (okk, err, root) = import(&work, "inside", &tar);
    assert!(okk, "{err}");
    let l = &image_layers(&root, "hostile:inside")[0];
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(l.join("a")).unwrap().ino(),
        std::fs::metadata(l.join("b")).unwrap().ino()
    );
}

#[test]
fn absurd_size_is_refused() {
    let work = tmpdir("hostile-size");
    let tar = raw_tar(&[Raw {
        name: "huge",
        kind: tar::EntryType::Regular,
        link: "",
        size: 1 << 45,
        data: b"",
    }]);
    let (okk, err, root) = import(&work, "size", &tar);
    assert!(!okk);
    assert!(
        err.contains("huge") && err.contains("exceeds the limit"),
        "{err}"
    );
    assert_clean_and_empty(&root);
}

#[test]
fn archive_members_outside_the_archive_are_refused() {
    let work = tmpdir("hostile-archive");
    let manifest = br#"[{"Config":"../../etc/passwd","RepoTags":["x:y"],"Layers":[]}]"#;
    let tar = raw_tar(&[file("manifest.json", manifest)]);
    let p = work.join("a.tar");
    std::fs::write(&p, tar).unwrap();
    let root = work.join("store");
    let o = strata(&root, &["load", "-i", p.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("outside"), "{err}");
    assert_clean_and_empty(&root);
}

/// A tar built with the tar crate (GNU long names), entries (name bytes, type, data, mode).
fn gnu_tar(entries: &[(&[u8], tar::EntryType, &[u8], u32)]) -> Vec<u8> {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if matches!(kind, tar::EntryType::Block | tar::EntryType::Char) {
            h.set_device_major(8).unwrap();
            h.set_device_minor(1).unwrap();
        }
        b.append_data(&mut h, Path::new(OsStr::from_bytes(name)), *data)
            .unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn names_with_newlines_and_invalid_utf8_are_kept_byte_for_byte() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let work = tmpdir("hostile-names");
    let names: [&[u8]; 4] = [
        b"new\nline",
        b"\xff\xfe-not-utf8",
        b"tab\there",
        b"dir\n/x\r",
    ];
    let entries: Vec<_> = names
        .iter()
        .map(|n| (*n, tar::EntryType::Regular, &b"data"[..], 0o644))
        .collect();
    let (okk, err, root) = import(&work, "names", &gnu_tar(&entries));
    assert!(okk, "{err}");
    let layer = &image_layers(&root, "hostile:names")[0];
    for n in names {
        let p = layer.join(OsStr::from_bytes(n));
        assert_eq!(std::fs::read(&p).unwrap(), b"data", "{p:?}");
    }
    let f = ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
    // They survive a save as the same bytes.
    let out = work.join("names-saved.tar");
    ok(
        &root,
        &["save", "-o", out.to_str().unwrap(), "hostile:names"],
    );
    assert!(out.metadata().unwrap().len() > 0);
}

#[test]
fn ten_thousand_deep_directories_import_save_and_go_away() {
    let work = tmpdir("hostile-deep");
    let mut name = "d/".repeat(10_000).into_bytes();
    name.extend_from_slice(b"leaf");
    let tar = gnu_tar(&[(&name, tar::EntryType::Regular, b"deep", 0o644)]);
    let root = work.join("store-deep");
    let p = work.join("deep.tar");
    std::fs::write(&p, tar).unwrap();
    let saved = work.join("deep-saved.tar");
    let steps: [&[&str]; 5] = [
        &["import", p.to_str().unwrap(), "hostile:deep"],
        &["fsck"],
        &["save", "-o", saved.to_str().unwrap(), "hostile:deep"],
        &["rmi", "hostile:deep"],
        &["prune"],
    ];
    for args in steps {
        let o = strata(&root, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code().is_some(),
            "strata {args:?} died of a signal ({:?}): {err}",
            o.status
        );
        assert!(!err.contains("panicked"), "strata {args:?} panicked: {err}");
        eprintln!("strata {}: {:?} {}", args[0], o.status, err.trim());
        assert!(o.status.success(), "strata {args:?}: {err}");
        if args[0] == "import" {
            // The leaf is in the layer, 10,000 levels down (find walks by fd).
            let l = &image_layers(&root, "hostile:deep")[0];
            let o = std::process::Command::new("find")
                .arg(l)
                .args(["-name", "leaf", "-type", "f"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
        }
    }
    assert_clean_and_empty(&root);
}

#[test]
fn devices_and_setuid_are_neutralised_when_rootless() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    if !rustix::process::geteuid().is_root() || !have("setpriv") {
        common::skip("needs root (to switch to an unprivileged uid) and setpriv");
        return;
    }
    let work = tmpdir("hostile-rootless");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = work.join("nobody");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let tar = gnu_tar(&[
        (b"dev", tar::EntryType::Directory, b"", 0o755),
        (b"dev/sda1", tar::EntryType::Block, b"", 0o666),
        (b"dev/mem", tar::EntryType::Char, b"", 0o640),
        (b"suid", tar::EntryType::Regular, b"#!/bin/sh\n", 0o4755),
        (b"sgid", tar::EntryType::Regular, b"x", 0o2755),
    ]);
    let p = home.join("dev.tar");
    std::fs::write(&p, tar).unwrap();
    std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
    let root = home.join("store");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&root)
        .args(["import", p.to_str().unwrap(), "hostile:dev"])
        .env("HOME", &home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() && err.contains("xattr") {
        common::skip(&format!("user xattrs unsupported here: {err}"));
        return;
    }
    assert!(o.status.success(), "rootless import: {err}");
    let layer = &image_layers(&root, "hostile:dev")[0];
    for (name, kind) in [("dev/sda1", "block-8-1"), ("dev/mem", "char-8-1")] {
        let m = std::fs::symlink_metadata(layer.join(name)).unwrap();
        let ft = m.file_type();
        assert!(
            ft.is_file() && !ft.is_block_device() && !ft.is_char_device(),
            "{name} is a real device node in a rootless store"
        );
        let x = strata::image::fsutil::get_xattr(
            &layer.join(name),
            strata::image::fsutil::OVERRIDE_XATTR,
        )
        .unwrap()
        .expect("override xattr");
        let x = String::from_utf8_lossy(&x);
        assert!(x.ends_with(kind), "{name}: override {x}");
    }
    for (name, mode) in [("suid", "4755"), ("sgid", "2755")] {
        let m = std::fs::metadata(layer.join(name)).unwrap();
        assert_eq!(m.mode() & 0o6000, 0, "{name} is setuid/setgid on disk");
        let x = strata::image::fsutil::get_xattr(
            &layer.join(name),
            strata::image::fsutil::OVERRIDE_XATTR,
        )
        .unwrap()
        .expect("override xattr");
        assert_eq!(String::from_utf8_lossy(&x), format!("0:0:{mode}"));
    }
}

#[test]
fn a_zip_bomb_layer_takes_the_space_of_its_data() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let work = tmpdir("hostile-bomb");
    // 512 MiB of zeros in one file: about 0.5 MiB gzipped.
    let size: u64 = 512 << 20;
    let p = work.join("bomb.tar.gz");
    {
        let f = std::fs::File::create(&p).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "bomb", std::io::repeat(0).take(size))
            .unwrap();
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    use std::io::Read;
    let root = work.join("store-bomb");
    let o = strata(&root, &["import", p.to_str().unwrap(), "hostile:bomb"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let layer = &image_layers(&root, "hostile:bomb")[0];
    let m = std::fs::metadata(layer.join("bomb")).unwrap();
    assert_eq!(m.len(), size);
    assert!(
        m.blocks() * 512 < (1 << 20),
        "512 MiB of zeros take {} bytes on disk",
        m.blocks() * 512
    );
    let f = ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
}
