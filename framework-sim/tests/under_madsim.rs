//! Runs the testing application's tests (`tests/testapp.rs`) from a plain `cargo test`: madsim's
//! simulator exists only under `--cfg madsim`, so this re-invokes cargo with that cfg in its own
//! target directory (`target/madsim`, shared with `cargo sim`, so the normal build is never
//! rebuilt), in release, and asserts they passed.
#![cfg(not(madsim))]

use std::path::Path;
use std::process::Command;

#[test]
fn the_testing_application_catches_the_framework_mutants_under_madsim() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "test",
            "--release",
            "--config",
            "build.rustflags=['--cfg','madsim']",
            "--config",
            "build.target-dir='target/madsim'",
            "-p",
            "framework-sim",
            "--test",
            "testapp",
        ])
        // The outer test's flags must not leak into the inner build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "the testing application failed under madsim ({status}); its output above names the seed and the mutant"
    );
}
