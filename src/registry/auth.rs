//! Registry credentials: the `auth.json` / `~/.docker/config.json` credentials file, the
//! credential helpers it names, the `WWW-Authenticate` challenge parser, and `login` /
//! `logout`.
//!
//! The file holds `{"auths":{"HOST":{"auth":"base64(user:pass)"}}}`, and optionally
//! `"credHelpers":{"HOST":"NAME"}` and `"credsStore":"NAME"`, which name programs
//! `docker-credential-NAME` ([`crate::registry::credhelper`]). Files are read from
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` and
//! `~/.docker/config.json`, in that order; within one file `credHelpers[HOST]` is asked first,
//! then `credsStore`, then the `auths` entry (as docker and containers/image do; a helper
//! without credentials for the host passes on to the next source). The first credentials
//! found win. `login` writes, mode 0600 and atomically, to the first of those files that
//! applies, or through its helper when that file names one (`store`); `logout` erases from
//! both. Other keys in the file are preserved.
use crate::oci::reference::DOCKER_HUB;
use crate::registry::client::{Client, ClientOptions};
use crate::registry::credhelper::{Helpers, TOKEN_USERNAME};
use crate::registry::error::{Error, Result};
use crate::registry::layout::write_atomic;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A username and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `base64(user:pass)` form used in the file and the Basic header.
    pub fn encoded(&self) -> String {
        B64.encode(format!("{}:{}", self.username, self.password))
    }

    /// The identity token, when these are one: a credential helper's answer with username
    /// `<token>` (docker's convention). The client sends it to a Bearer token server as an
    /// OAuth2 refresh token; to a Basic registry it goes as the password of `<token>`.
    pub fn identity_token(&self) -> Option<&str> {
        (self.username == TOKEN_USERNAME).then_some(self.password.as_str())
    }

    /// Decodes the `auth` field form.
    pub fn decode(auth: &str) -> Option<Credentials> {
        let raw = B64.decode(auth.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

/// The credentials files to read, in order of precedence.
pub fn auth_file_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        v.push(Path::new(&d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        v.push(Path::new(&h).join(".docker/config.json"));
    }
    v
}

/// The credentials file `login` writes to: the first of [`auth_file_paths`].
pub fn default_auth_file() -> Result<PathBuf> {
    auth_file_paths()
        .into_iter()
        .next()
        .ok_or_else(|| Error::AuthFile {
            path: PathBuf::from("~/.docker/config.json"),
            reason: "none of REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, HOME is set".to_string(),
        })
}

/// Normalises a key of the `auths` map to `host[/path]` (`https://index.docker.io/v1/` ->
/// `docker.io`).
pub fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k
        .strip_suffix("/v1/")
        .or_else(|| k.strip_suffix("/v2/"))
        .or_else(|| k.strip_suffix("/v1"))
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k)
        .trim_end_matches('/');
    let (host, rest) = match k.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

fn load(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            Ok(Some(Value::Object(Map::new())))
        }
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::AuthFile {
                path: path.to_path_buf(),
                reason: format!("not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Where credentials came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given by the caller (`--creds`).
    Given,
    /// The `auths` entry of this credentials file.
    File(PathBuf),
    /// This credential helper (`docker-credential-NAME`), named in this file.
    Helper { name: String, file: PathBuf },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Given => write!(f, "given on the command line"),
            Origin::File(p) => write!(f, "credentials file {}", p.display()),
            Origin::Helper { name, file } => write!(
                f,
                "credential helper docker-credential-{name} (named in {})",
                file.display()
            ),
        }
    }
}

/// The `auths` entry for `registry` (and `repository`, for per-repository entries) of a
/// loaded file. The longest matching key wins.
fn auths_entry(doc: &Value, registry: &str, repository: &str) -> Option<Credentials> {
    let auths = doc.get("auths").and_then(Value::as_object)?;
    let full = format!("{registry}/{repository}");
    let mut best: Option<(usize, Credentials)> = None;
    for (key, entry) in auths {
        let k = normalize_key(key);
        let matches = k == registry
            || (full.starts_with(&k) && full[k.len()..].starts_with('/'))
            || k == full;
        if !matches {
            continue;
        }
        let creds = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .and_then(Credentials::decode)
            .or_else(|| {
                let u = entry.get("username")?.as_str()?;
                let p = entry.get("password")?.as_str()?;
                Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                })
            });
        if let Some(c) = creds
            && best.as_ref().is_none_or(|(len, _)| k.len() > *len)
        {
            best = Some((k.len(), c));
        }
    }
    best.map(|(_, c)| c)
}

