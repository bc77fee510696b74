//! The model stage: YAML files -> typed Tekton objects -> validated catalog.
//!
//! No I/O beyond reading the manifest files handed in; every problem becomes a
//! [`Diagnostic`] naming file, line, column, object and field path.

pub mod annotations;
pub mod cel;
pub mod dag;
mod diag;
mod load;
pub mod status;
pub mod subst;
mod types;
mod validate;
mod yaml;

pub use diag::{Diagnostic, Diagnostics};
pub use load::{load_dir, load_sources, Catalog, Obj, ObjKind, SourceFile, REPO_WORKSPACE_ANNOTATION};
pub use types::*;
pub use validate::{param_name_ok, validate};
pub use yaml::{locate_scalar, parse_path, LocateError, PathSeg, Pos, ScalarKind, ScalarSpan};

/// An embedded `pipelineSpec` sees every workspace and param its PipelineRun supplies,
/// declared or not (Tekton's propagation).
pub fn propagate_run_into_spec(ps: &mut PipelineSpec, run: &PipelineRunSpec) {
    for b in &run.workspaces {
        if !ps.workspaces.iter().any(|w| w.name == b.name) {
            ps.workspaces.push(PipelineWorkspaceDeclaration { name: b.name.clone(), ..Default::default() });
        }
    }
    for p in &run.params {
        if !ps.params.iter().any(|d| d.name == p.name) {
            let properties = match &p.value {
                ParamValue::Object(o) => Some(o.keys().map(|k| (k.clone(), PropertySpec::default())).collect()),
                _ => None,
            };
            ps.params.push(ParamSpec {
                name: p.name.clone(),
                default: Some(p.value.clone()),
                properties,
                ..Default::default()
            });
        }
    }
}

/// Parse a Go duration (`90s`, `1h30m`, `1.5h`, `300ms`, `0`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

/// Render a duration the way Go's `time.Duration.String()` does (`1h0m0s`, `1m30s`, `500ms`).
pub fn format_duration(d: std::time::Duration) -> String {
    let total = d.as_secs_f64();
    if total == 0.0 {
        return "0s".into();
    }
    if total < 1.0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let frac = d.subsec_nanos();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let s_str = if frac == 0 { format!("{s}") } else { format!("{}", s as f64 + frac as f64 / 1e9) };
    if h > 0 {
        format!("{h}h{m}m{s_str}s")
    } else if m > 0 {
        format!("{m}m{s_str}s")
    } else {
        format!("{s_str}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        let cases = [
            ("90s", Some(90.0)),
            ("1h30m", Some(5400.0)),
            ("1.5h", Some(5400.0)),
            ("300ms", Some(0.3)),
            ("0", Some(0.0)),
            ("0s", Some(0.0)),
            ("10", None),
            ("-1s", None),
            ("1x", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).map(|d| d.as_secs_f64()), want, "{s}");
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
    }
}
