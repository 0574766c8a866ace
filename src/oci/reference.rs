//! Image references `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`: the one parser, with Docker's
//! reference grammar, for the registry client and for the store's image names.
//!
//! The grammar (distribution/reference): path components are lower-case alphanumerics
//! joined by `.`, `_`, `__` or runs of `-`; a registry is a host name (components of
//! `[A-Za-z0-9-]` not starting or ending with `-`), an IPv4 address or a bracketed IPv6
//! address, with an optional `:port`; a tag is `[\w][\w.-]{0,127}`; a digest `sha256:<hex>`;
//! the name is at most 255 characters and is not 64 hex digits (an image ID).
//!
//! The first component names a registry when it holds a `.` or a `:` or is `localhost`
//! (Docker also takes one with upper-case letters; we refuse those, as both former parsers
//! did); otherwise the registry is `docker.io`, where a one-component name gets `library/`. Without tag or digest the tag is `latest`. The store keeps names as written
//! ([`Reference::written`]), the registry client talks to [`Reference::registry`].

use crate::oci::Digest;
use std::fmt;

/// The registry name Docker Hub images are known by.
pub const DOCKER_HUB: &str = "docker.io";
/// The host serving Docker Hub's distribution API.
pub const DOCKER_HUB_API: &str = "index.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    written: String,
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// A string that is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ReferenceError {
    /// The string given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or `-+`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    if !b.first().is_some_and(|c| is_alnum_lower(*c))
        || !b.last().is_some_and(|c| is_alnum_lower(*c))
    {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A host name, IPv4 address or `[IPv6]`, with an optional `:port`.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("[v6]", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
    let host_ok = host == "[v6]"
        || host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        });
    port_ok && host_ok
}

fn is_tag(s: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !s.is_empty()
        && s.len() <= 128
        && s.bytes().next().is_some_and(word)
        && s.bytes().all(|c| word(c) || c == b'.' || c == b'-')
}

