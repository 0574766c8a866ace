//! Containers: create (upper, work, merged dirs over an image), mount configuration,
//! mounted state from /proc/self/mountinfo, unmount and removal.

use super::atomic::write_atomic;
use super::records::{ContainerRecord, RunState};
use super::{Result, Store, StoreError};
use crate::fs::MountConfig;
use crate::image::time;
use crate::oci::Digest;
use std::path::{Path, PathBuf};

impl Store {
    /// Create a container over image `image_ref`; `mountpoint` defaults to its `merged/` dir.
    pub fn create_container(
        &self,
        image_ref: &str,
        name: Option<&str>,
        mountpoint: Option<&Path>,
    ) -> Result<ContainerRecord> {
        self.create_container_with(image_ref, name, mountpoint, None)
    }

    /// Create a container, with the run configuration of `strata run` (`run`) or without.
    pub fn create_container_with(
        &self,
        image_ref: &str,
        name: Option<&str>,
        mountpoint: Option<&Path>,
        run: Option<RunState>,
    ) -> Result<ContainerRecord> {
        let _lock = self.lock()?;
        let img = self.resolve_image(image_ref)?;
        let seed = format!(
            "{}{}{:?}",
            std::process::id(),
            image_ref,
            std::time::SystemTime::now()
        );
        let id = Digest::of(seed.as_bytes()).hex()[..32].to_string();
        let name = match name {
            Some(n) => {
                if n.is_empty() || n.contains('/') || n.starts_with('.') {
                    return Err(StoreError::Conflict(format!(
                        "invalid container name {n:?}"
                    )));
                }
                n.to_string()
            }
            None => format!("strata-{}", &id[..12]),
        };
        if self.containers()?.iter().any(|c| c.name == name) {
            return Err(StoreError::Conflict(format!(
                "a container named {name} already exists"
            )));
        }
        let dir = self.path("containers").join(&id);
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(StoreError::io(format!(
                "create {}",
                dir.join(sub).display()
            )))?;
        }
        let mp = match mountpoint {
            Some(m) => absolute(m)?,
            None => dir.join("merged"),
        };
        let rec = ContainerRecord {
            id,
            name,
            image: img.id.clone(),
            image_ref: image_ref.to_string(),
            created: time::now_rfc3339(),
            mountpoint: mp.to_string_lossy().into_owned(),
            run,
        };
        self.write_container(&rec)?;
        Ok(rec)
    }

    pub(crate) fn write_container(&self, rec: &ContainerRecord) -> Result<()> {
        let b = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        write_atomic(&self.container_dir(rec).join("container.json"), &b)
    }

    /// Change the run state of a container under the store lock: `f` gets the state as
    /// stored now (a default one for a container that never ran). Returns the new record.
    pub fn update_run(&self, id: &str, f: impl FnOnce(&mut RunState)) -> Result<ContainerRecord> {
        let _lock = self.lock()?;
        let mut rec = self.container(id)?;
        let mut st = rec.run.take().unwrap_or_default();
        f(&mut st);
        rec.run = Some(st);
        self.write_container(&rec)?;
        Ok(rec)
    }

    /// The lock file a container's supervisor holds (exclusively) while it runs it.
    pub fn run_lock_path(&self, rec: &ContainerRecord) -> PathBuf {
        self.container_dir(rec).join("run.lock")
    }

    /// True while a supervisor runs the container (it holds the run lock). A record that says
    /// running without a supervisor (killed, or a reboot) is not running.
    pub fn container_running(&self, rec: &ContainerRecord) -> bool {
        let Ok(f) = std::fs::File::open(self.run_lock_path(rec)) else {
            return false;
        };
        match f.try_lock_shared() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }

    /// Change the mountpoint recorded for a container.
    pub fn set_mountpoint(&self, rec: &mut ContainerRecord, mp: &Path) -> Result<()> {
        let _lock = self.lock()?;
        rec.mountpoint = absolute(mp)?.to_string_lossy().into_owned();
        self.write_container(rec)
    }

    /// The mount configuration of a container (layers of its image under its upper dir).
    pub fn mount_config(&self, rec: &ContainerRecord) -> Result<MountConfig> {
        let img = self.image(&rec.image)?;
        let dir = self.container_dir(rec);
        let mut cfg = MountConfig::new(
            self.image_lowerdirs(&img),
            Some(dir.join("upper")),
            Some(dir.join("work")),
            PathBuf::from(&rec.mountpoint),
        );
        cfg.control_socket = Some(self.control_socket(rec));
        Ok(cfg)
    }

    /// The control socket of a container's mount.
    pub fn control_socket(&self, rec: &ContainerRecord) -> PathBuf {
        self.container_dir(rec).join("control.sock")
    }

    /// Remove a container (must not be mounted or running).
    pub fn remove_container(&self, rec: &ContainerRecord) -> Result<()> {
        let _lock = self.lock()?;
        if self.container_running(rec) {
            return Err(StoreError::Conflict(format!(
                "container {} is running; stop it first (or rm -f)",
                rec.name
            )));
        }
        if is_mounted(Path::new(&rec.mountpoint)) {
            return Err(StoreError::Conflict(format!(
                "container {} is mounted at {}; umount it first",
                rec.name, rec.mountpoint
            )));
        }
        let dir = self.container_dir(rec);
        // Remove the record first so a crash leaves only an unreferenced dir, then the rest.
        let trash = self.path("tmp").join(super::atomic::unique_name("rm-"));
        std::fs::rename(&dir, &trash)
            .map_err(StoreError::io(format!("remove {}", dir.display())))?;
        super::atomic::fsync_dir(&self.path("containers"))?;
        let _ = make_writable(&trash);
        std::fs::remove_dir_all(&trash)
            .map_err(StoreError::io(format!("remove {}", trash.display())))?;
        Ok(())
    }
}

