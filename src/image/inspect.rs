//! Docker-shaped views of an image config: `inspect` JSON and `history` rows.

use serde_json::{Value, json};

/// Docker's `inspect` JSON for one image.
pub fn inspect_json(
    id: &str,
    repo_tags: &[String],
    repo_digests: &[String],
    config: &Value,
    size: u64,
) -> Value {
    let s = |k: &str| {
        config
            .get(k)
            .cloned()
            .unwrap_or(Value::String(String::new()))
    };
    let layers = config
        .pointer("/rootfs/diff_ids")
        .cloned()
        .unwrap_or(json!([]));
    let comment = config
        .get("history")
        .and_then(Value::as_array)
        .and_then(|h| h.last())
        .and_then(|h| h.get("comment"))
        .cloned()
        .unwrap_or(Value::String(String::new()));
    json!({
        "Id": id,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": comment,
        "Created": s("created"),
        "Author": s("author"),
        "Config": config.get("config").cloned().unwrap_or(json!({})),
        "Architecture": s("architecture"),
        "Os": s("os"),
        "Size": size,
        "RootFS": { "Type": "layers", "Layers": layers },
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
pub fn history(config: &Value, sizes: &[u64]) -> Vec<HistoryRow> {
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let empty = Vec::new();
    let hist = config
        .get("history")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut rows = Vec::new();
    let mut li = 0usize;
    let text = |h: &Value, k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    for h in hist {
        let empty_layer = h
            .get("empty_layer")
            .and_then(Value::as_bool)
            .unwrap_or(false);
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
            created: text(h, "created"),
            created_by: text(h, "created_by"),
            comment: text(h, "comment"),
            author: text(h, "author"),
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
