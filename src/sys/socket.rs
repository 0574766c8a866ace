//! Unix sockets at paths longer than `sun_path` (108 bytes, easily reached by a store deep in
//! a directory tree): bind and connect through `/proc/self/fd/N/NAME`, N a descriptor of the
//! socket's directory, held only for the call.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path `sun_path` takes (with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Call `f` with a path naming `path` that fits in `sun_path`.
fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return f(path);
    };
    let d = std::fs::File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", d.as_raw_fd())).join(name);
    let r = f(&short);
    drop(d);
    r
}

/// Bind a listening unix socket at `path`, whatever its length.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    with_short_path(path, |p| UnixListener::bind(p))
}

/// Connect to the unix socket at `path`, whatever its length.
pub fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}
