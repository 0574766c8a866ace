//! Manifest formats: Docker schema 2 manifest and manifest list, OCI manifest and index;
//! platform selection in an index.

use crate::registry::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` header of manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Annotation naming an image in an OCI layout's `index.json` (the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation with the full image name, as containerd writes it.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An OS/architecture pair with an optional variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform this program runs on (e.g. linux/amd64).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            a => a,
        };
        let variant = match arch {
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            architecture: arch.to_string(),
            os: std::env::consts::OS.to_string(),
            variant,
            os_version: None,
        }
    }

    /// Parses `os/arch[/variant]` (`--platform linux/arm64/v8`).
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || Error::BadManifest {
            what: format!("platform {s:?}"),
            reason: "expected os/arch[/variant]".to_string(),
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
            os_version: None,
        })
    }

    fn norm_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an index entry for `candidate` serves this wanted platform. A wanted platform
    /// without variant takes any variant.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || self.norm_variant() == candidate.norm_variant())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index or manifest list.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A parsed manifest of either kind.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// Whether a media type names an index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Parses manifest bytes; the media type comes from the document, else from the HTTP
/// `Content-Type`, else from its shape. Returns (media type, manifest).
pub fn parse(bytes: &[u8], content_type: Option<&str>, what: &str) -> Result<(String, Manifest)> {
    let bad = |reason: String| Error::BadManifest {
        what: what.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let declared = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .filter(|c| c.starts_with("application/vnd."));
    let media_type = match (declared, ct) {
        (Some(m), _) => m,
        (None, Some(c)) => c,
        (None, None) if v.get("manifests").is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(bad(
            "only schemaVersion 2 manifests are supported (Docker schema 1 is not)".to_string(),
        ));
    }
    let m = if is_index(&media_type) {
        Manifest::Index(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?)
    } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        Manifest::Image(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?)
    } else {
        return Err(bad(format!("unsupported media type {media_type}")));
    };
    Ok((media_type, m))
}

/// Picks the manifest for `want` from an index; the first match wins.
pub fn select<'a>(
    index: &'a ImageIndex,
    want: &Platform,
    reference: &str,
) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| !is_index(&d.media_type))
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| Error::NoPlatform {
            platform: want.to_string(),
            reference: reference.to_string(),
            available: index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
      "manifests": [
        {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,
         "digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111",
         "platform":{"architecture":"arm","os":"linux","variant":"v6"}},
        {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,
         "digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222",
         "platform":{"architecture":"arm","os":"linux","variant":"v7"}},
        {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,
         "digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333",
         "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
        {"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":527,
         "digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444",
         "platform":{"architecture":"amd64","os":"linux"}},
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","size":527,
         "digest":"sha256:5555555555555555555555555555555555555555555555555555555555555555",
         "platform":{"architecture":"unknown","os":"unknown"}}
      ]
    }"#;

    fn pick(want: &str) -> Result<char> {
        let (mt, m) = parse(LIST.as_bytes(), None, "list")?;
        assert_eq!(mt, DOCKER_LIST);
        let Manifest::Index(idx) = m else {
            panic!("not an index")
        };
        let d = select(&idx, &Platform::parse(want)?, "x")?;
        Ok(d.digest.chars().last().unwrap_or('?'))
    }

    #[test]
    fn platform_selection() -> Result<()> {
        assert_eq!(pick("linux/amd64")?, '4');
        assert_eq!(pick("linux/arm64")?, '3');
        assert_eq!(pick("linux/arm64/v8")?, '3');
        assert_eq!(pick("linux/arm/v7")?, '2');
        assert_eq!(pick("linux/arm")?, '1');
        let e = pick("linux/s390x").map(|_| ()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("linux/s390x") && e.contains("linux/arm64/v8")));
        assert!(Platform::parse("linux").is_err());
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
        Ok(())
    }

    #[test]
    fn image_manifest_media_types() -> Result<()> {
        let m = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":1},"layers":[]}"#;
        let (mt, _) = parse(m.as_bytes(), Some(DOCKER_MANIFEST), "m")?;
        assert_eq!(mt, DOCKER_MANIFEST);
        let (mt, _) = parse(m.as_bytes(), Some("application/json"), "m")?;
        assert_eq!(mt, OCI_MANIFEST);
        assert!(parse(br#"{"schemaVersion":1}"#, None, "m").is_err());
        Ok(())
    }
}
