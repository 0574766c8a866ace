//! The Bearer token flow, index platform selection and digest verification, against a small
//! in-process HTTP registry that speaks like Docker Hub (token realm, scoped challenges).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use strata::oci::Digest;
use strata::oci::media::{DOCKER_LIST, DOCKER_MANIFEST};
use strata::progress::NoProgress;
use strata::registry::auth::Credentials;
use strata::registry::{ClientOptions, Error, Platform, PullOptions, Reference, pull};

type TestResult = Result<(), Box<dyn std::error::Error>>;

struct Mock {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
}

type Routes = HashMap<String, (String, Vec<u8>)>;

fn respond(mut s: &TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
    let _ = s.write_all(body);
}

fn serve(stream: TcpStream, port: u16, routes: &Routes, hits: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
    );
    let mut auth = String::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
        return;
    }
    if let Ok(mut v) = hits.lock() {
        v.push(format!("{method} {path}"));
    }
    if method == "POST" && path.starts_with("/token") {
        // OAuth2 refresh-token grant (an identity token from a credential helper).
        let form = String::from_utf8_lossy(&body);
        let fields: Vec<&str> = form.split('&').collect();
        if fields.contains(&"grant_type=refresh_token")
            && fields.contains(&"refresh_token=refresh-me")
            && fields.contains(&"service=mock")
        {
            respond(
                &stream,
                "200 OK",
                &[("Content-Type".into(), "application/json".into())],
                br#"{"access_token":"T","expires_in":300}"#,
            );
        } else {
            respond(&stream, "401 Unauthorized", &[], b"{}");
        }
        return;
    }
    if path.starts_with("/token") {
        let good = format!(
            "Basic {}",
            Credentials {
                username: "u".into(),
                password: "p".into()
            }
            .encoded()
        );
        if auth == good {
            respond(
                &stream,
                "200 OK",
                &[("Content-Type".into(), "application/json".into())],
                br#"{"token":"T"}"#,
            );
        } else {
            respond(&stream, "401 Unauthorized", &[], b"{}");
        }
        return;
    }
    if auth != "Bearer T" {
        let repo = path
            .trim_start_matches("/v2/")
            .split("/manifests/")
            .next()
            .unwrap_or("");
        let repo = repo.split("/blobs/").next().unwrap_or("");
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="mock",scope="repository:{repo}:pull""#
        );
        respond(
            &stream,
            "401 Unauthorized",
            &[("WWW-Authenticate".into(), challenge)],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}"#,
        );
        return;
    }
    match routes.get(&path) {
        Some((ct, body)) => respond(
            &stream,
            "200 OK",
            &[("Content-Type".into(), ct.clone())],
            body,
        ),
        None => respond(
            &stream,
            "404 Not Found",
            &[],
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#,
        ),
    }
}

impl Mock {
    fn start(routes: Routes) -> Result<Mock, Box<dyn std::error::Error>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h = hits.clone();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (h, routes) = (h.clone(), routes.clone());
                std::thread::spawn(move || serve(s, port, &routes, &h));
            }
        });
        Ok(Mock { port, hits })
    }
    fn count(&self, prefix: &str) -> usize {
        self.hits
            .lock()
            .map(|v| v.iter().filter(|l| l.starts_with(prefix)).count())
            .unwrap_or(0)
    }
}

