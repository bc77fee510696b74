//! Human-readable output of plans, runs and promotions.

use super::*;

pub(super) fn print_plan_human(plan: &PlanReport) {
    let mut out = std::io::stdout().lock();
    for r in &plan.runs {
        let _ = writeln!(
            out,
            "{} {}{}",
            r.kind,
            r.name,
            r.pipeline.as_ref().map(|p| format!(" (pipeline {p})")).unwrap_or_default()
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "  cannot plan: {e}");
        }
        let w = r.tasks.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
        for t in &r.tasks {
            let first = t.reasons.first().cloned().unwrap_or_default();
            let _ = writeln!(out, "  {:w$}  {:7}  {first}", t.name, t.decision);
            for more in t.reasons.iter().skip(1) {
                let _ = writeln!(out, "  {:w$}  {:7}  {more}", "", "");
            }
        }
    }
    if let Some(h) = &plan.hashing {
        let _ = writeln!(
            out,
            "inputs: {} files, {} hashed ({} bytes), {} from git index, {} from LFS pointer, {} from stat cache",
            h.files, h.hashed_files, h.hashed_bytes, h.from_git_index, h.from_lfs_pointer, h.from_stat_cache
        );
        // `-v`: where each input file's digest came from
        let w = h.sources.iter().map(|s| s.path.len()).max().unwrap_or(0);
        for s in &h.sources {
            let _ = writeln!(out, "  {:w$}  {}", s.path, s.source);
        }
    }
    if let Some(rc) = &plan.remote_cache {
        let _ = writeln!(out, "{}", remote_line(rc));
    }
}

pub(super) fn print_promotions(r: &PromotionReport) {
    let mut out = std::io::stdout().lock();
    for p in &r.promotions {
        let _ = writeln!(
            out,
            "PromotionPolicy {} ({}): {}{}",
            p.policy,
            p.environment,
            p.state,
            if p.detail.is_empty() { String::new() } else { format!(": {}", p.detail) }
        );
        if !p.id.is_empty() {
            let subject = if p.subject_digest.is_empty() {
                String::new()
            } else {
                format!("  subject {} {}", p.subject_digest, p.subject_uri)
            };
            let _ = writeln!(out, "  id {}{subject}", crate::promote::git::short(&p.id, 16));
        }
        for g in &p.gates {
            let _ = writeln!(
                out,
                "  gate {} {} {:<10} observed {:<10} {}{}",
                if g.passed { "PASS" } else { "FAIL" },
                g.operator,
                g.threshold,
                g.observed.as_deref().unwrap_or("-").trim_end(),
                g.result,
                if g.note.is_empty() { String::new() } else { format!(" ({})", g.note) }
            );
        }
        if !p.target.is_empty() {
            let _ = writeln!(out, "  target {}", p.target);
        }
        if let Some(c) = &p.commit {
            let _ = writeln!(out, "  commit {c}");
        }
        if let (Some(h), false) = (&p.hold, p.state == "Held") {
            let _ = writeln!(out, "  hold {} by {}: {}", crate::promote::git::short(&h.rollback, 16), h.by, h.reason);
        }
        for d in &p.diff {
            for l in d.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        if p.state == "DryRun" {
            let _ = writeln!(out, "  message:");
            for l in p.message.lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
}

pub(super) fn print_human(report: &RunReport) {
    let mut out = std::io::stdout().lock();
    for r in &report.runs {
        let _ = writeln!(out, "{}", run_header(r));
        if !r.tasks.is_empty() {
            let w = r.tasks.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
            let _ = writeln!(out, "  {:w$}  {:9}  {:>8}  {:>9}  REASON", "TASK", "STATUS", "ATTEMPTS", "DURATION");
            for t in &r.tasks {
                let reason = if t.status == "Succeeded" {
                    String::new()
                } else if t.message.is_empty() {
                    t.reason.clone()
                } else {
                    format!("{}: {}", t.reason, t.message)
                };
                let _ = writeln!(
                    out,
                    "  {:w$}  {:9}  {:>8}  {:>8.1}s  {}",
                    t.name,
                    t.status,
                    t.attempts,
                    t.duration_ms as f64 / 1000.0,
                    reason
                );
            }
        }
        for (k, v) in &r.results {
            let _ = writeln!(out, "  result {k} = {v}");
        }
        if let Some(d) = &r.run_dir {
            let _ = writeln!(out, "  logs: {d}");
        }
    }
    if let Some(rc) = &report.remote_cache {
        let _ = writeln!(out, "{}", remote_line(rc));
    }
}

/// The shared cache's line of a run or a plan.
fn remote_line(rc: &crate::report::RemoteSummary) -> String {
    let memo = if rc.git_memo_rows_in + rc.git_memo_rows_out > 0 {
        format!(", git memo {} row(s) in, {} out", rc.git_memo_rows_in, rc.git_memo_rows_out)
    } else {
        String::new()
    };
    format!(
        "shared cache {}: {} hit(s), {} miss(es), {} published, {} in, {} out{memo}{}",
        rc.url,
        rc.hits,
        rc.misses,
        rc.published,
        human_bytes(rc.bytes_in),
        human_bytes(rc.bytes_out),
        if rc.unavailable { " (unavailable: the run went on with the local store)" } else { "" }
    )
}

pub(super) fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub(super) fn run_header(r: &RunSummary) -> String {
    format!("{} {}: {} ({}) in {:.1}s", r.kind, r.name, r.status, r.reason, r.duration_ms as f64 / 1000.0)
}
