//! Deciding a promotion: pure, from a policy and a run's results.
//!
//! The promotion id is `sha256(policy, environment, subject digest, rendered edits)`:
//! independent of time and of the base commit, so every retry, restart or replica
//! computes the same id for the same decision, and a landed id is never committed twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::sha256_hex;
use crate::model::subst::Vars;
use crate::model::{FieldUpdate, Gate, ParamValue, PromotionPolicySpec};

/// One gate, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateOutcome {
    /// The gate's `result` expression, e.g. `$(tasks.evaluate.results.accuracy)`.
    pub result: String,
    pub observed: Option<String>,
    pub operator: String,
    /// The threshold (or the incumbent value plus margin, or the list for in/notin).
    pub threshold: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A rendered edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedUpdate {
    pub file: String,
    pub path: String,
    pub value: String,
}

/// What a policy decided for a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub policy: String,
    pub environment: String,
    pub subject_uri: String,
    pub subject_digest: String,
    pub gates: Vec<GateOutcome>,
    /// All gates hold.
    pub promote: bool,
    pub updates: Vec<RenderedUpdate>,
    pub id: String,
    pub message: String,
    pub trailers: Vec<(String, String)>,
    /// A rollback: the promotion whose values it restores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restores: Option<String>,
}

/// Variables a policy may use: `$(tasks.x.results.y)` of the judged run.
pub fn result_vars(results: &BTreeMap<String, BTreeMap<String, ParamValue>>) -> Vars {
    let mut v = Vars::new();
    for (task, rs) in results {
        for (k, val) in rs {
            v.set(format!("tasks.{task}.results.{k}"), val.clone());
        }
    }
    v
}

fn num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Evaluate one gate. `incumbent` is the currently deployed value for incumbent gates.
pub fn eval_gate(g: &Gate, vars: &Vars, incumbent: Option<&str>) -> GateOutcome {
    let observed = {
        let s = vars.apply_str(&g.result);
        (!s.contains("$(")).then_some(s)
    };
    let mut out = GateOutcome {
        result: g.result.clone(),
        observed: observed.clone(),
        operator: g.operator.clone(),
        threshold: String::new(),
        passed: false,
        note: String::new(),
    };
    let Some(obs) = observed else {
        out.note = "the result is missing".into();
        return out;
    };
    let obs_t = obs.trim_end_matches('\n');
    match g.operator.as_str() {
        "in" | "notin" => {
            let values = g.values.clone().unwrap_or_default();
            out.threshold = format!("{values:?}");
            let hit = values.iter().any(|v| v == obs_t);
            out.passed = if g.operator == "in" { hit } else { !hit };
        }
        "==" | "!=" if g.incumbent.is_none() => {
            let want = vars.apply_str(g.value.as_deref().unwrap_or(""));
            out.threshold = want.clone();
            // numbers compare as numbers (`0.90` == `0.9`), anything else as text
            let eq = match (num(obs_t), num(&want)) {
                (Some(a), Some(b)) => a == b,
                _ => obs_t == want,
            };
            out.passed = if g.operator == "==" { eq } else { !eq };
        }
        op @ (">=" | ">" | "<=" | "<" | "==" | "!=") => {
            let threshold = match (&g.incumbent, incumbent) {
                (Some(_), None) => {
                    // nothing deployed yet: any value beats it
                    out.threshold = "no incumbent".into();
                    out.passed = num(obs_t).is_some();
                    out.note = if out.passed {
                        "nothing deployed yet".into()
                    } else {
                        format!("observed {obs_t:?} is not a number")
                    };
                    return out;
                }
                (Some(_), Some(inc)) => {
                    let margin = g.margin.as_deref().and_then(num).unwrap_or(0.0);
                    match num(inc) {
                        Some(i) => {
                            let t = if op.starts_with('<') { i - margin } else { i + margin };
                            out.note = format!(
                                "incumbent {inc}{}",
                                if margin != 0.0 { format!(", margin {margin}") } else { String::new() }
                            );
                            t
                        }
                        None => {
                            out.note = format!("incumbent value {inc:?} is not a number");
                            return out;
                        }
                    }
                }
                (None, _) => match g.value.as_deref().map(|v| vars.apply_str(v)).as_deref().and_then(num) {
                    Some(t) => t,
                    None => {
                        out.note = format!("threshold {:?} is not a number", g.value.as_deref().unwrap_or(""));
                        return out;
                    }
                },
            };
            out.threshold = threshold.to_string();
            let Some(o) = num(obs_t) else {
                out.note = format!("observed {obs_t:?} is not a number");
                return out;
            };
            out.passed = match op {
                ">=" => o >= threshold,
                ">" => o > threshold,
                "<=" => o <= threshold,
                "<" => o < threshold,
                "==" => o == threshold,
                _ => o != threshold,
            };
        }
        other => out.note = format!("unknown operator {other:?}"),
    }
    out
}

