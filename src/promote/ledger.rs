//! tenon's own YAML documents on the target branch: ledger entries
//! (`.tenon/promotions/<env>/<id>.yaml`), release records (`.tenon/releases/<env>/<id>.yaml`)
//! and holds (`.tenon/holds/<env>.yaml`).
//!
//! They are serde types written and read with `serde_yaml`, so a file that was reformatted
//! or edited by hand (other indentation, quoting or key order, comments) reads the same,
//! and a malformed one is an error naming the file, line and column. The field names are
//! the ones tenon has always written.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::decide::RenderedUpdate;

/// `apiVersion` of every document (the only one accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "tenon.dev/v1alpha1")]
    V1alpha1,
}

/// `kind: PromotionRecord`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    #[default]
    PromotionRecord,
}

/// `kind: PromotionRelease`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseKind {
    #[default]
    PromotionRelease,
}

/// `kind: PromotionHold`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldKind {
    #[default]
    PromotionHold,
}

/// A promotion (or rollback) in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordDoc {
    #[serde(default)]
    pub api_version: ApiVersion,
    #[serde(default)]
    pub kind: RecordKind,
    pub id: String,
    pub policy: String,
    pub environment: String,
    /// A rollback: the promotion whose values it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<String>,
    pub subject: SubjectDoc,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub gates: Vec<GateDoc>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub updates: Vec<RenderedUpdate>,
    #[serde(default)]
    pub source_revision: String,
    #[serde(default)]
    pub previous: Option<String>,
    pub decided_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubjectDoc {
    pub uri: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDoc {
    pub result: String,
    pub operator: String,
    pub threshold: String,
    #[serde(default)]
    pub observed: String,
    pub passed: bool,
}

/// The release of a hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseDoc {
    #[serde(default)]
    pub api_version: ApiVersion,
    #[serde(default)]
    pub kind: ReleaseKind,
    pub id: String,
    pub environment: String,
    /// The rollback whose hold it lifted.
    pub releases: String,
    #[serde(default)]
    pub by: String,
    pub decided_at: i64,
}

/// A hold on an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldDoc {
    #[serde(default)]
    pub api_version: ApiVersion,
    #[serde(default)]
    pub kind: HoldKind,
    pub environment: String,
    pub rollback: String,
    pub restored: String,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub held_at: i64,
}

/// `gates:` with no items (as tenon wrote an empty list before) is an empty list.
fn null_is_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A malformed document: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct Malformed {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Read one document of type `T` from `text` (the contents of `file`).
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Malformed> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        let full = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        Malformed { file: file.to_string(), line, column, message }
    })
}

/// The YAML text of a document.
pub fn to_yaml<T: Serialize>(doc: &T) -> String {
    // serializing these plain structs of strings, numbers and lists cannot fail
    serde_yaml::to_string(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold() -> HoldDoc {
        HoldDoc {
            api_version: ApiVersion::V1alpha1,
            kind: HoldKind::PromotionHold,
            environment: "prod".into(),
            rollback: "a".repeat(64),
            restored: "b".repeat(64),
            by: "alice".into(),
            reason: "bad: model\n\"v2\"".into(),
            held_at: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let h = hold();
        assert_eq!(parse::<HoldDoc>("h.yaml", &to_yaml(&h)).unwrap(), h);
    }

    /// What tenon wrote before (JSON-quoted strings, `gates:` with no items) reads the same.
    #[test]
    fn the_format_tenon_wrote_before_reads() {
        let old = "apiVersion: tenon.dev/v1alpha1\nkind: PromotionRecord\nid: \"abc\"\npolicy: \"p\"\nenvironment: \"prod\"\n\
                   subject:\n  uri: \"s3://m\\u0001\"\n  digest: \"sha256:1\"\ngates:\nupdates:\n  - file: \"deploy.yaml\"\n    \
                   path: \"image\"\n    value: \"0.91\"\nsourceRevision: \"rev\"\nprevious: null\ndecidedAt: 42\n";
        let r: RecordDoc = parse("r.yaml", old).unwrap();
        assert_eq!((r.id.as_str(), r.subject.uri.as_str(), r.decided_at), ("abc", "s3://m\u{1}", 42));
        assert!(r.gates.is_empty() && r.previous.is_none());
        assert_eq!(
            r.updates,
            [RenderedUpdate { file: "deploy.yaml".into(), path: "image".into(), value: "0.91".into() }]
        );
    }

    /// Another indentation, quoting and key order, and comments: the same hold.
    #[test]
    fn a_reformatted_hold_reads_the_same() {
        let h = hold();
        let text = format!(
            "# placed by hand after the incident\nheldAt:   1700000000000000000\nkind: 'PromotionHold'\nreason: >-\n    bad: model\n\n    \"v2\"\n\
             environment: prod   # the environment\nrestored: {}\nrollback: '{}'\nby: \"alice\"\napiVersion: tenon.dev/v1alpha1\n",
            h.restored, h.rollback
        );
        assert_eq!(parse::<HoldDoc>("h.yaml", &text).unwrap(), h);
    }

    #[test]
    fn malformed_documents_name_file_and_line() {
        let cases = [
            ("kind: PromotionHold\nenvironment: prod\nrollback: x\nrestored: y\nheldAt: soon\n", 5, "heldAt"),
            ("kind: PromotionHolt\nenvironment: prod\nrollback: x\nrestored: y\n", 1, "PromotionHolt"),
            ("environment: prod\nrollback: [x\nrestored: y\n", 2, "rollback"),
            ("environment: prod\nrollback: x\nrestored: y\nrollback: z\n", 1, "duplicate field `rollback`"),
            ("environment: prod\nrollback: x\nrestored: \"y\n", 4, "quoted scalar at line 3"),
            ("apiVersion: tenon.dev/v2\nenvironment: prod\nrollback: x\nrestored: y\n", 1, "tenon.dev/v2"),
            ("environment: prod\nrestored: y\n", 1, "rollback"),
        ];
        for (text, line, names) in cases {
            let e = parse::<HoldDoc>(".tenon/holds/prod.yaml", text).unwrap_err();
            assert_eq!((e.file.as_str(), e.line), (".tenon/holds/prod.yaml", line), "{text}: {e}");
            assert!(e.to_string().starts_with(&format!(".tenon/holds/prod.yaml:{line}:")), "{e}");
            assert!(e.message.contains(names), "{text}: {e}");
        }
    }
}
