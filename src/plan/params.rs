//! A run's param values: declarations, supplied values and defaults (Tekton's param
//! phase before any substitution), pure.

use std::collections::BTreeMap;

use super::facts::RunFailure as Failure;
use crate::model::subst::Vars;
use crate::model::{ParamSpec, ParamType, ParamValue};

/// Param values from declarations, supplied values and defaults. Object values merge
/// with the default key by key. A default may reference other params
/// (`$(params.other)`, as Tekton allows): it is resolved once, after the params it
/// names, in one pass; a cycle is rejected. A supplied value is never scanned: its text
/// is data, and `$(params.other)` in it stays literal (context, results and workspace
/// references in it are left for the later phases).
pub fn param_values(
    decl: &[ParamSpec],
    supplied: &[(String, ParamValue)],
    what: &str,
) -> Result<BTreeMap<String, ParamValue>, Failure> {
    param_values_with(decl, supplied, &BTreeMap::new(), what)
}

/// [`param_values`] where a default may also name a param of `outer` (values the
/// defaults can see that are not params of `decl`'s own, e.g. propagated ones).
pub fn param_values_with(
    decl: &[ParamSpec],
    supplied: &[(String, ParamValue)],
    outer: &BTreeMap<String, ParamValue>,
    what: &str,
) -> Result<BTreeMap<String, ParamValue>, Failure> {
    let mut out: BTreeMap<String, ParamValue> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut from_default: std::collections::BTreeSet<String> = Default::default();
    let mut mismatched = Vec::new();
    for d in decl {
        let given = supplied.iter().rev().find(|(n, _)| n == &d.name).map(|(_, v)| v.clone());
        let ty = d.param_type();
        let val = match (given, &d.default) {
            (Some(ParamValue::Object(g)), Some(ParamValue::Object(def))) => {
                let mut m = def.clone();
                m.extend(g);
                ParamValue::Object(m)
            }
            (Some(g), _) => g,
            (None, Some(def)) => {
                from_default.insert(d.name.clone());
                def.clone()
            }
            (None, None) => {
                missing.push(d.name.clone());
                continue;
            }
        };
        let vt = match &val {
            ParamValue::Str(_) => ParamType::String,
            ParamValue::Array(_) => ParamType::Array,
            ParamValue::Object(_) => ParamType::Object,
        };
        if vt != ty {
            mismatched.push(d.name.clone());
            continue;
        }
        if let (Some(props), ParamValue::Object(o)) = (&d.properties, &val) {
            let miss: Vec<&String> = props.keys().filter(|k| !o.contains_key(*k)).collect();
            if !miss.is_empty() {
                return Err(Failure::new("ObjectParameterMissKeys", format!("{what}: missing keys for these params which are required in ParamSpec's properties map[{}:{miss:?}]", d.name)));
            }
        }
        out.insert(d.name.clone(), val);
    }
    if !missing.is_empty() {
        return Err(Failure::new("ParameterMissing", format!("{what} missing parameters: {missing:?}")));
    }
    if !mismatched.is_empty() {
        return Err(Failure::new(
            "ParameterTypeMismatch",
            format!("{what} parameters have mismatching types with Pipeline/Task: {mismatched:?}"),
        ));
    }
    let pending: Vec<String> =
        out.keys().filter(|k| from_default.contains(*k) && value_refs_params(&out[*k])).cloned().collect();
    let mut state: BTreeMap<String, Option<usize>> = pending.iter().map(|k| (k.clone(), None)).collect();
    for k in &pending {
        resolve_default(k, &mut out, outer, &mut state, &mut Vec::new(), what)?;
    }
    for d in decl {
        if let (Some(e), Some(ParamValue::Str(v))) = (&d.enum_, out.get(&d.name)) {
            if !e.contains(v) {
                return Err(Failure::new(
                    "InvalidParamValue",
                    format!("{what}: param `{}` value: {v} is not in the enum list {e:?}", d.name),
                ));
            }
        }
    }
    Ok(out)
}

/// The param names a text references (`$(params.x...)` in any spelling).
fn param_refs(s: &str) -> Vec<String> {
    crate::model::subst::find_refs(s)
        .iter()
        .filter_map(|r| match r.segs()?.as_slice() {
            [crate::model::subst::Seg::Name(p), crate::model::subst::Seg::Name(n), ..] if p == "params" => {
                Some(n.clone())
            }
            _ => None,
        })
        .collect()
}

fn value_refs_params(v: &ParamValue) -> bool {
    v.texts().iter().any(|s| !param_refs(s).is_empty())
}

/// How deep defaults may chain (`a` -> `b` -> ...), as Tekton bounds it.
const MAX_DEFAULT_DEPTH: usize = 10;

/// Resolve the default of `k` (pending in `state` while `None`): first the defaults it
/// names, then one pass over its own text with their values. Returns how long the chain
/// of defaults below `k` is (0 for a value that needs no resolving).
fn resolve_default(
    k: &str,
    out: &mut BTreeMap<String, ParamValue>,
    outer: &BTreeMap<String, ParamValue>,
    state: &mut BTreeMap<String, Option<usize>>,
    visiting: &mut Vec<String>,
    what: &str,
) -> Result<usize, Failure> {
    match state.get(k) {
        Some(None) => {}
        Some(Some(depth)) => return Ok(*depth),
        None => return Ok(0),
    }
    if visiting.iter().any(|v| v == k) {
        return Err(Failure::new(
            "ParamValidationFailed",
            format!("{what}: circular dependency detected in param {k:?}"),
        ));
    }
    let too_deep = || {
        Failure::new(
            "ParamValidationFailed",
            format!("{what}: param {k:?}: defaults reference each other more than {MAX_DEFAULT_DEPTH} levels deep"),
        )
    };
    if visiting.len() >= MAX_DEFAULT_DEPTH {
        // bounded before recursing: a hostile chain cannot exhaust the stack
        return Err(too_deep());
    }
    visiting.push(k.to_string());
    let names: Vec<String> = out[k].texts().iter().flat_map(|s| param_refs(s)).collect();
    let mut vars = Vars::new();
    let mut depth = 1;
    for n in names {
        depth = depth.max(1 + resolve_default(&n, out, outer, state, visiting, what)?);
        if let Some(v) = out.get(&n).or_else(|| outer.get(&n)) {
            vars.set(format!("params.{n}"), v.clone());
        }
    }
    visiting.pop();
    if depth > MAX_DEFAULT_DEPTH {
        return Err(too_deep());
    }
    let resolved = vars.apply_value(&out[k]);
    out.insert(k.to_string(), resolved);
    state.insert(k.to_string(), Some(depth));
    Ok(depth)
}

/// `params.x` variables for a set of values.
pub fn param_vars(values: &BTreeMap<String, ParamValue>) -> Vars {
    let mut v = Vars::new();
    for (k, val) in values {
        v.set(format!("params.{k}"), val.clone());
    }
    v
}
