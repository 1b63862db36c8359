//! `loadgen`: open-loop load against a live cluster. Built by the load-generator issue; until then
//! it says so instead of pretending to measure.

fn main() {
    eprintln!("loadgen: not built yet; the load generator is tracked as its own issue");
    std::process::exit(2);
}
