//! The validator on whatever the loader accepts (seed the corpus with real manifests,
//! see README.md "Fuzzing", so that inputs get past the parser): Tekton's admission
//! checks, DAG building, reference resolution. Every diagnostic has a position.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cat = tenon::model::load_sources(vec![("input.yaml".into(), text.to_string())]);
    let diags = tenon::model::validate(&cat);
    for d in &diags.0 {
        assert!(d.line >= 1 && d.column >= 1, "diagnostic without a position: {d:?}");
    }
});
