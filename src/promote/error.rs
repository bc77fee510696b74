//! The promotion layer's error: what stops `promote`, `rollback`, `release` or `history`
//! before it has an outcome to report. A write-back that fails is an outcome (`Failed`,
//! `Conflicted`: exit 1, in the report), not one of these. `crate::error` maps each variant
//! to an exit code; messages never repeat their source (the chain is printed once).

use super::git::GitError;
use super::ledger::Malformed;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The target repository could not be read or written: unreachable, not a git
    /// repository, refused credentials or host key (tenon could not work).
    #[error("the promotion target {url} could not be used")]
    Git {
        url: String,
        #[source]
        source: GitError,
    },
    /// One of tenon's own documents on the target branch is malformed (invalid input).
    #[error("a document of tenon's on the promotion target {url} is malformed")]
    Malformed {
        url: String,
        #[source]
        source: Malformed,
    },
    /// tenon's store could not read or record a promotion (tenon could not work). A
    /// `StoreError` names its cause in its own message, so it is shown, not chained.
    #[error("tenon's store could not {action}: {store}")]
    Store { action: String, store: StoreError },
    /// A policy names no target, and the directory is no git checkout with an `origin`.
    #[error("PromotionPolicy {policy:?}: no target: set spec.target.url, or run tenon in a git checkout with an `origin` remote")]
    NoTarget { policy: String },
    #[error("no PromotionPolicy for environment {env:?} in {dir}")]
    NoPolicy { env: String, dir: String },
    /// Policies of one environment write to different branches or remotes.
    #[error("environment {env:?} is written by PromotionPolicies with different targets ({first} and {second}): choose one with --policy")]
    TargetsConflict { env: String, first: String, second: String },
    #[error(
        "no promotion {to:?} in the ledger of environment {env:?} on {url} {branch} (see `tenon history --env {env}`)"
    )]
    UnknownPromotion { to: String, env: String, url: String, branch: String },
    #[error("{to:?} is ambiguous in environment {env:?}: {}; give more of the id", candidates.join(", "))]
    AmbiguousPromotion { to: String, env: String, candidates: Vec<String> },
    #[error("promotion {id} records no field values to restore")]
    NothingToRestore { id: String },
}

impl PromoteError {
    /// A git failure on `url`; a malformed ledger document stays invalid input.
    pub fn git(url: &str, e: GitError) -> PromoteError {
        match e {
            GitError::Malformed(m) => PromoteError::Malformed { url: url.to_string(), source: m },
            e => PromoteError::Git { url: url.to_string(), source: e },
        }
    }

    pub fn store(action: impl Into<String>) -> impl FnOnce(StoreError) -> PromoteError {
        let action = action.into();
        move |store| PromoteError::Store { action, store }
    }
}