fn manifest(config: &[u8], layers: &[&[u8]], note: &str) -> Vec<u8> {
    let ls: Vec<String> = layers
        .iter()
        .map(|l| format!(r#"{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{}"}}"#, l.len(), Digest::of(l)))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[{}],"annotations":{{"n":"{note}"}}}}"#,
        config.len(),
        Digest::of(config),
        ls.join(",")
    )
    .into_bytes()
}

fn opts(creds: Option<(&str, &str)>) -> PullOptions {
    PullOptions {
        client: ClientOptions {
            tls_verify: false,
            credentials: creds.map(|(u, p)| Credentials {
                username: u.into(),
                password: p.into(),
            }),
            auth_file: Some("/nonexistent/strata-test-auth.json".into()),
            ..ClientOptions::default()
        },
        ..PullOptions::default()
    }
}

#[test]
fn bearer_tokens_platforms_and_digest_checks() -> TestResult {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layers: Vec<Vec<u8>> = (0..4u8)
        .map(|i| vec![i; 100_000 + usize::from(i)])
        .collect();
    let lrefs: Vec<&[u8]> = layers.iter().map(|l| l.as_slice()).collect();
    let amd = manifest(&config, &lrefs, "amd64");
    let arm = manifest(&config, &lrefs[..1], "arm64");
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","size":{},"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}},{{"mediaType":"{DOCKER_MANIFEST}","size":{},"digest":"{}","platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#,
        amd.len(), Digest::of(&amd), arm.len(), Digest::of(&arm)
    ).into_bytes();
    let bad_layer = vec![9u8; 5000];
    let bad = manifest(&config, &[&bad_layer], "bad");
    let mut routes = Routes::new();
    let m = |b: &[u8]| (DOCKER_MANIFEST.to_string(), b.to_vec());
    routes.insert("/v2/lib/app/manifests/1".into(), m(&amd));
    routes.insert(
        "/v2/lib/app/manifests/multi".into(),
        (DOCKER_LIST.to_string(), list.clone()),
    );
    routes.insert(
        format!("/v2/lib/app/manifests/{}", Digest::of(&amd)),
        m(&amd),
    );
    routes.insert(
        format!("/v2/lib/app/manifests/{}", Digest::of(&arm)),
        m(&arm),
    );
    routes.insert("/v2/lib/app/manifests/bad".into(), m(&bad));
    let blob = |b: &[u8]| ("application/octet-stream".to_string(), b.to_vec());
    routes.insert(
        format!("/v2/lib/app/blobs/{}", Digest::of(&config)),
        blob(&config),
    );
    for l in &layers {
        routes.insert(format!("/v2/lib/app/blobs/{}", Digest::of(l)), blob(l));
    }
    // Served content of the right size that does not match its digest.
    routes.insert(
        format!("/v2/lib/app/blobs/{}", Digest::of(&bad_layer)),
        blob(&[8u8; 5000]),
    );
    let mock = Mock::start(routes)?;
    let host = format!("127.0.0.1:{}", mock.port);
    let tmp = tempfile::tempdir()?;
    let never = |_: &Digest| false;

    // Bearer flow: one token for the scope, shared by the parallel layer downloads.
    let res = pull(
        &Reference::parse(&format!("{host}/lib/app:1"))?,
        &opts(Some(("u", "p"))),
        &tmp.path().join("a"),
        &never,
        &NoProgress,
    )?;
    assert_eq!(res.manifest_media_type.as_ref(), DOCKER_MANIFEST);
    assert_eq!(res.layers.len(), 4);
    assert_eq!(res.downloaded.len(), 5);
    assert_eq!(mock.count("GET /token"), 1);
    let index = std::fs::read_to_string(tmp.path().join("a/index.json"))?;
    assert!(
        index.contains(DOCKER_MANIFEST)
            && index.contains(r#""org.opencontainers.image.ref.name":"1""#),
        "{index}"
    );

    // Manifest list: the host platform by default, or the one asked for.
    let multi = Reference::parse(&format!("{host}/lib/app:multi"))?;
    let res = pull(
        &multi,
        &opts(Some(("u", "p"))),
        &tmp.path().join("b"),
        &never,
        &NoProgress,
    )?;
    if Platform::host().to_string() == "linux/amd64" {
        assert_eq!(res.manifest_digest, Digest::of(&amd));
    }
    assert_eq!(res.index_digest, Some(Digest::of(&list)));
    let arm_opts = PullOptions {
        platform: Some(Platform::parse("linux/arm64")?),
        ..opts(Some(("u", "p")))
    };
    let res = pull(
        &multi,
        &arm_opts,
        &tmp.path().join("c"),
        &never,
        &NoProgress,
    )?;
    assert_eq!(res.manifest_digest, Digest::of(&arm));
    assert_eq!(res.layers.len(), 1);
    let e = pull(
        &multi,
        &PullOptions {
            platform: Some(Platform::parse("linux/s390x")?),
            ..opts(Some(("u", "p")))
        },
        &tmp.path().join("d"),
        &never,
        &NoProgress,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("no image for platform linux/s390x"), "{e}");

    // Digest mismatch names the blob, and leaves nothing under its name.
    let e = pull(
        &Reference::parse(&format!("{host}/lib/app:bad"))?,
        &opts(Some(("u", "p"))),
        &tmp.path().join("e"),
        &never,
        &NoProgress,
    )
    .err()
    .ok_or("a corrupt blob was accepted")?;
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains(Digest::of(&bad_layer).as_str()));
    assert!(
        !strata::registry::layout::blob_path(&tmp.path().join("e"), &Digest::of(&bad_layer))
            .exists()
    );

    // Wrong password and no credentials: each its one-line error.
    let e = pull(
        &Reference::parse(&format!("{host}/lib/app:1"))?,
        &opts(Some(("u", "x"))),
        &tmp.path().join("f"),
        &never,
        &NoProgress,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("wrong username or password"), "{e}");
    let e = pull(
        &Reference::parse(&format!("{host}/lib/app:1"))?,
        &opts(None),
        &tmp.path().join("f"),
        &never,
        &NoProgress,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("requires authentication for pull of lib/app"),
        "{e}"
    );

    // Missing tag behind auth.
    let e = pull(
        &Reference::parse(&format!("{host}/lib/app:nope"))?,
        &opts(Some(("u", "p"))),
        &tmp.path().join("g"),
        &never,
        &NoProgress,
    )
    .err()
    .ok_or("missing tag pulled")?;
    assert!(matches!(e, Error::ManifestUnknown { .. }), "{e:?}");
    Ok(())
}