/// Decide: evaluate gates, render the subject, edits, message and trailers, and the id.
/// `incumbents` maps gate index -> deployed value for incumbent gates.
pub fn decide(
    policy: &str,
    spec: &PromotionPolicySpec,
    results: &BTreeMap<String, BTreeMap<String, ParamValue>>,
    incumbents: &BTreeMap<usize, String>,
    source_revision: &str,
    input_hash: &str,
) -> Decision {
    let mut vars = result_vars(results);
    let uri = vars.apply_str(&spec.subject.uri);
    let digest = vars.apply_str(&spec.subject.digest);
    vars.set_str("subject.uri", uri.clone());
    vars.set_str("subject.digest", digest.clone());
    vars.set_str("policy", policy);
    vars.set_str("environment", spec.environment.clone());
    let gates: Vec<GateOutcome> = spec
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| eval_gate(g, &vars, incumbents.get(&i).map(String::as_str)))
        .collect();
    let subject_ok = !digest.is_empty() && !digest.contains("$(");
    let promote = subject_ok && gates.iter().all(|g| g.passed);
    let updates: Vec<RenderedUpdate> = spec
        .target
        .updates
        .iter()
        .map(|FieldUpdate { file, path, value }| RenderedUpdate {
            file: file.clone(),
            path: path.clone(),
            value: vars.apply_str(value),
        })
        .collect();
    let id = promotion_id(policy, &spec.environment, &digest, &updates);
    let template = spec
        .commit
        .as_ref()
        .and_then(|c| c.message.clone())
        .unwrap_or_else(|| "promote($(environment)): $(policy) $(subject.digest)".into());
    let message = vars.apply_str(&template).trim().to_string();
    let mut trailers = vec![
        ("Tenon-Promotion-Id".to_string(), id.clone()),
        ("Tenon-Policy".to_string(), policy.to_string()),
        ("Tenon-Environment".to_string(), spec.environment.clone()),
        ("Tenon-Subject-Digest".to_string(), digest.clone()),
        ("Tenon-Source-Revision".to_string(), source_revision.to_string()),
        ("Tenon-Input-Hash".to_string(), input_hash.to_string()),
    ];
    for g in &gates {
        trailers.push((
            "Tenon-Gate".to_string(),
            format!(
                "{} {} {} = {}",
                g.result,
                g.operator,
                g.threshold,
                g.observed.clone().unwrap_or_default().trim_end()
            ),
        ));
    }
    Decision {
        policy: policy.into(),
        environment: spec.environment.clone(),
        subject_uri: uri,
        subject_digest: digest,
        gates,
        promote,
        updates,
        id,
        message,
        trailers,
        restores: None,
    }
}

/// The deterministic promotion id.
pub fn promotion_id(policy: &str, environment: &str, digest: &str, updates: &[RenderedUpdate]) -> String {
    let canonical =
        serde_json::json!({"policy": policy, "environment": environment, "digest": digest, "updates": updates});
    sha256_hex(canonical.to_string().as_bytes())
}

