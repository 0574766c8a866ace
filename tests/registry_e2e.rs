//! End-to-end tests of the registry client against a real `docker-registry` on 127.0.0.1,
//! with images built by umoci and pushed or read back by skopeo.

#[path = "common/skip.rs"]
mod skip_rule;
#[path = "registry_support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use strata::oci::Digest;
use strata::progress::{NoProgress, Progress};
use strata::registry::auth::Credentials;
use strata::registry::layout;
use strata::registry::{
    ClientOptions, Error, PullOptions, PushOptions, Reference, login, pull, push,
};
use support::{Events, Registry, TestImages, hash_ok, run, skip_reason};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn insecure() -> ClientOptions {
    ClientOptions {
        tls_verify: false,
        // Never read the developer's own credentials files.
        auth_file: Some("/nonexistent/strata-test-auth.json".into()),
        ..ClientOptions::default()
    }
}

fn pull_opts(client: ClientOptions) -> PullOptions {
    PullOptions {
        client,
        ..PullOptions::default()
    }
}

fn r(s: &str) -> Result<Reference, Error> {
    Ok(Reference::parse(s)?)
}

fn never(_: &Digest) -> bool {
    false
}

#[test]
fn pull_then_push_round_trip() -> TestResult {
    if let Some(why) = skip_reason() {
        skip_rule::skip(&why);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let reg = Registry::start(tmp.path(), None)?;
    let imgs = TestImages::build(tmp.path(), 0)?;
    let host = reg.host();
    imgs.skopeo_push("base", &format!("{host}/test/busybox:1"), None)?;
    imgs.skopeo_push("app", &format!("{host}/test/app:1"), None)?;

    // Our pull writes a layout umoci and skopeo read.
    let l1 = tmp.path().join("l1");
    let events = Events::default();
    let res = pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &pull_opts(insecure()),
        &l1,
        &never,
        &events,
    )?;
    assert_eq!(res.ref_name, "1");
    assert_eq!(res.layers.len(), 1);
    assert_eq!(res.downloaded.len(), 2, "config and layer: {res:?}");
    let src_digest = support::skopeo_digest(&format!("docker://{host}/test/busybox:1"))?;
    assert_eq!(res.manifest_digest, src_digest);
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:1", l1.display()),
            &tmp.path().join("bundle").display().to_string(),
        ],
    )?;
    assert!(tmp.path().join("bundle/rootfs/bin/busybox").is_file());
    assert_eq!(
        support::skopeo_digest(&format!("oci:{}:1", l1.display()))?,
        src_digest
    );

    // A second pull where the caller has every layer downloads no layer.
    let l2 = tmp.path().join("l2");
    let events = Events::default();
    let have_all = |_: &Digest| true;
    let res2 = pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &pull_opts(insecure()),
        &l2,
        &have_all,
        &events,
    )?;
    assert_eq!(res2.skipped, res.layers);
    assert_eq!(res2.downloaded, vec![res.config_digest.clone()]);
    assert!(events.has("exists", res.layers[0].as_str()));
    // Again into the same layout: nothing at all is fetched but the manifest.
    let res3 = pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &pull_opts(insecure()),
        &l1,
        &never,
        &NoProgress,
    )?;
    assert!(res3.downloaded.is_empty(), "{res3:?}");

    // The derived image shares the base layer: only its new layer comes over the wire.
    let in_l1 = |d: &Digest| layout::blob_path(&l1, d).exists();
    let app = pull(
        &r(&format!("{host}/test/app:1"))?,
        &PullOptions {
            ref_name: Some("app".into()),
            ..pull_opts(insecure())
        },
        &l1,
        &in_l1,
        &NoProgress,
    )?;
    assert_eq!(app.layers.len(), 2);
    assert_eq!(app.skipped, vec![res.layers[0].clone()]);
    assert_eq!(app.downloaded.len(), 2, "config and the new layer: {app:?}");

    // Two pulls into one layout at once: each blob is downloaded by one, both succeed.
    let l3 = tmp.path().join("l3");
    let app_ref = r(&format!("{host}/test/app:1"))?;
    std::thread::scope(|s| -> TestResult {
        let a = s.spawn(|| pull(&app_ref, &pull_opts(insecure()), &l3, &never, &NoProgress));
        let b = s.spawn(|| pull(&app_ref, &pull_opts(insecure()), &l3, &never, &NoProgress));
        let (a, b) = (
            a.join().map_err(|_| "panic")??,
            b.join().map_err(|_| "panic")??,
        );
        assert_eq!(a.manifest_digest, b.manifest_digest);
        Ok(())
    })?;
    let leftovers: Vec<_> = std::fs::read_dir(l3.join("blobs/sha256"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:1", l3.display()),
            &tmp.path().join("bundle3").display().to_string(),
        ],
    )?;
    assert!(tmp.path().join("bundle3/rootfs/app.txt").is_file());

    // Our push to another repository; skopeo reads it and agrees on the digest.
    let events = Events::default();
    let pushed = push(
        &l1,
        Some("1"),
        &r(&format!("{host}/test/other:1"))?,
        &PushOptions {
            client: insecure(),
            ..PushOptions::default()
        },
        &events,
    )?;
    assert_eq!(pushed, src_digest);
    assert_eq!(
        support::skopeo_digest(&format!("docker://{host}/test/other:1"))?,
        pushed
    );
    let out = tmp.path().join("out");
    run(
        "skopeo",
        &[
            "--policy",
            &imgs.policy(),
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/test/other:1"),
            &format!("oci:{}:x", out.display()),
        ],
    )?;
    assert!(events.count("start") == 2, "{:?}", events.lines());

    // Pushing again skips every blob.
    let events = Events::default();
    let again = push(
        &l1,
        Some("1"),
        &r(&format!("{host}/test/other:1"))?,
        &PushOptions {
            client: insecure(),
            ..PushOptions::default()
        },
        &events,
    )?;
    assert_eq!(again, pushed);
    assert_eq!(events.count("start"), 0, "{:?}", events.lines());
    assert_eq!(events.count("exists"), 2);

    // Cross-repository mount: nothing uploaded when the blobs are in another repository.
    let events = Events::default();
    let mounted = push(
        &l1,
        Some("1"),
        &r(&format!("{host}/test/mounted:1"))?,
        &PushOptions {
            client: insecure(),
            mount_from: Some("test/busybox".into()),
        },
        &events,
    )?;
    assert_eq!(mounted, pushed);
    let mounts = events
        .lines()
        .iter()
        .filter(|l| l.contains("Mounted from test/busybox"))
        .count();
    assert_eq!(mounts, 2, "{:?}", events.lines());
    assert_eq!(
        support::skopeo_digest(&format!("docker://{host}/test/mounted:1"))?,
        pushed
    );

    // A derived image pushed next to its base uploads only its new layer (and config).
    let events = Events::default();
    push(
        &l1,
        Some("app"),
        &r(&format!("{host}/test/other:app"))?,
        &PushOptions {
            client: insecure(),
            ..PushOptions::default()
        },
        &events,
    )?;
    assert_eq!(events.count("start"), 2, "{:?}", events.lines());
    assert!(events.has("exists", res.layers[0].as_str()));
    Ok(())
}

