//! Runs docker credential helpers: `docker-credential-NAME get|store|erase`, the programs named
//! by `credsStore` and `credHelpers` in the docker/containers credentials file.
//!
//! The protocol is docker-credential-helpers': `get` and `erase` read the server name on
//! stdin (`localhost:5000`; Docker Hub is `https://index.docker.io/v1/`), `get` answers
//! `{"ServerURL":..,"Username":..,"Secret":..}` on stdout, `store` reads that JSON on stdin.
//! A helper that fails with "credentials not found in native keychain" means no credentials;
//! any other failure is an [`Error::CredentialHelper`] naming the helper and what it printed.
//! Every run is bounded by a time limit (30 s by default): a hung helper is killed and fails,
//! it cannot hang a pull. Username `<token>` means the secret is an identity token
//! ([`Credentials::identity_token`]), which the client sends as an OAuth2 refresh token.
//!
//! The helper is looked up in an explicit search path ([`Helpers::new`]) or `$PATH`, so that
//! callers (and tests) choose where helpers come from without changing the process
//! environment.

use crate::oci::reference::DOCKER_HUB;
use crate::registry::auth::Credentials;
use crate::registry::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The username a helper answers when the secret is an identity (refresh) token.
pub const TOKEN_USERNAME: &str = "<token>";

