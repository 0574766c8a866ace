//! `run`, `exec`, `start`, `stop`, `kill`, `wait`, `logs`, `attach` (and the hidden
//! `__supervise`): argument checks with clear one-line errors, then the `run` library.

use crate::image::union;
use crate::run::attach::{self, ClientOptions, Outcome};
use crate::run::logs::{LogReader, Stream};
use crate::run::spec::{self, ImageDefaults};
use crate::run::{exec, idmap, namespaces, network, state, supervisor, userns};
use crate::store::{BindSpec, ContainerRecord, RunConfig, RunState, Store};
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The options of `strata run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Name of the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Serve lazy layers on demand (done whenever the image has lazy layers).
    #[arg(long)]
    pub lazy: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open (pass it to the container).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (K=V, or K to take it from here).
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read environment variables from a file (K=V lines).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (name or uid, with :group or :gid) to run as.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Bind a host path: HOST:CONTAINER[:ro|rw].
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Publish a port: [IP:]HOSTPORT:CTRPORT[/tcp|/udp] (implies --network private).
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]")]
    pub publish: Vec<String>,
    /// Replace the image's entrypoint ("" for none); clears the image's Cmd.
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Hostname (default: the short container ID).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the container's root read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Network: host (default), none, or private (own namespace through pasta).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// `host` to stay in the host's PID namespace.
    #[arg(long, value_name = "host")]
    pub pid: Option<String>,
    /// The image.
    pub image: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The options of `strata exec`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Run in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// The container.
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn lookup_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn parse_bind(v: &str) -> anyhow::Result<BindSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => bail!("invalid volume {v:?}: expected HOST:CONTAINER[:ro|rw]"),
    };
    if !src.starts_with('/') {
        bail!(
            "invalid volume {v:?}: the host path must be absolute (named volumes are not supported)"
        );
    }
    if !dst.starts_with('/') {
        bail!("invalid volume {v:?}: the container path must be absolute");
    }
    let source = Path::new(src);
    if source.symlink_metadata().is_err() {
        bail!("bind source path does not exist: {src}");
    }
    let source = source
        .canonicalize()
        .with_context(|| format!("resolve bind source {src}"))?;
    Ok(BindSpec {
        source: source.to_string_lossy().into_owned(),
        target: dst.to_string(),
        read_only: ro,
    })
}

fn run_config(a: &RunArgs) -> anyhow::Result<RunConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("read env file {}", f.display()))?;
        env.extend(spec::parse_env_file(&text, lookup_env));
    }
    env.extend(a.env.iter().filter_map(|e| spec::env_entry(e, lookup_env)));
    let ports = a
        .publish
        .iter()
        .map(|p| network::parse_port(p))
        .collect::<Result<Vec<_>, _>>()?;
    let network = match a.network.as_deref() {
        None if !ports.is_empty() => "private".to_string(),
        None => "host".to_string(),
        Some("bridge" | "slirp4netns" | "pasta") => "private".to_string(),
        Some(n) if network::MODES.contains(&n) => n.to_string(),
        Some(n) => bail!("unknown network {n:?} (host, none or private)"),
    };
    if !ports.is_empty() && network != "private" {
        bail!("published ports (-p) need --network private, not --network {network}");
    }
    let pid_host = match a.pid.as_deref() {
        None => false,
        Some("host") => true,
        Some(p) => bail!("unknown --pid {p:?} (only host)"),
    };
    if let Some(w) = &a.workdir
        && !w.starts_with('/')
    {
        bail!("the working directory '{w}' is invalid, it needs to be an absolute path");
    }
    Ok(RunConfig {
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        stdin: a.interactive,
        binds: a
            .volume
            .iter()
            .map(|v| parse_bind(v))
            .collect::<anyhow::Result<_>>()?,
        ports,
        hostname: a.hostname.clone(),
        read_only: a.read_only,
        network,
        pid_host,
        auto_remove: a.rm,
    })
}

/// A file of an image read through its layers (no mount).
fn image_file(lowers: &[PathBuf], path: &str) -> Option<String> {
    let rel = Path::new(path);
    let i = union::lookup(lowers, rel)?;
    std::fs::read_to_string(lowers[i].join(rel)).ok()
}

/// What a run needs from this machine, checked before anything is made.
fn preflight(cfg: &RunConfig) -> anyhow::Result<()> {
    if !idmap::is_real_root() {
        namespaces::check_userns()?;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("/dev/fuse is missing (no FUSE in this kernel or container)")
        }
        Err(e) => bail!("cannot open /dev/fuse: {e}"),
    }
    if cfg.network == "private" {
        network::check_private()?;
    }
    Ok(())
}

/// `strata run`.
pub fn run(store: &Store, a: &RunArgs) -> anyhow::Result<i32> {
    let cfg = run_config(a)?;
    let img = store.resolve_image(&a.image)?;
    let image = ImageDefaults::from_image_config(&store.image_config(&img)?);
    spec::argv(&image, &cfg)?;
    spec::workdir(&image, &cfg)?;
    // Lazy layers are served by their own mounts, made here before any thread starts.
    super::lazy::ensure_image_mounts(store, &img)?;
    let lowers = store.image_lowerdirs(&img);
    spec::resolve_user(
        &spec::user_spec(&image, &cfg),
        image_file(&lowers, "etc/passwd").as_deref(),
        image_file(&lowers, "etc/group").as_deref(),
    )?;
    preflight(&cfg)?;
    let rec = store.create_container_with(
        &a.image,
        a.name.as_deref(),
        None,
        Some(RunState {
            config: cfg.clone(),
            ..RunState::default()
        }),
    )?;
    let outcome = supervisor::spawn(store, &rec).and_then(|sock| {
        attach::relay(
            sock,
            ClientOptions {
                stdin: cfg.stdin,
                tty: cfg.tty,
                detach_when_started: a.detach,
            },
        )
    });
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Nothing ran: take the new container back.
            if !store.container_running(&rec) {
                let _ = userns::remove_container(store, &rec);
            }
            return Err(e.into());
        }
    };
    let code = match outcome {
        Outcome::Started(id) => {
            println!("{id}");
            return Ok(0);
        }
        Outcome::Exited(code) => {
            // The supervisor reports the exit before it unmounts and lets go of the
            // container: return once it has, so that the next command sees it stopped.
            wait_stopped(store, &rec, Duration::from_secs(15));
            code
        }
        Outcome::Lost => recorded_exit(store, &rec.id),
    };
    // A run whose process never started (125 from strata, 126/127 from exec) leaves nothing.
    if let Ok(r) = store.container(&rec.id)
        && r.run.as_ref().is_some_and(|s| s.started.is_none())
        && !store.container_running(&r)
    {
        let _ = userns::remove_container(store, &r);
    }
    Ok(code)
}

fn recorded_exit(store: &Store, id: &str) -> i32 {
    store
        .container(id)
        .ok()
        .and_then(|r| match state::state(store, &r) {
            state::State::Exited { code, .. } => Some(code),
            _ => None,
        })
        .unwrap_or(125)
}

fn run_container(store: &Store, r: &str) -> anyhow::Result<ContainerRecord> {
    let c = store.container(r)?;
    if c.run.is_none() {
        bail!(
            "container {} was made by `strata mount`; only containers made by `strata run` can be started",
            c.name
        );
    }
    Ok(c)
}

/// `strata exec`.
pub fn exec(store: &Store, a: &ExecArgs) -> anyhow::Result<i32> {
    let c = run_container(store, &a.container)?;
    let env: Vec<String> = a
        .env
        .iter()
        .filter_map(|e| spec::env_entry(e, lookup_env))
        .collect();
    let opts = exec::ExecOptions {
        cmd: a.command.clone(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        stdin: a.interactive,
        detach: a.detach,
    };
    match exec::exec(store, &c, &opts) {
        Ok(code) => Ok(code),
        Err(e @ crate::run::RunError::Exec { .. }) => {
            eprintln!("strata: {e}");
            Ok(e.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}

/// `strata start [-a] [-i] CONTAINER...`.
pub fn start(
    store: &Store,
    containers: &[String],
    attach: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    let mut code = 0;
    for r in containers {
        let c = run_container(store, r)?;
        if store.container_running(&c) {
            println!("{}", c.name);
            continue;
        }
        let cfg = c.run.as_ref().map(|s| s.config.clone()).unwrap_or_default();
        let sock = supervisor::spawn(store, &c)?;
        let outcome = attach::relay(
            sock,
            ClientOptions {
                stdin: interactive && cfg.stdin,
                tty: cfg.tty,
                detach_when_started: !attach,
            },
        )?;
        code = match outcome {
            Outcome::Started(_) => {
                println!("{}", c.name);
                0
            }
            Outcome::Exited(code) => {
                wait_stopped(store, &c, Duration::from_secs(15));
                code
            }
            Outcome::Lost => recorded_exit(store, &c.id),
        };
        if !attach && code != 0 {
            bail!("cannot start container {}", c.name);
        }
    }
    Ok(code)
}

fn wait_stopped(store: &Store, c: &ContainerRecord, timeout: Duration) -> bool {
    let start = Instant::now();
    while store.container_running(c) {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Stop a running container: SIGTERM, then SIGKILL after `secs`.
fn stop_one(store: &Store, c: &ContainerRecord, secs: u64) -> anyhow::Result<()> {
    if !store.container_running(c) {
        return Ok(());
    }
    let _ = supervisor::signal(store, c, libc::SIGTERM);
    if !wait_stopped(store, c, Duration::from_secs(secs)) {
        let _ = supervisor::signal(store, c, libc::SIGKILL);
        if !wait_stopped(store, c, Duration::from_secs(15)) {
            bail!("container {} did not stop", c.name);
        }
    }
    Ok(())
}

/// `strata stop [-t SECS] CONTAINER...`.
pub fn stop(store: &Store, containers: &[String], secs: u64) -> anyhow::Result<i32> {
    for r in containers {
        let c = run_container(store, r)?;
        stop_one(store, &c, secs)?;
        println!("{}", c.name);
    }
    Ok(0)
}

fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| anyhow::anyhow!("invalid signal {s}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| anyhow::anyhow!("invalid signal {s}"))
}

/// `strata kill [-s SIG] CONTAINER...`.
pub fn kill(store: &Store, containers: &[String], sig: &str) -> anyhow::Result<i32> {
    let signo = parse_signal(sig)?;
    for r in containers {
        let c = run_container(store, r)?;
        if !store.container_running(&c) {
            bail!("container {} is not running", c.name);
        }
        supervisor::signal(store, &c, signo)?;
        println!("{}", c.name);
    }
    Ok(0)
}

/// `strata wait CONTAINER...`: prints each exit code once it has stopped.
pub fn wait(store: &Store, containers: &[String]) -> anyhow::Result<i32> {
    for r in containers {
        let c = run_container(store, r)?;
        if let Ok(f) = std::fs::File::open(store.run_lock_path(&c)) {
            // Blocks until the supervisor is done (it records the exit code first).
            let _ = f.lock_shared();
        }
        println!("{}", recorded_exit(store, &c.id));
    }
    Ok(0)
}

fn print_entries(entries: Vec<crate::run::logs::Entry>) {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    for e in entries {
        let _ = match e.stream {
            Stream::Stdout => out.write_all(e.log.as_bytes()),
            Stream::Stderr => err.write_all(e.log.as_bytes()),
        };
    }
    let _ = out.flush();
}

/// `strata logs [-f] [--tail N] CONTAINER`.
pub fn logs(
    store: &Store,
    container: &str,
    follow: bool,
    tail: Option<&str>,
) -> anyhow::Result<i32> {
    let c = run_container(store, container)?;
    let n = match tail {
        None | Some("all") => None,
        Some(t) => Some(
            t.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("--tail takes a number or \"all\", not {t:?}"))?,
        ),
    };
    let path = store.container_dir(&c).join("container.log");
    let mut reader = LogReader::open(&path)?;
    // A container that has just started may not have written its log yet: -f waits for it.
    while reader.is_none() && follow && store.container_running(&c) {
        std::thread::sleep(Duration::from_millis(50));
        reader = LogReader::open(&path)?;
    }
    let Some(mut reader) = reader.map_or_else(|| LogReader::open(&path), |r| Ok(Some(r)))? else {
        return Ok(0);
    };
    print_entries(crate::run::logs::tail(reader.next_entries()?, n));
    if follow {
        loop {
            let running = store.container_running(&c);
            print_entries(reader.next_entries()?);
            if !running {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(0)
}

/// `strata attach CONTAINER`.
pub fn attach(store: &Store, container: &str) -> anyhow::Result<i32> {
    let c = run_container(store, container)?;
    if !store.container_running(&c) {
        bail!("container {} is not running", c.name);
    }
    let cfg = c.run.as_ref().map(|s| s.config.clone()).unwrap_or_default();
    let sock = crate::sys::socket::connect_unix(&supervisor::attach_socket(store, &c))
        .with_context(|| format!("attach to {}", c.name))?;
    let outcome = attach::relay(
        sock,
        ClientOptions {
            stdin: cfg.stdin,
            tty: cfg.tty,
            detach_when_started: false,
        },
    )?;
    Ok(match outcome {
        Outcome::Exited(code) => code,
        _ => {
            wait_stopped(store, &c, Duration::from_secs(10));
            recorded_exit(store, &c.id)
        }
    })
}

/// Stop (SIGKILL) a running container before `rm -f`.
pub fn kill_for_rm(store: &Store, c: &ContainerRecord) -> anyhow::Result<()> {
    stop_one(store, c, 0)
}

/// `strata __supervise ID`.
pub fn supervise(store: &Store, id: &str, attach_fd: Option<i32>) -> anyhow::Result<i32> {
    let fd = attach_fd
        .map(crate::sys::process::take_fd)
        .transpose()
        .context("the attach descriptor")?;
    Ok(supervisor::supervise(store, id, fd))
}
