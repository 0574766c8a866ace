//! Measures pull time and bytes moved for a first image and a second image sharing its base,
//! direct and through a pull-through cache registry, and prints the figures quoted in
//! docs/scaling.md (`cargo test --test registry_measure -- --nocapture`).

#[path = "common/skip.rs"]
mod skip_rule;
#[path = "registry_support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Instant;
use strata::progress::NoProgress;
use strata::registry::{
    ClientOptions, PullOptions, PullResult, PushOptions, Reference, layout, pull, push,
};
use support::{Registry, TestImages, skip_reason};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn opts() -> PullOptions {
    PullOptions {
        client: ClientOptions {
            tls_verify: false,
            auth_file: Some("/nonexistent/strata-test-auth.json".into()),
            ..ClientOptions::default()
        },
        ..PullOptions::default()
    }
}

/// Pulls into `dest`, treating blobs already in `dest` as had; returns (result, seconds).
fn timed_pull(
    image: &str,
    mirror: Option<&str>,
    dest: &Path,
) -> Result<(PullResult, f64), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let have = |d: &strata::oci::Digest| layout::blob_path(dest, d).exists();
    let o = PullOptions {
        mirror: mirror.map(str::to_string),
        ..opts()
    };
    let res = pull(&Reference::parse(image)?, &o, dest, &have, &NoProgress)?;
    Ok((res, t.elapsed().as_secs_f64()))
}

/// Bytes of the config and layers of a pulled image, as stored in the layout.
fn blob_bytes(dir: &Path, res: &PullResult) -> Result<u64, Box<dyn std::error::Error>> {
    let mut n = 0;
    for d in res.layers.iter().chain([&res.config_digest]) {
        n += std::fs::metadata(layout::blob_path(dir, d))?.len();
    }
    Ok(n)
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / 1048576.0)
}

#[test]
fn measure_shared_base_direct_and_through_cache() -> TestResult {
    if let Some(why) = skip_reason() {
        skip_rule::skip(&why);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let upstream = Registry::start(tmp.path(), None)?;
    // base: busybox + 32 MiB of incompressible data in one layer; second: base + 8 MiB layer.
    let imgs = TestImages::build_with_base(tmp.path(), 8 << 20, 32 << 20)?;
    let up = upstream.host();
    imgs.skopeo_push("base", &format!("{up}/fleet/base:1"), None)?;
    imgs.skopeo_push("big", &format!("{up}/fleet/app:1"), None)?;
    let mut lines = Vec::new();

    // One node, straight from the registry.
    let node = tmp.path().join("node-direct");
    let (a, ta) = timed_pull(&format!("{up}/fleet/base:1"), None, &node)?;
    let (b, tb) = timed_pull(&format!("{up}/fleet/app:1"), None, &node)?;
    lines.push(format!(
        "direct, first image (base): {} layers fetched, {} over the wire, {ta:.3} s",
        a.downloaded.len() - 1,
        mib(a.bytes_downloaded)
    ));
    lines.push(format!(
        "direct, second image sharing the base: {} layer(s) skipped, {} over the wire, {tb:.3} s",
        b.skipped.len(),
        mib(b.bytes_downloaded)
    ));
    let t = Instant::now();
    push(
        &node,
        Some("1"),
        &Reference::parse(&format!("{up}/fleet/copy:1"))?,
        &PushOptions {
            client: opts().client,
            ..PushOptions::default()
        },
        &NoProgress,
    )?;
    lines.push(format!(
        "push of the second image to a new repository (every blob uploaded, {}): {:.3} s",
        mib(blob_bytes(&node, &b)?),
        t.elapsed().as_secs_f64()
    ));
    let t = Instant::now();
    push(
        &node,
        Some("1"),
        &Reference::parse(&format!("{up}/fleet/app:again"))?,
        &PushOptions {
            client: opts().client,
            ..PushOptions::default()
        },
        &NoProgress,
    )?;
    lines.push(format!(
        "push of the second image to a tag of the same repository (every blob present): {:.3} s",
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    push(
        &node,
        Some("1"),
        &Reference::parse(&format!("{up}/fleet/mounted:1"))?,
        &PushOptions {
            client: opts().client,
            mount_from: Some("fleet/app".into()),
        },
        &NoProgress,
    )?;
    lines.push(format!(
        "push of the second image to a new repository with cross-repository mount (0 bytes uploaded): {:.3} s",
        t.elapsed().as_secs_f64()
    ));

    // A pull-through cache in front of the registry; two nodes pull the second image.
    let cache = Registry::start_with(
        tmp.path(),
        None,
        &format!("proxy:\n  remoteurl: http://{up}\n"),
    )?;
    let ch = cache.host();
    let before = cache.stored_bytes();
    let (c1, t1) = timed_pull(
        &format!("{up}/fleet/app:1"),
        Some(&ch),
        &tmp.path().join("node-1"),
    )?;
    // The cache stores what it fetched upstream once the transfer completes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let filled = cache.stored_bytes() - before;
    let (c2, t2) = timed_pull(
        &format!("{up}/fleet/app:1"),
        Some(&ch),
        &tmp.path().join("node-2"),
    )?;
    let after = cache.stored_bytes() - before;
    lines.push(format!(
        "cache cold, node 1: {} to the node, {} stored by the cache from upstream, {t1:.3} s",
        mib(c1.bytes_downloaded),
        mib(filled)
    ));
    lines.push(format!(
        "cache warm, node 2: {} to the node, {} more from upstream, {t2:.3} s",
        mib(c2.bytes_downloaded),
        mib(after - filled)
    ));
    assert_eq!(c1.manifest_digest, c2.manifest_digest);
    assert_eq!(c1.manifest_digest, b.manifest_digest);
    assert!(b.bytes_downloaded < a.bytes_downloaded / 2);
    for l in &lines {
        println!("MEASURE {l}");
    }
    Ok(())
}
