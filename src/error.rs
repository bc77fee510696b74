//! The one place errors become exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every run ended `Succeeded` (reason `Succeeded` or `Completed`); validation found nothing |
//! | 1 | a run failed (a task failed, timed out, was cancelled, or a runtime check failed) |
//! | 2 | invalid input or usage: bad manifests, unknown names, bad flags |
//! | 3 | tenon itself could not work: the state directory is unusable, an I/O error, a full disk, a run that could not be recorded |

use std::process::ExitCode;

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
        Err(Error::Invalid { .. }) | Err(Error::Usage(_)) => EXIT_INVALID,
        Err(Error::Io { .. }) | Err(Error::Store(_)) => EXIT_INTERNAL,
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
}