/// How long one helper run may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a helper prints when it has no credentials for the server.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Bound on what is read from a helper's stdout and stderr.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// The server name a helper is asked about for `registry` (Docker's spelling for Docker Hub).
pub fn server_url(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// The credential helpers of one client: where to find them, how long they may take, and the
/// answers already given (each helper is asked about each registry once).
pub struct Helpers {
    search_path: Option<OsString>,
    timeout: Duration,
    cache: Mutex<HashMap<(String, String), Option<Credentials>>>,
}

impl std::fmt::Debug for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpers")
            .field("search_path", &self.search_path)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Helpers {
    /// Helpers found in `$PATH`, with the default time limit.
    fn default() -> Self {
        Helpers::new(None)
    }
}

/// One finished helper run.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn not_found(&self) -> bool {
        self.stdout.contains(NOT_FOUND) || self.stderr.contains(NOT_FOUND)
    }

    /// What the helper printed, for an error message (helpers report errors on stdout).
    fn detail(&self) -> String {
        let text = [self.stdout.trim(), self.stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let cut: String = text.chars().take(500).collect();
        if cut.is_empty() {
            "failed and printed nothing".to_string()
        } else {
            format!("failed: {cut}")
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl Helpers {
    /// Helpers looked up in `search_path` (a `PATH`-style list), or in `$PATH` when `None`.
    pub fn new(search_path: Option<OsString>) -> Helpers {
        Helpers {
            search_path,
            timeout: DEFAULT_TIMEOUT,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The same, with another time limit per helper run.
    pub fn with_timeout(mut self, timeout: Duration) -> Helpers {
        self.timeout = timeout;
        self
    }

    fn error(name: &str, action: &str, server: &str, detail: impl Into<String>) -> Error {
        Error::CredentialHelper {
            helper: format!("docker-credential-{name}"),
            action: if server.is_empty() {
                action.to_string()
            } else {
                format!("{action} {server}")
            },
            detail: detail.into(),
        }
    }

    /// The program `docker-credential-NAME`: the first executable file of that name in the
    /// search path.
    pub fn program(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(Self::error(
                name,
                "find",
                "",
                format!("{name:?} is not a credential helper name"),
            ));
        }
        let file = format!("docker-credential-{name}");
        let path = self
            .search_path
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            // An empty entry would mean the working directory: never run helpers from there.
            if dir.as_os_str().is_empty() {
                continue;
            }
            let p = dir.join(&file);
            if let Ok(m) = std::fs::metadata(&p) {
                use std::os::unix::fs::PermissionsExt;
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        Err(Self::error(name, "find", "", "not found in PATH"))
    }

    /// Runs `docker-credential-NAME VERB` with `input` on stdin, within the time limit.
    fn run(&self, name: &str, verb: &str, server: &str, input: Vec<u8>) -> Result<Run> {
        let program = self.program(name)?;
        let fail = |d: String| Self::error(name, verb, server, d);
        let mut child = Command::new(&program)
            .arg(verb)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", program.display())))?;
        fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
            let (tx, rx) = mpsc::channel();
            if let Some(p) = pipe {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = p.take(OUTPUT_LIMIT).read_to_end(&mut buf);
                    let _ = tx.send(buf);
                });
            } else {
                let _ = tx.send(Vec::new());
            }
            rx
        }
        let out = reader(child.stdout.take());
        let err = reader(child.stderr.take());
        if let Some(mut stdin) = child.stdin.take() {
            // In a thread: a helper that does not read its input must not block us. A helper
            // that exits without reading gives EPIPE, which its exit status then explains.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "gave no answer within {} s and was killed",
                        self.timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(fail(format!("wait: {e}"))),
            }
        };
        // Output still open after the exit belongs to a child the helper left behind.
        let rest = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let stdout = out
            .recv_timeout(rest)
            .map_err(|_| fail("exited but its output stayed open".to_string()))?;
        let stderr = err.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        Ok(Run {
            success: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    /// `docker-credential-NAME get`: the credentials for `registry`, `None` when the helper
    /// has none (or answers an empty username and secret).
    pub fn get(&self, name: &str, registry: &str) -> Result<Option<Credentials>> {
        let key = (name.to_string(), registry.to_string());
        if let Some(c) = self.cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let server = server_url(registry);
        let run = self.run(name, "get", &server, server.clone().into_bytes())?;
        if !run.success {
            if run.not_found() {
                self.remember(key, None);
                return Ok(None);
            }
            return Err(Self::error(name, "get", &server, run.detail()));
        }
        // The answer holds the secret: the error names the JSON problem, never the text.
        let answer: Answer = serde_json::from_str(run.stdout.trim()).map_err(|e| {
            Self::error(
                name,
                "get",
                &server,
                format!("answered something that is not its JSON: {e}"),
            )
        })?;
        let creds = if answer.username.is_empty() && answer.secret.is_empty() {
            None
        } else {
            Some(Credentials {
                username: answer.username,
                password: answer.secret,
            })
        };
        self.remember(key, creds.clone());
        Ok(creds)
    }

    fn remember(&self, key: (String, String), creds: Option<Credentials>) {
        if let Ok(mut m) = self.cache.lock() {
            m.insert(key, creds);
        }
    }

    fn forget(&self, name: &str, registry: &str) {
        if let Ok(mut m) = self.cache.lock() {
            m.remove(&(name.to_string(), registry.to_string()));
        }
    }

    /// `docker-credential-NAME store`: keeps `creds` for `registry` in the helper.
    pub fn store(&self, name: &str, registry: &str, creds: &Credentials) -> Result<()> {
        let server = server_url(registry);
        let input = serde_json::json!({
            "ServerURL": server,
            "Username": creds.username,
            "Secret": creds.password,
        })
        .to_string()
        .into_bytes();
        self.forget(name, registry);
        let run = self.run(name, "store", &server, input)?;
        if !run.success {
            return Err(Self::error(name, "store", &server, run.detail()));
        }
        Ok(())
    }

    /// `docker-credential-NAME erase`: removes the credentials of `registry` from the helper;
    /// returns whether it had some.
    pub fn erase(&self, name: &str, registry: &str) -> Result<bool> {
        let server = server_url(registry);
        self.forget(name, registry);
        let run = self.run(name, "erase", &server, server.clone().into_bytes())?;
        if run.success {
            Ok(true)
        } else if run.not_found() {
            Ok(false)
        } else {
            Err(Self::error(name, "erase", &server, run.detail()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    /// Writes `docker-credential-NAME` into `dir` as a shell script.
    fn helper(dir: &Path, name: &str, body: &str) -> TestResult {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    fn helpers(dir: &Path) -> Helpers {
        Helpers::new(Some(dir.as_os_str().to_owned()))
    }

    #[test]
    fn get_store_erase_round_trip() -> TestResult {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("log");
        let db = dir.path().join("db");
        // A helper keeping one JSON document per server in files named after the server.
        helper(
            dir.path(),
            "file",
            &format!(
                r#"read -r server || true
log={log}
db={db}
mkdir -p "$db"
case "$1" in
get) echo "get $server" >> "$log"
     key=$(printf %s "$server" | tr / _)
     if [ -f "$db/$key" ]; then cat "$db/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store) echo "store $server" >> "$log"
     key=$(printf %s "$server" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/' | tr / _)
     printf %s "$server" > "$db/$key" ;;
erase) echo "erase $server" >> "$log"
     key=$(printf %s "$server" | tr / _)
     if [ -f "$db/$key" ]; then rm "$db/$key"; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac"#,
                log = log.display(),
                db = db.display()
            ),
        )?;
        let h = helpers(dir.path());
        assert_eq!(h.get("file", "localhost:5000")?, None);
        let c = Credentials {
            username: "alice".into(),
            password: "s3 cr\"et".into(),
        };
        h.store("file", "localhost:5000", &c)?;
        assert_eq!(h.get("file", "localhost:5000")?, Some(c.clone()));
        // Answered from the cache: the helper is asked once per registry.
        assert_eq!(h.get("file", "localhost:5000")?, Some(c.clone()));
        h.store("file", "docker.io", &c)?;
        assert_eq!(h.get("file", "docker.io")?, Some(c.clone()));
        assert!(h.erase("file", "localhost:5000")?);
        assert!(!h.erase("file", "localhost:5000")?);
        assert_eq!(h.get("file", "localhost:5000")?, None);
        let text = std::fs::read_to_string(&log)?;
        // `store` reads the JSON document, the others the bare server name.
        let lines: Vec<&str> = text
            .lines()
            .map(|l| if l.starts_with("store {") { "store" } else { l })
            .collect();
        assert_eq!(
            lines,
            [
                "get localhost:5000",
                "store",
                "get localhost:5000",
                "store",
                "get https://index.docker.io/v1/",
                "erase localhost:5000",
                "erase localhost:5000",
                "get localhost:5000",
            ]
        );
        assert!(
            text.contains(r#""ServerURL":"https://index.docker.io/v1/""#),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn answers_and_failures() -> TestResult {
        let dir = tempfile::tempdir()?;
        helper(
            dir.path(),
            "ok",
            r#"read -r s; echo "{\"ServerURL\":\"$s\",\"Username\":\"u-$s\",\"Secret\":\"p\"}""#,
        )?;
        helper(
            dir.path(),
            "token",
            r#"echo '{"ServerURL":"x","Username":"<token>","Secret":"refresh-me"}'"#,
        )?;
        helper(
            dir.path(),
            "empty",
            r#"echo '{"ServerURL":"x","Username":"","Secret":""}'"#,
        )?;
        helper(
            dir.path(),
            "broken",
            "echo 'keychain is locked'; echo 'dbus said no' >&2; exit 3",
        )?;
        helper(dir.path(), "garbage", "echo 'user=alice secret=hunter2'")?;
        helper(dir.path(), "hang", "exec sleep 30")?;
        let h = helpers(dir.path());
        assert_eq!(
            h.get("ok", "localhost:5000")?,
            Some(Credentials {
                username: "u-localhost:5000".into(),
                password: "p".into()
            })
        );
        let t = h.get("token", "quay.io")?.ok_or("no token")?;
        assert_eq!(t.identity_token(), Some("refresh-me"));
        assert_eq!(h.get("empty", "quay.io")?, None);

        let e = h.get("broken", "quay.io").err().ok_or("no error")?;
        assert!(matches!(e, Error::CredentialHelper { .. }), "{e:?}");
        let m = e.to_string();
        assert!(
            m.contains("docker-credential-broken")
                && m.contains("quay.io")
                && m.contains("keychain is locked")
                && m.contains("dbus said no"),
            "{m}"
        );
        let m = h
            .get("garbage", "quay.io")
            .err()
            .ok_or("no error")?
            .to_string();
        assert!(m.contains("not its JSON") && !m.contains("hunter2"), "{m}");
        let m = h
            .get("missing", "quay.io")
            .err()
            .ok_or("no error")?
            .to_string();
        assert!(
            m.contains("docker-credential-missing") && m.contains("not found in PATH"),
            "{m}"
        );
        assert!(h.get("../ok", "quay.io").is_err());

        let short = helpers(dir.path()).with_timeout(Duration::from_millis(300));
        let t0 = Instant::now();
        let m = short
            .get("hang", "quay.io")
            .err()
            .ok_or("no error")?
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(
            m.contains("killed") && m.contains("docker-credential-hang"),
            "{m}"
        );
        Ok(())
    }
}
