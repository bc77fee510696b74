//! Variable substitution: finding `$(...)` references, parsing them, and applying a
//! phase of values (strings, arrays, objects; values that themselves look like
//! references) to strings, lists and JSON trees. Input: `value\0template`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tenon::model::ParamValue;
use tenon::subst::{find_refs, parse_expr, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (value, template) = text.split_once('\0').unwrap_or(("v", text));
    for r in find_refs(template) {
        assert!(r.start < r.end && r.end <= template.len());
        let _ = parse_expr(r.expr);
    }
    let mut vars = Vars::new();
    vars.set_str("params.x", value)
        .set("params.arr", ParamValue::Array(vec![value.to_string(), "b".into()]))
        .set("params.obj", ParamValue::Object(BTreeMap::from([("k".to_string(), value.to_string())])))
        .set_str("tasks.t.results.r", value)
        .set_str("context.taskRun.name", "run");
    let _ = vars.apply_str(template);
    let _ = vars.apply_list(&[template.to_string(), "$(params.arr[*])".into()]);
    let mut json = serde_json::json!({"a": template, "b": [template, {"c": template}]});
    vars.apply_json(&mut json, &[]);
});
