//! Media types and annotations: oci-spec's media types, the Docker schema 2 ones (which
//! oci-spec keeps as `MediaType::Other`), and what names an image in an index.

pub use oci_spec::image::{ANNOTATION_REF_NAME as REF_NAME, MediaType};

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation with the full image name, as containerd writes it.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// Whether a media type names an index or manifest list (OCI or Docker).
pub fn is_index(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex) || m.as_ref() == DOCKER_LIST
}

/// Whether a media type names an image manifest (OCI or Docker schema 2).
pub fn is_image_manifest(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageManifest) || m.as_ref() == DOCKER_MANIFEST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_types_are_kept_as_other() {
        let list = MediaType::from(DOCKER_LIST);
        assert!(matches!(list, MediaType::Other(_)) && is_index(&list));
        assert_eq!(list.to_string(), DOCKER_LIST);
        assert!(is_index(&MediaType::ImageIndex) && !is_index(&MediaType::ImageManifest));
        assert!(is_image_manifest(&MediaType::from(DOCKER_MANIFEST)));
        assert!(is_image_manifest(&MediaType::ImageManifest));
        assert!(!is_image_manifest(&MediaType::ImageConfig));
    }
}
