//! A registry that misbehaves: a small HTTP server of our own on 127.0.0.1 serves a one-layer
//! image, broken in one way per case (a truncated blob, a Content-Length that lies, blob bytes
//! that do not match the digest, a 100 MB manifest, an endless chunked blob, a server that
//! trickles a manifest a byte at a time, one that stops answering mid-blob, a redirect loop, an
//! auth challenge that never ends). `strata pull` must fail with a clear error within a bounded
//! time (`STRATA_REGISTRY_TIMEOUT=2`) and leave the store as it was: no image, no blob, no
//! layer, no staging, `strata fsck` clean. A well-behaved run of the same server pulls fine.

mod common;
mod faultkit;

use faultkit::{store_state, strata_command, tar_append_file};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strata::oci::Digest;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Good,
    TruncatedBlob,
    ShortContentLength,
    BadDigest,
    HugeManifest,
    EndlessChunkedBlob,
    SlowLorisManifest,
    StallMidBlob,
    RedirectLoop,
    AuthLoop,
    /// Basic auth, blobs redirected to another host (the "CDN", below).
    BasicAuthCdn,
    /// The other host: serves blobs, notes whether it was sent credentials.
    Cdn,
}

static CDN_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
static CDN_SAW_AUTH: AtomicBool = AtomicBool::new(false);
static CDN_SERVED: AtomicBool = AtomicBool::new(false);
static MAIN_SAW_AUTH: AtomicBool = AtomicBool::new(false);

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: Digest,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn image() -> Image {
    let mut b = tar::Builder::new(Vec::new());
    let data = vec![b'x'; 50_000];
    tar_append_file(&mut b, "file", &data);
    let tar = b.into_inner().unwrap();
    let diff_id = Digest::of(&tar);
    // Stored uncompressed: the layer's digest is its diff ID.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/file"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
    )
    .into_bytes();
    let config_digest = Digest::of(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{diff_id}","size":{}}}]}}"#,
        config.len(),
        tar.len()
    )
    .into_bytes();
    Image {
        manifest,
        config,
        config_digest,
        layer_digest: diff_id,
        layer: tar,
    }
}

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mode: Mode) -> Server {
    serve_on("127.0.0.1", mode)
}

fn serve_on(addr: &str, mode: Mode) -> Server {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let img = Arc::new(image());
    let st = stop.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if st.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let img = img.clone();
            let st = st.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, mode, &img, port, &st);
            });
        }
    });
    Server { port, stop }
}

fn head(s: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    s.write_all(h.as_bytes())
}

fn respond(s: &mut TcpStream, status: &str, ct: &str, body: &[u8]) -> std::io::Result<()> {
    head(
        s,
        status,
        &[
            ("Content-Type", ct.to_string()),
            ("Content-Length", body.len().to_string()),
            ("Docker-Distribution-API-Version", "registry/2.0".into()),
        ],
    )?;
    s.write_all(body)
}

