//! The image config document: oci-spec's typed view to read and edit it, kept over the JSON as
//! read, so that an edit leaves every field oci-spec lacks (Docker's extras) as it was.

use super::{ImageError, Result};
use crate::oci::{Digest, ImageConfiguration};
use serde_json::{Map, Value};

/// An image config: the JSON document and its typed view.
///
/// A config whose digest is kept is never written again (its bytes stay in the blob); one made
/// by an edit is the document as read with exactly the typed view's changes applied.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    doc: Map<String, Value>,
    oci: ImageConfiguration,
}

fn format(e: impl std::fmt::Display) -> ImageError {
    ImageError::Format(format!("image config: {e}"))
}

/// The typed view of a document. Fields oci-spec requires but images may lack (architecture,
/// os, rootfs.type) read as empty, and are not written back unless an edit sets them.
fn typed(doc: &Map<String, Value>) -> Result<ImageConfiguration> {
    let mut v = doc.clone();
    for k in ["architecture", "os"] {
        v.entry(k).or_insert_with(|| Value::String(String::new()));
    }
    if let Some(Value::Object(rootfs)) = v.get_mut("rootfs") {
        rootfs
            .entry("type")
            .or_insert_with(|| Value::String(String::new()));
    }
    serde_json::from_value(Value::Object(v)).map_err(format)
}

