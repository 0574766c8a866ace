//! `pull`, `push`, `login`, `logout`: the registry client (`crate::registry`) wired to the
//! store. A pull writes an OCI layout under the store's tmp/ (skipping blobs the store has)
//! and the store imports it; a push exports the image as an OCI layout and uploads it.

use super::progress::CliProgress;
use crate::image::docker_archive::DirSink;
use crate::image::oci_layout;
use crate::oci::Digest;
use crate::registry::auth::Credentials;
use crate::registry::{self, ClientOptions, Platform, PullOptions, PushOptions, Reference};
use crate::store::{LoadedImage, Store};
use anyhow::Context;
use std::path::PathBuf;

/// Connection options shared by pull, push and login.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Verify TLS certificates (false: also try plain HTTP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// USER:PASSWORD to use instead of the credentials file.
    #[arg(long)]
    pub creds: Option<String>,
    /// Credentials file (default: $XDG_RUNTIME_DIR/containers/auth.json and friends).
    #[arg(long)]
    pub authfile: Option<PathBuf>,
}

impl RegistryArgs {
    pub(super) fn client(&self) -> anyhow::Result<ClientOptions> {
        let credentials = match &self.creds {
            Some(c) => {
                let (u, p) = c.split_once(':').context("--creds wants USER:PASSWORD")?;
                Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                })
            }
            None => None,
        };
        Ok(ClientOptions {
            tls_verify: self.tls_verify,
            credentials,
            auth_file: self.authfile.clone(),
            ..ClientOptions::default()
        })
    }
}

/// What a pull (full or lazy) starts from: the parsed reference, the pull options, a scratch
/// directory in the store's tmp/ for the OCI layout, and the progress display.
pub(super) struct PullStart {
    pub reference: Reference,
    pub opts: PullOptions,
    pub tmp: tempfile::TempDir,
    pub prog: CliProgress,
}

impl PullStart {
    pub(super) fn new(
        store: &Store,
        reference: &str,
        platform: Option<&str>,
        args: &RegistryArgs,
        quiet: bool,
    ) -> anyhow::Result<Self> {
        let r = Reference::parse(reference)
            .with_context(|| format!("invalid reference {reference}"))?;
        let mut opts = PullOptions {
            client: args.client()?,
            ..PullOptions::default()
        };
        if let Some(p) = platform {
            opts.platform =
                Some(Platform::parse(p).with_context(|| format!("invalid platform {p}"))?);
        }
        let tmp = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(store.root().join("tmp"))
            .context("create a scratch layout in the store")?;
        Ok(PullStart {
            reference: r,
            opts,
            tmp,
            prog: CliProgress::new(quiet),
        })
    }
}

/// The end of a pull: `Pulled: TAG (DIGEST)` on stderr for every tag unless `quiet`, and each
/// image ID on stdout.
pub(super) fn print_pulled(loaded: &[LoadedImage], md: &Digest, quiet: bool) {
    for l in loaded {
        if !quiet {
            for t in &l.tags {
                eprintln!("Pulled: {t} ({md})");
            }
        }
        println!("{}", l.image.id);
    }
}

/// `strata pull REF`: prints the image ID.
pub fn pull(
    store: &Store,
    reference: &str,
    platform: Option<&str>,
    args: &RegistryArgs,
    quiet: bool,
) -> anyhow::Result<i32> {
    let PullStart {
        reference: r,
        opts,
        tmp,
        prog,
    } = PullStart::new(store, reference, platform, args, quiet)?;
    let have = |d: &Digest| store.has_blob(d);
    let res =
        registry::pull(&r, &opts, tmp.path(), &have, &prog).with_context(|| format!("pull {r}"))?;
    let md = res.manifest_digest;
    let loaded = store
        .import_pulled_layout(tmp.path(), &r.to_string(), &md, &prog)
        .with_context(|| format!("import {r}"))?;
    print_pulled(&loaded, &md, quiet);
    Ok(0)
}

/// `strata push IMAGE [DEST]`: prints the manifest digest.
pub fn push(
    store: &Store,
    image: &str,
    dest: Option<&str>,
    args: &RegistryArgs,
    estargz: Option<std::path::PathBuf>,
    quiet: bool,
) -> anyhow::Result<i32> {
    let dest = Reference::parse(dest.unwrap_or(image))
        .with_context(|| format!("invalid destination {}", dest.unwrap_or(image)))?;
    let tmp = tempfile::Builder::new()
        .prefix("push-")
        .tempdir_in(store.root().join("tmp"))
        .context("create a scratch layout in the store")?;
    {
        let _lock = store.lock_shared()?;
        let mut exports = store.export_images(&[image.to_string()])?;
        for e in &mut exports {
            e.tags.truncate(1);
        }
        oci_layout::write(
            &exports,
            &mut DirSink(tmp.path().to_path_buf()),
            &mut |_| {},
        )?;
    }
    if let Some(prefetch) = &estargz {
        let p = (!prefetch.as_os_str().is_empty()).then_some(prefetch.as_path());
        super::lazy::convert_for_push(tmp.path(), p)?;
    }
    let prog = CliProgress::new(quiet);
    let opts = PushOptions {
        client: args.client()?,
        mount_from: None,
    };
    let digest = registry::push(tmp.path(), None, &dest, &opts, &prog)
        .with_context(|| format!("push {dest}"))?;
    println!("{digest}");
    Ok(0)
}

/// `strata login HOST -u USER [--password-stdin | -p PASS]`.
pub fn login(
    host: &str,
    user: &str,
    password: Option<&str>,
    args: &RegistryArgs,
) -> anyhow::Result<i32> {
    let password = match password {
        Some(p) => p.to_string(),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .context("read the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    let creds = Credentials {
        username: user.to_string(),
        password,
    };
    let stored = registry::login(host, &creds, &args.client()?)
        .with_context(|| format!("login to {host}"))?;
    eprintln!("Login Succeeded (credentials in {stored})");
    Ok(0)
}

/// `strata logout HOST`.
pub fn logout(host: &str, args: &RegistryArgs) -> anyhow::Result<i32> {
    if registry::logout(host, args.authfile.as_deref())
        .with_context(|| format!("logout from {host}"))?
    {
        eprintln!("Removed login credentials for {host}");
        Ok(0)
    } else {
        eprintln!("Not logged in to {host}");
        Ok(1)
    }
}
