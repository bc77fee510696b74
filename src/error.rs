//! The one place errors become exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every run ended `Succeeded` (reason `Succeeded` or `Completed`); validation found nothing |
//! | 1 | a run failed (a task failed, timed out, was cancelled, or a runtime check failed) |
//! | 2 | invalid input or usage: bad manifests, unknown names, bad flags |
//! | 3 | tenon itself could not work: the state directory is unusable, an I/O error, a full disk, a run that could not be recorded, a git remote, registry or store that could not be used |
//!
//! Each layer has its own error type (`PromoteError`, `ReconcileError`, `WatchError`, ...),
//! converted into [`Error`] with `?`; [`Error::code`] is the one map to exit codes, and
//! [`render`] prints an error with its causes, each once.

use std::process::ExitCode;

use crate::promote::PromoteError;
use crate::reconcile::ReconcileError;
use crate::watch::source::SourceError;
use crate::watch::WatchError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_INTERNAL: u8 = 3;

/// Errors of the command layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Manifests failed validation; the diagnostics were already printed.
    #[error("{count} error(s) in the manifests")]
    Invalid { count: usize },
    #[error("{0}")]
    Usage(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// tenon's store could not be opened, read or written (a full disk, a locked or broken
    /// database); the message carries the cause and, where there is one, the way out.
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Promote(#[from] PromoteError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The shared cache's registry could not be used (credentials are never shown).
    #[error("the shared cache could not be used")]
    Registry {
        #[source]
        source: crate::oci::OciError,
    },
}

impl Error {
    /// The exit code of this error (the one map).
    pub fn code(&self) -> u8 {
        match self {
            Error::Invalid { .. } | Error::Usage(_) => EXIT_INVALID,
            Error::Io { .. } | Error::Store(_) | Error::Registry { .. } => EXIT_INTERNAL,
            Error::Promote(e) => match e {
                PromoteError::Malformed { .. }
                | PromoteError::NoTarget { .. }
                | PromoteError::NoPolicy { .. }
                | PromoteError::TargetsConflict { .. }
                | PromoteError::UnknownPromotion { .. }
                | PromoteError::AmbiguousPromotion { .. }
                | PromoteError::NothingToRestore { .. } => EXIT_INVALID,
                PromoteError::Git { .. } | PromoteError::Store { .. } => EXIT_INTERNAL,
            },
            Error::Reconcile(e) => match e {
                ReconcileError::Sandbox { .. } | ReconcileError::RemoteCache { .. } => EXIT_INVALID,
                ReconcileError::ExecutorStart { .. }
                | ReconcileError::StatCache { .. }
                | ReconcileError::Planner { .. } => EXIT_INTERNAL,
            },
            Error::Watch(e) => match e {
                WatchError::Invalid | WatchError::Source(SourceError::Locked { .. }) => EXIT_INVALID,
                WatchError::Reconcile | WatchError::Source(_) => EXIT_INTERNAL,
            },
        }
    }
}

/// `e` and its causes on one line, `first: cause: cause`; a cause whose text the line
/// already holds (an error that names its source in its own message) is not repeated.
pub fn render(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    RunFailed,
}

pub fn exit_code(result: &Result<Outcome, Error>) -> ExitCode {
    ExitCode::from(match result {
        Ok(Outcome::Ok) => EXIT_OK,
        Ok(Outcome::RunFailed) => EXIT_RUN_FAILED,
        Err(e) => e.code(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let io = || std::io::Error::other("x");
        let rows: Vec<(Result<Outcome, Error>, u8)> = vec![
            (Ok(Outcome::Ok), 0),
            (Ok(Outcome::RunFailed), 1),
            (Err(Error::Invalid { count: 3 }), 2),
            (Err(Error::Usage("bad".into())), 2),
            (Err(Error::Io { context: "c".into(), source: io() }), 3),
            (Err(Error::Store("the run could not be recorded".into())), 3),
        ];
        for (r, want) in rows {
            assert_eq!(exit_code(&r), ExitCode::from(want), "{r:?}");
        }
    }

    #[test]
    fn promotion_errors_are_invalid_input_only_when_the_input_is() {
        let git = || crate::promote::git::GitError::Git { message: "failed to connect".into() };
        let url = || "git://127.0.0.1:1/x.git".to_string();
        let malformed = crate::promote::ledger::Malformed {
            file: "main:.tenon/holds/prod.yaml".into(),
            line: 3,
            column: 9,
            message: "heldAt: invalid type".into(),
        };
        let db = || crate::store::StoreError::Corrupt { key: "k".into(), message: "m".into() };
        let rows: Vec<(PromoteError, u8)> = vec![
            (PromoteError::Git { url: url(), source: git() }, 3),
            (PromoteError::git(&url(), crate::promote::git::GitError::Malformed(malformed.clone())), 2),
            (PromoteError::Malformed { url: url(), source: malformed }, 2),
            (PromoteError::store("record the promotion decision")(db()), 3),
            (PromoteError::NoTarget { policy: "p".into() }, 2),
            (
                PromoteError::UnknownPromotion {
                    to: "ab".into(),
                    env: "prod".into(),
                    url: url(),
                    branch: "main".into(),
                },
                2,
            ),
        ];
        for (e, want) in rows {
            let e = Error::from(e);
            assert_eq!(e.code(), want, "{e:?}");
        }
    }

    #[test]
    fn watch_and_reconcile_errors_map_to_codes() {
        let rows: Vec<(Error, u8)> = vec![
            (WatchError::Invalid.into(), 2),
            (WatchError::Reconcile.into(), 3),
            (WatchError::from(SourceError::Locked { url: "u".into(), lock: "l".into() }).into(), 2),
            (WatchError::from(SourceError::NoBranch { branch: "main".into(), url: "u".into() }).into(), 3),
            (ReconcileError::Sandbox { message: "no bwrap".into() }.into(), 2),
            (ReconcileError::ExecutorStart { executor: "kubernetes", message: "no cluster".into() }.into(), 3),
        ];
        for (e, want) in rows {
            assert_eq!(e.code(), want, "{e:?}");
        }
    }

    #[test]
    fn render_prints_each_cause_once() {
        let e = Error::from(PromoteError::Git {
            url: "git://h/x.git".into(),
            source: crate::promote::git::GitError::Git { message: "failed to connect".into() },
        });
        assert_eq!(render(&e), "the promotion target git://h/x.git could not be used: git: failed to connect");
        // the store's errors name their cause themselves: shown once, not chained again
        let db = crate::store::StoreError::Db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(11),
            Some("database disk image is malformed".into()),
        ));
        let e = Error::from(PromoteError::store("record the promotion decision")(db));
        assert_eq!(
            render(&e),
            "tenon's store could not record the promotion decision: store database error: database disk image is malformed"
        );
        // a cause the message already holds is not repeated
        let io = Error::Io { context: "cannot write x: disk full".into(), source: std::io::Error::other("disk full") };
        assert_eq!(render(&io), "cannot write x: disk full");
    }
}
