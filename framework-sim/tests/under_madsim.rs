//! Runs the testing application's tests (`tests/testapp.rs`) from a plain `cargo test`, under
//! `--cfg madsim` ([`framework_sim::test_under_madsim`]).
#![cfg(not(madsim))]

#[test]
fn the_testing_application_catches_the_framework_mutants_under_madsim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        framework_sim::test_under_madsim(&root, "framework-sim", "testapp", &[]),
        "the testing application failed under madsim; its output above names the seed and the mutant"
    );
}
