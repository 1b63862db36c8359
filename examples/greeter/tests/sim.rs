//! The greeter in the simulation: seeds pass, and a framework bug switched on breaks its
//! invariant. Run under madsim by `tests/under_madsim.rs` (or `cargo test --release --config
//! "build.rustflags=['--cfg','madsim']" --config "build.target-dir='target/madsim'" -p greeter
//! --no-default-features --test sim`).
#![cfg(madsim)]

use std::sync::Arc;

use framework_sim::world::{run, Options};
use greeter::Greeter;

#[test]
fn seeds_pass_under_the_framework_faults() {
    for seed in 0..20 {
        let v = run(Arc::new(Greeter), &Options::seed(seed));
        assert!(v.passed(), "{v}");
    }
}

#[test]
fn a_greeting_marked_done_before_it_is_written_is_caught() {
    let caught = (0..40).map(|seed| {
        let opts = Options {
            mutant: Some("commit-before-durable"),
            ..Options::seed(seed)
        };
        run(Arc::new(Greeter), &opts)
    });
    let v = caught
        .into_iter()
        .find(|v| !v.passed())
        .expect("some seed catches it");
    // Seed 17 here: names committed on arrival, lost with the crash before their greeting.
    assert!(v.broke("every-name-greeted"), "{v}");
    println!("{v}");
}
