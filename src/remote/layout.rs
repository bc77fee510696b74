//! How a cache record looks in a registry: every media type, the tag, the manifest and the
//! config, and the checks a reader makes. Kept in one module so that a registry with a list
//! of allowed media types needs changes here only.
//!
//! ```text
//! tag r1-<key>  ->  image manifest (artifactType application/vnd.tenon.record.v1)
//!                     config  application/vnd.tenon.record.v1+json   the record (below)
//!                     layers  application/vnd.tenon.object.v1        one per object >= 1 MiB,
//!                                                                    digest = the object's
//!                             application/vnd.tenon.pack.v1.tar      the smaller objects, one tar
//!                     annotations dev.tenon.key, dev.tenon.task, org.opencontainers.image.created,
//!                                 dev.tenon.signature (optional, SSHSIG over key + config digest)
//!
//! tag g1-<git tree id> -> image manifest (artifactType application/vnd.tenon.gitmemo.v1)
//!                     config  application/vnd.tenon.gitmemo.v1+json  {format, tree, blobs: {id: {sha256, size, lfs}}}
//!                     layers  the empty layer
//!                     annotations dev.tenon.git-tree, org.opencontainers.image.created,
//!                                 dev.tenon.signature (optional, SSHSIG over tree id + config digest)
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Kind;
use crate::oci::Digest;
use crate::store::{Record, OUTPUT_FORMAT};

pub const RECORD_ARTIFACT_TYPE: &str = "application/vnd.tenon.record.v1";
pub const RECORD_CONFIG_TYPE: &str = "application/vnd.tenon.record.v1+json";
pub const OBJECT_LAYER_TYPE: &str = "application/vnd.tenon.object.v1";
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_JSON: &[u8] = b"{}";
pub const KEY_ANNOTATION: &str = "dev.tenon.key";
pub const TASK_ANNOTATION: &str = "dev.tenon.task";
pub const RUN_ANNOTATION: &str = "dev.tenon.run";
pub const SIGNATURE_ANNOTATION: &str = "dev.tenon.signature";
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// Version of the record layout, in the tag: a later layout misses instead of misparsing.
pub const TAG_PREFIX: &str = "r1-";
/// Version of the config document.
pub const RECORD_FORMAT: u32 = 1;
/// Objects of this size or more travel as their own blob; smaller ones in the pack.
pub const LARGE_OBJECT: u64 = 1 << 20;

/// A git blob memo (`g1-<tree id>`): the digests tenon knows for the blobs of a repository
/// tree; config = the memo document, one empty layer.
pub const MEMO_ARTIFACT_TYPE: &str = "application/vnd.tenon.gitmemo.v1";
pub const MEMO_CONFIG_TYPE: &str = "application/vnd.tenon.gitmemo.v1+json";
pub const MEMO_TAG_PREFIX: &str = "g1-";
pub const TREE_ANNOTATION: &str = "dev.tenon.git-tree";

pub fn record_tag(key: &str) -> String {
    format!("{TAG_PREFIX}{key}")
}

/// The key a record tag names, if `tag` is one.
pub fn key_of_tag(tag: &str) -> Option<String> {
    tag.strip_prefix(TAG_PREFIX).filter(|k| crate::util::is_sha256_hex(k)).map(str::to_string)
}

/// Who made a record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Producer {
    pub tenon: String,
    pub host: String,
}

/// The small objects of a record, in one tar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PackRef {
    pub digest: String,
    pub size: u64,
    /// The objects (hex digests) it holds, sorted.
    pub objects: Vec<String>,
}

/// The config blob: a local [`Record`] plus where it came from and how its small objects
/// are packed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRecord {
    pub format: u32,
    #[serde(flatten)]
    pub record: Record,
    pub producer: Producer,
    #[serde(default)]
    pub packs: Vec<PackRef>,
}

/// One layer of a record manifest.
#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: &'static str,
    pub digest: Digest,
    pub size: u64,
}

