//! Registry credentials: the `auth.json` / `~/.docker/config.json` credentials file, the
//! `WWW-Authenticate` challenge parser, and `login` / `logout`.
//!
//! The file holds `{"auths":{"HOST":{"auth":"base64(user:pass)"}}}`. It is read from
//! `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json` and `~/.docker/config.json`
//! (first entry found wins) and written, mode 0600 and atomically, to the first of those
//! that applies. Other keys in the file are preserved.

use crate::oci::reference::DOCKER_HUB;
use crate::registry::client::{Client, ClientOptions};
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

/// Looks up credentials for `registry` (and `repository`, for per-repository entries) in one
/// file. The longest matching key wins.
pub fn read_credentials(
    path: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let Some(doc) = load(path)? else {
        return Ok(None);
    };
    let Some(auths) = doc.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
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
    Ok(best.map(|(_, c)| c))
}

/// Looks up credentials in all the files of [`auth_file_paths`], first match wins.
pub fn find_credentials(registry: &str, repository: &str) -> Result<Option<Credentials>> {
    for p in auth_file_paths() {
        if let Some(c) = read_credentials(&p, registry, repository)? {
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

/// Checks `creds` against the registry, then stores them in the default credentials file
/// (or `opts.auth_file`). Returns the file written.
pub fn login(registry: &str, creds: &Credentials, opts: &ClientOptions) -> Result<PathBuf> {
    let mut o = opts.clone();
    o.credentials = Some(creds.clone());
    let client = Client::new(registry, &o)?;
    client.check_login()?;
    let path = match &opts.auth_file {
        Some(p) => p.clone(),
        None => default_auth_file()?,
    };
    store_credentials(&path, registry, creds)?;
    Ok(path)
}

/// Removes the credentials of `registry` from every credentials file (or only
/// `auth_file`); returns whether any existed.
pub fn logout(registry: &str, auth_file: Option<&Path>) -> Result<bool> {
    let registry = normalize_key(registry);
    let paths = match auth_file {
        Some(p) => vec![p.to_path_buf()],
        None => auth_file_paths(),
    };
    let mut any = false;
    for p in paths {
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
}
