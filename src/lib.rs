//! tenon: a declarative, GitOps-style reconciler for Tekton pipelines.
//!
//! Data flows one way:
//!
//! ```text
//! source (dir | git revision) -> model (typed Tekton structs, validated, file:line errors)
//!   -> plan (DAG + cache keys + reasons; pure)
//!   -> exec (trait Executor: local process | Kubernetes pod)
//!   -> record (trait Store) -> promote (git write-back)
//! ```

pub mod cache;
pub mod cli;
pub mod engine;
pub mod error;
pub mod exec;
pub mod hash;
pub mod lease;
pub mod model;
/// Old paths of the expression and graph modules, which now live in `model`.
pub use model::{cel, dag, subst};
pub mod oci;
pub mod plan;
pub mod promote;
pub mod reconcile;
pub mod remote;
pub mod report;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod util;
pub mod watch;
