//! `tests/sim.rs` from a plain `cargo test`, under `--cfg madsim`.
#![cfg(not(madsim))]

#[test]
fn the_greeter_passes_in_the_simulation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let extra = ["--no-default-features"];
    assert!(framework_sim::test_under_madsim(&root, "greeter", "sim", &extra));
}
