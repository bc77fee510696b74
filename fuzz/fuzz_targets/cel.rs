//! The CEL subset of `when` expressions: lexing, parsing (bounded nesting) and
//! evaluation of arbitrary expressions.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(expr) = std::str::from_utf8(data) {
        let _ = tenon::cel::eval_bool(expr);
    }
});
