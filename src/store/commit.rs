//! New images from a directory: `commit` (a container's upper becomes a layer over its image)
//! and `import` (a rootfs tar or directory becomes a one-layer image).

use super::atomic::{Staging, fsync_tree, install};
use super::blobs::stage_bytes;
use super::control::{self, PauseOutcome};
use super::load::synth_manifest;
use super::records::{ContainerRecord, ImageRecord, LayerRecord, LayerRef};
use super::{Result, Store, StoreError};
use crate::image::ImageError;
use crate::image::apply::{ApplyOptions, apply_layer};
use crate::image::compress::{self, Compression};
use crate::image::config::ImageConfig;
use crate::image::diff::{DiffOptions, write_layer_tar};
use crate::image::time;
use crate::oci::digest::{HashReader, HashWriter};
use crate::oci::{Digest, ImageConfiguration, Platform, Reference};
use crate::progress::{ALREADY_EXISTS, Progress};
use oci_spec::image::{Arch, Config, History, Os};
use std::path::{Path, PathBuf};

/// Options of `commit`.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// History comment.
    pub message: Option<String>,
    /// Author.
    pub author: Option<String>,
    /// Dockerfile-like config changes (`CMD ["sh"]`, `ENV A=b`, ...).
    pub changes: Vec<String>,
    /// Pause writes to the mounted container while the layer is taken.
    pub pause: bool,
    /// Tag for the new image.
    pub tag: Option<String>,
}

fn json_or_shell(arg: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(arg)
        .unwrap_or_else(|_| vec!["/bin/sh".into(), "-c".into(), arg.into()])
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Apply one Dockerfile-like change to the `config` of an image config.
pub fn apply_change(cfg: &mut Config, change: &str) -> Result<()> {
    let bad = |m: &str| StoreError::Conflict(format!("invalid change {change:?}: {m}"));
    let (instr, arg) = change
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| bad("expected INSTRUCTION ARGS"))?;
    let arg = arg.trim();
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.set_cmd(Some(json_or_shell(arg)));
        }
        "ENTRYPOINT" => {
            cfg.set_entrypoint(Some(json_or_shell(arg)));
        }
        "WORKDIR" => {
            cfg.set_working_dir(Some(unquote(arg)));
        }
        "USER" => {
            cfg.set_user(Some(unquote(arg)));
        }
        "ENV" => {
            let (k, v) = match arg.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), unquote(v)),
                None => {
                    let (k, v) = arg
                        .split_once(char::is_whitespace)
                        .ok_or_else(|| bad("expected ENV KEY=VALUE"))?;
                    (k.to_string(), unquote(v))
                }
            };
            let mut list = cfg.env().clone().unwrap_or_default();
            list.retain(|e| e.split_once('=').map(|x| x.0) != Some(k.as_str()));
            list.push(format!("{k}={v}"));
            cfg.set_env(Some(list));
        }
        "LABEL" => {
            let (k, v) = arg
                .split_once('=')
                .ok_or_else(|| bad("expected LABEL KEY=VALUE"))?;
            let mut labels = cfg.labels().clone().unwrap_or_default();
            labels.insert(unquote(k), unquote(v));
            cfg.set_labels(Some(labels));
        }
        "EXPOSE" => {
            let mut ports = cfg.exposed_ports().clone().unwrap_or_default();
            for p in arg.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            cfg.set_exposed_ports(Some(ports));
        }
        other => return Err(bad(&format!("unsupported instruction {other}"))),
    }
    Ok(())
}

impl Store {
    /// Turn a container's upper dir into a new layer and image.
    pub fn commit(
        &self,
        c: &ContainerRecord,
        opts: &CommitOptions,
        progress: &dyn Progress,
    ) -> Result<ImageRecord> {
        if let Some(t) = &opts.tag {
            Reference::parse_tag(t).map_err(|e| StoreError::Conflict(e.to_string()))?;
        }
        let _lock = self.lock()?;
        let parent = self.image(&c.image)?;
        let mut config = self.image_config(&parent)?;
        let staging = Staging::new(&self.path("tmp"))?;
        let upper = self.container_dir(c).join("upper");
        let lowers = self.image_lowerdirs(&parent);
        let tar_path = staging.dir.join("layer.tar");
        progress.begin("commit", "Committing", None);
        {
            let live = super::containers::is_mounted(Path::new(&c.mountpoint))
                || self.container_running(c);
            let _guard = if opts.pause && live {
                match control::pause(&self.control_socket(c)) {
                    PauseOutcome::Paused(g) => Some(g),
                    PauseOutcome::NotPaused(w) => {
                        progress.message(&format!("warning: {w}"));
                        None
                    }
                }
            } else {
                None
            };
            let f = std::fs::File::create(&tar_path).map_err(StoreError::io("create layer tar"))?;
            write_layer_tar(
                &upper,
                f,
                &DiffOptions {
                    overlay: true,
                    lowers,
                    map_owner: self.owner_map(),
                    skip: c
                        .run
                        .iter()
                        .flat_map(|r| r.placeholders.iter())
                        .map(|p| PathBuf::from(p.trim_start_matches('/')))
                        .collect(),
                },
            )
            .map_err(StoreError::Image)?;
        }
        let layer = self.stage_tar_layer(&staging, &tar_path, progress)?;
        let now = time::now_rfc3339();
        config.edit(|c| -> Result<()> {
            c.set_created(Some(now.clone()));
            if let Some(a) = &opts.author {
                c.set_author(Some(a.clone()));
            }
            let mut inner = c.config().clone().unwrap_or_default();
            for ch in &opts.changes {
                apply_change(&mut inner, ch)?;
            }
            c.set_config(Some(inner));
            push_layer(
                c,
                &layer.diff_id,
                &now,
                "strata commit",
                opts.author.as_deref(),
                opts.message.as_deref(),
            );
            Ok(())
        })?;
        let mut layers = parent.layers.clone();
        layers.push(layer);
        self.install_image(&staging, &config, layers, opts.tag.as_deref())
    }