impl Layer {
    pub fn object(digest: Digest, size: u64) -> Layer {
        Layer { media_type: OBJECT_LAYER_TYPE, digest, size }
    }
    pub fn pack(digest: Digest, size: u64) -> Layer {
        Layer { media_type: crate::oci::pack::PACK_MEDIA_TYPE, digest, size }
    }
}

/// Every object a record's outputs name (file contents and symlink target texts), with
/// its size, once each.
pub fn record_objects(rec: &Record) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for set in &rec.outputs {
        for e in &set.tree.entries {
            if e.kind != Kind::Dir && !e.digest.is_empty() {
                out.insert(e.digest.clone(), e.size.unwrap_or(0));
            }
        }
    }
    out
}

/// The manifest of a record, canonical JSON (keys sorted): the same record gives the same
/// bytes.
pub fn manifest_bytes(
    rec: &Record,
    config: &Digest,
    config_size: u64,
    layers: &[Layer],
    signature: Option<&str>,
) -> Result<bytes::Bytes, String> {
    let mut layers: Vec<&Layer> = layers.iter().collect();
    layers.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));
    let layers: Vec<serde_json::Value> = if layers.is_empty() {
        vec![serde_json::json!({
            "mediaType": EMPTY_TYPE, "digest": Digest::of_bytes(EMPTY_JSON).to_string(), "size": EMPTY_JSON.len()
        })]
    } else {
        layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size}))
            .collect()
    };
    let mut annotations = serde_json::Map::new();
    annotations.insert(KEY_ANNOTATION.into(), rec.key.clone().into());
    annotations.insert(TASK_ANNOTATION.into(), rec.task.clone().into());
    annotations.insert(RUN_ANNOTATION.into(), rec.run.clone().into());
    annotations.insert(CREATED_ANNOTATION.into(), rfc3339(rec.created_ns).into());
    if let Some(s) = signature {
        annotations.insert(SIGNATURE_ANNOTATION.into(), s.into());
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::OCI_MANIFEST,
        "artifactType": RECORD_ARTIFACT_TYPE,
        "config": {"mediaType": RECORD_CONFIG_TYPE, "digest": config.to_string(), "size": config_size},
        "layers": layers,
        "annotations": annotations,
    });
    crate::oci::canonical_json(&m).map(bytes::Bytes::from)
}

/// `created_ns` as RFC 3339 (UTC, seconds).
pub use crate::util::rfc3339_seconds as rfc3339;

