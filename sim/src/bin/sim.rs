//! `sim`: runs fault scenarios over many seeds, in parallel jobs, with a progress line; on a
//! failure prints the seed and the command that replays it, and writes the run's trace.
//!
//! Built only under `--cfg madsim`: `cargo sim --help` (an alias in `.cargo/config.toml`).

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "sim: the simulator exists only under --cfg madsim; run it with `cargo sim ...` (see the README)"
    );
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(runner::main());
}

#[cfg(madsim)]
mod runner {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::ops::Range;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use clap::error::ErrorKind;
    use clap::{CommandFactory, Parser};
    use pizza_sim::catalogue;
    use pizza_sim::harness::{run, Invariant, Outcome, RunOptions};
    use pizza_sim::scenario::Scenario;

    /// Runs each scenario (a file in scenarios/, or a path) once per seed and checks its
    /// invariants; a failure prints the seed and the command that replays it, and writes the run's
    /// trace.
    #[derive(Parser, Debug)]
    #[command(name = "sim", bin_name = "cargo sim", version)]
    struct Cli {
        /// Scenario name or file; repeat for several; `all` is every file in scenarios/.
        #[arg(long = "scenario", value_name = "NAME|PATH|all", default_value = "standard")]
        scenarios: Vec<String>,
        /// One seed (prints the full verdict; --trace writes its trace even when it passes).
        #[arg(long, value_name = "N", conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Seeds A to B-1.
        #[arg(long, value_name = "A..B", default_value = "0..20", value_parser = parse_seeds)]
        seeds: Range<u64>,
        /// Seeds run at once [default: the machine's cores].
        #[arg(long, value_name = "N", value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Override the scenario's order count.
        #[arg(long, value_name = "N")]
        orders: Option<u32>,
        /// Switch on a known bug (see --list); the run is expected to fail.
        #[arg(long, value_name = "NAME", value_parser = parse_mutant)]
        mutant: Option<&'static str>,
        /// Write the --seed run's trace here, even when it passes (a sweep writes failing runs'
        /// traces to --traces).
        #[arg(long, value_name = "FILE", requires = "seed")]
        trace: Option<PathBuf>,
        /// Where failing runs' traces go [default: target/sim-traces].
        #[arg(long, value_name = "DIR")]
        traces: Option<PathBuf>,
        /// List scenarios and mutants.
        #[arg(long)]
        list: bool,
    }

