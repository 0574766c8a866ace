//! Mounting a union: command-line options, the mount configuration and its validation, the
//! daemon (fork before any thread), the kernel mount as root, the control socket, and
//! /proc/self/mountinfo.

pub mod config;
pub mod control;
pub mod daemon;
pub mod kmount;
pub mod mountinfo;
pub mod options;
