//! The few system calls that neither `nix` nor the standard library wrap safely, each behind
//! a safe function whose `unsafe` block states why it is sound (`// SAFETY:`).
//!
//! - [`at`]: the `*at()` path family (stat, open, mkdir, mknod, link, unlink, rename, chown,
//!   chmod, utimens) and the helpers the other modules share.
//! - [`xattr`]: extended attributes of fds, of names in a directory, of host paths.
//! - [`handle`]: file handles, a filesystem's uuid, type and statvfs.
//! - [`io`]: file data (pread/pwrite, truncate, fsync, fallocate, lseek, copy_file_range).
//! - [`dir`]: directory listing (getdents64).
//! - [`limits`]: the open-file limit and returning free memory to the system.
//! - [`process`]: fork of a single-threaded process, descriptors inherited across fork/exec,
//!   signal dispositions before exec, parent-death signal, controlling terminal.
//! - [`term`]: terminal window sizes.
//! - [`net`]: bringing the loopback interface of a new network namespace up.
//! - [`socket`]: unix sockets at paths longer than `sun_path`.

#![allow(unsafe_code)]

pub mod at;
pub mod dir;
pub mod handle;
pub mod io;
pub mod limits;
pub mod net;
pub mod process;
pub mod socket;
pub mod term;
pub mod xattr;
