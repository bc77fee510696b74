//! Planning: Tekton's run semantics without I/O. Nothing here touches tokio, the
//! filesystem, the clock or the store; the time and ids come in as values.

pub mod facts;
pub mod matrix;
pub mod params;
pub mod refs;
mod summary;

pub use facts::{
    Action, ChildFacts, Gate, LaunchSpec, Outcome, PipelineRunFacts, RunFailure, RunInput, SkipReason, Status,
    TaskFacts, TaskStatus, Time, TimeoutPhase, Timeouts,
};
pub use summary::{pipeline_results, Summary, Tally};