/// The full commit message: summary, blank line, trailers.
pub fn commit_message(d: &Decision) -> String {
    let mut m = d.message.clone();
    m.push_str("\n\n");
    for (k, v) in &d.trailers {
        m.push_str(&format!("{k}: {v}\n"));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldRef, PromotionSubject, PromotionTarget};

    fn spec(gates: Vec<Gate>) -> PromotionPolicySpec {
        PromotionPolicySpec {
            environment: "prod".into(),
            subject: PromotionSubject {
                uri: "$(tasks.package.results.uri)".into(),
                digest: "$(tasks.package.results.digest)".into(),
            },
            gates,
            target: PromotionTarget {
                updates: vec![FieldUpdate {
                    file: "deploy/prod.yaml".into(),
                    path: "spec.model".into(),
                    value: "$(subject.uri)@$(subject.digest)".into(),
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn results(acc: &str) -> BTreeMap<String, BTreeMap<String, ParamValue>> {
        BTreeMap::from([
            (
                "evaluate".into(),
                BTreeMap::from([
                    ("accuracy".into(), ParamValue::Str(acc.into())),
                    ("stage".into(), ParamValue::Str("rc\n".into())),
                ]),
            ),
            (
                "package".into(),
                BTreeMap::from([
                    ("uri".into(), ParamValue::Str("s3://m/1".into())),
                    ("digest".into(), ParamValue::Str("sha256:ab".into())),
                ]),
            ),
        ])
    }

    fn gate(op: &str, value: &str) -> Gate {
        Gate {
            result: "$(tasks.evaluate.results.accuracy)".into(),
            operator: op.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn gate_table() {
        let rows: Vec<(Gate, &str, Option<&str>, bool)> = vec![
            (gate(">=", "0.9"), "0.92", None, true),
            (gate(">=", "0.9"), "0.89", None, false),
            (gate(">", "0.92"), "0.92", None, false),
            (gate("<", "1"), "0.5", None, true),
            (gate("==", "0.9"), "0.90", None, true),
            (gate("!=", "abc"), "abd", None, true),
            (gate(">=", "0.9"), "n/a", None, false),
            (
                Gate {
                    operator: "in".into(),
                    values: Some(vec!["rc".into(), "ga".into()]),
                    result: "$(tasks.evaluate.results.stage)".into(),
                    ..Default::default()
                },
                "0.9",
                None,
                true,
            ),
            (
                Gate {
                    operator: "notin".into(),
                    values: Some(vec!["rc".into()]),
                    result: "$(tasks.evaluate.results.stage)".into(),
                    ..Default::default()
                },
                "0.9",
                None,
                false,
            ),
            (
                Gate { incumbent: Some(FieldRef::default()), margin: Some("0.01".into()), ..gate(">=", "") },
                "0.92",
                Some("0.915"),
                false,
            ),
            (
                Gate { incumbent: Some(FieldRef::default()), margin: Some("0.01".into()), ..gate(">=", "") },
                "0.93",
                Some("0.915"),
                true,
            ),
            (Gate { incumbent: Some(FieldRef::default()), ..gate(">=", "") }, "0.5", None, true),
            (Gate { result: "$(tasks.missing.results.x)".into(), ..gate(">=", "0") }, "1", None, false),
        ];
        for (g, acc, inc, want) in rows {
            let vars = result_vars(&results(acc));
            let o = eval_gate(&g, &vars, inc);
            assert_eq!(o.passed, want, "{g:?} with accuracy {acc} incumbent {inc:?}: {o:?}");
        }
    }

    #[test]
    fn decision_is_deterministic_and_rendered() {
        let s = spec(vec![gate(">=", "0.9")]);
        let a = decide("p", &s, &results("0.93"), &BTreeMap::new(), "rev1", "in1");
        let b = decide("p", &s, &results("0.95"), &BTreeMap::new(), "rev2", "in2");
        assert!(a.promote && b.promote);
        // same subject and edits: same id, whatever the revision or observed values
        assert_eq!(a.id, b.id);
        assert_eq!(a.updates[0].value, "s3://m/1@sha256:ab");
        assert_eq!(a.message, "promote(prod): p sha256:ab");
        let msg = commit_message(&a);
        assert!(msg.contains(&format!("Tenon-Promotion-Id: {}\n", a.id)), "{msg}");
        assert!(msg.contains("Tenon-Gate: $(tasks.evaluate.results.accuracy) >= 0.9 = 0.93"), "{msg}");
        let fail = decide("p", &s, &results("0.5"), &BTreeMap::new(), "rev1", "in1");
        assert!(!fail.promote);
        let mut other = spec(vec![]);
        other.environment = "staging".into();
        assert_ne!(decide("p", &other, &results("0.93"), &BTreeMap::new(), "r", "i").id, a.id);
    }
}