/// Writes into `doc` what an edit changed from `before` to `after` (typed views of it): objects
/// key by key, arrays that only grew by their tail, anything else whole.
fn merge(doc: &mut Value, before: &Value, after: &Value) {
    if before == after {
        return;
    }
    match (doc, before, after) {
        (Value::Object(d), Value::Object(b), Value::Object(a)) => {
            for (k, av) in a {
                match (d.get_mut(k), b.get(k)) {
                    (_, Some(bv)) if bv == av => {}
                    (Some(dv), Some(bv)) => merge(dv, bv, av),
                    _ => {
                        d.insert(k.clone(), av.clone());
                    }
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                d.remove(k);
            }
        }
        (Value::Array(d), Value::Array(b), Value::Array(a))
            if a.starts_with(b) && d.len() == b.len() =>
        {
            d.extend(a[b.len()..].iter().cloned());
        }
        (d, _, a) => *d = a.clone(),
    }
}

impl ImageConfig {
    /// Parses config bytes (a JSON object with `rootfs.diff_ids`).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig> {
        let doc: Value = serde_json::from_slice(bytes)
            .map_err(|e| ImageError::Format(format!("image config is not valid JSON: {e}")))?;
        let has_diff_ids = doc.pointer("/rootfs/diff_ids").is_some_and(Value::is_array);
        let Value::Object(doc) = doc else {
            return Err(format("not a JSON object"));
        };
        if !has_diff_ids {
            return Err(ImageError::Format(
                "image config has no rootfs.diff_ids".into(),
            ));
        }
        let oci = typed(&doc)?;
        Ok(ImageConfig { doc, oci })
    }

    /// A new config document with the typed view's content.
    pub fn new(oci: ImageConfiguration) -> Result<ImageConfig> {
        match serde_json::to_value(&oci).map_err(format)? {
            Value::Object(doc) => Ok(ImageConfig { doc, oci }),
            _ => Err(format("not a JSON object")),
        }
    }

    /// The typed view.
    pub fn oci(&self) -> &ImageConfiguration {
        &self.oci
    }

    /// A top-level field of the document as read (`config`: Docker's inspect shows it whole,
    /// extras included).
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.doc.get(key)
    }

    /// The layers' diff IDs, bottom first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.oci
            .rootfs()
            .diff_ids()
            .iter()
            .map(|v| {
                Digest::parse(v).map_err(|_| {
                    ImageError::Format(format!("invalid diff ID {v:?} in image config"))
                })
            })
            .collect()
    }

    /// Edits the typed view; the document gets exactly the fields the edit changed.
    pub fn edit<E: From<ImageError>>(
        &mut self,
        f: impl FnOnce(&mut ImageConfiguration) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut oci = self.oci.clone();
        f(&mut oci)?;
        let before = serde_json::to_value(&self.oci).map_err(format)?;
        let after = serde_json::to_value(&oci).map_err(format)?;
        let mut doc = Value::Object(std::mem::take(&mut self.doc));
        merge(&mut doc, &before, &after);
        if let Value::Object(d) = doc {
            self.doc = d;
        }
        self.oci = oci;
        Ok(())
    }

    /// The document as JSON bytes (keys sorted).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.doc).map_err(format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Config, History};
    use serde_json::json;

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn diff_ids_are_validated() {
        let c = br#"{"rootfs": {"type": "layers", "diff_ids": ["sha256:xyz"]}}"#;
        assert!(ImageConfig::parse(c).and_then(|c| c.diff_ids()).is_err());
        assert!(ImageConfig::parse(b"{}").is_err());
        assert!(ImageConfig::parse(b"[]").is_err());
        assert!(ImageConfig::parse(b"not json").is_err());
    }

    /// Docker's fields oci-spec lacks, nulls and fields oci-spec requires but the image lacks
    /// all survive an edit; the edit's own changes land.
    #[test]
    fn an_edit_keeps_what_oci_spec_lacks() -> TestResult {
        let d = Digest::of(b"layer");
        let doc = json!({
            "rootfs": {"diff_ids": [d.as_str()]},
            "docker_version": "24.0.7",
            "container_config": {"Hostname": "abc", "Cmd": ["/bin/sh"]},
            "config": {
                "Hostname": "", "AttachStdin": false, "Cmd": null, "Env": ["A=1"],
                "Labels": {"a": "1"}, "OnBuild": null, "Healthcheck": {"Test": ["NONE"]},
                "ExposedPorts": {"80/tcp": {}}
            },
            "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "x", "extra": 1}]
        });
        let mut c = ImageConfig::parse(&serde_json::to_vec(&doc)?)?;
        assert_eq!(c.diff_ids()?, vec![d.clone()]);
        assert_eq!(c.oci().architecture().to_string(), "");
        c.edit(|o| -> Result<()> {
            o.set_created(Some("2024-05-06T07:08:09Z".into()));
            let mut cfg = o.config().clone().unwrap_or_default();
            cfg.set_cmd(Some(vec!["sh".into()]));
            let mut labels = cfg.labels().clone().unwrap_or_default();
            labels.insert("b".into(), "2".into());
            cfg.set_labels(Some(labels));
            let mut ports = cfg.exposed_ports().clone().unwrap_or_default();
            ports.push("53/udp".into());
            cfg.set_exposed_ports(Some(ports));
            o.set_config(Some(cfg));
            o.rootfs_mut()
                .diff_ids_mut()
                .push(Digest::of(b"new").to_string());
            let mut h = History::default();
            h.set_created_by(Some("strata commit".into()));
            let mut hist = o.history().clone().unwrap_or_default();
            hist.push(h);
            o.set_history(Some(hist));
            Ok(())
        })?;
        let out: Value = serde_json::from_slice(&c.to_bytes()?)?;
        let want = json!({
            "created": "2024-05-06T07:08:09Z",
            "rootfs": {"diff_ids": [d.as_str(), Digest::of(b"new").as_str()]},
            "docker_version": "24.0.7",
            "container_config": {"Hostname": "abc", "Cmd": ["/bin/sh"]},
            "config": {
                "Hostname": "", "AttachStdin": false, "Cmd": ["sh"], "Env": ["A=1"],
                "Labels": {"a": "1", "b": "2"}, "OnBuild": null,
                "Healthcheck": {"Test": ["NONE"]},
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}}
            },
            "history": [
                {"created": "2020-01-01T00:00:00Z", "created_by": "x", "extra": 1},
                {"created_by": "strata commit"}
            ]
        });
        assert_eq!(out, want);
        Ok(())
    }

    #[test]
    fn a_new_document_is_the_typed_view() -> TestResult {
        let mut oci = ImageConfiguration::default();
        oci.set_config(Some(Config::default()));
        oci.set_history(Some(Vec::new()));
        let c = ImageConfig::new(oci)?;
        let v: Value = serde_json::from_slice(&c.to_bytes()?)?;
        assert_eq!(v["config"], json!({}));
        assert_eq!(v["rootfs"], json!({"type": "layers", "diff_ids": []}));
        assert_eq!(v["history"], json!([]));
        Ok(())
    }
}