fn handle(
    conn: TcpStream,
    mode: Mode,
    img: &Image,
    port: u16,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut s = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || !line.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Ok(()); // closed, or a TLS hello: the client falls back to HTTP
        }
        let mut auth = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h.to_ascii_lowercase().starts_with("authorization:") {
                auth = true;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let json = "application/json";
        if path == "/v2/" {
            respond(&mut s, "200 OK", json, b"{}")?;
            continue;
        }
        if path.starts_with("/token") {
            respond(
                &mut s,
                "200 OK",
                json,
                br#"{"token":"tok-3c7e1d9f","access_token":"tok-3c7e1d9f"}"#,
            )?;
            continue;
        }
        if mode == Mode::Cdn && auth {
            CDN_SAW_AUTH.store(true, Ordering::SeqCst);
        }
        if mode == Mode::BasicAuthCdn {
            if !auth {
                head(
                    &mut s,
                    "401 Unauthorized",
                    &[
                        ("WWW-Authenticate", r#"Basic realm="hostile""#.into()),
                        ("Content-Length", "0".into()),
                    ],
                )?;
                continue;
            }
            MAIN_SAW_AUTH.store(true, Ordering::SeqCst);
            if path.contains("/blobs/") {
                let to = format!(
                    "http://127.0.0.2:{}/cdn/{}",
                    CDN_PORT.load(Ordering::SeqCst),
                    path.rsplit('/').next().unwrap_or("")
                );
                head(
                    &mut s,
                    "307 Temporary Redirect",
                    &[("Location", to), ("Content-Length", "0".into())],
                )?;
                continue;
            }
        }
        if mode == Mode::Cdn && path.starts_with("/cdn/") {
            CDN_SERVED.store(true, Ordering::SeqCst);
        }
        if mode == Mode::AuthLoop {
            let _ = auth;
            let chal = format!(
                r#"Bearer realm="http://127.0.0.1:{port}/token",service="hostile",scope="repository:x:pull""#
            );
            head(
                &mut s,
                "401 Unauthorized",
                &[
                    ("WWW-Authenticate", chal),
                    ("Content-Type", json.into()),
                    ("Content-Length", "2".into()),
                ],
            )?;
            s.write_all(b"{}")?;
            continue;
        }
        let mt = "application/vnd.oci.image.manifest.v1+json";
        if path.contains("/manifests/") {
            match mode {
                Mode::HugeManifest => {
                    let total: usize = 100 << 20;
                    head(
                        &mut s,
                        "200 OK",
                        &[
                            ("Content-Type", mt.into()),
                            ("Content-Length", total.to_string()),
                        ],
                    )?;
                    s.write_all(br#"{"schemaVersion":2,"pad":""#)?;
                    let chunk = vec![b' '; 1 << 20];
                    for _ in 0..100 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        s.write_all(&chunk)?;
                    }
                    return Ok(());
                }
                Mode::SlowLorisManifest => {
                    head(
                        &mut s,
                        "200 OK",
                        &[
                            ("Content-Type", mt.into()),
                            ("Content-Length", img.manifest.len().to_string()),
                        ],
                    )?;
                    for b in &img.manifest {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        s.write_all(&[*b])?;
                        std::thread::sleep(Duration::from_millis(400));
                    }
                    return Ok(());
                }
                Mode::RedirectLoop => {
                    head(
                        &mut s,
                        "302 Found",
                        &[("Location", path.clone()), ("Content-Length", "0".into())],
                    )?;
                    continue;
                }
                _ => {
                    respond(&mut s, "200 OK", mt, &img.manifest)?;
                    continue;
                }
            }
        }
        if path.ends_with(&img.config_digest.to_string()) {
            respond(&mut s, "200 OK", "application/octet-stream", &img.config)?;
            continue;
        }
        if path.ends_with(&img.layer_digest.to_string()) {
            let bin = "application/octet-stream";
            let l = &img.layer;
            match mode {
                Mode::TruncatedBlob => {
                    head(&mut s, "200 OK", &[("Content-Length", l.len().to_string())])?;
                    s.write_all(&l[..l.len() / 2])?;
                    return Ok(()); // close mid-body
                }
                Mode::ShortContentLength => {
                    head(
                        &mut s,
                        "200 OK",
                        &[("Content-Length", (l.len() - 100).to_string())],
                    )?;
                    s.write_all(l)?;
                    return Ok(());
                }
                Mode::BadDigest => {
                    let mut bad = l.clone();
                    bad[600] ^= 0xff;
                    respond(&mut s, "200 OK", bin, &bad)?;
                    continue;
                }
                Mode::EndlessChunkedBlob => {
                    head(&mut s, "200 OK", &[("Transfer-Encoding", "chunked".into())])?;
                    let chunk = vec![b'z'; 64 * 1024];
                    let mut sent = 0usize;
                    while !stop.load(Ordering::SeqCst) && sent < (1 << 30) {
                        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
                        s.write_all(&chunk)?;
                        s.write_all(b"\r\n")?;
                        sent += chunk.len();
                    }
                    return Ok(());
                }
                Mode::StallMidBlob => {
                    head(&mut s, "200 OK", &[("Content-Length", l.len().to_string())])?;
                    s.write_all(&l[..l.len() / 2])?;
                    s.flush()?;
                    for _ in 0..300 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    return Ok(());
                }
                _ => {
                    respond(&mut s, "200 OK", bin, l)?;
                    continue;
                }
            }
        }
        respond(
            &mut s,
            "404 Not Found",
            json,
            br#"{"errors":[{"code":"NOT_FOUND"}]}"#,
        )?;
    }
}

fn pull(root: &Path, port: u16) -> (bool, String, Duration) {
    let t0 = Instant::now();
    let o = common::strata_env(
        root,
        &[
            "pull",
            "--tls-verify=false",
            &format!("127.0.0.1:{port}/x:latest"),
        ],
        &[("STRATA_REGISTRY_TIMEOUT", "2")],
    );
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        t0.elapsed(),
    )
}

#[test]
fn a_misbehaving_registry_fails_the_pull_in_bounded_time_and_leaves_the_store_clean() {
    let work = common::tmpdir("registry-hostile");
    // The same server, behaving: the harness itself works.
    {
        let srv = serve(Mode::Good);
        let root = work.join("good");
        let (ok, err, took) = pull(&root, srv.port);
        assert!(ok, "a good pull failed: {err}");
        eprintln!("good pull: {took:?}");
    }
    let cases: &[(Mode, &[&str])] = &[
        (
            Mode::TruncatedBlob,
            &["interrupted", "closed", "eof", "size"],
        ),
        (Mode::ShortContentLength, &["size"]),
        (Mode::BadDigest, &["digest"]),
        (Mode::HugeManifest, &["manifest", "limit", "large", "big"]),
        (Mode::EndlessChunkedBlob, &["size"]),
        (Mode::SlowLorisManifest, &["timeout", "timed out", "time"]),
        (Mode::StallMidBlob, &["timeout", "timed out", "time"]),
        (Mode::RedirectLoop, &["redirect"]),
        (
            Mode::AuthLoop,
            &["auth", "denied", "unauthorized", "credentials"],
        ),
    ];
    let mut report = Vec::new();
    for (mode, words) in cases {
        let srv = serve(*mode);
        let root = work.join(format!("{mode:?}"));
        // An initialised, empty store to compare with.
        common::ok(&root, &["images"]);
        let before = store_state(&root);
        let (ok, err, took) = pull(&root, srv.port);
        let err_l = err.to_lowercase();
        report.push(format!(
            "{mode:?}: {took:.1?}: {}",
            err.trim().lines().last().unwrap_or("")
        ));
        assert!(!ok, "{mode:?}: the pull succeeded");
        assert!(took < Duration::from_secs(20), "{mode:?}: took {took:?}");
        assert!(
            words.iter().any(|w| err_l.contains(w)),
            "{mode:?}: unclear error (wanted one of {words:?}): {err}"
        );
        assert!(!err.contains("panicked"), "{mode:?}: {err}");
        assert!(common::ok(&root, &["images", "-q"]).trim().is_empty());
        let f = common::ok(&root, &["fsck"]);
        assert!(f.contains("clean"), "{mode:?}: fsck: {f}");
        assert_eq!(store_state(&root), before, "{mode:?}: the store changed");
    }
    for l in report {
        eprintln!("{l}");
    }
}

