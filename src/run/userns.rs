//! Work on a container's files from the host the way the container sees them: run a function
//! in a forked child inside a new user namespace with the container's id map (what `podman
//! unshare` does). There, files owned by mapped host ids (e.g. 165635) show as the container's
//! ids (100), and root of the namespace may read and remove every one of them, whatever its
//! mode: `commit`, `diff` and `rm` of a rootless container's upper go through here.

use super::{Result, RunError, idmap};
use crate::store::{ContainerRecord, IdMap, Store};
use crate::sys::process::{Forked, exit_now, fork};
use std::io::{Read, Write};

/// Run `f` as root of a new user namespace with `map` and return what it returns (its
/// output crosses a pipe). With `None` (real root: no namespace), `f` runs here.
/// The calling process must be single-threaded.
pub fn within(
    map: Option<&IdMap>,
    f: impl FnOnce() -> std::result::Result<Vec<u8>, String>,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let Some(map) = map else { return Ok(f()) };
    let (mut up_r, mut up_w) = std::io::pipe().map_err(RunError::io("pipe"))?;
    let (mut down_r, down_w) = std::io::pipe().map_err(RunError::io("pipe"))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    match fork().map_err(RunError::io("fork"))? {
        Forked::Child => {
            drop(up_r);
            drop(down_w);
            let reply = |w: &mut std::io::PipeWriter, r: std::result::Result<&[u8], &str>| {
                let _ = match r {
                    Ok(b) => w.write_all(&[0]).and_then(|_| w.write_all(b)),
                    Err(e) => w.write_all(&[1]).and_then(|_| w.write_all(e.as_bytes())),
                };
            };
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                reply(&mut up_w, Err(&super::namespaces::userns_error(e)));
                exit_now(1);
            }
            let _ = up_w.write_all(&[0]);
            let mut go = [0u8; 1];
            if down_r.read_exact(&mut go).is_err() {
                exit_now(1);
            }
            if let Err(e) = super::namespaces::become_root() {
                reply(&mut up_w, Err(&e.to_string()));
                exit_now(1);
            }
            let r = f();
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            reply(&mut up_w, r.as_deref().map_err(String::as_str));
            exit_now(0)
        }
        Forked::Parent(pid) => {
            drop(up_w);
            drop(down_r);
            let result = (|| {
                let mut first = [0u8; 1];
                up_r.read_exact(&mut first)
                    .map_err(|_| RunError::Unavailable("the user namespace helper died".into()))?;
                if first[0] != 0 {
                    let mut msg = String::new();
                    let _ = up_r.read_to_string(&mut msg);
                    return Err(RunError::Unavailable(msg));
                }
                idmap::apply(pid.as_raw() as u32, map)?;
                let mut down_w = down_w;
                down_w
                    .write_all(&[0])
                    .map_err(RunError::io("user namespace helper"))?;
                let mut out = Vec::new();
                up_r.read_to_end(&mut out)
                    .map_err(RunError::io("user namespace helper"))?;
                match out.split_first() {
                    Some((0, rest)) => Ok(Ok(rest.to_vec())),
                    Some((_, rest)) => Ok(Err(String::from_utf8_lossy(rest).into_owned())),
                    None => Err(RunError::Unavailable(
                        "the user namespace helper died".into(),
                    )),
                }
            })();
            let _ = nix::sys::wait::waitpid(pid, None);
            result
        }
    }
}

/// The id map to work on `rec`'s files with (none for containers that never ran in a user
/// namespace, and for real root).
pub fn container_map(rec: &ContainerRecord) -> Option<&IdMap> {
    rec.run
        .as_ref()
        .and_then(|r| r.id_map.as_ref())
        .filter(|_| !idmap::is_real_root())
}

/// Remove a container; its files as the container sees them (mapped owners, any mode).
pub fn remove_container(store: &Store, rec: &ContainerRecord) -> Result<()> {
    let r = within(container_map(rec), || {
        store
            .remove_container(rec)
            .map(|_| Vec::new())
            .map_err(|e| e.to_string())
    })?;
    r.map(|_| ()).map_err(RunError::Invalid)
}