#[test]
fn htpasswd_registry_auth() -> TestResult {
    if let Some(why) = skip_reason() {
        skip_rule::skip(&why);
        return Ok(());
    }
    if !support::have("htpasswd") {
        skip_rule::skip("htpasswd (apache2-utils) is not installed");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let reg = Registry::start(tmp.path(), Some(("alice", "wonderland")))?;
    let imgs = TestImages::build(tmp.path(), 0)?;
    let host = reg.host();
    imgs.skopeo_push(
        "base",
        &format!("{host}/test/busybox:1"),
        Some("alice:wonderland"),
    )?;
    let auth_file = tmp.path().join("auth/auth.json");
    let opts = ClientOptions {
        auth_file: Some(auth_file.clone()),
        ..insecure()
    };

    let wrong = Credentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    let e = login(&host, &wrong, &opts)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("wrong username or password") && e.contains(&host),
        "{e}"
    );
    assert!(!auth_file.exists());

    let anon = pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &pull_opts(opts.clone()),
        &tmp.path().join("anon"),
        &never,
        &NoProgress,
    );
    let e = anon.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("requires authentication") && e.contains("strata login"),
        "{e}"
    );

    let right = Credentials {
        username: "alice".into(),
        password: "wonderland".into(),
    };
    let written = login(&host, &right, &opts)?;
    assert_eq!(
        written,
        strata::registry::auth::StoredIn::File(auth_file.clone())
    );
    let l = tmp.path().join("l");
    let res = pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &pull_opts(opts.clone()),
        &l,
        &never,
        &NoProgress,
    )?;
    assert_eq!(res.layers.len(), 1);
    let d = push(
        &l,
        None,
        &r(&format!("{host}/test/pushed:1"))?,
        &PushOptions {
            client: opts.clone(),
            ..PushOptions::default()
        },
        &NoProgress,
    )?;
    assert_eq!(d, res.manifest_digest);

    // Anonymous push is refused with a clear message.
    let e = push(
        &l,
        None,
        &r(&format!("{host}/test/anon:1"))?,
        &PushOptions {
            client: insecure(),
            ..PushOptions::default()
        },
        &NoProgress,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("requires authentication for push of test/anon"),
        "{e}"
    );
    // Wrong credentials from the file: the one-line wrong-credentials message.
    strata::registry::auth::store_credentials(&auth_file, &host, &wrong)?;
    let e = push(
        &l,
        None,
        &r(&format!("{host}/test/pushed:2"))?,
        &PushOptions {
            client: opts.clone(),
            ..PushOptions::default()
        },
        &NoProgress,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("wrong username or password"), "{e}");
    assert!(strata::registry::logout(&host, Some(&auth_file))?);
    Ok(())
}

