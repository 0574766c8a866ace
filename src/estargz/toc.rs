//! The TOC JSON (`{"version":1,"entries":[...]}`): its serde types, its encoding as the tar
//! entry `stargz.index.json` in one gzip member, and decoding verified against the digest.

use super::{EstargzError, Result, TOC_TAR_NAME};
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// Largest TOC JSON accepted (upstream's TOCs are a few hundred bytes per entry).
pub const MAX_TOC_JSON: u64 = 256 << 20;

/// The table of contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Toc {
    /// Always 1.
    pub version: u32,
    /// Entries in blob order.
    pub entries: Vec<TocEntry>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i(v: &i64) -> bool {
    *v == 0
}

/// One TOC entry (a file, or a further chunk of a file: `type` `chunk`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TocEntry {
    /// Path in the layer.
    pub name: String,
    /// dir reg symlink hardlink char block fifo chunk.
    #[serde(rename = "type")]
    pub kind: String,
    /// File size (reg).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// RFC 3339 modification time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    /// Symlink target or hard-link source.
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// Permission bits (and setuid/setgid/sticky).
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub mode: i64,
    /// Owner.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u64,
    /// Group.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u64,
    /// Owner name.
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    /// Group name.
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    /// Compressed offset of the gzip member holding this (chunk of the) file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Device major (char, block).
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: u64,
    /// Device minor (char, block).
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: u64,
    /// Extended attributes, values base64 (Go's `[]byte` in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// sha256 of the whole file (reg).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Offset of this chunk in the file.
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// Size of this chunk (0: up to the end of the file).
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    /// sha256 of the uncompressed chunk.
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub chunk_digest: String,
    /// Offset of the chunk's data inside the decompressed member (newer writers).
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
}

impl Toc {
    /// The TOC JSON as upstream writes it (tab-indented).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser).map_err(|e| EstargzError::Input {
            context: "encode TOC".to_string(),
            reason: e.to_string(),
        })?;
        Ok(out)
    }
}

/// Decodes the TOC member (the blob from the TOC offset up to the footer): gunzip, the one
/// tar entry `stargz.index.json`, its digest checked against `expected` (the annotation),
/// then the JSON. Returns the TOC and the digest of its JSON.
pub fn decode_toc(layer: &str, member: &[u8], expected: Option<&Digest>) -> Result<(Toc, Digest)> {
    let bad = |reason: String| EstargzError::Toc {
        layer: layer.to_string(),
        reason,
    };
    let gz = flate2::read::GzDecoder::new(member);
    let mut ar = tar::Archive::new(gz);
    let mut entries = ar
        .entries()
        .map_err(|e| bad(format!("TOC member is not a tar.gz: {e}")))?;
    let mut entry = entries
        .next()
        .ok_or_else(|| bad("TOC member holds no tar entry".to_string()))?
        .map_err(|e| bad(format!("TOC member is not a tar.gz: {e}")))?;
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if name.trim_start_matches("./") != TOC_TAR_NAME {
        return Err(bad(format!(
            "TOC tar entry is named {name:?}, not {TOC_TAR_NAME}"
        )));
    }
    let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
    if size > MAX_TOC_JSON {
        return Err(bad(format!("TOC of {size} bytes is too large")));
    }
    let mut json = Vec::with_capacity(size as usize);
    (&mut entry)
        .take(MAX_TOC_JSON)
        .read_to_end(&mut json)
        .map_err(|e| bad(format!("reading the TOC: {e}")))?;
    let actual = Digest::of(&json);
    if let Some(exp) = expected
        && *exp != actual
    {
        return Err(EstargzError::TocDigest {
            layer: layer.to_string(),
            expected: exp.to_string(),
            actual: actual.to_string(),
        });
    }
    let toc: Toc = serde_json::from_slice(&json).map_err(|e| bad(format!("TOC JSON: {e}")))?;
    if toc.version != 1 {
        return Err(bad(format!(
            "TOC version {} (only 1 is known)",
            toc.version
        )));
    }
    Ok((toc, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn member(name: &str, json: &[u8]) -> std::io::Result<Vec<u8>> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_ustar();
        h.set_size(json.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, json)?;
        b.into_inner().and_then(|g| g.finish())
    }

    #[test]
    fn toc_verified_against_the_annotation() -> TestResult {
        let json = br#"{"version":1,"entries":[{"name":"a","type":"dir"}]}"#;
        let m = member(TOC_TAR_NAME, json)?;
        let good = Digest::of(json);
        let (toc, d) = decode_toc("L1", &m, Some(&good))?;
        assert_eq!(d, good);
        assert_eq!(toc.entries[0].kind, "dir");
        let other = Digest::of(b"x");
        let e = decode_toc("L1", &m, Some(&other))
            .err()
            .ok_or("digest mismatch")?;
        assert!(matches!(e, EstargzError::TocDigest { .. }), "{e}");
        assert!(e.to_string().contains("L1"));
        Ok(())
    }

    #[test]
    fn toc_refusals() -> TestResult {
        let json = br#"{"version":1,"entries":[]}"#;
        assert!(decode_toc("L", &member("other.json", json)?, None).is_err());
        assert!(decode_toc("L", &member(TOC_TAR_NAME, b"{nope")?, None).is_err());
        let v2 = br#"{"version":2,"entries":[]}"#;
        assert!(decode_toc("L", &member(TOC_TAR_NAME, v2)?, None).is_err());
        assert!(decode_toc("L", b"garbage", None).is_err());
        Ok(())
    }
}