/// `credHelpers[registry]` of a loaded file (keys compared as [`normalize_key`] spells them).
fn cred_helper<'a>(doc: &'a Value, registry: &str) -> Option<&'a str> {
    doc.get("credHelpers")?
        .as_object()?
        .iter()
        .find(|(k, _)| normalize_key(k) == registry)
        .and_then(|(_, v)| v.as_str())
        .filter(|n| !n.is_empty())
}

/// `credsStore` of a loaded file.
fn creds_store(doc: &Value) -> Option<&str> {
    doc.get("credsStore")?.as_str().filter(|n| !n.is_empty())
}

/// The helper `login` and `logout` use for `registry` in a loaded file: `credHelpers[registry]`,
/// else `credsStore`.
fn store_helper<'a>(doc: &'a Value, registry: &str) -> Option<&'a str> {
    cred_helper(doc, registry).or_else(|| creds_store(doc))
}

/// Looks up credentials for `registry` (and `repository`, for per-repository entries) in the
/// `auths` of one file only; credential helpers are not run (see [`lookup_credentials`]).
pub fn read_credentials(
    path: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    Ok(load(path)?.and_then(|doc| auths_entry(&doc, registry, repository)))
}

/// Looks up credentials for `registry` in one file: `credHelpers[registry]`, then
/// `credsStore`, then the `auths` entry (for `repository` too). A helper that has no
/// credentials for the registry passes on to the next; a helper that fails is an error.
pub fn lookup_credentials(
    path: &Path,
    registry: &str,
    repository: &str,
    helpers: &Helpers,
) -> Result<Option<(Credentials, Origin)>> {
    let Some(doc) = load(path)? else {
        return Ok(None);
    };
    for name in [cred_helper(&doc, registry), creds_store(&doc)]
        .into_iter()
        .flatten()
    {
        if let Some(c) = helpers.get(name, registry)? {
            let origin = Origin::Helper {
                name: name.to_string(),
                file: path.to_path_buf(),
            };
            return Ok(Some((c, origin)));
        }
    }
    Ok(auths_entry(&doc, registry, repository).map(|c| (c, Origin::File(path.to_path_buf()))))
}

/// Looks up credentials in all the files of [`auth_file_paths`] with [`lookup_credentials`],
/// first match wins.
pub fn find_credentials(
    registry: &str,
    repository: &str,
    helpers: &Helpers,
) -> Result<Option<(Credentials, Origin)>> {
    for p in auth_file_paths() {
        if let Some(c) = lookup_credentials(&p, registry, repository, helpers)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn is_docker_config(path: &Path) -> bool {
    path.ends_with(".docker/config.json")
}

/// Stores credentials for `registry` in `path` (created with its directory if needed),
/// replacing any entry for the same registry; mode 0600, written atomically.
pub fn store_credentials(path: &Path, registry: &str, creds: &Credentials) -> Result<()> {
    let mut doc = load(path)?.unwrap_or_else(|| Value::Object(Map::new()));
    let obj = doc.as_object_mut().ok_or_else(|| Error::AuthFile {
        path: path.to_path_buf(),
        reason: "top level is not a JSON object".to_string(),
    })?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let auths = auths.as_object_mut().ok_or_else(|| Error::AuthFile {
        path: path.to_path_buf(),
        reason: "\"auths\" is not a JSON object".to_string(),
    })?;
    auths.retain(|k, _| normalize_key(k) != registry);
    let key = if registry == DOCKER_HUB && is_docker_config(path) {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let mut entry = Map::new();
    entry.insert("auth".to_string(), Value::String(creds.encoded()));
    auths.insert(key, Value::Object(entry));
    save(path, &doc)
}

/// Removes the entries for `registry` from `path`; returns whether one existed.
pub fn remove_credentials(path: &Path, registry: &str) -> Result<bool> {
    let Some(mut doc) = load(path)? else {
        return Ok(false);
    };
    let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| normalize_key(k) != registry);
    if auths.len() == before {
        return Ok(false);
    }
    save(path, &doc)?;
    Ok(true)
}

fn save(path: &Path, doc: &Value) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| Error::AuthFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
    }
    write_atomic(path, &bytes, 0o600)
}

