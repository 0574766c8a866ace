//! Running operations of the mount test harness.

#[allow(unused_imports)]
use super::*;

/// The outcome of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    pub cmd: String,
    pub status: i32,
    pub stdout: String,
    /// The errno messages (strerror texts) found in stderr, in order, joined by "; ".
    pub errno: String,
    /// Raw stderr (not compared).
    pub stderr: String,
}

pub(crate) fn strerrors() -> &'static Vec<String> {
    static S: OnceLock<Vec<String>> = OnceLock::new();
    S.get_or_init(|| {
        let mut v: Vec<String> = (1..134)
            .map(|e| std::io::Error::from_raw_os_error(e).to_string())
            .map(|s| s.split(" (os error").next().unwrap_or("").to_string())
            .filter(|s| !s.is_empty() && !s.starts_with("Unknown error"))
            .collect();
        // longest first, so "Directory not empty" wins over shorter overlaps
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    })
}

/// The strerror texts found in a stderr text, in order of appearance.
pub fn errno_text(stderr: &str) -> String {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for line in stderr.lines() {
        let base = found.len();
        let mut taken: Vec<(usize, usize)> = Vec::new();
        for s in strerrors() {
            let mut from = 0;
            while let Some(i) = line[from..].find(s.as_str()) {
                let start = from + i;
                let end = start + s.len();
                if !taken.iter().any(|(a, b)| start < *b && *a < end) {
                    taken.push((start, end));
                    found.push((base * 10_000 + start, s.as_str()));
                }
                from = end;
            }
        }
    }
    found.sort();
    found.iter().map(|(_, s)| *s).collect::<Vec<_>>().join("; ")
}

/// Run one shell command line with `sh -c` in `dir` (60 s limit).
pub fn run_step(dir: &Path, cmd: &str) -> StepResult {
    run_step_as(dir, cmd, None, None)
}

/// Like [`run_step`], optionally as another user via setpriv.
/// `state` is exported as `$STATE`: a directory outside the mount for data kept between steps.
pub fn run_step_as(
    dir: &Path,
    cmd: &str,
    user: Option<(u32, u32)>,
    state: Option<&Path>,
) -> StepResult {
    let mut c = Command::new("timeout");
    c.arg("60");
    if let Some((u, g)) = user {
        c.arg("setpriv")
            .arg(format!("--reuid={u}"))
            .arg(format!("--regid={g}"))
            .arg("--clear-groups")
            .arg("--");
    }
    if user.is_some() {
        // a FUSE mount made by another user is not accessible to root: cd as that user
        c.arg("sh").arg("-c").arg(format!(
            "cd {} || exit 99; {cmd}",
            shq(&dir.display().to_string())
        ));
    } else {
        c.arg("sh").arg("-c").arg(cmd).current_dir(dir);
    }
    c.stdin(Stdio::null());
    if let Some(state) = state {
        c.env("STATE", state);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("spawn sh for {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let root = dir.display().to_string();
    StepResult {
        cmd: cmd.to_string(),
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).replace(&root, "MNT"),
        errno: errno_text(&stderr),
        stderr,
    }
}
