//! `strata-fuse`: the mount program, argument-compatible with fuse-overlayfs.
fn main() {
    eprintln!("strata-fuse: not implemented yet");
    std::process::exit(2);
}
