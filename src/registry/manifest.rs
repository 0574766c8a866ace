//! Manifests as registries serve them: parsing by media type (OCI or Docker schema 2, image
//! manifest or index) into oci-spec's types, and picking an index entry for a platform.

use crate::oci::media::{self, MediaType};
use crate::oci::{Descriptor, ImageIndex, ImageManifest, Platform};
use crate::registry::error::{Error, Result};

/// The `Accept` header of manifest requests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A parsed manifest of either kind.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses manifest bytes; the media type comes from the document, else from the HTTP
/// `Content-Type`, else from its shape. Returns (media type, manifest).
pub fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<(MediaType, Manifest)> {
    let bad = |reason: String| Error::BadManifest {
        what: what.to_string(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let declared = v.get("mediaType").and_then(|m| m.as_str());
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| c.starts_with("application/vnd."));
    let media_type = match (declared, ct) {
        (Some(m), _) | (None, Some(m)) => MediaType::from(m),
        (None, None) if v.get("manifests").is_some() => MediaType::ImageIndex,
        (None, None) => MediaType::ImageManifest,
    };
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        return Err(bad(
            "only schemaVersion 2 manifests are supported (Docker schema 1 is not)".to_string(),
        ));
    }
    let m = if media::is_index(&media_type) {
        Manifest::Index(serde_json::from_value(v).map_err(|e| bad(e.to_string()))?)
    } else if media::is_image_manifest(&media_type) {
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
        .manifests()
        .iter()
        .filter(|d| !media::is_index(d.media_type()))
        .find(|d| d.platform().as_ref().is_some_and(|p| want.matches(p)))
        .ok_or_else(|| Error::NoPlatform {
            platform: want.to_string(),
            reference: reference.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref().map(|p| Platform::of(p).to_string()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::media::{DOCKER_LIST, DOCKER_MANIFEST};

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

    fn pick(want: &str) -> std::result::Result<char, Box<dyn std::error::Error>> {
        let (mt, m) = parse(LIST.as_bytes(), None, "list")?;
        assert_eq!(mt.as_ref(), DOCKER_LIST);
        let Manifest::Index(idx) = m else {
            return Err("not an index".into());
        };
        let d = select(&idx, &Platform::parse(want)?, "x")?;
        Ok(d.digest().to_string().chars().last().unwrap_or('?'))
    }

    #[test]
    fn platform_selection() -> std::result::Result<(), Box<dyn std::error::Error>> {
        assert_eq!(pick("linux/amd64")?, '4');
        assert_eq!(pick("linux/arm64")?, '3');
        assert_eq!(pick("linux/arm64/v8")?, '3');
        assert_eq!(pick("linux/arm/v7")?, '2');
        assert_eq!(pick("linux/arm")?, '1');
        let e = pick("linux/s390x").map(|_| ()).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("linux/s390x") && e.contains("linux/arm64/v8")));
        Ok(())
    }

    #[test]
    fn image_manifest_media_types() -> Result<()> {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":1}},"layers":[]}}"#,
            "a".repeat(64)
        );
        let (mt, _) = parse(m.as_bytes(), Some(DOCKER_MANIFEST), "m")?;
        assert_eq!(mt.as_ref(), DOCKER_MANIFEST);
        let (mt, _) = parse(m.as_bytes(), Some("application/json"), "m")?;
        assert_eq!(mt, MediaType::ImageManifest);
        assert!(parse(br#"{"schemaVersion":1}"#, None, "m").is_err());
        Ok(())
    }
}
