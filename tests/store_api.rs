//! The library API the registry client uses: `put_blob`, `import_images` with layers already
//! in the blob store, zstd layers in an OCI layout, and deterministic layer tars.

mod common;
use common::*;
use std::io::Read;
use strata::image::exchange::{SourceImage, SourceLayer};
use strata::image::names;
use strata::oci::{Digest, ImageIndex, ImageManifest, MediaType};
use strata::progress::NoProgress;
use strata::store::Store;

fn blob(dir: &std::path::Path, d: impl AsRef<str>) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(d.as_ref().trim_start_matches("sha256:"))
}

fn digest(d: &strata::oci::Descriptor) -> Digest {
    strata::oci::digest_of(d).unwrap()
}

#[test]
fn zstd_layers_and_put_blob_then_import_images() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("api");
    // An OCI layout whose layers are recompressed with zstd.
    let src = fx.join("img.oci");
    let oci = work.join("zstd.oci");
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&oci));
    let idx: ImageIndex =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let d0 = &idx.manifests()[0];
    let mut m: ImageManifest =
        serde_json::from_slice(&std::fs::read(blob(&oci, d0.digest())).unwrap()).unwrap();
    let mut zlayers = m.layers().clone();
    for l in &mut zlayers {
        let gz = std::fs::File::open(blob(&oci, l.digest())).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut raw)
            .unwrap();
        let z = zstd::encode_all(&raw[..], 3).unwrap();
        let d = Digest::of(&z);
        std::fs::write(blob(&oci, d.as_str()), &z).unwrap();
        l.set_digest(d.to_oci().unwrap());
        l.set_size(z.len() as u64);
        l.set_media_type(MediaType::ImageLayerZstd);
    }
    m.set_layers(zlayers);
    let mb = serde_json::to_vec(&m).unwrap();
    let md = Digest::of(&mb);
    std::fs::write(blob(&oci, md.as_str()), &mb).unwrap();
    let mut d = d0.clone();
    d.set_digest(md.to_oci().unwrap());
    d.set_size(mb.len() as u64);
    let mut idx2 = ImageIndex::default();
    idx2.set_manifests(vec![d]);
    std::fs::write(oci.join("index.json"), serde_json::to_vec(&idx2).unwrap()).unwrap();

    let root = work.join("store");
    let store = Store::open(&root).unwrap();
    let loaded = store.import_oci_layout(&oci, "zst", &NoProgress).unwrap();
    assert_eq!(loaded[0].tags, vec!["zst:two".to_string()]);
    let theirs = tree(&umoci_rootfs(&src, "two", &work.join("bundle")));
    assert_eq!(union_tree(&image_layers(&root, "zst:two")), theirs);
    assert!(
        loaded[0]
            .image
            .layers
            .iter()
            .all(|l| l.media_type.as_ref().ends_with("+zstd"))
    );

    // Registry-style: blobs go in first (verified), then the image is imported from them.
    let root2 = work.join("store2");
    let s2 = Store::open(&root2).unwrap();
    let config = std::fs::read(blob(&oci, m.config().digest())).unwrap();
    let bad = s2.put_blob(&b"not the layer"[..], &digest(&m.layers()[0]));
    assert!(bad.is_err(), "put_blob accepted wrong content");
    let mut layers = Vec::new();
    for l in m.layers() {
        let dg = digest(l);
        let p = s2
            .put_blob(std::fs::File::open(blob(&oci, &dg)).unwrap(), &dg)
            .unwrap();
        assert!(s2.has_blob(&dg) && p == s2.blob_path(&dg));
        layers.push(SourceLayer {
            path: p,
            name: dg.to_string(),
            digest: Some(dg),
            size: Some(l.size()),
            media_type: Some(l.media_type().clone()),
        });
    }
    let src_img = SourceImage {
        config: config.clone(),
        config_digest: Some(digest(m.config())),
        manifest: Some(mb.clone()),
        tags: vec![names::key("registry.example/x/y:1").unwrap()],
        layers,
        repo_digests: vec![format!("registry.example/x/y@{md}")],
    };
    let got = s2.import_images(vec![src_img], &NoProgress).unwrap();
    assert_eq!(got[0].image.manifest_digest, md);
    let ins: serde_json::Value =
        serde_json::from_str(&ok(&root2, &["inspect", "registry.example/x/y:1"])).unwrap();
    assert_eq!(
        ins[0]["RepoDigests"][0],
        format!("registry.example/x/y@{md}")
    );
    assert!(ok(&root2, &["fsck"]).contains("clean"));
    // A layer that does not match the config's diff ID is refused, naming it.
    let mut wrong = m.layers().clone();
    wrong.swap(0, 1);
    let img = SourceImage {
        config,
        config_digest: None,
        manifest: None,
        tags: vec!["swapped:1".into()],
        layers: wrong
            .iter()
            .map(|l| SourceLayer {
                path: blob(&oci, l.digest()),
                name: l.digest().to_string(),
                digest: None,
                size: None,
                media_type: None,
            })
            .collect(),
        repo_digests: vec![],
    };
    let err = Store::open(&work.join("store3"))
        .unwrap()
        .import_images(vec![img], &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(wrong[0].digest().as_ref()) && err.contains("diff ID"),
        "{err}"
    );
}

