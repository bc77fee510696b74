//! Promotion: decide from task results whether to promote, and write the decision back to git.

/// Where promotion decisions are recorded in the target repository (defined with the
/// PromotionPolicy kind in model, which never_inputs also reads).
pub use crate::model::LEDGER_DIR;

pub mod decide;
pub mod edit;
pub mod error;
pub mod git;
pub mod known_hosts;
pub mod ledger;
pub mod run;

pub use error::PromoteError;
