//! The one skip rule of every test binary (tests/ and fuse-tests/ include this file).

/// Print why a test cannot run here and return `false` (so that callers write
/// `return skip(..)` or `{ skip(..); return; }`). Under CI (`CI=true`), where every tool is
/// installed and the tests run as root, a skip means a missing install step: it fails the
/// test instead.
pub fn skip(reason: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("a test would skip under CI (a missing install step?): {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}
