//! Holds and ledger entries: the documents tenon writes on the target branch, and what
//! the branch records (`tenon history`).

use super::tip::{subdirs, yaml_files};
use super::{fetch, open_cache, short, GitError, Target};
use crate::promote::decide::{Decision, RenderedUpdate};
use crate::promote::ledger::{self, GateDoc, HoldDoc, Malformed, RecordDoc, ReleaseDoc, SubjectDoc};
use crate::promote::LEDGER_DIR;

/// A hold placed by `tenon rollback`: automatic promotion of the environment stops until
/// `tenon release` removes it. It lives in git (`.tenon/holds/<env>.yaml`), so every
/// tenon replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub environment: String,
    /// The rollback promotion that placed it.
    pub rollback: String,
    /// The promotion whose values the rollback restored.
    pub restored: String,
    pub by: String,
    pub reason: String,
    pub held_at_ns: i64,
}

impl Hold {
    pub fn to_yaml(&self) -> String {
        ledger::to_yaml(&HoldDoc {
            api_version: Default::default(),
            kind: Default::default(),
            environment: self.environment.clone(),
            rollback: self.rollback.clone(),
            restored: self.restored.clone(),
            by: self.by.clone(),
            reason: self.reason.clone(),
            held_at: self.held_at_ns,
        })
    }

    /// Read a hold file (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Hold, Malformed> {
        let h: HoldDoc = ledger::parse(file, text)?;
        Ok(Hold {
            environment: h.environment,
            rollback: h.rollback,
            restored: h.restored,
            by: h.by,
            reason: h.reason,
            held_at_ns: h.held_at,
        })
    }

    /// What `tenon promote` says about an environment held by this.
    pub fn describe(&self) -> String {
        format!(
            "environment {env} is held by {by} since rollback {rb} (restored {to}{why}): automatic promotion is paused until `tenon release --env {env}`",
            env = self.environment,
            by = self.by,
            rb = short(&self.rollback, 12),
            to = short(&self.restored, 12),
            why = if self.reason.is_empty() { String::new() } else { format!("; {}", self.reason) },
        )
    }
}

/// One ledger entry at the branch tip: a promotion, a rollback (itself a promotion) or
/// the release of a hold.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRecord {
    pub id: String,
    /// `promotion`, `rollback` or `release`.
    pub kind: String,
    pub policy: String,
    pub environment: String,
    pub subject_digest: String,
    pub subject_uri: String,
    pub previous: Option<String>,
    pub decided_at_ns: i64,
    /// A rollback: the promotion whose values it restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<String>,
    /// A release: the rollback whose hold it lifted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The field values the promotion set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<RenderedUpdate>,
}

/// What the target branch records: every ledger entry (optionally of one environment),
/// newest first, and the holds in place.
pub fn ledger_at_tip(t: &Target, env: Option<&str>) -> Result<(Vec<LedgerRecord>, Vec<Hold>), GitError> {
    let (repo, _lock) = open_cache(t)?;
    let Some(tip) = fetch(&repo, t, &t.branch)? else { return Ok((vec![], vec![])) };
    let tree = repo.find_commit(tip)?.tree()?;
    let file = |path: &str| format!("{}:{path}", t.branch);
    let mut out = Vec::new();
    let root = format!("{LEDGER_DIR}/promotions");
    for e in subdirs(&repo, &tree, &root).into_iter().filter(|e| env.is_none_or(|want| want == e)) {
        for (_, path, text) in yaml_files(&repo, &tree, &format!("{root}/{e}")) {
            out.push(record_of(ledger::parse(&file(&path), &text)?));
        }
    }
    let root = format!("{LEDGER_DIR}/releases");
    for e in subdirs(&repo, &tree, &root).into_iter().filter(|e| env.is_none_or(|want| want == e)) {
        for (_, path, text) in yaml_files(&repo, &tree, &format!("{root}/{e}")) {
            out.push(release_of(ledger::parse(&file(&path), &text)?));
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.decided_at_ns));
    let mut holds = Vec::new();
    for (e, path, text) in yaml_files(&repo, &tree, &format!("{LEDGER_DIR}/holds")) {
        if env.is_none_or(|want| want == e) {
            holds.push(Hold::parse(&file(&path), &text)?);
        }
    }
    Ok((out, holds))
}

/// The ledger record of a promotion or rollback entry.
pub(super) fn record_of(r: RecordDoc) -> LedgerRecord {
    LedgerRecord {
        id: r.id,
        kind: if r.restores.is_some() { "rollback" } else { "promotion" }.into(),
        policy: r.policy,
        environment: r.environment,
        subject_digest: r.subject.digest,
        subject_uri: r.subject.uri,
        previous: r.previous,
        decided_at_ns: r.decided_at,
        restores: r.restores,
        releases: None,
        by: None,
        updates: r.updates,
    }
}

/// The ledger record of a release entry.
pub(super) fn release_of(r: ReleaseDoc) -> LedgerRecord {
    LedgerRecord {
        id: r.id,
        kind: "release".into(),
        policy: String::new(),
        environment: r.environment,
        subject_digest: String::new(),
        subject_uri: String::new(),
        previous: None,
        decided_at_ns: r.decided_at,
        restores: None,
        releases: Some(r.releases),
        by: Some(r.by),
        updates: vec![],
    }
}

/// The ledger entry recorded with a promotion.
pub fn ledger_entry(d: &Decision, decided_at_ns: i64, previous: Option<&str>, source_revision: &str) -> String {
    ledger::to_yaml(&RecordDoc {
        api_version: Default::default(),
        kind: Default::default(),
        id: d.id.clone(),
        policy: d.policy.clone(),
        environment: d.environment.clone(),
        restores: d.restores.clone(),
        subject: SubjectDoc { uri: d.subject_uri.clone(), digest: d.subject_digest.clone() },
        gates: d
            .gates
            .iter()
            .map(|g| GateDoc {
                result: g.result.clone(),
                operator: g.operator.clone(),
                threshold: g.threshold.clone(),
                observed: g.observed.as_deref().unwrap_or("").trim_end_matches('\n').to_string(),
                passed: g.passed,
            })
            .collect(),
        updates: d.updates.clone(),
        source_revision: source_revision.to_string(),
        previous: previous.map(String::from),
        decided_at: decided_at_ns,
    })
}

/// The record of a release (`.tenon/releases/<env>/<id>.yaml`).
pub fn release_entry(id: &str, hold: &Hold, by: &str, decided_at_ns: i64) -> String {
    ledger::to_yaml(&ReleaseDoc {
        api_version: Default::default(),
        kind: Default::default(),
        id: id.to_string(),
        environment: hold.environment.clone(),
        releases: hold.rollback.clone(),
        by: by.to_string(),
        decided_at: decided_at_ns,
    })
}
