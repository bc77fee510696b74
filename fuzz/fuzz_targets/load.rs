//! The loader on arbitrary bytes: YAML parsing (any text, multi-document), decoding into
//! Tekton objects, and locating a scalar for an in-place edit. Every diagnostic has a
//! position; nothing panics, aborts or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let cat = tenon::model::load_sources(vec![("input.yaml".into(), text.clone())]);
    for d in &cat.diagnostics.0 {
        assert!(d.line >= 1 && d.column >= 1, "diagnostic without a position: {d:?}");
    }
    for path in ["spec.tasks[0].name", "metadata.name", "spec.steps[0].script", "a"] {
        let _ = tenon::model::locate_scalar(&text, &tenon::model::parse_path(path).unwrap());
    }
});