#[test]
fn a_pull_killed_mid_blob_leaves_only_staging_that_prune_removes() {
    let work = common::tmpdir("registry-killed");
    let srv = serve(Mode::StallMidBlob);
    let root = work.join("store");
    common::ok(&root, &["images"]);
    let before = store_state(&root);
    let mut c = strata_command(
        &root,
        &[
            "pull",
            "--tls-verify=false",
            &format!("127.0.0.1:{}/x:latest", srv.port),
        ],
    )
    .env("STRATA_REGISTRY_TIMEOUT", "30")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Wait until the blob is half there (the server then stalls), then kill -9.
    let t0 = Instant::now();
    loop {
        let partial = store_state(&root).iter().any(|l| l.contains(".partial"));
        if partial || t0.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    assert!(common::ok(&root, &["images", "-q"]).trim().is_empty());
    let f = common::ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "fsck after a killed pull: {f}");
    common::ok(&root, &["prune"]);
    assert_eq!(
        store_state(&root),
        before,
        "prune left the killed pull's staging"
    );
    drop(srv);
    let good = serve(Mode::Good);
    let (ok, err, _) = pull(&root, good.port);
    assert!(ok, "a pull after the killed one: {err}");
}

#[test]
fn credentials_never_show_in_output_and_the_auth_file_is_0600() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let work = common::tmpdir("registry-creds");
    let secret = "pw-5ecret-9a1b";
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("me:{secret}"));
    let leaks = |what: &str, out: &str| {
        for s in [secret, b64.as_str(), "tok-3c7e1d9f"] {
            assert!(!out.contains(s), "{what} printed a credential: {out}");
        }
    };
    // login with a permissive umask: the file is still 0600.
    let good = serve(Mode::Good);
    let root = work.join("store");
    let authfile = work.join("auth.json");
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(&root)
        .args([
            "login",
            &format!("127.0.0.1:{}", good.port),
            "-u",
            "me",
            "-p",
            secret,
        ])
        .args(["--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "login: {out}");
    leaks("login", &out);
    let mode = std::fs::metadata(&authfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "auth file mode {mode:o}");
    // A pull whose auth never succeeds, with the stored and with explicit credentials.
    let lp = serve(Mode::AuthLoop);
    let r = format!("127.0.0.1:{}/x:latest", lp.port);
    for extra in [
        vec!["--authfile".to_string(), authfile.display().to_string()],
        vec!["--creds".to_string(), format!("me:{secret}")],
    ] {
        let mut args = vec!["pull", "--tls-verify=false", r.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let o = common::strata_env(&root, &args, &[("STRATA_REGISTRY_TIMEOUT", "2")]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!o.status.success(), "pull through an auth loop succeeded");
        assert!(
            out.to_lowercase().contains("credentials") || out.contains("auth"),
            "{out}"
        );
        leaks("pull", &out);
    }
}

#[test]
fn credentials_are_not_forwarded_to_a_blob_redirect_on_another_host() {
    let work = common::tmpdir("registry-cdn");
    let cdn = serve_on("127.0.0.2", Mode::Cdn);
    CDN_PORT.store(cdn.port, Ordering::SeqCst);
    let main = serve(Mode::BasicAuthCdn);
    let root = work.join("store");
    let o = common::strata_env(
        &root,
        &[
            "pull",
            "--tls-verify=false",
            "--creds",
            "me:pw-cdn-secret",
            &format!("127.0.0.1:{}/x:latest", main.port),
        ],
        &[("STRATA_REGISTRY_TIMEOUT", "5")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "pull through a cross-host redirect: {err}"
    );
    assert!(
        MAIN_SAW_AUTH.load(Ordering::SeqCst),
        "the registry was never sent credentials"
    );
    assert!(
        CDN_SERVED.load(Ordering::SeqCst),
        "the blobs did not come from the other host"
    );
    assert!(
        !CDN_SAW_AUTH.load(Ordering::SeqCst),
        "the registry's credentials were sent to the other host"
    );
    let f = common::ok(&root, &["fsck"]);
    assert!(f.contains("clean"), "{f}");
}
