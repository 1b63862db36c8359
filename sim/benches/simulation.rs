//! The simulation's own speed: simulated orders per wall second, the whole shop (every service on
//! its node, the simulated broker, the checkers) on one core. `pipeline` is the services on the
//! simulated transport at time scale 0 (orders placed at once, nothing sleeps): the throughput of
//! the services and the transport themselves, with no broker process and no I/O but SQLite's. Built under madsim only:
//! `cargo sim-bench` (see `.cargo/config.toml`).

#[cfg(madsim)]
mod bench {
    use criterion::{Criterion, Throughput};
    use pizza_sim::harness::{run, RunOptions};
    use pizza_sim::scenario::Scenario;

    fn scenario(name: &str) -> Scenario {
        Scenario::load(&pizza_sim::scenarios_dir().join(format!("{name}.scn"))).expect("scenario")
    }

    pub fn simulation(c: &mut Criterion) {
        let mut g = c.benchmark_group("simulation");
        g.sample_size(10);
        for name in ["pipeline", "fault-free", "standard"] {
            let sc = scenario(name);
            g.throughput(Throughput::Elements(u64::from(sc.orders)));
            let mut seed = 0;
            g.bench_function(format!("{name} ({} orders), one seed", sc.orders), |b| {
                b.iter(|| {
                    // A new seed each time: the figure is over seeds, not one lucky schedule.
                    seed += 1;
                    let o = run(&RunOptions {
                        scenario: sc.clone(),
                        seed,
                        mutant: None,
                        orders: None,
                    });
                    assert!(o.passed(), "{o}");
                    o.delivered
                })
            });
        }
        g.finish();
    }
}

#[cfg(madsim)]
criterion::criterion_group!(benches, bench::simulation);
#[cfg(madsim)]
criterion::criterion_main!(benches);

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulation bench runs under madsim: `cargo sim-bench`");
}
