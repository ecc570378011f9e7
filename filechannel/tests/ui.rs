//! Compile-time checks of `#[derive(Message)]`: each file under `tests/ui`
//! must fail to build with the error in its `.stderr` file, pointing at the
//! attribute. Regenerate with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn derive_message_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
