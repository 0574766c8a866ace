//! Test support for the registry tests: a throwaway `docker-registry` on 127.0.0.1 (killed on
//! drop), test images built with umoci and pushed with skopeo, and a recording `Progress`.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata::progress::{ALREADY_EXISTS, Progress};

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Whether a program is on PATH.
pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why the registry tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let missing: Vec<&str> = ["docker-registry", "skopeo", "umoci"]
        .into_iter()
        .filter(|b| !have(b))
        .collect();
    (!missing.is_empty()).then(|| format!("not installed: {}", missing.join(", ")))
}

/// Runs a program, failing with its stderr; returns stdout.
pub fn run(bin: &str, args: &[&str]) -> BoxResult<String> {
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "{bin} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> BoxResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether the file hashes to the hex digest `hex`.
pub fn hash_ok(path: &Path, hex: &str) -> BoxResult<bool> {
    let (d, _) = strata::oci::digest::hash_file(path)?;
    Ok(d.hex() == hex)
}

/// A `docker-registry` serving 127.0.0.1:PORT from a temporary directory.
pub struct Registry {
    pub dir: PathBuf,
    pub port: u16,
    config: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Registry {
    /// Starts a registry in `tmp/registry-PORT`, with htpasswd auth if `user` is given.
    pub fn start(tmp: &Path, user: Option<(&str, &str)>) -> BoxResult<Registry> {
        Self::start_with(tmp, user, "")
    }

    /// Starts a registry with extra top-level YAML (e.g. a `proxy:` section).
    pub fn start_with(tmp: &Path, user: Option<(&str, &str)>, extra: &str) -> BoxResult<Registry> {
        let mut last = None;
        for _ in 0..5 {
            match Self::start_once(tmp, user, extra) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "docker-registry did not start".into()))
    }

    fn start_once(tmp: &Path, user: Option<(&str, &str)>, extra: &str) -> BoxResult<Registry> {
        let port = free_port()?;
        let dir = tmp.join(format!("registry-{port}"));
        std::fs::create_dir_all(dir.join("data"))?;
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some((u, p)) = user {
            let file = dir.join("htpasswd");
            let hash = run("htpasswd", &["-Bbn", u, p])?;
            std::fs::write(&file, hash.trim())?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            ));
        }
        yaml.push_str(extra);
        let config = dir.join("config.yml");
        std::fs::write(&config, yaml)?;
        let reg = Registry {
            dir,
            port,
            config,
            child: Mutex::new(None),
        };
        reg.spawn()?;
        Ok(reg)
    }

    fn spawn(&self) -> BoxResult<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        *self.child.lock().map_err(|_| "poisoned")? = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                return Err(format!("docker-registry did not start: {log}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Something answered: make sure it is this registry, not another test's on a port
        // that was handed out twice.
        std::thread::sleep(Duration::from_millis(100));
        let mut guard = self.child.lock().map_err(|_| "poisoned")?;
        if let Some(c) = guard.as_mut()
            && c.try_wait()?.is_some()
        {
            let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
            return Err(format!("docker-registry exited at start: {log}").into());
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the registry (SIGKILL) and reaps it.
    pub fn kill(&self) {
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts it again on the same port and storage.
    pub fn restart(&self) -> BoxResult<()> {
        self.kill();
        self.spawn()
    }

    /// Bytes stored under the registry's storage root.
    pub fn stored_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.join("data"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Pseudo-random, incompressible bytes (xorshift64).
pub fn random_file(path: &Path, len: usize, seed: u64) -> BoxResult<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut buf = [0u8; 8];
    for _ in 0..len / 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.copy_from_slice(&x.to_le_bytes());
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(())
}

/// An OCI layout built with umoci: `base` (busybox), `app` (base + one small layer) and,
/// when `big > 0`, `big` (base + one layer of `big` random bytes).
pub struct TestImages {
    pub dir: PathBuf,
    pub layout: PathBuf,
}

impl TestImages {
    pub fn build(tmp: &Path, big: usize) -> BoxResult<TestImages> {
        Self::build_with_base(tmp, big, 0)
    }

    /// As [`TestImages::build`], with `base_extra` random bytes added to the base layer.
    pub fn build_with_base(tmp: &Path, big: usize, base_extra: usize) -> BoxResult<TestImages> {
        let dir = tmp.join("images");
        let layout = dir.join("layout");
        std::fs::create_dir_all(dir.join("rootfs/bin"))?;
        let l = layout.display().to_string();
        run("umoci", &["init", "--layout", &l])?;
        run("umoci", &["new", "--image", &format!("{l}:base")])?;
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("busybox is not installed")?;
        std::fs::copy(busybox, dir.join("rootfs/bin/busybox"))?;
        if base_extra > 0 {
            random_file(&dir.join("rootfs/bin/base-data"), base_extra, 7)?;
        }
        let rootfs_bin = dir.join("rootfs/bin").display().to_string();
        run(
            "umoci",
            &[
                "insert",
                "--rootless",
                "--image",
                &format!("{l}:base"),
                &rootfs_bin,
                "/bin",
            ],
        )?;
        run(
            "umoci",
            &[
                "config",
                "--image",
                &format!("{l}:base"),
                "--config.cmd",
                "/bin/busybox",
                "--config.cmd",
                "sh",
            ],
        )?;
        let app = dir.join("app.txt");
        std::fs::write(&app, "hello from the app layer\n")?;
        run(
            "umoci",
            &[
                "insert",
                "--rootless",
                "--image",
                &format!("{l}:base"),
                "--tag",
                "app",
                &app.display().to_string(),
                "/app.txt",
            ],
        )?;
        if big > 0 {
            let f = dir.join("big.bin");
            random_file(&f, big, 42)?;
            run(
                "umoci",
                &[
                    "insert",
                    "--rootless",
                    "--image",
                    &format!("{l}:base"),
                    "--tag",
                    "big",
                    &f.display().to_string(),
                    "/big.bin",
                ],
            )?;
        }
        let policy = dir.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
        Ok(TestImages { dir, layout })
    }

    /// Layer digests of image `tag` in the layout, bottom first.
    pub fn layer_digests(&self, tag: &str) -> BoxResult<Vec<strata::oci::Digest>> {
        let desc = strata::registry::layout::resolve(&self.layout, Some(tag))?;
        let bytes =
            strata::registry::layout::read_blob(&self.layout, &strata::oci::digest_of(&desc)?)?;
        let m: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(m["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| strata::oci::Digest::parse(l["digest"].as_str()?).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Path of the skopeo policy accepting everything.
    pub fn policy(&self) -> String {
        self.dir.join("policy.json").display().to_string()
    }

    /// skopeo copy of tag `tag` to `docker://dest`.
    pub fn skopeo_push(&self, tag: &str, dest: &str, creds: Option<&str>) -> BoxResult<()> {
        let src = format!("oci:{}:{tag}", self.layout.display());
        let dst = format!("docker://{dest}");
        let policy = self.policy();
        let mut args = vec!["--policy", &policy, "copy", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            args.extend(["--dest-creds", c]);
        }
        args.extend([src.as_str(), dst.as_str()]);
        run("skopeo", &args)?;
        Ok(())
    }
}

/// The manifest digest skopeo reports for an image (`docker://...` or `oci:...`).
pub fn skopeo_digest(image: &str) -> BoxResult<strata::oci::Digest> {
    let mut args = vec!["inspect", "--format", "{{.Digest}}"];
    if image.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    args.push(image);
    Ok(strata::oci::Digest::parse(run("skopeo", &args)?.trim())?)
}

/// A `Progress` that records `start|finish|exists DIGEST` lines.
#[derive(Default)]
pub struct Events(Mutex<Vec<String>>);

impl Events {
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub fn count(&self, kind: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with(&format!("{kind} ")))
            .count()
    }
    pub fn has(&self, kind: &str, digest: &str) -> bool {
        self.lines().contains(&format!("{kind} {digest}"))
    }
}

impl Progress for Events {
    fn begin(&self, digest: &str, _: &str, _: Option<u64>) {
        self.push(format!("start {digest}"));
    }
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, digest: &str, status: &str) {
        if status == ALREADY_EXISTS {
            self.push(format!("exists {digest}"));
        } else {
            self.push(format!("finish {digest}"));
        }
    }
    fn message(&self, line: &str) {
        self.push(format!("message {line}"));
    }
}
