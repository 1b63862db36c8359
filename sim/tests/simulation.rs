//! Runs the simulation's tests from a plain `cargo test`: madsim's simulator exists only under
//! `--cfg madsim`, so this re-invokes cargo with that cfg in its own target directory
//! (`target/madsim`, shared with `cargo sim`, so the normal build is never rebuilt), in release
//! (a seed of the standard scenario takes about a second there), and asserts it passed
//! ([`framework_sim::test_under_madsim`]).
#![cfg(not(madsim))]

#[test]
fn every_scenario_and_mutant_under_madsim() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        framework_sim::test_under_madsim(&root, "pizza-sim", "scenarios", &[]),
        "the simulation failed; its output above names the scenario, the seed and the replay command"
    );
}