#[test]
fn missing_tag_and_unreachable_registry() -> TestResult {
    if let Some(why) = skip_reason() {
        skip_rule::skip(&why);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let reg = Registry::start(tmp.path(), None)?;
    let imgs = TestImages::build(tmp.path(), 0)?;
    let host = reg.host();
    imgs.skopeo_push("base", &format!("{host}/test/busybox:1"), None)?;
    let e = pull(
        &r(&format!("{host}/test/busybox:nope"))?,
        &pull_opts(insecure()),
        &tmp.path().join("a"),
        &never,
        &NoProgress,
    )
    .err()
    .ok_or("pull of a missing tag succeeded")?;
    assert!(matches!(e, Error::ManifestUnknown { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("test/busybox:nope") && !msg.contains('\n'),
        "{msg}"
    );
    let e = pull(
        &r(&format!("{host}/test/nothing:1"))?,
        &pull_opts(insecure()),
        &tmp.path().join("a"),
        &never,
        &NoProgress,
    )
    .err()
    .ok_or("pull of a missing repository succeeded")?;
    assert!(matches!(e, Error::ManifestUnknown { .. }), "{e:?}");

    // A loopback registry is reached over plain HTTP even with TLS verification on.
    let secure = PullOptions {
        client: ClientOptions {
            auth_file: insecure().auth_file,
            ..ClientOptions::default()
        },
        ..PullOptions::default()
    };
    pull(
        &r(&format!("{host}/test/busybox:1"))?,
        &secure,
        &tmp.path().join("c"),
        &never,
        &NoProgress,
    )?;

    let down = format!("127.0.0.1:{}", support::free_port()?);
    let e = pull(
        &r(&format!("{down}/test/busybox:1"))?,
        &pull_opts(insecure()),
        &tmp.path().join("b"),
        &never,
        &NoProgress,
    )
    .err()
    .ok_or("pull from a closed port succeeded")?;
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("registry {down} is unreachable")) && !msg.contains('\n'),
        "{msg}"
    );
    Ok(())
}

/// Kills the registry once this many bytes of layer have arrived.
struct KillAfter<'a> {
    reg: &'a Registry,
    after: u64,
    seen: AtomicU64,
    killed: Mutex<bool>,
}