/// What a reader takes from a record manifest, after checking it.
#[derive(Debug, Clone)]
pub struct RecordManifest {
    pub config: Descriptor,
    /// Digests of the object layers.
    pub objects: Vec<Digest>,
    /// Digests of the pack layers.
    pub packs: Vec<Descriptor>,
    pub signature: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    artifact_type: Option<String>,
    config: RawDescriptor,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

impl RecordManifest {
    /// Parse the manifest fetched for `key` and check it is a tenon record of that key.
    pub fn parse(bytes: &[u8], key: &str) -> Result<RecordManifest, String> {
        let m: RawManifest = serde_json::from_slice(bytes).map_err(|e| format!("not a record manifest: {e}"))?;
        let kind = m.artifact_type.as_deref().unwrap_or(&m.config.media_type);
        if kind != RECORD_ARTIFACT_TYPE && m.config.media_type != RECORD_CONFIG_TYPE {
            return Err(format!("artifact type {kind:?} is not a tenon cache record ({RECORD_ARTIFACT_TYPE})"));
        }
        if m.config.media_type != RECORD_CONFIG_TYPE {
            return Err(format!("config type {:?} is not {RECORD_CONFIG_TYPE}", m.config.media_type));
        }
        match m.annotations.get(KEY_ANNOTATION) {
            Some(k) if k == key => {}
            Some(k) => return Err(format!("it is the record of key {k}, tagged as {key}")),
            None => return Err(format!("it has no {KEY_ANNOTATION} annotation")),
        }
        let digest = |d: &RawDescriptor| Digest::parse(&d.digest).map_err(|e| e.to_string());
        let config = Descriptor { digest: digest(&m.config)?, size: m.config.size };
        let mut objects = Vec::new();
        let mut packs = Vec::new();
        for l in &m.layers {
            match l.media_type.as_str() {
                OBJECT_LAYER_TYPE => objects.push(digest(l)?),
                t if t == crate::oci::pack::PACK_MEDIA_TYPE => {
                    packs.push(Descriptor { digest: digest(l)?, size: l.size })
                }
                EMPTY_TYPE => {}
                other => return Err(format!("layer {} has an unknown type {other:?}", l.digest)),
            }
        }
        Ok(RecordManifest { config, objects, packs, signature: m.annotations.get(SIGNATURE_ANNOTATION).cloned() })
    }
}

impl RemoteRecord {
    /// Parse a config blob (already checked against its digest) and check that it is the
    /// record of `key`: its key, and the SHA-256 of its preimage, which is how keys are made.
    /// A record re-tagged under another key, or made by a tenon with another key schema,
    /// fails here.
    pub fn parse(bytes: &[u8], key: &str, manifest: &RecordManifest) -> Result<RemoteRecord, String> {
        let rec: RemoteRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("its config is not a record: {e}"))?;
        if rec.format != RECORD_FORMAT {
            return Err(format!("record format {} (this tenon reads {RECORD_FORMAT})", rec.format));
        }
        if rec.record.key != key {
            return Err(format!("its config is the record of key {}", rec.record.key));
        }
        let rehashed = crate::hash::sha256_hex(crate::cache::canonical_json(&rec.record.preimage).as_bytes());
        if rehashed != key {
            return Err(format!("its preimage does not hash to its key (sha256 {rehashed})"));
        }
        for set in &rec.record.outputs {
            if set.format != OUTPUT_FORMAT {
                return Err(format!(
                    "output {}:{} has format {} (this tenon restores {OUTPUT_FORMAT})",
                    set.workspace, set.path, set.format
                ));
            }
            for e in &set.tree.entries {
                if e.kind != Kind::Dir && (!crate::util::is_sha256_hex(&e.digest) || e.size.is_none()) {
                    return Err(format!("output entry {:?} names no object", e.path));
                }
            }
        }
        // every object must come from a layer the manifest lists: a pack named by the
        // manifest, or its own blob
        let packs: BTreeMap<&str, &Descriptor> = manifest.packs.iter().map(|p| (p.digest.as_str(), p)).collect();
        for p in &rec.packs {
            match packs.get(p.digest.as_str()) {
                Some(d) if d.size == p.size => {}
                _ => return Err(format!("pack {} is not a layer of the manifest", p.digest)),
            }
            if let Some(bad) = p.objects.iter().find(|o| !crate::util::is_sha256_hex(o)) {
                return Err(format!("pack {} lists {bad:?}, not an object digest", p.digest));
            }
        }
        let blobs: std::collections::BTreeSet<&str> = manifest.objects.iter().map(|d| d.hex()).collect();
        let packed: std::collections::BTreeSet<&str> =
            rec.packs.iter().flat_map(|p| p.objects.iter().map(String::as_str)).collect();
        for d in record_objects(&rec.record).keys() {
            if !blobs.contains(d.as_str()) && !packed.contains(d.as_str()) {
                return Err(format!("object {d} is in no layer"));
            }
        }
        Ok(rec)
    }

    pub fn objects(&self) -> BTreeMap<String, u64> {
        record_objects(&self.record)
    }
}