    /// A range of seeds written `A..B` (B excluded), not empty.
    fn parse_seeds(v: &str) -> Result<Range<u64>, String> {
        let (a, b) = v
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| format!("`{v}` is not a range like 0..100"))?;
        if a >= b {
            return Err(format!("{v} is empty"));
        }
        Ok(a..b)
    }

    fn parse_jobs(v: &str) -> Result<usize, String> {
        v.parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{v}` is not a positive number"))
    }

    fn parse_mutant(v: &str) -> Result<&'static str, String> {
        catalogue::parse_mutant(v)
    }

    /// The command line resolved: the scenarios loaded, the seeds and defaults settled.
    struct Args {
        scenarios: Vec<Scenario>,
        seeds: Range<u64>,
        /// One seed (`--seed`): the full verdict of each scenario rather than a sweep.
        single: bool,
        jobs: usize,
        orders: Option<u32>,
        mutant: Option<&'static str>,
        trace: Option<PathBuf>,
        traces: PathBuf,
    }

    impl Args {
        fn resolve(cli: Cli) -> Result<Args, String> {
            let mut scenarios = Vec::new();
            for name in &cli.scenarios {
                scenarios.extend(load(name)?);
            }
            Ok(Args {
                scenarios,
                seeds: cli.seed.map_or(cli.seeds, |n| n..n + 1),
                single: cli.seed.is_some(),
                jobs: cli
                    .jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                orders: cli.orders,
                mutant: cli.mutant,
                trace: cli.trace,
                traces: cli.traces.unwrap_or_else(pizza_sim::traces_dir),
            })
        }
    }

    fn scenario_files() -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(pizza_sim::scenarios_dir())
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "scn"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn load(name: &str) -> Result<Vec<Scenario>, String> {
        if name == "all" {
            return scenario_files()
                .iter()
                .map(|p| Scenario::load(p).map_err(|e| e.to_string()))
                .collect();
        }
        let path = if name.ends_with(".scn") || name.contains('/') {
            PathBuf::from(name)
        } else {
            pizza_sim::scenarios_dir().join(format!("{name}.scn"))
        };
        Scenario::load(&path).map(|s| vec![s]).map_err(|e| e.to_string())
    }

    fn list() {
        println!("scenarios ({}):", pizza_sim::scenarios_dir().display());
        for p in scenario_files() {
            println!("  {}", p.file_stem().unwrap_or_default().to_string_lossy());
        }
        println!("mutants:");
        for m in catalogue::mutants() {
            println!("  {m}");
        }
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        if cli.list {
            list();
            return 0;
        }
        let args = match Args::resolve(cli) {
            Ok(a) => a,
            // A scenario that does not load is a bad argument: clap's usage error, exit 2.
            Err(e) => Cli::command().error(ErrorKind::InvalidValue, e).exit(),
        };
        if args.single {
            return single(&args);
        }
        sweep(&args)
    }

    fn trace_path(dir: &Path, o: &Outcome) -> PathBuf {
        let m = o.mutant.map(|m| format!("-{m}")).unwrap_or_default();
        dir.join(format!("{}-seed{}{m}.trace", o.scenario, o.seed))
    }

    fn single(args: &Args) -> i32 {
        let seed = args.seeds.start;
        println!("seed {seed}");
        let mut failed = false;
        for sc in &args.scenarios {
            let wall = Instant::now();
            let o = run(&RunOptions {
                scenario: sc.clone(),
                seed,
                mutant: args.mutant,
                orders: args.orders,
            });
            println!("{}", o.scenario_text.trim_end());
            println!("{o}");
            println!(
                "wall {:.2}s for {:.0}s simulated, {} orders accepted, {} trace events",
                wall.elapsed().as_secs_f64(),
                o.simulated.as_secs_f64(),
                o.accepted,
                o.trace.len()
            );
            let path = match (&args.trace, o.passed()) {
                (Some(p), _) => Some(p.clone()),
                (None, false) => Some(trace_path(&args.traces, &o)),
                (None, true) => None,
            };
            if let Some(p) = path {
                match o.write_trace(&p) {
                    Ok(()) => println!("trace: {}", p.display()),
                    Err(e) => eprintln!("could not write the trace to {}: {e}", p.display()),
                }
            }
            failed |= !o.passed();
        }
        if failed {
            println!("seed {seed}");
        }
        i32::from(failed)
    }

    /// Every (scenario, seed) run of a sweep, in order, across `args.jobs` threads.
    fn sweep(args: &Args) -> i32 {
        let work: Vec<(usize, u64)> = (0..args.scenarios.len())
            .flat_map(|s| args.seeds.clone().map(move |seed| (s, seed)))
            .collect();
        print_plan(args, work.len());
        let started = Instant::now();
        let mut tally = run_all(args, &work, started);
        eprintln!();
        print_summary(args, &mut tally, work.len(), started.elapsed());
        if tally.failures.is_empty() {
            println!("all passed");
            return 0;
        }
        for (sc, seed) in &tally.failures {
            let m = args.mutant.map(|m| format!(" --mutant {m}")).unwrap_or_default();
            println!("failed: cargo sim --scenario {sc} --seed {seed}{m}");
        }
        1
    }

    fn print_plan(args: &Args, runs: usize) {
        let names: Vec<&str> = args.scenarios.iter().map(|s| s.name.as_str()).collect();
        println!(
            "sim: {} scenario(s) [{}] x seeds {}..{} = {} runs, {} jobs{}",
            args.scenarios.len(),
            names.join(", "),
            args.seeds.start,
            args.seeds.end,
            runs,
            args.jobs,
            args.mutant.map(|m| format!(", mutant {m}")).unwrap_or_default()
        );
    }

    /// What a sweep saw: each scenario's wall time per seed, and the runs that failed.
    struct Tally {
        walls: Vec<Vec<Duration>>,
        /// (scenario, seed), in the order they finished.
        failures: Vec<(String, u64)>,
        /// Per code probe, the runs it fired in and its hits in all.
        probes: BTreeMap<&'static str, (usize, u64)>,
        /// Per invariant: runs that checked it, checks that ran, checks excused.
        checks: BTreeMap<Invariant, (usize, u64, u64)>,
        /// Runs with a commit that moved an offset back, and such commits in all.
        commits_back: (usize, usize),
    }

    /// Runs `work` on `args.jobs` threads, reporting each failure as it comes and the progress.
    fn run_all(args: &Args, work: &[(usize, u64)], started: Instant) -> Tally {
        let names: Vec<&str> = args.scenarios.iter().map(|s| s.name.as_str()).collect();
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<(Outcome, Duration)>();
        let mut tally = Tally {
            walls: vec![Vec::new(); args.scenarios.len()],
            failures: Vec::new(),
            probes: BTreeMap::new(),
            checks: BTreeMap::new(),
            commits_back: (0, 0),
        };
        std::thread::scope(|s| {
            for _ in 0..args.jobs.min(work.len()) {
                let (tx, next) = (tx.clone(), &next);
                s.spawn(move || run_jobs(args, work, next, &tx));
            }
            drop(tx);
            let mut done = 0;
            for (o, wall) in rx {
                done += 1;
                let idx = names.iter().position(|n| *n == o.scenario).unwrap_or(0);
                tally.walls[idx].push(wall);
                if o.commits_back > 0 {
                    tally.commits_back = (tally.commits_back.0 + 1, tally.commits_back.1 + o.commits_back);
                }
                for (inv, c) in &o.checks {
                    let t = tally.checks.entry(*inv).or_default();
                    *t = (t.0 + usize::from(c.ran > 0), t.1 + c.ran, t.2 + c.exempted);
                }
                for (probe, hits) in &o.probes {
                    let t = tally.probes.entry(*probe).or_default();
                    *t = (t.0 + 1, t.1 + hits);
                }
                if !o.passed() {
                    report_failure(args, &o);
                    tally.failures.push((o.scenario.clone(), o.seed));
                }
                progress(done, work.len(), tally.failures.len(), started.elapsed());
            }
        });
        tally
    }

    /// One thread of a sweep: takes the next run off `work` until none is left.
    fn run_jobs(
        args: &Args,
        work: &[(usize, u64)],
        next: &AtomicUsize,
        tx: &mpsc::Sender<(Outcome, Duration)>,
    ) {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((sc, seed)) = work.get(i).copied() else {
                return;
            };
            let wall = Instant::now();
            let o = run(&RunOptions {
                scenario: args.scenarios[sc].clone(),
                seed,
                mutant: args.mutant,
                orders: args.orders,
            });
            if tx.send((o, wall.elapsed())).is_err() {
                return;
            }
        }
    }

    /// A failed run of a sweep: its verdict (over the progress bar) and its trace, written.
    fn report_failure(args: &Args, o: &Outcome) {
        let path = trace_path(&args.traces, o);
        let written = o.write_trace(&path);
        eprintln!(
            "{}{o}",
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                "\r\x1b[K"
            } else {
                ""
            }
        );
        match written {
            Ok(()) => eprintln!("trace: {}", path.display()),
            Err(e) => eprintln!("could not write the trace to {}: {e}", path.display()),
        }
    }

    /// Each scenario's seeds, failures and median wall time, then the sweep's rate.
    fn print_summary(args: &Args, tally: &mut Tally, runs: usize, elapsed: Duration) {
        for (sc, w) in args.scenarios.iter().zip(&mut tally.walls) {
            w.sort();
            let median = w.get(w.len() / 2).copied().unwrap_or_default();
            let failed = tally.failures.iter().filter(|(n, _)| *n == sc.name).count();
            println!(
                "{:<14} {} seeds, {} failed, median wall {:.2}s per seed",
                sc.name,
                w.len(),
                failed,
                median.as_secs_f64()
            );
        }
        print_checks(&tally.checks, runs);
        let (back_runs, back) = tally.commits_back;
        println!("commits that moved an offset back: {back} in {back_runs} runs (records read again)");
        print_probes(&tally.probes, runs);
        println!(
            "{} runs in {:.1}s: {:.1} seeds/minute with {} jobs",
            runs,
            elapsed.as_secs_f64(),
            runs as f64 * 60.0 / elapsed.as_secs_f64(),
            args.jobs
        );
    }

    /// Every invariant: in how many runs it checked anything, its checks, and those a fault excused.
    fn print_checks(checks: &BTreeMap<Invariant, (usize, u64, u64)>, runs: usize) {
        println!("invariants (runs that checked it / {runs}, checks, excused):");
        for (inv, (seeds, ran, excused)) in checks {
            println!("  {:<24} {seeds:>5} {ran:>10} {excused:>9}", inv.name());
        }
    }

    /// Every code probe: in how many of the runs it fired, and how often in all.
    fn print_probes(probes: &BTreeMap<&'static str, (usize, u64)>, runs: usize) {
        println!("code probes (runs fired in / {runs}, hits):");
        for probe in catalogue::probes() {
            let (seeds, hits) = probes.get(probe).copied().unwrap_or_default();
            println!("  {probe:<24} {seeds:>5} {hits:>9}");
        }
    }

    /// A progress bar redrawn in place on a terminal; elsewhere (CI logs) a line every tenth.
    fn progress(done: usize, total: usize, failed: usize, elapsed: Duration) {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            if done == total || done % (total / 10).max(1) == 0 {
                eprintln!("{done}/{total} seeds, {failed} failed");
            }
            return;
        }
        let width = 30;
        let filled = done * width / total.max(1);
        let per_min = done as f64 * 60.0 / elapsed.as_secs_f64().max(1e-9);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[K[{}{}] {done}/{total} seeds, {failed} failed, {per_min:.1} seeds/min",
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        let _ = err.flush();
    }
}
