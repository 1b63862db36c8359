//! Every mutant and code probe the simulation knows, by name: the framework's and the shop's. A
//! run switches a mutant on by its name (`framework::mutants::set`), and reads probe hits by name.

use pizza::mutants::{BugClass, Mutant, ShopMutant};
use pizza::probes::{Probe, ProbeKind, ShopProbe};

/// Every mutant's name: the framework's, then the shop's.
pub fn mutants() -> impl Iterator<Item = &'static str> {
    let framework = Mutant::ALL.into_iter().map(BugClass::name);
    framework.chain(ShopMutant::ALL.into_iter().map(BugClass::name))
}

/// Every code probe's name: the framework's, then the shop's.
pub fn probes() -> impl Iterator<Item = &'static str> {
    let framework = Probe::ALL.into_iter().map(ProbeKind::name);
    framework.chain(ShopProbe::ALL.into_iter().map(ProbeKind::name))
}

/// The mutant called `name` (its `&'static` name), or an error that lists them all.
pub fn parse_mutant(name: &str) -> Result<&'static str, String> {
    mutants().find(|m| *m == name).ok_or_else(|| {
        let all: Vec<_> = mutants().collect();
        format!("unknown mutant `{name}` (one of: {})", all.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_the_framework_and_the_shop() {
        for (kind, all) in [
            ("mutant", mutants().collect::<Vec<_>>()),
            ("probe", probes().collect()),
        ] {
            let mut sorted = all.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), all.len(), "a {kind} name is taken twice: {all:?}");
        }
        assert_eq!(parse_mutant("no-dedup"), Ok("no-dedup"));
        assert_eq!(parse_mutant("acks-one"), Ok("acks-one"));
        assert!(parse_mutant("nope")
            .unwrap_err()
            .contains("commit-before-durable"));
    }
}
