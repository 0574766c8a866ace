//! Image names as the store keeps them: the key of a reference (`name:tag` as written, or
//! `name@digest` for a pinned one), and the name and tag of a key.

use crate::oci::reference::{Reference, ReferenceError};

/// The key an image named `s` is tagged with (`busybox` -> `busybox:latest`).
pub fn key(s: &str) -> Result<String, ReferenceError> {
    Reference::parse(s).map(|r| r.written())
}

/// The key a user's `s` looks up: [`key`], or `s` itself when it is not a reference (an ID,
/// or a name kept by an older store).
pub fn lookup_key(s: &str) -> String {
    key(s).unwrap_or_else(|_| s.to_string())
}

/// The name and tag of a key (`localhost:5000/x:y` -> `localhost:5000/x`, `y`); no tag for a
/// pinned name, or for a key that is not a reference.
pub fn split_key(k: &str) -> (String, Option<String>) {
    match Reference::parse(k) {
        Ok(r) if r.digest().is_none() => {
            (r.written_name().to_string(), r.tag().map(str::to_string))
        }
        Ok(r) => (r.written_name().to_string(), None),
        Err(_) => (k.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_lookups() -> Result<(), ReferenceError> {
        assert_eq!(key("busybox")?, "busybox:latest");
        assert_eq!(key("localhost:5000/x:y")?, "localhost:5000/x:y");
        assert_eq!(
            split_key("localhost:5000/x:y"),
            ("localhost:5000/x".into(), Some("y".into()))
        );
        assert_eq!(split_key("a/b:1.0"), ("a/b".into(), Some("1.0".into())));
        let pinned = format!("a/b@sha256:{}", "c".repeat(64));
        assert_eq!(key(&pinned)?, pinned);
        assert_eq!(split_key(&pinned), ("a/b".into(), None));
        assert_eq!(lookup_key("busybox"), "busybox:latest");
        assert_eq!(lookup_key("abcd12"), "abcd12:latest");
        assert_eq!(lookup_key("Old_Name:x"), "Old_Name:x");
        assert!(key("a//b").is_err());
        Ok(())
    }
}
