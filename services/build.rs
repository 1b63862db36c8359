//! Which of the integration tests' outside tools this machine has, as cfgs the tests read: a
//! test whose tool is missing is `ignored` with the reason (what `cargo test` shows), never run
//! and reported "ok". Under CI (`CI` set) every cfg is on, so a missing tool fails its tests
//! rather than skipping them.
//! - `kafka_runs`: Java (Apache Kafka runs on it), and Maven to fetch Kafka's jars (or the jars
//!   already in `target/kafka`);
//! - `browser_runs`: Chromium (`$CHROMIUM`, or `/usr/bin/chromium`) and `e2e/`'s playwright-core
//!   (`npm ci --prefix e2e`).

use std::path::Path;
use std::process::Command;

fn runs(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kafka_runs)");
    println!("cargo::rustc-check-cfg=cfg(browser_runs)");
    for var in ["CI", "PATH", "JAVA_HOME", "CHROMIUM", "KAFKA_VERSION"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace");
    let e2e = root.join("e2e");
    // Cargo looks at every file under it (`node_modules` too: a few hundred files), so an
    // `npm ci` run since is seen. A tool installed since the build is not: `cargo clean -p pizza`.
    println!("cargo::rerun-if-changed={}", e2e.display());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let version = std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.1.1".into());
    let jars = root.join("target/kafka").join(version).join("libs/.complete");
    if ci || (runs("java", "-version") && (jars.exists() || runs("mvn", "-v"))) {
        println!("cargo::rustc-cfg=kafka_runs");
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if ci || (Path::new(&chromium).exists() && e2e.join("node_modules/playwright-core").exists()) {
        println!("cargo::rustc-cfg=browser_runs");
    }
}
