//! Matrix fan-out (Tekton `docs/matrix.md`): cartesian product, first param varies
//! fastest, then `include` entries merged or appended. Pure.

use super::facts::RunFailure;
use crate::model::subst::Vars;
use crate::model::{Matrix, ParamValue};

/// Tekton's `default-max-matrix-combinations-count`.
pub const MAX_MATRIX_COMBINATIONS: usize = 256;

/// One combination: (param name, value) sorted by name.
pub type Combo = Vec<(String, String)>;

/// Why a matrix does not fan out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFanOut {
    /// A matrix param is an empty array: the task is skipped.
    Empty,
    /// A matrix param is not an array, or there are too many combinations: the run fails.
    Fail(RunFailure),
}

/// The combinations of pipeline task `task`'s matrix, its params substituted with `vars`.
pub fn expand(task: &str, m: &Matrix, vars: &Vars) -> Result<Vec<Combo>, NoFanOut> {
    let mut params = Vec::new();
    for p in &m.params {
        match vars.apply_value(&p.value) {
            ParamValue::Array(a) => params.push((p.name.clone(), a)),
            other => {
                return Err(NoFanOut::Fail(RunFailure::new(
                    "InvalidMatrixParameterTypes",
                    format!("matrix param {:?} of pipeline task {task} is not an array: {other:?}", p.name),
                )))
            }
        }
    }
    let include: Vec<Combo> = m
        .include
        .iter()
        .map(|inc| {
            inc.params
                .iter()
                .map(|p| match vars.apply_value(&p.value) {
                    ParamValue::Str(s) => (p.name.clone(), s),
                    other => (p.name.clone(), format!("{other:?}")),
                })
                .collect()
        })
        .collect();
    let c = combinations(&params, &include);
    if c.is_empty() {
        return Err(NoFanOut::Empty);
    }
    if c.len() > MAX_MATRIX_COMBINATIONS {
        return Err(NoFanOut::Fail(RunFailure::new(
            "PipelineValidationFailed",
            format!("expected 0 <= {} <= {MAX_MATRIX_COMBINATIONS}: matrix of pipeline task {task}", c.len()),
        )));
    }
    Ok(c)
}

pub fn combinations(params: &[(String, Vec<String>)], include: &[Vec<(String, String)>]) -> Vec<Combo> {
    let mut combos: Vec<Combo> = Vec::new();
    if !params.is_empty() {
        let total: usize = params.iter().map(|(_, v)| v.len()).product();
        for mut i in 0..total {
            let mut c = Vec::with_capacity(params.len());
            for (name, values) in params {
                c.push((name.clone(), values[i % values.len()].clone()));
                i /= values.len();
            }
            combos.push(c);
        }
    }
    let generated = combos.clone();
    let matrix_names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    for entry in include {
        if params.is_empty() {
            combos.push(entry.clone());
            continue;
        }
        let mut merged = false;
        for (ci, c) in generated.iter().enumerate() {
            let agrees = entry
                .iter()
                .filter(|(n, _)| matrix_names.contains(&n.as_str()))
                .all(|(n, v)| c.iter().any(|(cn, cv)| cn == n && cv == v));
            if agrees {
                merged = true;
                for (n, v) in entry {
                    if !combos[ci].iter().any(|(cn, _)| cn == n) {
                        combos[ci].push((n.clone(), v.clone()));
                    }
                }
            }
        }
        if !merged {
            let shares_value =
                entry.iter().any(|(n, v)| generated.iter().any(|c| c.iter().any(|(cn, cv)| cn == n && cv == v)));
            if !shares_value {
                combos.push(entry.clone());
            }
        }
    }
    for c in &mut combos {
        c.sort();
    }
    combos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, vals: &[&str]) -> (String, Vec<String>) {
        (name.into(), vals.iter().map(|s| s.to_string()).collect())
    }
    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn first_param_varies_fastest() {
        let c = combinations(&[p("platform", &["linux", "mac"]), p("browser", &["safari", "chrome"])], &[]);
        let got: Vec<Vec<&str>> = c.iter().map(|c| vec![c[1].1.as_str(), c[0].1.as_str()]).collect();
        assert_eq!(
            got,
            vec![vec!["linux", "safari"], vec!["mac", "safari"], vec!["linux", "chrome"], vec!["mac", "chrome"]]
        );
    }

    #[test]
    fn include_rules() {
        // docs/matrix.md example
        let params =
            [p("GOARCH", &["linux/amd64", "linux/ppc64le", "linux/s390x"]), p("version", &["go1.17", "go1.18.1"])];
        let include = vec![
            kv(&[("GOARCH", "linux/amd64"), ("flags", "-race")]),
            kv(&[("version", "go1.17"), ("context", "path/to/go1.17/context")]),
            kv(&[("GOARCH", "i386"), ("version", "go1.17")]), // shares a value: dropped? no: merged into none, shares go1.17 -> dropped
            kv(&[("GOARCH", "arm"), ("version", "go1.19")]),  // shares nothing: appended
        ];
        let c = combinations(&params, &include);
        assert_eq!(c.len(), 7);
        assert!(c[0].contains(&("flags".into(), "-race".into())));
        assert!(c[3].contains(&("flags".into(), "-race".into())));
        assert!(!c[1].iter().any(|(n, _)| n == "flags"));
        assert!(c[0].contains(&("context".into(), "path/to/go1.17/context".into())));
        assert!(!c[3].iter().any(|(n, _)| n == "context"));
        assert_eq!(c[6], kv(&[("GOARCH", "arm"), ("version", "go1.19")]));
        // include-only matrix = exactly the listed combinations
        let only = combinations(&[], &[kv(&[("a", "1")]), kv(&[("a", "2"), ("b", "x")])]);
        assert_eq!(only, vec![kv(&[("a", "1")]), kv(&[("a", "2"), ("b", "x")])]);
        // empty array -> no combinations
        assert!(combinations(&[p("x", &[])], &[]).is_empty());
    }
}
