//! Promotion: decide from task results whether to promote, and write the decision back to git.

/// Where promotion decisions are recorded in the target repository, one file per id:
/// `.tenon/promotions/<environment>/<id>.yaml`.
pub const LEDGER_DIR: &str = ".tenon";

pub mod decide;
pub mod edit;
pub mod error;
pub mod git;
pub mod known_hosts;
pub mod ledger;
pub mod run;

pub use error::PromoteError;