/// Give the owner rwx on every directory (upper dirs may hold 0555 dirs written rootless).
fn make_writable(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let m = p.symlink_metadata()?;
    if m.is_dir() {
        let mode = m.permissions().mode();
        if mode & 0o700 != 0o700 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o700))?;
        }
        for e in std::fs::read_dir(p)?.flatten() {
            let _ = make_writable(&e.path());
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(StoreError::io("current directory"))?;
    Ok(cwd.join(p))
}

/// True if something is mounted at `mp` (per /proc/self/mountinfo).
pub fn is_mounted(mp: &Path) -> bool {
    let want = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    crate::fs::mountinfo::is_mountpoint(&want)
}

/// Unmount `mp` once nothing holds it, trying quietly for up to `wait`: a union daemon that
/// was just unmounted closes its descriptors on the layer mounts below while it exits, and
/// until then such a mount is busy. The last try reports its error.
pub fn unmount_released(mp: &Path, wait: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline && is_mounted(mp) {
        let done = if crate::image::fsutil::is_root() {
            rustix::mount::unmount(mp, rustix::mount::UnmountFlags::empty()).is_ok()
        } else {
            std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(mp)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if done {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if !is_mounted(mp) {
        return Ok(());
    }
    unmount(mp)
}

/// Unmount `mp` (fusermount3 -u for users, umount2 for root).
pub fn unmount(mp: &Path) -> Result<()> {
    if crate::image::fsutil::is_root()
        && rustix::mount::unmount(mp, rustix::mount::UnmountFlags::empty()).is_ok()
    {
        return Ok(());
    }
    for prog in ["fusermount3", "fusermount"] {
        match std::process::Command::new(prog).arg("-u").arg(mp).status() {
            Ok(s) if s.success() => return Ok(()),
            Ok(_) => {
                return Err(StoreError::Conflict(format!(
                    "{prog} -u {} failed",
                    mp.display()
                )));
            }
            Err(_) => continue,
        }
    }
    Err(StoreError::Conflict(format!(
        "cannot unmount {}: no fusermount3",
        mp.display()
    )))
}
