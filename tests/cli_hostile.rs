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