/// Where `login` kept the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredIn {
    /// In the `auths` of this credentials file.
    File(PathBuf),
    /// In this credential helper (`docker-credential-NAME store`), named in this file.
    Helper { name: String, file: PathBuf },
}

impl std::fmt::Display for StoredIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredIn::File(p) => write!(f, "{}", p.display()),
            StoredIn::Helper { name, file } => write!(
                f,
                "credential helper docker-credential-{name}, named in {}",
                file.display()
            ),
        }
    }
}

/// Checks `creds` against the registry, then stores them in the default credentials file
/// (or `opts.auth_file`), or through the helper that file names for the registry
/// (`credHelpers[registry]`, else `credsStore`; a plaintext entry for the registry is then
/// removed from the file). Returns where they went.
pub fn login(registry: &str, creds: &Credentials, opts: &ClientOptions) -> Result<StoredIn> {
    let mut o = opts.clone();
    o.credentials = Some(creds.clone());
    let client = Client::new(registry, &o)?;
    client.check_login()?;
    let path = match &opts.auth_file {
        Some(p) => p.clone(),
        None => default_auth_file()?,
    };
    let helper = load(&path)?.and_then(|doc| store_helper(&doc, registry).map(str::to_string));
    match helper {
        Some(name) => {
            Helpers::new(opts.helper_path.clone()).store(&name, registry, creds)?;
            remove_credentials(&path, registry)?;
            Ok(StoredIn::Helper { name, file: path })
        }
        None => {
            store_credentials(&path, registry, creds)?;
            Ok(StoredIn::File(path))
        }
    }
}

/// Removes the credentials of `registry` from every credentials file (or only
/// `auth_file`) and from the helper each file names for it (`erase`, helpers from `$PATH`);
/// returns whether any existed.
pub fn logout(registry: &str, auth_file: Option<&Path>) -> Result<bool> {
    logout_with(registry, auth_file, None)
}

