//! Image names as the store keeps them (`name:tag`): splitting, normalising and checking.

use crate::oci::Digest;

/// Split `name:tag` (a `:` after the last `/`) into name and tag, defaulting to `latest`.
pub fn split_ref(r: &str) -> (String, String) {
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None => (r.to_string(), "latest".to_string()),
    }
}

/// `name` -> `name:latest`; a reference with a tag is kept.
pub fn normalize_ref(r: &str) -> String {
    let (n, t) = split_ref(r);
    format!("{n}:{t}")
}

/// Check and normalise a user-given `name[:tag]` (Docker's rules, simplified): the name is
/// lowercase `[a-z0-9._/-]` components with an optional `host[:port]/` first, the tag is
/// `[A-Za-z0-9_.-]{1,128}` not starting with `.` or `-`.
pub fn validate_ref(r: &str) -> std::result::Result<String, String> {
    let (name, tag) = split_ref(r);
    let bad = |why: &str| Err(format!("invalid reference {r:?}: {why}"));
    if name.is_empty() || name.len() > 255 {
        return bad("empty or too long name");
    }
    if name.starts_with("sha256:") || Digest::from_hex(&name).is_ok() {
        return bad("a name cannot look like an image ID");
    }
    for (i, comp) in name.split('/').enumerate() {
        let host_ok = i == 0
            && name.contains('/')
            && (comp.contains('.') || comp.contains(':') || comp == "localhost");
        let ok = !comp.is_empty()
            && comp.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || "._-".contains(c)
                    || (host_ok && (c == ':' || c.is_ascii_uppercase()))
            });
        if !ok {
            return bad("name components are lowercase letters, digits, '.', '_' and '-'");
        }
    }
    if tag.is_empty()
        || tag.len() > 128
        || tag.starts_with(['.', '-'])
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return bad("tags are up to 128 of [A-Za-z0-9_.-]");
    }
    Ok(format!("{name}:{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_split_and_normalise() {
        assert_eq!(split_ref("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split_ref("a/b:1.0"), ("a/b".into(), "1.0".into()));
        assert_eq!(
            split_ref("localhost:5000/x"),
            ("localhost:5000/x".into(), "latest".into())
        );
        assert_eq!(normalize_ref("localhost:5000/x:y"), "localhost:5000/x:y");
    }

    #[test]
    fn refs_are_validated() -> std::result::Result<(), Box<dyn std::error::Error>> {
        assert_eq!(validate_ref("busybox")?, "busybox:latest");
        assert_eq!(
            validate_ref("localhost:5000/a/b:v1.2")?,
            "localhost:5000/a/b:v1.2"
        );
        assert!(validate_ref("Upper:1").is_err());
        assert!(validate_ref("a b").is_err());
        assert!(validate_ref("x:-bad").is_err());
        assert!(validate_ref(&"a".repeat(64)).is_err());
        assert!(validate_ref("a//b").is_err());
        Ok(())
    }
}
