//! Image references `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`, parsed with Docker's rules.
//!
//! The first path component is a registry when it holds a `.` or a `:` or is `localhost`;
//! otherwise the registry is `docker.io`, where a one-component name gets `library/`.
//! Without tag or digest the tag is `latest`.

use crate::oci::Digest;
use crate::registry::error::{Error, Result};
use std::fmt;

/// The registry name Docker Hub images are known by.
pub const DOCKER_HUB: &str = "docker.io";
/// The host serving Docker Hub's distribution API.
pub const DOCKER_HUB_API: &str = "index.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry name as written (`docker.io`, `localhost:5000`, `quay.io`).
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if any.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference string.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                Digest::parse(d).map_err(|_| bad("digest must be sha256:<64 hex digits>"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == DOCKER_HUB_API || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if registry.is_empty() || registry.contains(['/', '@', ' ']) {
            return Err(bad("bad registry name"));
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        for comp in repository.split('/') {
            let ok = !comp.is_empty()
                && comp
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && comp.starts_with(|c: char| c.is_ascii_alphanumeric())
                && comp.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(bad(
                    "repository components must be lower-case [a-z0-9] with . _ - separators",
                ));
            }
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The `host[:port]` to send API requests to.
    pub fn api_host(&self) -> &str {
        registry_api_host(&self.registry)
    }

    /// What names the manifest in `/v2/<repo>/manifests/<reference>`: digest, else tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

/// Maps a registry name to its API host (`docker.io` -> `index.docker.io`).
pub fn registry_api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        match Reference::parse(s) {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.api_host(), "index.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = p("user/app:1.2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "user/app")
        );
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(p("docker.io/alpine").repository, "library/alpine");
        assert_eq!(p("index.docker.io/alpine:3").registry, "docker.io");
    }

    #[test]
    fn registries_with_ports_and_dots() {
        let r = p("localhost:5000/test/busybox:1");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.api_host(), "localhost:5000");
        let r = p("localhost/app");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "app")
        );
        let r = p("quay.io/org/sub/app");
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.repository, "org/sub/app");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = p("127.0.0.1:5000/x");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("quay.io/a/b@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        let r = p(&format!("localhost:5000/a:v1@{d}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("localhost:5000/a:v1@{d}"));
    }

    #[test]
    fn rejects_bad_input() {
        for s in [
            "",
            "UPPER/case",
            "a/b:",
            "a@sha256:123",
            "a/:tag",
            "a//b",
            "a:t@g",
            "-a",
            "a:.bad",
        ] {
            assert!(Reference::parse(s).is_err(), "{s} parsed");
        }
    }
}