/// [`logout`] with helpers looked up in `helper_path` (`None`: `$PATH`).
pub fn logout_with(
    registry: &str,
    auth_file: Option<&Path>,
    helper_path: Option<std::ffi::OsString>,
) -> Result<bool> {
    let registry = normalize_key(registry);
    let paths = match auth_file {
        Some(p) => vec![p.to_path_buf()],
        None => auth_file_paths(),
    };
    let helpers = Helpers::new(helper_path);
    let mut any = false;
    for p in paths {
        if let Some(doc) = load(&p)?
            && let Some(name) = store_helper(&doc, &registry)
        {
            any |= helpers.erase(name, &registry)?;
        }
        any |= remove_credentials(&p, &registry)?;
    }
    Ok(any)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`.
    Basic,
    /// `Bearer realm="...",service="...",scope="..."[,error="..."]`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
        error: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            // An empty realm names no token service: not a challenge we can answer.
            realm: get("realm").filter(|r| !r.trim().is_empty())?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    } else {
        None
    }
}

/// Parses `k=v, k="quoted, with \" escapes"` auth-params.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() && chars.peek().is_none() {
            break;
        }
        if chars.next() != Some('=') {
            // A bare token (e.g. token68) carries no parameter.
            if chars.peek().is_none() {
                break;
            }
            continue;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name.trim().to_string(), value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_an_empty_realm_is_none() {
        // Found by the www_authenticate fuzz target (fuzz/regressions/www_authenticate/).
        for h in [
            "Bearer reAlm=",
            r#"Bearer realm="""#,
            "Bearer realm=  ,service=x",
        ] {
            assert_eq!(parse_challenge(h), None, "{h}");
        }
        assert!(matches!(
            parse_challenge("Bearer REALM=http://h/t"),
            Some(Challenge::Bearer { realm, .. }) if realm == "http://h/t"
        ));
    }

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
                error: None,
            })
        );
        let c =
            parse_challenge(r#"bearer realm=http://h/t , error="insufficient_scope",scope="a\"b""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: Some("a\"b".into()),
                error: Some("insufficient_scope".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://localhost:5000"), "localhost:5000");
        assert_eq!(normalize_key("quay.io/org/repo"), "quay.io/org/repo");
    }

    #[test]
    fn file_round_trip_mode_0600() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let path = dir.path().join("sub/auth.json");
        let a = Credentials {
            username: "alice".into(),
            password: "s3:cr:et".into(),
        };
        store_credentials(&path, "localhost:5000", &a)?;
        let mode = std::fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_credentials(&path, "localhost:5000", "x/y")?,
            Some(a.clone())
        );
        assert_eq!(read_credentials(&path, "quay.io", "x/y")?, None);
        // Foreign keys survive, docker.io keys are matched in docker's spelling.
        std::fs::write(
            &path,
            format!(
                r#"{{"credsStore":"x","auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"localhost:5000":{{"auth":"{}"}},"quay.io/org":{{"auth":"{}"}}}}}}"#,
                a.encoded(),
                a.encoded(),
                Credentials { username: "org".into(), password: "p".into() }.encoded()
            ),
        )
        .map_err(|e| Error::io("write", &path, e))?;
        assert_eq!(
            read_credentials(&path, "docker.io", "library/busybox")?,
            Some(a.clone())
        );
        assert_eq!(
            read_credentials(&path, "quay.io", "org/app")?.map(|c| c.username),
            Some("org".to_string())
        );
        assert_eq!(read_credentials(&path, "quay.io", "orgx/app")?, None);
        let b = Credentials {
            username: "bob".into(),
            password: "pw".into(),
        };
        store_credentials(&path, "localhost:5000", &b)?;
        assert_eq!(read_credentials(&path, "localhost:5000", "r")?, Some(b));
        assert!(remove_credentials(&path, "localhost:5000")?);
        assert!(!remove_credentials(&path, "localhost:5000")?);
        assert_eq!(read_credentials(&path, "localhost:5000", "r")?, None);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        assert!(text.contains("credsStore"));
        assert!(text.contains("index.docker.io"));
        let mode = std::fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn helpers_come_before_the_auths_entry() -> std::result::Result<(), Box<dyn std::error::Error>>
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("log");
        // `docker-credential-NAME` answering user NAME for the hosts in its list, and not
        // found for the rest.
        for (name, hosts) in [("per-host", "a.example"), ("store", "a.example b.example")] {
            let p = dir.path().join(format!("docker-credential-{name}"));
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\nread -r s\necho \"{name} $s\" >> {}\nfor h in {hosts}; do [ \"$h\" = \"$s\" ] && echo '{{\"Username\":\"{name}\",\"Secret\":\"x\"}}' && exit 0; done\necho 'credentials not found in native keychain'; exit 1\n",
                    log.display()
                ),
            )?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        let file = dir.path().join("auth.json");
        let plain = Credentials {
            username: "plain".into(),
            password: "p".into(),
        };
        std::fs::write(
            &file,
            format!(
                r#"{{"credHelpers":{{"a.example":"per-host","c.example":"per-host"}},"credsStore":"store","auths":{{"a.example":{{"auth":"{e}"}},"c.example":{{"auth":"{e}"}},"d.example":{{"auth":"{e}"}}}}}}"#,
                e = plain.encoded()
            ),
        )?;
        let helpers = Helpers::new(Some(dir.path().as_os_str().to_owned()));
        let who = |reg: &str| -> Result<Option<(String, String)>> {
            Ok(
                lookup_credentials(&file, reg, "r", &helpers)?.map(|(c, o)| {
                    let o = match o {
                        Origin::Helper { name, .. } => name,
                        o => o.to_string(),
                    };
                    (c.username, o)
                }),
            )
        };
        let f = format!("credentials file {}", file.display());
        // credHelpers first, then credsStore, then auths; "not found" passes on.
        assert_eq!(
            who("a.example")?,
            Some(("per-host".into(), "per-host".into()))
        );
        assert_eq!(who("b.example")?, Some(("store".into(), "store".into())));
        assert_eq!(who("c.example")?, Some(("plain".into(), f.clone())));
        assert_eq!(who("d.example")?, Some(("plain".into(), f)));
        assert_eq!(who("e.example")?, None);
        // The auths-only reader runs nothing.
        assert_eq!(read_credentials(&file, "a.example", "r")?, Some(plain));
        let asked = std::fs::read_to_string(&log)?;
        assert_eq!(
            asked.lines().collect::<Vec<_>>(),
            [
                "per-host a.example",
                "store b.example",
                "per-host c.example",
                "store c.example",
                "store d.example",
                "store e.example",
            ]
        );
        // A helper named but missing is an error naming it.
        std::fs::write(&file, r#"{"credsStore":"nosuch"}"#)?;
        let e = lookup_credentials(&file, "a.example", "", &helpers)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("docker-credential-nosuch"), "{e}");
        Ok(())
    }
}
