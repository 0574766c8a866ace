//! `mount`, `umount`, `ps`, `rm`, `commit`, `diff`: containers.

use super::OutFormat;
use super::progress::CliProgress;
use crate::image::diff;
use crate::store::Store;
use crate::store::commit::CommitOptions;
use crate::store::containers::{is_mounted, unmount};
use anyhow::Context;
use serde_json::json;
use std::path::Path;

/// `strata mount TARGET [MOUNTPOINT] [--name N]`: prints the mountpoint.
pub fn mount(
    store: &Store,
    target: &str,
    mountpoint: Option<&Path>,
    name: Option<&str>,
) -> anyhow::Result<i32> {
    let (mut c, created) = match store.container(target) {
        Ok(mut c) if name.is_none() => {
            if let Some(mp) = mountpoint {
                store.set_mountpoint(&mut c, mp)?;
            }
            (c, false)
        }
        _ => (store.create_container(target, name, mountpoint)?, true),
    };
    let mp = Path::new(&c.mountpoint).to_path_buf();
    if is_mounted(&mp) {
        anyhow::bail!(
            "container {} is already mounted at {}",
            c.name,
            mp.display()
        );
    }
    std::fs::create_dir_all(&mp).with_context(|| format!("create mountpoint {}", mp.display()))?;
    let cfg = store.mount_config(&c)?;
    let sock = store.control_socket(&c);
    let _ = std::fs::remove_file(&sock);
    // No thread has been started by this process: the driver may fork its daemon now.
    if let Err(e) = crate::fs::mount(&cfg) {
        if created {
            // A new container that never mounted is of no use: take it back.
            let _ = store.remove_container(&c);
        }
        anyhow::bail!("mount container {} at {}: {e}", c.name, mp.display());
    }
    c.mountpoint = mp.to_string_lossy().into_owned();
    println!("{}", c.mountpoint);
    Ok(0)
}

/// `strata umount CONTAINER...`.
pub fn umount(store: &Store, containers: &[String]) -> anyhow::Result<i32> {
    for r in containers {
        let c = store.container(r)?;
        let mp = Path::new(&c.mountpoint);
        if !is_mounted(mp) {
            anyhow::bail!("container {} is not mounted", c.name);
        }
        unmount(mp)?;
        println!("{}", c.name);
    }
    Ok(0)
}

/// `strata ps`.
pub fn ps(store: &Store, format: OutFormat, quiet: bool) -> anyhow::Result<i32> {
    let tags = store.tags()?;
    let cs = store.containers()?;
    if quiet {
        for c in &cs {
            println!("{}", &c.id[..12]);
        }
        return Ok(0);
    }
    let rows: Vec<_> = cs
        .iter()
        .map(|c| {
            let mounted = is_mounted(Path::new(&c.mountpoint));
            let image =
                if tags.get(&crate::image::names::lookup_key(&c.image_ref)) == Some(&c.image) {
                    c.image_ref.clone()
                } else {
                    c.image.short().to_string()
                };
            (c, image, mounted)
        })
        .collect();
    if format == OutFormat::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, img, m)| json!({"Id": c.id, "Name": c.name, "Image": img, "ImageId": c.image, "Created": c.created, "Mounted": m, "Mountpoint": c.mountpoint}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<14} {:<24} {:<30} {:<9} MOUNTPOINT",
        "CONTAINER ID", "NAME", "IMAGE", "MOUNTED"
    );
    for (c, img, m) in rows {
        println!(
            "{:<14} {:<24} {:<30} {:<9} {}",
            &c.id[..12],
            c.name,
            img,
            if m { "yes" } else { "no" },
            c.mountpoint
        );
    }
    Ok(0)
}

/// `strata rm CONTAINER...`.
pub fn rm(store: &Store, containers: &[String], force: bool) -> anyhow::Result<i32> {
    for r in containers {
        let c = store.container(r)?;
        let mp = Path::new(&c.mountpoint);
        if force && is_mounted(mp) {
            unmount(mp)?;
        }
        store.remove_container(&c)?;
        println!("{}", c.name);
    }
    Ok(0)
}

/// `strata commit [...] CONTAINER [NAME:TAG]`: prints the new image ID.
pub fn commit(
    store: &Store,
    container: &str,
    opts: &CommitOptions,
    quiet: bool,
) -> anyhow::Result<i32> {
    let c = store.container(container)?;
    let prog = CliProgress::new(quiet);
    let rec = store
        .commit(&c, opts, &prog)
        .with_context(|| format!("commit {}", c.name))?;
    println!("{}", rec.id);
    Ok(0)
}

/// `strata diff CONTAINER`.
pub fn diff(store: &Store, container: &str, format: OutFormat) -> anyhow::Result<i32> {
    let c = store.container(container)?;
    let img = store.image(&c.image)?;
    let lowers = store.image_lowerdirs(&img);
    let changes = diff::changes(&store.container_dir(&c).join("upper"), &lowers)?;
    if format == OutFormat::Json {
        let v: Vec<_> = changes
            .iter()
            .map(|ch| {
                let s = ch.to_string();
                let (k, p) = s.split_at(1);
                json!({"Kind": k, "Path": p.trim_start()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for ch in changes {
            println!("{ch}");
        }
    }
    Ok(0)
}
