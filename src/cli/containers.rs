//! `mount`, `umount`, `ps`, `rm`, `commit`, `diff`: containers.

use super::OutFormat;
use super::images::Partial;
use super::progress::CliProgress;
use crate::image::diff;
use crate::run::state;
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
    super::lazy::ensure_mounts(store, &c)?;
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
        super::lazy::release_mounts(store, &c)?;
        println!("{}", c.name);
    }
    Ok(0)
}

/// The command of a container, quoted as Docker's COMMAND column (cut at 20 characters).
fn command_text(store: &Store, c: &crate::store::ContainerRecord) -> String {
    let Some(run) = &c.run else {
        return String::new();
    };
    let argv = store
        .image(&c.image)
        .ok()
        .and_then(|img| store.image_config(&img).ok())
        .map(|cfg| crate::run::spec::ImageDefaults::from_image_config(&cfg))
        .and_then(|img| crate::run::spec::argv(&img, &run.config).ok())
        .unwrap_or_default();
    let full = argv.join(" ");
    let cut: String = full.chars().take(20).collect();
    if cut.len() < full.len() {
        format!("\"{cut}…\"")
    } else {
        format!("\"{full}\"")
    }
}

/// `strata ps [-a]`: run containers that run (all of them with `-a`) and every container
/// made by `strata mount`.
pub fn ps(store: &Store, format: OutFormat, all: bool, quiet: bool) -> anyhow::Result<i32> {
    let tags = store.tags()?;
    let cs = store.containers()?;
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
            let st = state::state(store, c);
            (c, image, mounted, st)
        })
        .filter(|(c, _, _, st)| all || c.run.is_none() || st.is_running())
        .collect();
    if quiet {
        for (c, ..) in &rows {
            println!("{}", &c.id[..12]);
        }
        return Ok(0);
    }
    // Containers of one image share its partial state: looked up once per image.
    let mut partial = std::collections::HashMap::new();
    for (c, ..) in &rows {
        if !partial.contains_key(&c.image)
            && let Ok(img) = store.image(&c.image)
        {
            partial.insert(c.image.clone(), Partial::of(store, &img));
        }
    }
    let partial_of = |c: &crate::store::ContainerRecord| partial.get(&c.image).copied().flatten();
    if format == OutFormat::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|(c, img, m, st)| {
                let run = c.run.as_ref();
                let mut v = json!({
                    "Id": c.id, "Name": c.name, "Image": img, "ImageId": c.image,
                    "Created": c.created, "Mounted": m, "Mountpoint": c.mountpoint,
                    "State": st.name(), "Status": st.status(),
                    "ExitCode": run.and_then(|r| r.exit_code),
                    "StartedAt": run.and_then(|r| r.started.clone()),
                    "FinishedAt": run.and_then(|r| r.finished.clone()),
                    "Command": command_text(store, c),
                    "Ports": run.map(|r| r.config.ports.iter().map(crate::run::network::port_text).collect::<Vec<_>>()).unwrap_or_default(),
                    "IdMap": run.and_then(|r| r.id_map.clone()),
                });
                // As in `strata images`: only for an image that still has lazy layers.
                if let Some(p) = partial_of(c) {
                    v["Partial"] = p.json();
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut table = vec![[
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "MOUNTED".into(),
        "NAMES".into(),
    ]];
    let mut suffixes = vec![String::new()];
    for (c, img, m, st) in rows {
        suffixes.push(Partial::suffix(partial_of(c).as_ref()));
        let ports = c
            .run
            .as_ref()
            .map(|r| {
                r.config
                    .ports
                    .iter()
                    .map(crate::run::network::port_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        table.push([
            c.id[..12].to_string(),
            img,
            command_text(store, c),
            state::ago(&c.created),
            st.status(),
            ports,
            if m { "yes" } else { "no" }.to_string(),
            c.name.clone(),
        ]);
    }
    // Columns as wide as their widest cell, three spaces apart (Docker's tabwriter).
    let mut width = [0usize; 8];
    for row in &table {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (row, suffix) in table.iter().zip(&suffixes) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = width[i] - cell.chars().count() + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        println!("{line}{suffix}");
    }
    Ok(0)
}

/// `strata rm [-f] CONTAINER...`: a running container needs -f (it is killed first), a
/// mounted one too (it is unmounted first).
pub fn rm(store: &Store, containers: &[String], force: bool) -> anyhow::Result<i32> {
    for r in containers {
        let c = store.container(r)?;
        if store.container_running(&c) {
            if !force {
                anyhow::bail!(
                    "container {} is running: stop it first, or use rm -f",
                    c.name
                );
            }
            super::run::kill_for_rm(store, &c)?;
        }
        let mp = Path::new(&c.mountpoint);
        if force && is_mounted(mp) {
            unmount(mp)?;
        }
        if c.run.is_some() {
            crate::run::userns::remove_container(store, &c)?;
        } else {
            store.remove_container(&c)?;
        }
        // A supervisor killed with -9 may have left its pasta (it dies with it) or sockets
        // behind: they went with the directory.
        println!("{}", c.name);
    }
    Ok(0)
}

/// `strata commit [...] CONTAINER [NAME:TAG]`: prints the new image ID. A container that
/// ran in a user namespace is read inside one with its id map, so that the layer holds the
/// owners the container saw (and every file, whatever its mode).
pub fn commit(
    store: &Store,
    container: &str,
    opts: &CommitOptions,
    quiet: bool,
) -> anyhow::Result<i32> {
    let c = store.container(container)?;
    let out = crate::run::userns::within(crate::run::userns::container_map(&c), || {
        let prog = CliProgress::new(quiet);
        store
            .commit(&c, opts, &prog)
            .map(|rec| rec.id.to_string().into_bytes())
            .map_err(|e| format!("commit {}: {e}", c.name))
    })?
    .map_err(anyhow::Error::msg)?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}

/// `strata diff CONTAINER` (mount points strata made for a run are left out while empty).
pub fn diff(store: &Store, container: &str, format: OutFormat) -> anyhow::Result<i32> {
    let c = store.container(container)?;
    let img = store.image(&c.image)?;
    let lowers = store.image_lowerdirs(&img);
    let upper = store.container_dir(&c).join("upper");
    let placeholders: Vec<String> = c
        .run
        .as_ref()
        .map(|r| r.placeholders.clone())
        .unwrap_or_default();
    let out = crate::run::userns::within(crate::run::userns::container_map(&c), || {
        let changes = diff::changes(&upper, &lowers).map_err(|e| e.to_string())?;
        let is_ph = |rel: &Path| {
            placeholders
                .iter()
                .any(|p| Path::new(p.trim_start_matches('/')) == rel)
                && diff::is_placeholder(&upper, rel)
        };
        // A directory changed only by the placeholders made in it (/etc for /etc/hosts).
        let only_placeholders = |rel: &Path| {
            std::fs::read_dir(upper.join(rel)).is_ok_and(|rd| {
                let names: Vec<_> = rd.flatten().map(|e| rel.join(e.file_name())).collect();
                !names.is_empty() && names.iter().all(|n| is_ph(n))
            })
        };
        let lines: Vec<String> = changes
            .iter()
            .filter(|ch| match ch {
                diff::Change::Added(p) => !is_ph(p),
                diff::Change::Changed(p) => !only_placeholders(p),
                diff::Change::Deleted(_) => true,
            })
            .map(|ch| ch.to_string())
            .collect();
        Ok(lines.join("\n").into_bytes())
    })?
    .map_err(anyhow::Error::msg)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    if format == OutFormat::Json {
        let v: Vec<_> = lines
            .iter()
            .map(|s| {
                let (k, p) = s.split_at(1);
                json!({"Kind": k, "Path": p.trim_start()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(0)
}