    /// Make a one-layer image from a rootfs tar (plain or compressed) or a directory.
    pub fn import_rootfs(
        &self,
        src: &Path,
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<ImageRecord> {
        if let Some(t) = tag {
            Reference::parse_tag(t).map_err(|e| StoreError::Conflict(e.to_string()))?;
        }
        let _lock = self.lock()?;
        let staging = Staging::new(&self.path("tmp"))?;
        let tar_path = staging.dir.join("layer.tar");
        let mut out =
            std::fs::File::create(&tar_path).map_err(StoreError::io("create layer tar"))?;
        if src.is_dir() {
            write_layer_tar(
                src,
                out,
                &DiffOptions {
                    map_owner: self.owner_map(),
                    ..DiffOptions::default()
                },
            )
            .map_err(StoreError::Image)?;
        } else {
            let f = std::fs::File::open(src)
                .map_err(StoreError::io(format!("open {}", src.display())))?;
            let (_, mut r) = compress::decompress(f)
                .map_err(StoreError::io(format!("read {}", src.display())))?;
            std::io::copy(&mut r, &mut out)
                .map_err(StoreError::io(format!("decompress {}", src.display())))?;
        }
        let layer = self.stage_tar_layer(&staging, &tar_path, progress)?;
        let now = time::now_rfc3339();
        let mut oci = ImageConfiguration::default();
        oci.set_created(Some(now.clone()));
        oci.set_architecture(Arch::from(Platform::host().architecture.as_str()));
        oci.set_os(Os::Linux);
        oci.set_config(Some(Config::default()));
        push_layer(
            &mut oci,
            &layer.diff_id,
            &now,
            &format!("strata import {}", src.display()),
            None,
            Some("Imported"),
        );
        let config = ImageConfig::new(oci)?;
        self.install_image(&staging, &config, vec![layer], tag)
    }

    /// Hash an uncompressed layer tar, stage it as a blob and unpack it (unless present).
    fn stage_tar_layer(
        &self,
        staging: &Staging,
        tar_path: &Path,
        progress: &dyn Progress,
    ) -> Result<LayerRef> {
        let f = std::fs::File::open(tar_path).map_err(StoreError::io("open layer tar"))?;
        let mut r = HashReader::new(f);
        let unpack_dir = staging.dir.join("layer");
        let diff = unpack_dir.join("diff");
        std::fs::create_dir_all(&diff).map_err(StoreError::io("create staging layer"))?;
        let opts = ApplyOptions {
            rootless: self.rootless(),
            ..ApplyOptions::default()
        };
        let stats = apply_layer(&mut r, &diff, &opts).map_err(|e| StoreError::Layer {
            layer: "new layer".into(),
            error: e,
        })?;
        for w in stats.warnings {
            progress.message(&format!("warning: {w}"));
        }
        r.drain().map_err(StoreError::io("read layer tar"))?;
        let (diff_id, size) = r.hasher.finish();
        let blob = staging.dir.join("blobs").join(diff_id.hex());
        std::fs::create_dir_all(staging.dir.join("blobs"))
            .map_err(StoreError::io("create staging blobs"))?;
        std::fs::rename(tar_path, &blob).map_err(StoreError::io("stage layer blob"))?;
        if let Ok(f) = std::fs::File::open(&blob) {
            let _ = f.sync_all();
        }
        if self.has_layer(&diff_id) {
            progress.finish(diff_id.as_str(), ALREADY_EXISTS);
        } else {
            let rec = LayerRecord {
                diff_id: diff_id.clone(),
                diff_size: size,
                rootless: self.rootless(),
                created: time::now_rfc3339(),
            };
            let b =
                serde_json::to_vec_pretty(&rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            std::fs::write(unpack_dir.join("layer.json"), b)
                .map_err(StoreError::io("write layer.json"))?;
            progress.finish(diff_id.as_str(), "Layer written");
        }
        Ok(LayerRef {
            digest: diff_id.clone(),
            media_type: Compression::None.oci_layer_media_type(),
            size,
            diff_id,
            diff_size: size,
        })
    }

    /// Install the staged layer and blobs with a new config, manifest, record and tag.
    fn install_image(
        &self,
        staging: &Staging,
        config: &ImageConfig,
        layers: Vec<LayerRef>,
        tag: Option<&str>,
    ) -> Result<ImageRecord> {
        let cbytes = config.to_bytes()?;
        let (cd, cp) = stage_bytes(&staging.dir, &cbytes)?;
        let manifest = synth_manifest(&cbytes, &layers)?;
        let (md, mp) = stage_bytes(&staging.dir, &manifest)?;
        let top = layers
            .last()
            .ok_or_else(|| StoreError::Corrupt("image without layers".into()))?;
        let top_id = &top.diff_id;
        install(
            &staging.dir.join("blobs").join(top_id.hex()),
            &self.blob_path(top_id),
        )?;
        install(&cp, &self.blob_path(&cd))?;
        install(&mp, &self.blob_path(&md))?;
        let unpacked: PathBuf = staging.dir.join("layer");
        if unpacked.join("layer.json").is_file() {
            fsync_tree(&unpacked)?;
            install(&unpacked, &self.path("layers").join(top_id.hex()))?;
        }
        let rec = ImageRecord {
            id: cd,
            manifest_digest: md,
            layers,
            repo_digests: Vec::new(),
            stored: time::now_rfc3339(),
        };
        self.write_image(&rec)?;
        if let Some(t) = tag {
            let mut tags = self.tags()?;
            tags.insert(
                Reference::parse_tag(t).map_err(|e| StoreError::Conflict(e.to_string()))?,
                rec.id.clone(),
            );
            self.write_tags(&tags)?;
        }
        Ok(rec)
    }
}

/// Record a new top layer in a config: its diff ID and a history entry.
fn push_layer(
    config: &mut ImageConfiguration,
    diff_id: &Digest,
    now: &str,
    created_by: &str,
    author: Option<&str>,
    comment: Option<&str>,
) {
    config.rootfs_mut().diff_ids_mut().push(diff_id.to_string());
    let mut h = History::default();
    h.set_created(Some(now.to_string()));
    h.set_created_by(Some(created_by.to_string()));
    h.set_author(author.map(str::to_string));
    h.set_comment(comment.map(str::to_string));
    let mut hist = config.history().clone().unwrap_or_default();
    hist.push(h);
    config.set_history(Some(hist));
}

impl Store {
    /// Rootless: the user's own uid:gid, written as 0:0 in layer tars.
    fn owner_map(&self) -> Option<(u32, u32)> {
        self.rootless().then(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        })
    }
}

/// The diff ID and size of the layer tar a directory makes (same bytes every time).
pub fn layer_digest_of(
    dir: &Path,
    overlay: bool,
) -> std::result::Result<(Digest, u64), ImageError> {
    let opts = DiffOptions {
        overlay,
        ..DiffOptions::default()
    };
    let w = write_layer_tar(dir, HashWriter::new(std::io::sink()), &opts)?;
    Ok(w.hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dockerfile_changes() -> std::result::Result<(), Box<dyn std::error::Error>> {
        let mut c: Config = serde_json::from_str(r#"{"Env": ["PATH=/bin", "A=1"]}"#)?;
        apply_change(&mut c, r#"CMD ["/bin/sh", "-c", "echo"]"#)?;
        apply_change(&mut c, "ENTRYPOINT top -b")?;
        apply_change(&mut c, "ENV A=2")?;
        apply_change(&mut c, "ENV B two words")?;
        apply_change(&mut c, "WORKDIR /srv")?;
        apply_change(&mut c, "USER 1000:1000")?;
        apply_change(&mut c, r#"LABEL "x.y"="z w""#)?;
        apply_change(&mut c, "EXPOSE 80 53/udp")?;
        apply_change(&mut c, "EXPOSE 80")?;
        let c = serde_json::to_value(&c)?;
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "top -b"]));
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2", "B=two words"]));
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["User"], "1000:1000");
        assert_eq!(c["Labels"]["x.y"], "z w");
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        let mut c: Config = serde_json::from_value(c)?;
        assert!(apply_change(&mut c, "RUN rm -rf /").is_err());
        assert!(apply_change(&mut c, "CMD").is_err());
        Ok(())
    }
}
