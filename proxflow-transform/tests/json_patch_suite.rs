//! The public JSON Patch test suite (json-patch-test-suite 1.1.0, vendored under
//! `tests/json-patch-tests/` with its notice): every enabled test, `tests.json` and
//! `spec_tests.json`, must give the expected document, or fail where an error is expected
//! (leaving the document as it was).

use proxflow_transform::patch::{apply, json_eq, Operation};
use serde_json::Value;

fn run(file: &str) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(format!(
        "{}/tests/json-patch-tests/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let tests: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut failures = Vec::new();
    let mut run = 0;
    for test in &tests {
        if test.get("disabled").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        run += 1;
        let name = test["comment"]
            .as_str()
            .unwrap_or("(no comment)")
            .to_string();
        let original = test["doc"].clone();
        let mut doc = original.clone();
        let outcome = Operation::parse_patch(&test["patch"]).and_then(|ops| apply(&mut doc, &ops));
        match (test.get("expected"), test.get("error"), outcome) {
            (Some(expected), _, Ok(())) if json_eq(&doc, expected) => {}
            (None, Some(_), Err(_)) if doc == original => {}
            (None, None, Ok(())) => {}
            (_, _, outcome) => failures.push(format!("{name}: {outcome:?}, got {doc}")),
        }
    }
    (run, failures)
}

#[test]
fn every_enabled_test_of_the_suite_passes() {
    for file in ["tests.json", "spec_tests.json"] {
        let (run, failures) = run(file);
        assert!(run > 10, "{file}: {run} tests");
        assert!(
            failures.is_empty(),
            "{file}: {} of {run} failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
