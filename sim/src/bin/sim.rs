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
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use pizza::mutants::Mutant;
    use pizza_sim::harness::{run, Outcome, RunOptions};
    use pizza_sim::scenario::Scenario;

    const USAGE: &str = "\
usage: cargo sim [--scenario NAME|PATH|all]... [--seed N | --seeds A..B] [--jobs N]
                 [--orders N] [--mutant NAME] [--trace FILE] [--traces DIR] [--list]

Runs each scenario (a file in scenarios/, or a path) once per seed and checks its invariants.
  --scenario   scenario name or file; repeat for several; `all` is every file in scenarios/ (default: standard)
  --seed N     one seed (prints the full verdict; --trace writes its trace even when it passes)
  --seeds A..B seeds A to B-1 (default 0..20)
  --jobs N     seeds run at once (default: the machine's cores)
  --orders N   override the scenario's order count
  --mutant M   switch on a known bug (see --list); the run is expected to fail
  --traces DIR where failing runs' traces go (default target/sim-traces)
  --list       list scenarios and mutants";

    struct Args {
        scenarios: Vec<Scenario>,
        seeds: std::ops::Range<u64>,
        single: bool,
        jobs: usize,
        orders: Option<u32>,
        mutant: Option<Mutant>,
        trace: Option<PathBuf>,
        traces: PathBuf,
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

    fn parse_args(argv: &[String]) -> Result<Option<Args>, String> {
        let mut names = Vec::new();
        let mut args = Args {
            scenarios: Vec::new(),
            seeds: 0..20,
            single: false,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            orders: None,
            mutant: None,
            trace: None,
            traces: pizza_sim::traces_dir(),
        };
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--scenario" => names.push(value()?.clone()),
                "--seed" => {
                    let v = value()?;
                    let n: u64 = v.parse().map_err(|_| format!("--seed: `{v}` is not a number"))?;
                    args.seeds = n..n + 1;
                    args.single = true;
                }
                "--seeds" => {
                    let v = value()?;
                    let (a, b) = v
                        .split_once("..")
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                        .ok_or_else(|| format!("--seeds: `{v}` is not a range like 0..100"))?;
                    if a >= b {
                        return Err(format!("--seeds: {v} is empty"));
                    }
                    args.seeds = a..b;
                }
                "--jobs" => {
                    let v = value()?;
                    args.jobs = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--jobs: `{v}` is not a positive number"))?;
                }
                "--orders" => {
                    let v = value()?;
                    args.orders = Some(
                        v.parse()
                            .map_err(|_| format!("--orders: `{v}` is not a number"))?,
                    );
                }
                "--mutant" => args.mutant = Some(value()?.parse()?),
                "--trace" => args.trace = Some(PathBuf::from(value()?)),
                "--traces" => args.traces = PathBuf::from(value()?),
                "--list" => {
                    println!("scenarios ({}):", pizza_sim::scenarios_dir().display());
                    for p in scenario_files() {
                        println!("  {}", p.file_stem().unwrap_or_default().to_string_lossy());
                    }
                    println!("mutants:");
                    for m in Mutant::ALL {
                        println!("  {}", m.name());
                    }
                    return Ok(None);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        if args.trace.is_some() && !args.single {
            return Err(
                "--trace FILE goes with --seed N (a sweep writes failing runs' traces to --traces DIR)"
                    .into(),
            );
        }
        if names.is_empty() {
            names.push("standard".into());
        }
        for n in names {
            args.scenarios.extend(load(&n)?);
        }
        Ok(Some(args))
    }

    pub fn main() -> i32 {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let args = match parse_args(&argv) {
            Ok(Some(a)) => a,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("sim: {e}\n\n{USAGE}");
                return 2;
            }
        };
        if args.single {
            return single(&args);
        }
        sweep(&args)
    }

    fn trace_path(dir: &Path, o: &Outcome) -> PathBuf {
        let m = o.mutant.map(|m| format!("-{}", m.name())).unwrap_or_default();
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

    fn sweep(args: &Args) -> i32 {
        let work: Vec<(usize, u64)> = (0..args.scenarios.len())
            .flat_map(|s| args.seeds.clone().map(move |seed| (s, seed)))
            .collect();
        let names: Vec<&str> = args.scenarios.iter().map(|s| s.name.as_str()).collect();
        println!(
            "sim: {} scenario(s) [{}] x seeds {}..{} = {} runs, {} jobs{}",
            args.scenarios.len(),
            names.join(", "),
            args.seeds.start,
            args.seeds.end,
            work.len(),
            args.jobs,
            args.mutant
                .map(|m| format!(", mutant {}", m.name()))
                .unwrap_or_default()
        );
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<(Outcome, Duration)>();
        let started = Instant::now();
        let mut failures = Vec::new();
        let mut walls: Vec<Vec<Duration>> = vec![Vec::new(); args.scenarios.len()];
        std::thread::scope(|s| {
            for _ in 0..args.jobs.min(work.len()) {
                let (tx, next, work) = (tx.clone(), &next, &work);
                s.spawn(move || loop {
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
                });
            }
            drop(tx);
            let mut done = 0;
            for (o, wall) in rx {
                done += 1;
                let idx = names.iter().position(|n| *n == o.scenario).unwrap_or(0);
                walls[idx].push(wall);
                if !o.passed() {
                    let path = trace_path(&args.traces, &o);
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
                    failures.push((o.scenario.clone(), o.seed));
                }
                progress(done, work.len(), failures.len(), started.elapsed());
            }
        });
        eprintln!();
        let elapsed = started.elapsed();
        for (sc, w) in args.scenarios.iter().zip(&mut walls) {
            w.sort();
            let median = w.get(w.len() / 2).copied().unwrap_or_default();
            let failed = failures.iter().filter(|(n, _)| *n == sc.name).count();
            println!(
                "{:<14} {} seeds, {} failed, median wall {:.2}s per seed",
                sc.name,
                w.len(),
                failed,
                median.as_secs_f64()
            );
        }
        println!(
            "{} runs in {:.1}s: {:.1} seeds/minute with {} jobs",
            work.len(),
            elapsed.as_secs_f64(),
            work.len() as f64 * 60.0 / elapsed.as_secs_f64(),
            args.jobs
        );
        if failures.is_empty() {
            println!("all passed");
            return 0;
        }
        for (sc, seed) in &failures {
            let m = args
                .mutant
                .map(|m| format!(" --mutant {}", m.name()))
                .unwrap_or_default();
            println!("failed: cargo sim --scenario {sc} --seed {seed}{m}");
        }
        1
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
