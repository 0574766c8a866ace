//! The `strata` command line: argument definitions (clap derive) and dispatch to one module
//! per command group.

mod containers;
mod images;
mod lazy;
mod maint;
pub mod progress;
mod registry;
mod run;
mod transfer;

use crate::store::Store;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Container images as layers, mounted rootless as a union filesystem.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// Store directory (default: $XDG_DATA_HOME/strata, or /var/lib/strata for root).
    #[arg(long, global = true, env = "STRATA_ROOT")]
    pub root: Option<PathBuf>,
    /// Print only IDs / essential output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// Output formats for listings.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutFormat {
    /// Human table.
    Table,
    /// JSON.
    Json,
}

/// Archive formats for `save`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SaveFormat {
    /// docker-archive tar.
    Docker,
    /// OCI image layout as a tar.
    Oci,
    /// OCI image layout as a directory.
    OciDir,
}

/// Layer compressions for `push`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Compression {
    /// eStargz: gzip members per file and chunk, with a TOC.
    Estargz,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Load images from a docker-archive or OCI layout (tar, gzipped tar, or directory).
    Load {
        /// Input file or directory (default: stdin).
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Save images as a docker-archive (default) or OCI layout.
    Save {
        /// Output file (default: stdout); a directory for --format oci-dir.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Archive format.
        #[arg(long, value_enum, default_value = "docker")]
        format: SaveFormat,
        /// Layer compression (`estargz`: with --format oci or oci-dir).
        #[arg(long)]
        compression: Option<Compression>,
        /// Images to save.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Make a one-layer image from a rootfs tar or directory.
    Import {
        /// The rootfs tar (plain or compressed) or directory.
        source: PathBuf,
        /// NAME[:TAG] for the new image.
        reference: Option<String>,
    },
    /// List images.
    Images {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Show images in Docker's inspect JSON.
    Inspect {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the history of an image.
    History {
        /// The image.
        image: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Give an image another name.
    Tag {
        /// Source image.
        source: String,
        /// New NAME[:TAG].
        target: String,
    },
    /// Remove image tags; an image goes when nothing needs it.
    Rmi {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove all tags of an image given by ID.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove untagged images, unused layers and blobs, and leftovers.
    Prune,
    /// Re-verify every digest and reference in the store.
    Fsck {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Mount an image (new container) or an existing container.
    Mount {
        /// Image (new container) or container name/ID (mount it again).
        target: String,
        /// Where to mount (default: the container's merged/ dir).
        mountpoint: Option<PathBuf>,
        /// Name of the new container.
        #[arg(long)]
        name: Option<String>,
        /// Mount lazy layers on demand (done whenever the image has lazy layers).
        #[arg(long)]
        lazy: bool,
    },
    /// Serve one lazy layer in the foreground (started by `mount`).
    #[command(hide = true)]
    LazyServe {
        /// The layer's diff ID.
        diff_id: String,
        /// Do not fetch the rest of the blob in the background.
        #[arg(long)]
        no_complete: bool,
    },
    /// Unmount containers.
    Umount {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers (running and mounted ones; all with -a).
    Ps {
        /// Also exited and created run containers.
        #[arg(short, long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Remove containers (and their changes).
    Rm {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
        /// Stop (SIGKILL) a running container, unmount a mounted one, first.
        #[arg(short, long)]
        force: bool,
    },
    /// Run a command in a new container made from an image.
    Run(run::RunArgs),
    /// Run a command in a running container.
    Exec(run::ExecArgs),
    /// Start stopped containers again (with their changes).
    Start {
        /// Attach to the output and wait for the exit status.
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin too (containers made with -i).
        #[arg(short, long)]
        interactive: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers: SIGTERM, then SIGKILL after a grace time.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long = "time", default_value_t = 10)]
        time: u64,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to running containers.
    Kill {
        /// Signal name or number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Wait until containers stop; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's output.
    Logs {
        /// Keep following the output until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (or "all").
        #[arg(long, value_name = "N")]
        tail: Option<String>,
        /// The container.
        container: String,
    },
    /// Attach to a running container's input and output.
    Attach {
        /// The container.
        container: String,
    },
    /// (internal) Supervise one run of a container.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Container ID.
        id: String,
        /// Descriptor of the channel to the starting client.
        #[arg(long)]
        attach_fd: Option<i32>,
    },
    /// Make a new image from a container's changes.
    Commit {
        /// Commit message.
        #[arg(short, long)]
        message: Option<String>,
        /// Author.
        #[arg(short, long)]
        author: Option<String>,
        /// Config change: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE.
        #[arg(short, long = "change")]
        change: Vec<String>,
        /// Pause writes to the mounted container while committing.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        pause: bool,
        /// The container.
        container: String,
        /// NAME[:TAG] for the new image.
        reference: Option<String>,
    },
    /// List a container's changes (A added, C changed, D deleted).
    Diff {
        /// The container.
        container: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Pull an image from a registry into the store.
    Pull {
        /// [REGISTRY/]NAME[:TAG|@DIGEST].
        reference: String,
        /// OS/ARCH[/VARIANT] to pick from a multi-platform image.
        #[arg(long)]
        platform: Option<String>,
        /// Fetch only the footer and TOC of eStargz layers; file data comes on first read.
        #[arg(long)]
        lazy: bool,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// Push an image to a registry.
    Push {
        /// The image in the store.
        image: String,
        /// Destination [REGISTRY/]NAME[:TAG] (default: the image's name).
        destination: Option<String>,
        /// Layer compression: as stored (default) or `estargz` (lazily pullable).
        #[arg(long)]
        compression: Option<Compression>,
        /// With `--compression estargz`: a file of paths (one a line) to put first.
        #[arg(long)]
        prefetch_file: Option<PathBuf>,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// Store credentials for a registry.
    Login {
        /// Registry host[:port].
        host: String,
        /// User name.
        #[arg(short, long)]
        username: String,
        /// Password (default: read one line from stdin).
        #[arg(short, long)]
        password: Option<String>,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// Remove stored credentials for a registry.
    Logout {
        /// Registry host[:port].
        host: String,
        #[command(flatten)]
        registry: registry::RegistryArgs,
    },
    /// Show which layer provides a path and what every layer has there.
    Explain {
        /// Image or container.
        target: String,
        /// Path inside it.
        path: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
}

/// Run a parsed command line; returns the exit code. Commands that run a container's
/// process exit with its status, and with 125 (as Docker) when strata itself fails.
pub fn run(cli: Cli) -> i32 {
    let failure = match cli.cmd {
        Cmd::Run(_) | Cmd::Exec(_) | Cmd::Start { .. } | Cmd::Attach { .. } => 125,
        Cmd::Supervise { .. } => 125,
        _ => 1,
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strata: {e:#}");
            match e.downcast_ref::<crate::run::RunError>() {
                Some(r) if failure == 125 => r.exit_code(),
                _ => failure,
            }
        }
    }
}

fn open_store(cli: &Cli) -> anyhow::Result<Store> {
    let root = cli.root.clone().unwrap_or_else(Store::default_root);
    Store::open(&root)
        .map_err(|e| anyhow::anyhow!("cannot open the store at {}: {e}", root.display()))
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let store = open_store(&cli)?;
    let q = cli.quiet;
    match cli.cmd {
        Cmd::Load { input } => transfer::load(&store, input.as_deref(), q),
        Cmd::Save {
            output,
            format,
            compression: Some(_),
            images,
        } => lazy::save_estargz(&store, output.as_deref(), format, &images, q),
        Cmd::Save {
            output,
            format,
            images,
            ..
        } => transfer::save(&store, output.as_deref(), format, &images, q),
        Cmd::Import { source, reference } => {
            transfer::import(&store, &source, reference.as_deref(), q)
        }
        Cmd::Images { format } => images::images(&store, format, q),
        Cmd::Inspect { images } => images::inspect(&store, &images),
        Cmd::History { image, format } => images::history(&store, &image, format),
        Cmd::Tag { source, target } => images::tag(&store, &source, &target),
        Cmd::Rmi { images, force } => images::rmi(&store, &images, force),
        Cmd::Prune => maint::prune(&store, q),
        Cmd::Fsck { format } => maint::fsck(&store, format),
        Cmd::LazyServe {
            diff_id,
            no_complete,
        } => lazy::serve(&store, &diff_id, no_complete),
        Cmd::Mount {
            target,
            mountpoint,
            name,
            lazy: _,
        } => containers::mount(&store, &target, mountpoint.as_deref(), name.as_deref()),
        Cmd::Umount { containers } => containers::umount(&store, &containers),
        Cmd::Ps { all, format } => containers::ps(&store, format, all, q),
        Cmd::Run(a) => run::run(&store, &a),
        Cmd::Exec(a) => run::exec(&store, &a),
        Cmd::Start {
            attach,
            interactive,
            containers,
        } => run::start(&store, &containers, attach, interactive),
        Cmd::Stop { time, containers } => run::stop(&store, &containers, time),
        Cmd::Kill { signal, containers } => run::kill(&store, &containers, &signal),
        Cmd::Wait { containers } => run::wait(&store, &containers),
        Cmd::Logs {
            follow,
            tail,
            container,
        } => run::logs(&store, &container, follow, tail.as_deref()),
        Cmd::Attach { container } => run::attach(&store, &container),
        Cmd::Supervise { id, attach_fd } => run::supervise(&store, &id, attach_fd),
        Cmd::Rm { containers, force } => containers::rm(&store, &containers, force),
        Cmd::Commit {
            message,
            author,
            change,
            pause,
            container,
            reference,
        } => {
            let opts = crate::store::commit::CommitOptions {
                message,
                author,
                changes: change,
                pause,
                tag: reference,
            };
            containers::commit(&store, &container, &opts, q)
        }
        Cmd::Diff { container, format } => containers::diff(&store, &container, format),
        Cmd::Pull {
            reference,
            platform,
            lazy: true,
            registry: r,
        } => lazy::pull(&store, &reference, platform.as_deref(), &r, q),
        Cmd::Pull {
            reference,
            platform,
            registry: r,
            ..
        } => registry::pull(&store, &reference, platform.as_deref(), &r, q),
        Cmd::Push {
            image,
            destination,
            compression,
            prefetch_file,
            registry: r,
        } => registry::push(
            &store,
            &image,
            destination.as_deref(),
            &r,
            compression.map(|_| prefetch_file.unwrap_or_default()),
            q,
        ),
        Cmd::Login {
            host,
            username,
            password,
            registry: r,
        } => registry::login(&host, &username, password.as_deref(), &r),
        Cmd::Logout { host, registry: r } => registry::logout(&host, &r),
        Cmd::Explain {
            target,
            path,
            format,
        } => maint::explain(&store, &target, &path, format),
    }
}

/// Human size (Docker style: kB, MB, GB with 1000 steps).
pub fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i]).replace(".000", "")
    }
}
