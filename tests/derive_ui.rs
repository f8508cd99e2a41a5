//! Compile-fail tests: each misuse of `#[derive(Stateful)]` gives one spanned error.
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
