//! `images`, `inspect`, `history`, `tag`, `rmi`. Listing takes no lock (records are replaced
//! atomically), so it answers even while a long load holds the store lock.

use super::{OutFormat, human_size};
use crate::image::inspect;
use crate::image::names;
use crate::store::Store;
use serde_json::json;

/// The lazy (eStargz, not yet completed) layers of an image: how many, and the bytes of their
/// data fetched so far. `strata images` and `strata ps` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Partial {
    pub lazy_layers: usize,
    pub fetched: u64,
}

impl Partial {
    /// The image's partial state, `None` when every layer is complete.
    pub(super) fn of(store: &Store, img: &crate::store::ImageRecord) -> Option<Partial> {
        let lazy: Vec<_> = img
            .layers
            .iter()
            .filter(|l| store.is_lazy(&l.diff_id))
            .collect();
        (!lazy.is_empty()).then(|| Partial {
            lazy_layers: lazy.len(),
            fetched: lazy.iter().map(|l| store.lazy_cached(&l.diff_id).0).sum(),
        })
    }

    /// The text form, ` (partial: N lazy layers, X fetched)`, to append to a row.
    pub(super) fn suffix(p: Option<&Partial>) -> String {
        p.map(|p| {
            format!(
                " (partial: {} lazy layers, {} fetched)",
                p.lazy_layers,
                human_size(p.fetched)
            )
        })
        .unwrap_or_default()
    }

    /// The JSON form, `{"LazyLayers": N, "FetchedBytes": X}`.
    pub(super) fn json(&self) -> serde_json::Value {
        json!({"LazyLayers": self.lazy_layers, "FetchedBytes": self.fetched})
    }
}

/// `strata images`.
pub fn images(store: &Store, format: OutFormat, quiet: bool) -> anyhow::Result<i32> {
    let tags = store.tags()?;
    let mut rows = Vec::new();
    let mut partial = std::collections::HashMap::new();
    for img in store.images()? {
        if let Some(p) = Partial::of(store, &img) {
            partial.insert(img.id.clone(), p);
        }
        let cfg = store.image_config(&img)?;
        let created = cfg.oci().created().clone().unwrap_or_default();
        let names: Vec<&String> = tags
            .iter()
            .filter(|(_, v)| **v == img.id)
            .map(|(k, _)| k)
            .collect();
        if names.is_empty() {
            rows.push((
                "<none>".to_string(),
                "<none>".to_string(),
                img.id.clone(),
                created.clone(),
                img.size(),
            ));
        }
        for n in names {
            let (r, t) = names::split_key(n);
            let t = t.unwrap_or_else(|| "<none>".to_string());
            rows.push((r, t, img.id.clone(), created.clone(), img.size()));
        }
    }
    if quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.2.clone()) {
                println!("{}", r.2.short());
            }
        }
        return Ok(0);
    }
    if format == OutFormat::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut v =
                    json!({"Repository": r.0, "Tag": r.1, "Id": r.2, "Created": r.3, "Size": r.4});
                if let Some(p) = partial.get(&r.2) {
                    v["Partial"] = p.json();
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<40} {:<16} {:<14} {:<22} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for r in rows {
        println!(
            "{:<40} {:<16} {:<14} {:<22} {}{}",
            r.0,
            r.1,
            r.2.short(),
            crate::run::state::ago(&r.3),
            human_size(r.4),
            Partial::suffix(partial.get(&r.2))
        );
    }
    Ok(0)
}

/// `strata inspect IMAGE...`.
pub fn inspect(store: &Store, images: &[String]) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    for r in images {
        let img = store.resolve_image(r)?;
        let cfg = store.image_config(&img)?;
        let tags = store.tags_of(&img.id)?;
        out.push(inspect::inspect_json(
            img.id.as_str(),
            &tags,
            &img.repo_digests,
            &cfg,
            img.size(),
        ));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// `strata history IMAGE`.
pub fn history(store: &Store, image: &str, format: OutFormat) -> anyhow::Result<i32> {
    let img = store.resolve_image(image)?;
    let cfg = store.image_config(&img)?;
    let sizes: Vec<u64> = img.layers.iter().map(|l| l.diff_size).collect();
    let rows = inspect::history(&cfg, &sizes);
    if format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<14} {:<22} {:<40} {:<10} COMMENT",
        "LAYER", "CREATED", "CREATED BY", "SIZE"
    );
    for r in rows {
        let layer = if r.layer.starts_with("sha256:") {
            r.layer[7..19].to_string()
        } else {
            r.layer.clone()
        };
        let by: String = r.created_by.chars().take(40).collect();
        println!(
            "{:<14} {:<22} {:<40} {:<10} {}",
            layer,
            crate::run::state::ago(&r.created),
            by,
            human_size(r.size),
            r.comment
        );
    }
    Ok(0)
}

/// `strata tag SRC DST`.
pub fn tag(store: &Store, src: &str, dst: &str) -> anyhow::Result<i32> {
    store.tag(src, dst)?;
    Ok(0)
}

/// `strata rmi IMAGE...`.
pub fn rmi(store: &Store, images: &[String], force: bool) -> anyhow::Result<i32> {
    let mut code = 0;
    for r in images {
        match store.rmi(r, force) {
            Ok(rm) => {
                for t in rm.untagged {
                    println!("Untagged: {t}");
                }
                for i in rm.images {
                    println!("Deleted: {i}");
                }
                for l in rm.layers {
                    println!("Deleted: {l}");
                }
            }
            Err(e) => {
                eprintln!("strata: rmi {r}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}