#[test]
fn layer_tar_is_deterministic() {
    let work = tmpdir("determinism");
    let mk = |d: &std::path::Path, order: &[&str]| {
        for n in order {
            std::fs::create_dir_all(d.join("dir")).unwrap();
            std::fs::write(d.join(n), n.as_bytes()).unwrap();
        }
        for n in order {
            set_times(&d.join(n), rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
        }
        set_times(&d.join("dir"), rustix::fs::AtFlags::empty());
    };
    let (a, b) = (work.join("a"), work.join("b"));
    mk(&a, &["dir/z", "dir/a", "dir/m", "top"]);
    mk(&b, &["top", "dir/m", "dir/a", "dir/z"]);
    let da = strata::store::commit::layer_digest_of(&a, true).unwrap();
    let db = strata::store::commit::layer_digest_of(&b, true).unwrap();
    assert_eq!(da, db);
    assert_eq!(
        da,
        strata::store::commit::layer_digest_of(&a, true).unwrap()
    );
}

/// A pulled layout lacks the layer blobs the store said it had (`has_blob`); importing it
/// reads those from the store and records the repo digest.
#[test]
fn import_pulled_layout_without_the_blobs_the_store_has() {
    let Some(fx) = fixtures() else { return };
    let work = tmpdir("pulled");
    let root = work.join("store");
    let store = Store::open(&root).unwrap();
    // The store has image one (bottom layer, same gzip blob as in image two).
    let src = fx.join("img.oci");
    store.import_oci_layout(&src, "img", &NoProgress).unwrap();
    ok(&root, &["rmi", "img:two"]);
    // A "pulled" layout of image two without the blobs the store has.
    let pulled = work.join("pulled");
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&pulled));
    let idx: ImageIndex =
        serde_json::from_slice(&std::fs::read(pulled.join("index.json")).unwrap()).unwrap();
    let two = idx
        .manifests()
        .iter()
        .find(|d| d.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"] == "two")
        .unwrap()
        .clone();
    let m: ImageManifest =
        serde_json::from_slice(&std::fs::read(blob(&pulled, two.digest())).unwrap()).unwrap();
    let mut skipped = 0;
    for l in m.layers() {
        if store.has_blob(&digest(l)) {
            std::fs::remove_file(blob(&pulled, l.digest())).unwrap();
            skipped += 1;
        }
    }
    assert_eq!(skipped, 1);
    let mut d = two.clone();
    let mut ann = d.annotations().clone().unwrap();
    ann.insert(
        "io.containerd.image.name".into(),
        "registry.example/lib/test:two".into(),
    );
    d.set_annotations(Some(ann));
    let mut idx2 = ImageIndex::default();
    idx2.set_manifests(vec![d]);
    std::fs::write(
        pulled.join("index.json"),
        serde_json::to_vec(&idx2).unwrap(),
    )
    .unwrap();
    let md = digest(&two);
    let got = store
        .import_pulled_layout(&pulled, "registry.example/lib/test:two", &md, &NoProgress)
        .unwrap();
    assert_eq!(
        got[0].tags,
        vec!["registry.example/lib/test:two".to_string()]
    );
    let ins: serde_json::Value =
        serde_json::from_str(&ok(&root, &["inspect", "registry.example/lib/test:two"])).unwrap();
    assert_eq!(
        ins[0]["RepoDigests"],
        serde_json::json!([format!("registry.example/lib/test@{md}")])
    );
    let theirs = tree(&umoci_rootfs(&src, "two", &work.join("bundle")));
    assert_eq!(
        union_tree(&image_layers(&root, "registry.example/lib/test:two")),
        theirs
    );
    assert!(ok(&root, &["fsck"]).contains("clean"));
}

/// Set both times of `p` to 1000 s after the epoch.
fn set_times(p: &std::path::Path, flags: rustix::fs::AtFlags) {
    let t = rustix::fs::Timespec {
        tv_sec: 1000,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, p, &times, flags).unwrap();
}
