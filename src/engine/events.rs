//! Progress as events: the engine says what happened as a [`RunEvent`]; the terminal
//! console renders it (colours only on a TTY, nothing when silent) and `tracing` records
//! it (as structured fields, for `--log-format json`).

use std::sync::Arc;
use std::time::Duration;

use crate::ui::Console;

/// Something that happened in a run.
#[derive(Debug, Clone)]
pub enum RunEvent<'a> {
    /// A PipelineRun or TaskRun started, with its directory.
    RunStarted {
        kind: &'a str,
        name: &'a str,
        dir: &'a str,
    },
    /// A run could not start, or failed as a whole before any task (setup).
    RunNotStarted {
        kind: &'a str,
        name: &'a str,
        reason: &'a str,
        message: &'a str,
    },
    /// The first attempt of a TaskRun got an execution slot.
    TaskRunStarted {
        label: &'a str,
    },
    /// An attempt failed and another follows.
    Retrying {
        label: &'a str,
        attempt: u32,
        reason: &'a str,
        message: &'a str,
        left: u32,
    },
    /// A pipeline task was restored from the cache.
    Cached {
        task: &'a str,
        from: &'a str,
    },
    Succeeded {
        task: &'a str,
        duration: Duration,
    },
    /// `word`: Failed, TimedOut or Cancelled.
    Failed {
        task: &'a str,
        word: &'a str,
        ignored: bool,
        message: &'a str,
    },
    Skipped {
        task: &'a str,
        reason: &'a str,
    },
    /// A pipeline task made the run fail before it ran (an invalid TaskRun, a CEL error,
    /// a missing result).
    Invalid {
        task: &'a str,
        reason: &'a str,
        message: &'a str,
    },
    TimedOut {
        message: &'a str,
    },
    Cancelling {
        run: &'a str,
    },
    /// The run ended.
    Finished {
        kind: &'a str,
        name: &'a str,
        ok: bool,
        reason: &'a str,
        message: &'a str,
        elapsed: Duration,
    },
    /// Waiting for another process running the same cache key.
    WaitingForKey {
        label: &'a str,
        key: &'a str,
    },
    /// An output went to the shared cache as a ModelKit.
    Published {
        label: &'a str,
        output: &'a str,
        reference: &'a str,
    },
    /// Something worth a warning that does not change the outcome (not cached, a lookup
    /// that failed, an output not published, a record not written).
    Warning {
        label: &'a str,
        message: &'a str,
    },
}

/// Where events go: the console and tracing.
#[derive(Clone)]
pub struct Events {
    console: Arc<Console>,
}

impl Events {
    pub fn new(console: Arc<Console>) -> Self {
        Events { console }
    }

    pub fn console(&self) -> &Arc<Console> {
        &self.console
    }

    pub fn emit(&self, e: RunEvent) {
        trace(&e);
        if let Some(line) = self.render(&e) {
            self.console.line(&line);
        }
    }

