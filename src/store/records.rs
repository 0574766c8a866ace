//! Records kept in the store (image, layer, container, tags): their JSON, reading, writing,
//! listing, and resolving a user's reference (tag, ID or ID prefix, container name).

use super::atomic::write_atomic;
use super::{Result, Store, StoreError};
use crate::image::config::ImageConfig;
use crate::image::names;
use crate::oci::{Digest, MediaType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A layer of an image: the blob as stored and what it unpacks to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRef {
    /// Blob digest.
    pub digest: Digest,
    /// Blob media type.
    pub media_type: MediaType,
    /// Blob size.
    pub size: u64,
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub diff_size: u64,
}

/// An image: its config (ID), manifest and layers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the config = the image ID.
    pub id: Digest,
    /// Digest of the OCI manifest blob.
    pub manifest_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<LayerRef>,
    /// Registry digests.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// When it entered the store.
    pub stored: String,
}

impl ImageRecord {
    /// Total uncompressed size.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.diff_size).sum()
    }
}

/// An unpacked layer's metadata (layers/<hex>/layer.json).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Uncompressed digest.
    pub diff_id: Digest,
    /// Uncompressed size.
    pub diff_size: u64,
    /// Unpacked rootless (override xattrs) or as root.
    pub rootless: bool,
    /// When unpacked.
    pub created: String,
}

/// A container: a writable layer over an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Random hex ID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image ID.
    pub image: Digest,
    /// The reference the user gave.
    pub image_ref: String,
    /// When created.
    pub created: String,
    /// The mountpoint last used.
    pub mountpoint: String,
    /// Containers made by `strata run`: what to run and the state of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunState>,
}

/// One range of an id map: ids `container..container+size` inside are `host..` outside.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the container.
    pub container: u32,
    /// The host id it is.
    pub host: u32,
    /// Number of ids.
    pub size: u32,
}

/// The uid and gid maps of a container's user namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct IdMap {
    /// uid ranges.
    pub uids: Vec<IdRange>,
    /// gid ranges.
    pub gids: Vec<IdRange>,
}

/// A `-v HOST:CTR[:ro]` bind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindSpec {
    /// Absolute host path.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A `-p [IP:]HOSTPORT:CTRPORT[/PROTO]` published port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address to bind (all when absent).
    pub host_ip: Option<String>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

/// What `strata run` was asked for, kept so that `start` runs the container again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RunConfig {
    /// CMD [ARG...] given after the image (empty: the image's Cmd).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `--entrypoint` (Some(""): none).
    #[serde(default)]
    pub entrypoint: Option<String>,
    /// `-e` / `--env-file` entries, `K=V`.
    #[serde(default)]
    pub env: Vec<String>,
    /// `-w`.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`.
    #[serde(default)]
    pub user: Option<String>,
    /// `-t`.
    #[serde(default)]
    pub tty: bool,
    /// `-i`: keep stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// `-v` binds.
    #[serde(default)]
    pub binds: Vec<BindSpec>,
    /// `-p` ports.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// `--hostname` (default: the short container ID).
    #[serde(default)]
    pub hostname: Option<String>,
    /// `--read-only`.
    #[serde(default)]
    pub read_only: bool,
    /// `--network`: `host`, `none` or `private`.
    #[serde(default)]
    pub network: String,
    /// `--pid host`.
    #[serde(default)]
    pub pid_host: bool,
    /// `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
}

/// Where a run container is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Never started (or its start failed).
    #[default]
    Created,
    /// Its supervisor runs it.
    Running,
    /// It ran and ended.
    Exited,
}

/// The run configuration and the state of the last run of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RunState {
    /// What to run.
    pub config: RunConfig,
    /// Created, running or exited.
    #[serde(default)]
    pub status: RunStatus,
    /// pid of the supervisor of the current or last run.
    #[serde(default)]
    pub supervisor_pid: Option<u32>,
    /// Host pid of the container's init (pid 1 inside).
    #[serde(default)]
    pub init_pid: Option<u32>,
    /// When the last run started (RFC 3339).
    #[serde(default)]
    pub started: Option<String>,
    /// When the last run ended (RFC 3339).
    #[serde(default)]
    pub finished: Option<String>,
    /// Exit status of the last run (128+N when killed by signal N).
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Why the last start failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
    /// The user namespace's id maps (none: no user namespace, run as real root).
    #[serde(default)]
    pub id_map: Option<IdMap>,
    /// Mount points strata created in the container's tree (empty files and directories
    /// such as /proc or /etc/hosts), left out of `diff` and `commit` while still empty.
    #[serde(default)]
    pub placeholders: Vec<String>,
}