impl Reference {
    /// Parses a reference string.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason| ReferenceError {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(Digest::parse(d).map_err(|_| bad("digest must be sha256:<64 hex digits>"))?),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag
            && !is_tag(t)
        {
            return Err(bad(
                "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if name.len() > 255 {
            return Err(bad("name longer than 255 characters"));
        }
        if Digest::from_hex(name).is_ok() {
            return Err(bad("a name cannot be 64 hex digits (an image ID)"));
        }
        let (first, path) = match name.split_once('/') {
            Some((f, p)) if f.contains(['.', ':']) || f == "localhost" => (Some(f), p),
            _ => (None, name),
        };
        let valid = match first {
            // A first component with a `.` may also be a path component (`foo_bar.com/x`).
            Some(f) => {
                (is_domain(f) || is_path_component(f)) && path.split('/').all(is_path_component)
            }
            None => path.split('/').all(is_path_component),
        };
        if !valid {
            return Err(bad(
                "repository components must be lower-case [a-z0-9] joined by '.', '_', '__' or '-'",
            ));
        }
        let registry = match first {
            None | Some(DOCKER_HUB_API | "registry-1.docker.io") => DOCKER_HUB,
            Some(f) => f,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            written: name.to_string(),
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// Parses a name to give an image in the store: `NAME[:TAG]` (no digest), returned as
    /// `name:tag` with the name as written.
    pub fn parse_tag(s: &str) -> Result<String, ReferenceError> {
        let r = Reference::parse(s)?;
        if r.digest.is_some() {
            return Err(ReferenceError {
                reference: s.to_string(),
                reason: "an image name cannot carry a digest",
            });
        }
        Ok(r.written())
    }

    /// Registry name (`docker.io`, `localhost:5000`, `quay.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The name as written, without tag or digest (`busybox`, `localhost:5000/a/b`).
    pub fn written_name(&self) -> &str {
        &self.written
    }

    /// The reference as written, with its tag (`latest` by default) and digest: the key the
    /// store tags an image with (`busybox:latest`).
    pub fn written(&self) -> String {
        self.with_suffix(&self.written)
    }

    fn with_suffix(&self, name: &str) -> String {
        let mut s = name.to_string();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }

    /// The `host[:port]` to send API requests to.
    pub fn api_host(&self) -> &str {
        registry_api_host(&self.registry)
    }

    /// What names the manifest in `/v2/<repo>/manifests/<reference>`: digest, else tag.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
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
    /// `registry/repository[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_suffix(&self.name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
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
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.api_host(), "index.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.written(), "busybox:latest");
        let r = p("user/app:1.2");
        assert_eq!((r.registry(), r.repository()), ("docker.io", "user/app"));
        assert_eq!(r.tag(), Some("1.2"));
        assert_eq!(r.written(), "user/app:1.2");
        assert_eq!(p("docker.io/alpine").repository(), "library/alpine");
        assert_eq!(p("docker.io/alpine").written(), "docker.io/alpine:latest");
        assert_eq!(p("index.docker.io/alpine:3").registry(), "docker.io");
        assert_eq!(
            p("registry-1.docker.io/alpine").repository(),
            "library/alpine"
        );
    }

    #[test]
    fn registries_with_ports_and_dots() {
        let r = p("localhost:5000/test/busybox:1");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "test/busybox");
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.written(), "localhost:5000/test/busybox:1");
        let r = p("localhost/app");
        assert_eq!((r.registry(), r.repository()), ("localhost", "app"));
        let r = p("quay.io/org/sub/app");
        assert_eq!(r.registry(), "quay.io");
        assert_eq!(r.repository(), "org/sub/app");
        assert_eq!(r.tag(), Some("latest"));
        let r = p("127.0.0.1:5000/x");
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "x"));
        let r = p("[::1]:5000/x:y");
        assert_eq!((r.registry(), r.repository()), ("[::1]:5000", "x"));
        assert_eq!(p("Quay.IO/x").registry(), "Quay.IO");
        // A first component with a dot that is no host name is still a registry, as in Docker.
        assert_eq!(p("foo_bar.com/x").registry(), "foo_bar.com");
        // Without a slash, `host:port` is a name and a tag.
        let r = p("localhost:5000");
        assert_eq!(
            (r.repository(), r.tag()),
            ("library/localhost", Some("5000"))
        );
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = p(&format!("quay.io/a/b@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(Digest::as_str), Some(d.as_str()));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.written(), format!("quay.io/a/b@{d}"));
        let r = p(&format!("localhost:5000/a:v1@{d}"));
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.to_string(), format!("localhost:5000/a:v1@{d}"));
        assert!(Reference::parse_tag(&format!("a@{d}")).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        for s in [
            "",
            "UPPER/case",
            "Upper:1",
            "a b",
            "a/b:",
            "a@sha256:123",
            "a/:tag",
            "a//b",
            "a:t@g",
            "-a",
            "a:.bad",
            "x:-bad",
            ":tag",
        ] {
            assert!(Reference::parse(s).is_err(), "{s} parsed");
        }
        assert!(Reference::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse(&"a".repeat(256)).is_err());
        assert!(Reference::parse(&format!("sha512:{}", "a".repeat(64))).is_ok());
        assert!(Reference::parse(&format!("x@sha512:{}", "a".repeat(128))).is_err());
        assert!(Reference::parse(&format!("x@sha256:{}", "A".repeat(64))).is_err());
    }

    /// Where the store's old name check and the registry's old parser disagreed: one
    /// answer now, Docker's.
    #[test]
    fn former_disagreements() {
        // The store took separators at either end of a component; the registry did not.
        for s in ["a-", "_a", "a.", "x/-y", "x/y_"] {
            assert!(Reference::parse(s).is_err(), "{s} parsed");
        }
        // Both took separators Docker refuses inside a component.
        for s in ["a..b", "a._b", "a___b", "a-_b", "x/a.-b"] {
            assert!(Reference::parse(s).is_err(), "{s} parsed");
        }
        // Docker's separators: `.`, `_`, `__` and runs of `-`.
        for s in ["a.b", "a_b", "a__b", "a-b", "a---b", "x/a.b_c__d-e"] {
            assert!(Reference::parse(s).is_ok(), "{s} refused");
        }
        // The store refused a 64-hex name (an image ID); the registry took it.
        assert!(Reference::parse(&"a".repeat(64)).is_err());
        assert!(Reference::parse(&"a".repeat(63)).is_ok());
        // The store refused `@digest`; the registry took it. A reference may pin a digest,
        // a name given to an image may not.
        let d = format!("sha256:{}", "b".repeat(64));
        assert!(Reference::parse(&format!("x@{d}")).is_ok());
        assert!(Reference::parse_tag(&format!("x@{d}")).is_err());
        // The store took any of `[A-Za-z0-9._:-]` in a registry, the registry anything but
        // `/`, `@` and space; a registry is a host name or address with a numeric port now
        // (or a path-like component with a dot, as in Docker). The store refused IPv6.
        for s in [
            "my_reg:5000/x",
            "localhost:port/x",
            "a.b:50x0/y",
            "-host.io/x",
        ] {
            assert!(Reference::parse(s).is_err(), "{s} parsed");
        }
        assert!(Reference::parse("[::1]:5000/x").is_ok());
        assert!(Reference::parse("Quay.IO:443/x").is_ok());
        // The store limited names to 255 characters; the registry did not.
        let long = format!("quay.io/{}", "a".repeat(250));
        assert!(Reference::parse(&long).is_err());
        assert_eq!(
            Reference::parse_tag("busybox"),
            Ok("busybox:latest".to_string())
        );
        assert_eq!(
            Reference::parse_tag("localhost:5000/a/b:v1.2"),
            Ok("localhost:5000/a/b:v1.2".to_string())
        );
    }
}