/// One record as `cache ls --remote` shows it (from its manifest alone).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteEntry {
    pub key: String,
    pub digest: String,
    pub task: String,
    pub run: String,
    pub created: String,
    /// Bytes of its layers (outputs) and config.
    pub size: u64,
    pub signed: bool,
    /// Why it is not a readable tenon record, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl RemoteEntry {
    pub fn from_manifest(key: &str, digest: &Digest, bytes: &[u8]) -> RemoteEntry {
        let raw: Result<RawManifest, _> = serde_json::from_slice(bytes);
        let problem = RecordManifest::parse(bytes, key).err();
        let (task, run, created, size, signed) = match &raw {
            Ok(m) => (
                m.annotations.get(TASK_ANNOTATION).cloned().unwrap_or_default(),
                m.annotations.get(RUN_ANNOTATION).cloned().unwrap_or_default(),
                m.annotations.get(CREATED_ANNOTATION).cloned().unwrap_or_default(),
                m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
                m.annotations.contains_key(SIGNATURE_ANNOTATION),
            ),
            Err(_) => Default::default(),
        };
        RemoteEntry { key: key.to_string(), digest: digest.to_string(), task, run, created, size, signed, problem }
    }

    /// When it was made, if its annotation says.
    pub fn created_time(&self) -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(&self.created).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_the_layout_version_and_only_keys() {
        let k = "a".repeat(64);
        assert_eq!(record_tag(&k), format!("r1-{k}"));
        assert_eq!(key_of_tag(&record_tag(&k)), Some(k.clone()));
        assert_eq!(key_of_tag(&format!("r2-{k}")), None);
        assert_eq!(key_of_tag("r1-abc"), None);
        assert_eq!(key_of_tag(&format!("r1-{}", "A".repeat(64))), None);
        assert!(record_tag(&k).len() <= 128);
    }

    fn record(key: &str, preimage: serde_json::Value) -> Record {
        Record {
            key: key.into(),
            run: "r".into(),
            run_uid: "u".into(),
            task: "t".into(),
            created_ns: 1_700_000_000_000_000_000,
            duration_ms: 1,
            preimage,
            results: Default::default(),
            outputs: vec![],
        }
    }

    #[test]
    fn a_record_is_checked_against_its_tag_and_preimage() {
        let pre = serde_json::json!({"version": 2, "b": [1, 2], "a": {"y": 1, "x": 2}});
        let key = crate::hash::sha256_hex(crate::cache::canonical_json(&pre).as_bytes());
        let rec = record(&key, pre.clone());
        let remote = RemoteRecord { format: 1, record: rec.clone(), producer: Producer::default(), packs: vec![] };
        let cfg = crate::oci::canonical_json(&remote).unwrap();
        let d = Digest::of_bytes(&cfg);
        let m = manifest_bytes(&rec, &d, cfg.len() as u64, &[], None).unwrap();
        let parsed = RecordManifest::parse(&m, &key).unwrap();
        assert_eq!(parsed.config.digest, d);
        assert!(RemoteRecord::parse(&cfg, &key, &parsed).is_ok());
        // re-tagged: the manifest's key annotation says otherwise
        let other = "b".repeat(64);
        let e = RecordManifest::parse(&m, &other).unwrap_err();
        assert!(e.contains("tagged as"), "{e}");
        // a forged record claiming the key with another preimage
        let forged = record(&key, serde_json::json!({"version": 2, "evil": true}));
        let remote = RemoteRecord { format: 1, record: forged, producer: Producer::default(), packs: vec![] };
        let cfg = crate::oci::canonical_json(&remote).unwrap();
        let e = RemoteRecord::parse(&cfg, &key, &parsed).unwrap_err();
        assert!(e.contains("preimage does not hash to its key"), "{e}");
    }

    #[test]
    fn the_manifest_is_deterministic_and_names_the_empty_layer_when_there_are_no_outputs() {
        let rec = record(&"c".repeat(64), serde_json::json!({}));
        let d = Digest::of_bytes(b"x");
        let a = manifest_bytes(&rec, &d, 1, &[], None).unwrap();
        let b = manifest_bytes(&rec, &d, 1, &[], None).unwrap();
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["layers"][0]["mediaType"], EMPTY_TYPE);
        assert_eq!(v["artifactType"], RECORD_ARTIFACT_TYPE);
        assert_eq!(v["annotations"][CREATED_ANNOTATION], "2023-11-14T22:13:20Z");
    }
}
