//! Platforms: the host's, `--platform os/arch[/variant]`, and which index entries serve one.

use std::fmt;

/// The platform of an index entry, as oci-spec reads it.
pub use oci_spec::image::Platform as Entry;

/// A wanted OS/architecture pair with an optional variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GOOS name (`linux`).
    pub os: String,
    /// GOARCH name (`amd64`).
    pub architecture: String,
    /// CPU variant (`v8`), if any.
    pub variant: Option<String>,
}

/// `os/arch[/variant]` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {0:?}: expected os/arch[/variant]")]
pub struct PlatformError(pub String);

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
        }
    }

    /// Parses `os/arch[/variant]` (`--platform linux/arm64/v8`).
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(PlatformError(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform an index entry names.
    pub fn of(entry: &Entry) -> Platform {
        Platform {
            os: entry.os().to_string(),
            architecture: entry.architecture().to_string(),
            variant: entry.variant().clone(),
        }
    }

    fn norm_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }

    /// Whether an index entry for `candidate` serves this wanted platform. A wanted platform
    /// without variant takes any variant.
    pub fn matches(&self, candidate: &Entry) -> bool {
        let c = Platform::of(candidate);
        self.os == c.os
            && self.architecture == c.architecture
            && (self.variant.is_none() || self.norm_variant() == c.norm_variant())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Result<Entry, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn parse_match_and_show() -> Result<(), Box<dyn std::error::Error>> {
        let v8 = entry(r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#)?;
        let bare = entry(r#"{"architecture":"arm64","os":"linux"}"#)?;
        for want in ["linux/arm64", "linux/arm64/v8"] {
            let p = Platform::parse(want)?;
            assert!(p.matches(&v8) && p.matches(&bare), "{want}");
            assert_eq!(p.to_string(), want);
        }
        assert!(!Platform::parse("linux/arm64/v9")?.matches(&v8));
        assert!(!Platform::parse("linux/amd64")?.matches(&v8));
        assert_eq!(Platform::of(&v8).to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err() && Platform::parse("a//b").is_err());
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(h.to_string(), "linux/amd64");
        }
        Ok(())
    }
}
