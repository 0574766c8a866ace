//! Docker-shaped views of an image config: `inspect` JSON and `history` rows.

use super::config::ImageConfig;
use serde_json::{Value, json};

/// Docker's `inspect` JSON for one image.
pub fn inspect_json(
    id: &str,
    repo_tags: &[String],
    repo_digests: &[String],
    config: &ImageConfig,
    size: u64,
) -> Value {
    let c = config.oci();
    let comment = c
        .history()
        .as_ref()
        .and_then(|h| h.last())
        .and_then(|h| h.comment().clone())
        .unwrap_or_default();
    json!({
        "Id": id,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": comment,
        "Created": c.created().clone().unwrap_or_default(),
        "Author": c.author().clone().unwrap_or_default(),
        // As the image has it: Docker's fields that oci-spec's Config lacks included.
        "Config": config.raw("config").cloned().unwrap_or(json!({})),
        "Architecture": c.architecture().to_string(),
        "Os": c.os().to_string(),
        "Size": size,
        "RootFS": { "Type": "layers", "Layers": c.rootfs().diff_ids() },
    })
}

/// One row of `history`, newest first in the returned list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// The layer's diff ID, or `<missing>` for empty layers.
    pub layer: String,
    /// When.
    pub created: String,
    /// The command.
    pub created_by: String,
    /// The comment.
    pub comment: String,
    /// The author.
    pub author: String,
    /// Uncompressed size of the layer it made (0 for empty layers).
    pub size: u64,
    /// True for history entries that made no layer.
    pub empty_layer: bool,
}

/// History rows from the config (newest first); `sizes[i]` is the size of layer i.
pub fn history(config: &ImageConfig, sizes: &[u64]) -> Vec<HistoryRow> {
    let c = config.oci();
    let diff_ids = c.rootfs().diff_ids();
    let hist = c.history().as_deref().unwrap_or_default();
    let mut rows = Vec::new();
    let mut li = 0usize;
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    for h in hist {
        let empty_layer = h.empty_layer().unwrap_or(false);
        let (layer, size) = if empty_layer {
            ("<missing>".to_string(), 0)
        } else {
            let r = (
                diff_ids
                    .get(li)
                    .cloned()
                    .unwrap_or_else(|| "<missing>".into()),
                sizes.get(li).copied().unwrap_or(0),
            );
            li += 1;
            r
        };
        rows.push(HistoryRow {
            layer,
            created: text(h.created()),
            created_by: text(h.created_by()),
            comment: text(h.comment()),
            author: text(h.author()),
            size,
            empty_layer,
        });
    }
    // Layers without history entries.
    while li < diff_ids.len() {
        rows.push(HistoryRow {
            layer: diff_ids[li].clone(),
            created: String::new(),
            created_by: String::new(),
            comment: String::new(),
            author: String::new(),
            size: sizes.get(li).copied().unwrap_or(0),
            empty_layer: false,
        });
        li += 1;
    }
    rows.reverse();
    rows
}