    /// The console's line for an event.
    fn render(&self, e: &RunEvent) -> Option<String> {
        let c = &self.console;
        Some(match *e {
            RunEvent::RunStarted { kind, name, dir } => {
                format!("{} {kind} {} {}", c.bold("▶"), c.bold(name), c.dim(&format!("({dir})")))
            }
            RunEvent::RunNotStarted { kind, name, reason, message } => {
                format!("{} {kind} {name}: {reason}: {message}", c.red("✗"))
            }
            RunEvent::TaskRunStarted { label } => format!("{} {label} {}", c.bold("→"), c.dim("started")),
            RunEvent::Retrying { label, attempt, reason, message, left } => {
                format!("{} {label} attempt {attempt} {reason}: {message} (retrying, {left} left)", c.yellow("↻"))
            }
            RunEvent::Cached { task, from } => {
                format!("{} {task} {} {}", c.green("✓"), c.green("Cached"), c.dim(&format!("({from})")))
            }
            RunEvent::Succeeded { task, duration } => format!(
                "{} {task} {} {}",
                c.green("✓"),
                c.green("Succeeded"),
                c.dim(&format!("({:.1}s)", duration.as_secs_f64()))
            ),
            RunEvent::Failed { task, word, ignored, message } => {
                let extra = if ignored { " (ignored: onError continue)" } else { "" };
                format!("{} {task} {}{extra}: {message}", c.red("✗"), c.red(word))
            }
            RunEvent::Skipped { task, reason } => {
                format!("{} {task} {} {}", c.yellow("⊘"), c.yellow("Skipped"), c.dim(&format!("({reason})")))
            }
            RunEvent::Invalid { task, reason, message } => format!("{} {task} {reason}: {message}", c.red("✗")),
            RunEvent::TimedOut { message } => format!("{} {message}", c.red("⏱")),
            RunEvent::Cancelling { run } => format!("{} cancelling PipelineRun {run}", c.red("■")),
            RunEvent::Finished { kind, name, ok, reason, message, elapsed } => {
                let secs = c.dim(&format!("({:.1}s)", elapsed.as_secs_f64()));
                if kind == "TaskRun" {
                    return None;
                }
                let mark = if ok { c.green("✓") } else { c.red("✗") };
                let reason = if ok { c.green(reason) } else { c.red(reason) };
                format!("{mark} {kind} {name} {reason} {secs} {}", c.dim(message))
            }
            RunEvent::WaitingForKey { label, key } => format!(
                "{} {label}: waiting for another run of the same task to finish (key {}; Ctrl-C cancels)",
                c.dim("…"),
                &key[..key.len().min(12)]
            ),
            RunEvent::Published { label, output, reference } => {
                format!("{} {label}: published {output} as {reference}", c.green("↑"))
            }
            RunEvent::Warning { label: "", message } => format!("{} {message}", c.yellow("!")),
            RunEvent::Warning { label, message } => format!("{} {label}: {message}", c.yellow("!")),
        })
    }
}

/// The event as a `tracing` event (debug for progress, info for what changes a run; the
/// console already shows warnings, so they are not repeated at the default `warn`).
fn trace(e: &RunEvent) {
    match *e {
        RunEvent::RunStarted { kind, name, .. } => tracing::debug!(kind, name, "run started"),
        RunEvent::RunNotStarted { kind, name, reason, .. } => tracing::info!(kind, name, reason, "run not started"),
        RunEvent::TaskRunStarted { label } => tracing::debug!(task = label, "taskrun started"),
        RunEvent::Retrying { label, attempt, reason, .. } => tracing::info!(task = label, attempt, reason, "retrying"),
        RunEvent::Cached { task, .. } => tracing::debug!(task, "cached"),
        RunEvent::Succeeded { task, duration } => {
            tracing::debug!(task, duration_ms = duration.as_millis() as u64, "succeeded")
        }
        RunEvent::Failed { task, word, ignored, .. } => tracing::info!(task, status = word, ignored, "task failed"),
        RunEvent::Skipped { task, reason } => tracing::debug!(task, reason, "skipped"),
        RunEvent::Invalid { task, reason, .. } => tracing::info!(task, reason, "task invalid"),
        RunEvent::TimedOut { message } => tracing::info!(message, "timeout"),
        RunEvent::Cancelling { run } => tracing::info!(run, "cancelling"),
        RunEvent::Finished { kind, name, ok, reason, elapsed, .. } => {
            tracing::debug!(kind, name, ok, reason, elapsed_ms = elapsed.as_millis() as u64, "run finished")
        }
        RunEvent::WaitingForKey { label, .. } => tracing::info!(task = label, "waiting for the same key"),
        RunEvent::Published { label, reference, .. } => tracing::info!(task = label, reference, "published"),
        RunEvent::Warning { label, message } => tracing::info!(task = label, message, "warning"),
    }
}