impl Progress for KillAfter<'_> {
    fn begin(&self, _: &str, _: &str, _: Option<u64>) {}
    fn advance(&self, _: &str, bytes: u64) {
        let total = self.seen.fetch_add(bytes, Ordering::SeqCst) + bytes;
        if total >= self.after
            && let Ok(mut k) = self.killed.lock()
            && !*k
        {
            *k = true;
            self.reg.kill();
        }
    }
    fn finish(&self, _: &str, _: &str) {}
    fn message(&self, _: &str) {}
}

fn layout_blobs_valid(dir: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("blobs/sha256"))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        assert!(
            hash_ok(&e.path(), &name)?,
            "blob {name} is not what its name says"
        );
        n += 1;
    }
    Ok(n)
}

#[test]
fn interrupted_pull_leaves_no_partial_blob_and_resumes() -> TestResult {
    if let Some(why) = skip_reason() {
        skip_rule::skip(&why);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let reg = Registry::start(tmp.path(), None)?;
    let imgs = TestImages::build(tmp.path(), 50 << 20)?;
    let host = reg.host();
    imgs.skopeo_push("big", &format!("{host}/test/big:1"), None)?;
    let dest = tmp.path().join("l");
    let killer = KillAfter {
        reg: &reg,
        after: 5 << 20,
        seen: AtomicU64::new(0),
        killed: Mutex::new(false),
    };
    let e = pull(
        &r(&format!("{host}/test/big:1"))?,
        &pull_opts(insecure()),
        &dest,
        &never,
        &killer,
    )
    .err()
    .ok_or("pull survived the registry being killed")?;
    let msg = e.to_string();
    eprintln!("interrupted pull: {msg}");
    assert!(
        matches!(e, Error::Interrupted { .. } | Error::Unreachable { .. }),
        "{e:?}"
    );
    assert!(!msg.contains('\n'));
    layout_blobs_valid(&dest)?;
    assert!(
        layout::resolve(&dest, Some("1")).is_err(),
        "index.json names a half-pulled image"
    );

    reg.restart()?;

    // Range reads of a blob: what lazy pulling fetches on read.
    let client = strata::registry::client::Client::new(&host, &insecure())?;
    let big_digest = imgs
        .layer_digests("big")?
        .pop()
        .ok_or("big image has no layer")?;
    let whole = std::fs::read(layout::blob_path(&imgs.layout, &big_digest))?;
    let mut got = Vec::new();
    std::io::Read::read_to_end(
        &mut client.fetch_range("test/big", &big_digest, 1_000_000, 4096)?,
        &mut got,
    )?;
    assert_eq!(got.as_slice(), &whole[1_000_000..1_004_096]);

    let res = pull(
        &r(&format!("{host}/test/big:1"))?,
        &pull_opts(insecure()),
        &dest,
        &never,
        &NoProgress,
    )?;
    let big = std::fs::metadata(layout::blob_path(&dest, &res.layers[res.layers.len() - 1]))?.len();
    eprintln!(
        "resumed pull moved {} of {big} layer bytes",
        res.bytes_downloaded
    );
    assert!(res.bytes_downloaded < big, "the re-pull did not resume");
    assert_eq!(layout_blobs_valid(&dest)?, res.layers.len() + 2);
    run(
        "skopeo",
        &[
            "--policy",
            &imgs.policy(),
            "inspect",
            &format!("oci:{}:1", dest.display()),
        ],
    )?;
    Ok(())
}