impl Store {
    /// Blob path for a digest (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.path("blobs/sha256").join(d.hex())
    }
    /// True if the blob is stored.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }
    /// The unpacked tree of a layer (`layers/<hex>/diff`).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.path("layers").join(diff_id.hex()).join("diff")
    }
    /// True if the layer is unpacked in the store.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.path("layers")
            .join(diff_id.hex())
            .join("layer.json")
            .is_file()
    }
    /// Read a blob fully (configs, manifests).
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        std::fs::read(self.blob_path(d)).map_err(StoreError::io(format!("read blob {d}")))
    }

    /// All image records.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.path("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(StoreError::io("list images"))? {
            let e = e.map_err(StoreError::io("list images"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            // A record removed by a concurrent rmi between listing and reading is skipped.
            if !e.path().is_file() {
                continue;
            }
            match self.read_image_file(&e.path()) {
                Ok(r) => out.push(r),
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.stored.cmp(&a.stored));
        Ok(out)
    }

    fn read_image_file(&self, p: &std::path::Path) -> Result<ImageRecord> {
        let b = std::fs::read(p).map_err(StoreError::io(format!("read {}", p.display())))?;
        serde_json::from_slice(&b)
            .map_err(|e| StoreError::Corrupt(format!("image record {}: {e}", p.display())))
    }

    /// The record of image `id`.
    pub fn image(&self, id: &Digest) -> Result<ImageRecord> {
        let p = self.path("images").join(format!("{}.json", id.hex()));
        if !p.is_file() {
            return Err(StoreError::NotFound(format!("no image {id}")));
        }
        self.read_image_file(&p)
    }

    pub(crate) fn write_image(&self, rec: &ImageRecord) -> Result<()> {
        let b = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_atomic(
            &self.path("images").join(format!("{}.json", rec.id.hex())),
            &b,
        )
    }

    /// The tag table (`name:tag` -> image ID).
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>> {
        let p = self.path("tags.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StoreError::Corrupt(format!("tags.json: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::io("read tags.json")(e)),
        }
    }

    pub(crate) fn write_tags(&self, tags: &BTreeMap<String, Digest>) -> Result<()> {
        let b = serde_json::to_vec_pretty(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_atomic(&self.path("tags.json"), &b)
    }

    /// The tags naming image `id`, sorted.
    pub fn tags_of(&self, id: &Digest) -> Result<Vec<String>> {
        Ok(self
            .tags()?
            .into_iter()
            .filter(|(_, v)| v == id)
            .map(|(k, _)| k)
            .collect())
    }

    /// Resolve a reference: `name[:tag]`, a full ID (`sha256:...` or hex) or a unique ID prefix.
    pub fn resolve_image(&self, r: &str) -> Result<ImageRecord> {
        let tags = self.tags()?;
        if let Some(id) = tags.get(&names::lookup_key(r)) {
            return self.image(id);
        }
        let hex = r.strip_prefix("sha256:").unwrap_or(r);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<ImageRecord> = self
                .images()?
                .into_iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                1 => {
                    return matches
                        .into_iter()
                        .next()
                        .ok_or_else(|| StoreError::NotFound(r.into()));
                }
                0 => {}
                _ => {
                    return Err(StoreError::Conflict(format!(
                        "image ID prefix {r} is ambiguous"
                    )));
                }
            }
        }
        Err(StoreError::NotFound(format!("no such image: {r}")))
    }

    /// The config of an image.
    pub fn image_config(&self, rec: &ImageRecord) -> Result<ImageConfig> {
        Ok(ImageConfig::parse(&self.read_blob(&rec.id)?)?)
    }

    /// The layer directories of an image, topmost first (as a mount wants them).
    pub fn image_lowerdirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers
            .iter()
            .rev()
            .map(|l| {
                if self.is_lazy(&l.diff_id) {
                    self.lazy_mountpoint(&l.diff_id)
                } else {
                    self.layer_dir(&l.diff_id)
                }
            })
            .collect()
    }

    /// All containers.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        for e in
            std::fs::read_dir(self.path("containers")).map_err(StoreError::io("list containers"))?
        {
            let e = e.map_err(StoreError::io("list containers"))?;
            let p = e.path().join("container.json");
            if !p.is_file() {
                continue;
            }
            let b = std::fs::read(&p).map_err(StoreError::io(format!("read {}", p.display())))?;
            out.push(
                serde_json::from_slice(&b)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", p.display())))?,
            );
        }
        out.sort_by(|a: &ContainerRecord, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// Find a container by name, ID or ID prefix.
    pub fn container(&self, r: &str) -> Result<ContainerRecord> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == r || c.id == r) {
            return Ok(c.clone());
        }
        let m: Vec<&ContainerRecord> = all
            .iter()
            .filter(|c| r.len() >= 4 && c.id.starts_with(r))
            .collect();
        match m.as_slice() {
            [c] => Ok((*c).clone()),
            [] => Err(StoreError::NotFound(format!("no such container: {r}"))),
            _ => Err(StoreError::Conflict(format!(
                "container ID prefix {r} is ambiguous"
            ))),
        }
    }

    /// The directory of a container.
    pub fn container_dir(&self, c: &ContainerRecord) -> PathBuf {
        self.path("containers").join(&c.id)
    }
}