#[test]
fn identity_token_from_a_credential_helper_is_a_refresh_token() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layer = vec![7u8; 10_000];
    let mut routes = Routes::new();
    routes.insert(
        "/v2/lib/tok/manifests/1".into(),
        (
            DOCKER_MANIFEST.to_string(),
            manifest(&config, &[&layer], "tok"),
        ),
    );
    for b in [&config, &layer] {
        routes.insert(
            format!("/v2/lib/tok/blobs/{}", Digest::of(b)),
            ("application/octet-stream".to_string(), b.to_vec()),
        );
    }
    let mock = Mock::start(routes)?;
    let host = format!("127.0.0.1:{}", mock.port);
    let tmp = tempfile::tempdir()?;
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    let helper = bin.join("docker-credential-idtok");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncat > /dev/null\ncat {}\n",
            tmp.path().join("answer.json").display()
        ),
    )?;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755))?;
    let auth = tmp.path().join("auth.json");
    std::fs::write(&auth, format!(r#"{{"credHelpers":{{"{host}":"idtok"}}}}"#))?;
    let answer = |secret: &str| {
        std::fs::write(
            tmp.path().join("answer.json"),
            format!(r#"{{"ServerURL":"{host}","Username":"<token>","Secret":"{secret}"}}"#),
        )
    };
    let o = PullOptions {
        client: ClientOptions {
            tls_verify: false,
            auth_file: Some(auth.clone()),
            helper_path: Some(bin.clone().into_os_string()),
            ..ClientOptions::default()
        },
        ..PullOptions::default()
    };
    let r = Reference::parse(&format!("{host}/lib/tok:1"))?;
    let never = |_: &Digest| false;

    answer("refresh-me")?;
    let res = pull(&r, &o, &tmp.path().join("a"), &never, &NoProgress)?;
    assert_eq!(res.layers.len(), 1);
    assert_eq!(mock.count("POST /token"), 1);
    assert_eq!(mock.count("GET /token"), 0, "no Basic token request");

    answer("stale")?;
    let e = pull(&r, &o, &tmp.path().join("b"), &never, &NoProgress)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("wrong username or password") && e.contains("docker-credential-idtok"),
        "{e}"
    );
    Ok(())
}
