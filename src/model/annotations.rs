//! tenon's own annotations on Tekton objects (`tenon.dev/...`): their names and how their
//! values parse. Validation checks them; the cache acts on them.

/// Annotation: globs (comma or newline separated) narrowing a task's repository inputs.
pub const INPUTS_ANNOTATION: &str = "tenon.dev/inputs";
/// Annotation: globs removed from a task's repository inputs.
pub const EXCLUDE_ANNOTATION: &str = "tenon.dev/exclude";
/// Annotation: `workspace:path` entries a task produces, stored and restored by the cache.
pub const OUTPUTS_ANNOTATION: &str = "tenon.dev/outputs";
/// Annotation (on a task): `"false"` never caches it.
pub const CACHE_ANNOTATION: &str = "tenon.dev/cache";
/// Annotation: `RESULT=workspace:path` entries: with a shared cache (`--cache-repo`), the
/// declared output `workspace:path` is published as a KitOps ModelKit next to the cache
/// (`<cache repository>/<task>`) and the task's result `RESULT` becomes its durable reference
/// `oci://host/repo@sha256:…`.
pub const PUBLISH_ANNOTATION: &str = "tenon.dev/publish";
/// `"true"`: the task's result does not depend on where it runs, so its key leaves the
/// executor out and a record made by one executor is a hit for another.
pub const EXECUTOR_INDEPENDENT_ANNOTATION: &str = "tenon.dev/cache-executor-independent";

/// Split an annotation value into entries.
pub fn entries(v: &str) -> Vec<String> {
    v.split([',', '\n']).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// One `tenon.dev/outputs` entry as `(workspace, path)`: the path relative to the
/// workspace and inside it (no leading `/`, no `..`), or why it is not.
pub fn parse_output(entry: &str) -> Result<(String, String), String> {
    let (w, p) = match entry.split_once(':') {
        Some((w, p)) if !w.trim().is_empty() && !p.trim().is_empty() => (w.trim(), p.trim()),
        _ => return Err(format!("entry {entry:?} is not workspace:path (e.g. \"work:model/\")")),
    };
    if p.starts_with('/') {
        return Err(format!("entry {entry:?}: path {p:?} must be relative to workspace {w:?} (no leading '/')"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("entry {entry:?}: path {p:?} must stay inside workspace {w:?} (no '..')"));
    }
    Ok((w.to_string(), p.to_string()))
}

/// One `tenon.dev/publish` entry as `(result, workspace, path)`, or why it is not one.
pub fn parse_publish(entry: &str) -> Result<(String, String, String), String> {
    let (result, output) = entry
        .split_once('=')
        .map(|(r, o)| (r.trim(), o.trim()))
        .filter(|(r, o)| !r.is_empty() && !o.is_empty())
        .ok_or_else(|| format!("entry {entry:?} is not RESULT=workspace:path (e.g. \"model-uri=work:dist/\")"))?;
    let (w, p) = parse_output(output)?;
    Ok((result.to_string(), w, p))
}

/// Why output entry `entry` is wrong when it names workspace `w`, which the task lacks
/// (`has`: the workspaces it has).
pub fn output_workspace_unknown<'a>(entry: &str, w: &str, has: impl IntoIterator<Item = &'a str>) -> String {
    let has: Vec<&str> = has.into_iter().collect();
    let has = if has.is_empty() { "none".to_string() } else { has.join(", ") };
    format!("entry {entry:?} names workspace {w:?}, which the task does not have (it has: {has})")
}
