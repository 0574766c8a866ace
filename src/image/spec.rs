//! Image-config helpers, plus the neutral "source image" and "export image" records that
//! importers and exporters exchange.

use super::{ImageError, Result};
use crate::oci::{Digest, MediaType};
use serde_json::Value;
use std::path::PathBuf;

/// The diff IDs listed in an image config.
pub fn config_diff_ids(config: &Value) -> Result<Vec<Digest>> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ImageError::Format("image config has no rootfs.diff_ids".into()))?;
    ids.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| Digest::parse(s).ok())
                .ok_or_else(|| ImageError::Format(format!("invalid diff ID {v} in image config")))
        })
        .collect()
}

/// Parse config bytes as JSON.
pub fn parse_config(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Format(format!("image config is not valid JSON: {e}")))
}

/// A layer offered by an importer: a file to read, and what it should hash to.
#[derive(Debug, Clone)]
pub struct SourceLayer {
    /// The file holding the blob (plain, gzip or zstd tar).
    pub path: PathBuf,
    /// How to name it in messages (e.g. the archive member name).
    pub name: String,
    /// The blob digest, when the source states it (OCI descriptors).
    pub digest: Option<Digest>,
    /// The blob size, when the source states it.
    pub size: Option<u64>,
    /// The media type, when the source states it.
    pub media_type: Option<MediaType>,
}

/// An image offered by an importer.
#[derive(Debug, Clone)]
pub struct SourceImage {
    /// The config JSON bytes.
    pub config: Vec<u8>,
    /// The config digest the source states, if any.
    pub config_digest: Option<Digest>,
    /// The manifest bytes, if the source has one (verified against `manifest_digest`).
    pub manifest: Option<Vec<u8>>,
    /// The names to tag the image with (`name:tag`).
    pub tags: Vec<String>,
    /// The layers, bottom first.
    pub layers: Vec<SourceLayer>,
    /// Registry digests (`name@sha256:...`) to record, for pulled images.
    pub repo_digests: Vec<String>,
}

/// A layer handed to an exporter.
#[derive(Debug, Clone)]
pub struct ExportLayer {
    /// The uncompressed digest.
    pub diff_id: Digest,
    /// The uncompressed size.
    pub diff_size: u64,
    /// The stored blob.
    pub blob: PathBuf,
    /// The blob digest.
    pub digest: Digest,
    /// The blob size.
    pub size: u64,
    /// The blob media type.
    pub media_type: MediaType,
}

/// An image handed to an exporter.
#[derive(Debug, Clone)]
pub struct ExportImage {
    /// The names (`name:tag`) to record.
    pub tags: Vec<String>,
    /// The config bytes.
    pub config: Vec<u8>,
    /// The manifest bytes (OCI) and their digest.
    pub manifest: Vec<u8>,
    /// The layers, bottom first.
    pub layers: Vec<ExportLayer>,
}

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

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn diff_ids_are_validated() {
        let c = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:xyz"]}});
        assert!(config_diff_ids(&c).is_err());
        assert!(config_diff_ids(&serde_json::json!({})).is_err());
    }
}
