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

pub mod dag;
pub mod model;
pub mod subst;
