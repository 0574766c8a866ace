//! The few system calls that neither `nix` nor the standard library wrap safely, each behind
//! a safe function whose `unsafe` block states why it is sound (`// SAFETY:`).
//!
//! - [`at`]: the `*at()` family and the other file-system calls of the driver and the image
//!   store (xattrs, file handles, statfs, resource limits).
//! - [`process`]: fork of a single-threaded process, descriptors inherited across fork/exec,
//!   signal dispositions before exec, parent-death signal, controlling terminal.
//! - [`term`]: terminal window sizes.
//! - [`net`]: bringing the loopback interface of a new network namespace up.
//! - [`socket`]: unix sockets at paths longer than `sun_path`.

#![allow(unsafe_code)]

pub mod at;
pub mod net;
pub mod process;
pub mod socket;
pub mod term;
