//! `pizza`: the pizza shop's services, the embedded broker and the demo. Thin: parses flags, reads
//! the configuration, and calls the library's entry points.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use pizza::admin::{create_topics, EmbeddedBroker, TopicOutcome};
use pizza::config::{KafkaProps, ServiceName};
use pizza::domain::StatusCodes;
use pizza::group_offsets::{self, PartitionOffsets, ResetTo};
use pizza::health::shop_health;
use pizza::options::{ServiceConfig, ServiceOpts, SysArgs};
use pizza::services::{self, Service};
use pizza::shop::{Restart, Shop, ShopError};
use pizza::shutdown::{Shutdown, ShutdownTrigger};
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::view::RegressionWatch;
use pizza::web::app::{self as web_app, WebOpts};

/// The pizza shop of the Kafka CQRS / event-sourcing demo, in Rust.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process: the embedded broker, every service, and the web app.
    Demo {
        /// Address the web app listens on.
        #[arg(long, env = "PIZZA_LISTEN", default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[command(flatten)]
        service: ServiceOpts,
        #[command(flatten)]
        web: WebOpts,
    },
    /// Run one service as its own process against a Kafka cluster.
    Serve {
        /// assemble, bake, deliver, merge, status or web.
        service: ServiceName,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Address `web` listens on (a container needs 0.0.0.0:8000).
        #[arg(long, env = "PIZZA_LISTEN", default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[command(flatten)]
        opts: ServiceOpts,
        #[command(flatten)]
        web: WebOpts,
    },
    /// Topics on a real cluster.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Run the embedded broker (librdkafka's mock cluster) alone, with the topics created.
    Broker {
        #[command(flatten)]
        sys: SysArgs,
    },
    /// The status view.
    View {
        #[command(subcommand)]
        action: ViewAction,
    },
    /// The shop's consumer groups: where each stands, and moving a stopped one's offsets.
    Offsets {
        #[command(subcommand)]
        action: OffsetsAction,
    },
}

#[derive(Subcommand)]
enum OffsetsAction {
    /// Each group's committed offset, the log's earliest and latest offsets, and the lag, per partition.
    Show {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        sys: SysArgs,
        /// Only this group (default: every group of the shop).
        #[arg(long)]
        group: Option<String>,
    },
    /// Move a stopped group's committed offsets: a dry run that prints the plan, unless --execute.
    /// Refused while the group has members.
    Reset {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        sys: SysArgs,
        /// The group to move (one of the shop's).
        #[arg(long)]
        group: String,
        /// Only this topic of the group's (default: every topic it reads).
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        to: ResetArgs,
        /// Commit the new offsets (without it, only the plan is printed).
        #[arg(long)]
        execute: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResetArgs {
    /// To the log's first record.
    #[arg(long)]
    to_earliest: bool,
    /// To the log's end (skip everything not yet read).
    #[arg(long)]
    to_latest: bool,
    /// To the first record at or after this time (RFC 3339, e.g. 2026-11-25T21:00:00Z, or ms since the epoch).
    #[arg(long, value_parser = pizza::group_offsets::parse_datetime)]
    to_datetime: Option<i64>,
    /// By this many records from the committed offset (negative: back), kept within the log.
    #[arg(long, allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

impl ResetArgs {
    fn to(&self) -> ResetTo {
        match (self.to_earliest, self.to_latest, self.to_datetime, self.shift_by) {
            (true, ..) => ResetTo::Earliest,
            (_, true, ..) => ResetTo::Latest,
            (_, _, Some(ms), _) => ResetTo::Datetime(ms),
            (.., Some(n)) => ResetTo::ShiftBy(n),
            _ => unreachable!("clap's group requires one of the targets"),
        }
    }
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create the shop's topics that are missing; existing ones are left alone.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        sys: SysArgs,
    },
}

#[derive(Subcommand)]
enum ViewAction {
    /// Rebuild the view from the log into a new SQLite file; with --compare, check it equals a live one.
    Rebuild {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        sys: SysArgs,
        /// The new file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// A live view (orders.db) to compare the rebuilt one with; exits 1 when they differ.
        #[arg(long)]
        compare: Option<PathBuf>,
    },
    /// Poll a live view (orders.db) until SIGTERM/SIGINT or --for ends, reporting every order
    /// whose status moved back, whose final status changed, or that left the view; exits 1 when
    /// one did.
    Watch {
        /// The live view to watch (opened read-only).
        #[arg(long)]
        db: PathBuf,
        #[command(flatten)]
        sys: SysArgs,
        /// Time between polls.
        #[arg(long, default_value = "50ms", value_parser = pizza::clock::parse_duration)]
        every: Duration,
        /// Stop after this long (default: until a signal).
        #[arg(long = "for", value_parser = pizza::clock::parse_duration)]
        stop_after: Option<Duration>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct KafkaArgs {
    /// The original's config_kafka/<name>.ini: its [kafka] section holds librdkafka properties.
    #[arg(long, env = "PIZZA_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
    /// Bootstrap servers, instead of a config file (e.g. 127.0.0.1:9092).
    #[arg(long, env = "PIZZA_BROKERS")]
    brokers: Option<String>,
}

impl KafkaArgs {
    fn props(&self) -> Result<KafkaProps> {
        match (&self.kafka_config, &self.brokers) {
            (Some(path), _) => Ok(pizza::config::load_kafka_props(path)?),
            (None, Some(b)) => Ok(KafkaProps::bootstrap(b)),
            (None, None) => bail!("give --kafka-config FILE or --brokers HOST:PORT"),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(real_main(cli));
    // A blocking task still waiting on a broker that went away must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn real_main(cli: Cli) -> Result<()> {
    let shutdown = shutdown_on_signals()?;
    match cli.command {
        Command::Demo { listen, service, web } => demo(listen, service, web, shutdown).await,
        Command::Serve {
            service,
            kafka,
            listen,
            opts,
            web,
        } => serve(service, &kafka, listen, &opts, &web, shutdown).await,
        Command::Topics {
            action: TopicsAction::Create { kafka, sys },
        } => {
            let sys = sys.load()?;
            let transport = KafkaTransport::new(&kafka.props()?, "pizza-admin")?;
            for outcome in create_topics(&transport, &sys).await? {
                match outcome {
                    TopicOutcome::Created { name, partitions } => {
                        println!("created {name} ({partitions} partitions)")
                    }
                    TopicOutcome::Exists { name, partitions } => {
                        println!("exists  {name} ({partitions} partitions), left alone")
                    }
                }
            }
            Ok(())
        }
        Command::Broker { sys } => broker(sys, shutdown).await,
        Command::View {
            action:
                ViewAction::Rebuild {
                    kafka,
                    sys,
                    out,
                    compare,
                },
        } => rebuild(&kafka, sys, &out, compare).await,
        Command::View {
            action:
                ViewAction::Watch {
                    db,
                    sys,
                    every,
                    stop_after,
                },
        } => {
            let codes = sys.load()?.codes;
            watch(&db, codes, every, stop_after, shutdown).await
        }
        Command::Offsets {
            action: OffsetsAction::Show { kafka, sys, group },
        } => offsets_show(&kafka, sys, group),
        Command::Offsets {
            action:
                OffsetsAction::Reset {
                    kafka,
                    sys,
                    group,
                    topic,
                    to,
                    execute,
                },
        } => offsets_reset(&kafka, sys, &group, topic.as_deref(), to.to(), execute),
    }
}

/// `pizza offsets show`: a table per group.
fn offsets_show(kafka: &KafkaArgs, sys: SysArgs, only: Option<String>) -> Result<()> {
    let sys = sys.load()?;
    let transport = KafkaTransport::new(&kafka.props()?, "pizza-offsets")?;
    let groups: Vec<String> = match only {
        Some(g) => vec![g],
        None => group_offsets::shop_groups(&sys)
            .into_iter()
            .map(|(g, _, _)| g)
            .collect(),
    };
    for group in groups {
        let rows = group_offsets::group_offsets(&transport, &sys, &group, None)?;
        let lag: i64 = rows.iter().map(PartitionOffsets::lag).sum();
        println!("group {group}: lag {lag}");
        println!(
            "  {:<20} {:>9} {:>12} {:>12} {:>12} {:>10}",
            "topic", "partition", "committed", "earliest", "latest", "lag"
        );
        for r in &rows {
            println!(
                "  {:<20} {:>9} {:>12} {:>12} {:>12} {:>10}",
                r.topic,
                r.partition,
                committed_text(r),
                r.earliest,
                r.latest,
                r.lag()
            );
        }
    }
    Ok(())
}

/// A committed offset for the tables, "-" when the group never committed there.
fn committed_text(r: &PartitionOffsets) -> String {
    r.committed.map_or_else(|| "-".to_owned(), |c| c.to_string())
}

/// `pizza offsets reset`: the plan, and with `execute` the commit.
fn offsets_reset(
    kafka: &KafkaArgs,
    sys: SysArgs,
    group: &str,
    topic: Option<&str>,
    to: ResetTo,
    execute: bool,
) -> Result<()> {
    let sys = sys.load()?;
    let transport = KafkaTransport::new(&kafka.props()?, "pizza-offsets")?;
    if execute {
        // Before reading: a member still leaving would commit under our feet.
        group_offsets::ensure_stopped(&transport, group)?;
    }
    let now = group_offsets::group_offsets(&transport, &sys, group, topic)?;
    let plan = group_offsets::plan(&transport, group, &now, to)?;
    match to {
        ResetTo::Earliest => println!("group {group}: to the earliest offsets"),
        ResetTo::Latest => println!("group {group}: to the latest offsets"),
        ResetTo::Datetime(ms) => {
            println!("group {group}: to the first record at or after {ms} ms since the epoch")
        }
        ResetTo::ShiftBy(n) => println!("group {group}: shifted by {n} from the committed offsets"),
    }
    println!(
        "  {:<20} {:>9} {:>12} {:>12}",
        "topic", "partition", "committed", "new"
    );
    for (r, (_, _, new)) in now.iter().zip(&plan) {
        println!(
            "  {:<20} {:>9} {:>12} {:>12}",
            r.topic,
            r.partition,
            committed_text(r),
            new
        );
    }
    if execute {
        group_offsets::reset(&transport, group, &plan)?;
        println!("committed {} offsets of group {group}", plan.len());
    } else {
        println!("dry run: nothing committed (--execute commits this plan)");
    }
    Ok(())
}

/// `pizza serve SERVICE`: one service as its own process.
async fn serve(
    service: ServiceName,
    kafka: &KafkaArgs,
    listen: SocketAddr,
    opts: &ServiceOpts,
    web: &WebOpts,
    shutdown: Shutdown,
) -> Result<()> {
    let data_dir = opts
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("pizza-data"));
    let cfg = opts.service_config(opts.load_sys()?, data_dir);
    let transport = KafkaTransport::new(&kafka.props()?, &cfg.sys.client_id(service))?;
    if service == ServiceName::Web {
        let health = shop_health(transport.clone(), &cfg.sys, cfg.time_scale, None);
        let listener = web_app::bind(listen).await?;
        web_app::serve(listener, transport, &cfg, web, Arc::new(health), shutdown).await?;
        return Ok(());
    }
    let node = Service::open(service, &cfg)?;
    services::run(cfg, transport, node, shutdown).await?;
    Ok(())
}

/// `pizza broker`: the embedded broker alone, until a signal.
async fn broker(sys: SysArgs, mut shutdown: Shutdown) -> Result<()> {
    let sys = sys.load()?;
    let broker = EmbeddedBroker::start(&sys)?;
    println!("{}", broker.bootstrap_servers());
    // Scripts read this line from a pipe: do not leave it in a buffer.
    std::io::Write::flush(&mut std::io::stdout())?;
    eprintln!(
        "embedded broker up with topics {} ({} partitions each); Ctrl-C stops it",
        sys.topics.all().join(", "),
        sys.num_partitions
    );
    shutdown.wait().await;
    Ok(())
}

/// `pizza view rebuild`: the view folded again from the log into a new file.
async fn rebuild(kafka: &KafkaArgs, sys: SysArgs, out: &Path, compare: Option<PathBuf>) -> Result<()> {
    let sys = sys.load()?;
    let transport = KafkaTransport::new(&kafka.props()?, "pizza-view-rebuild")?;
    let stats = pizza::view::rebuild(&transport, &sys, &ViewStore::create(out)?).await?;
    println!(
        "rebuilt {} from {} records ({} skipped as malformed)",
        out.display(),
        stats.records,
        stats.skipped
    );
    if let Some(live) = compare {
        let a = ViewStore::open_read_only(&live)?.dump()?;
        let b = ViewStore::open_read_only(out)?.dump()?;
        if a != b {
            bail!("the rebuilt view differs from {}", live.display());
        }
        println!("equal to {} ({} orders)", live.display(), a.status.len());
    }
    Ok(())
}

/// How long `pizza view watch` waits for a view whose service is still making it.
const FIRST_POLL_WITHIN: Duration = Duration::from_secs(30);

/// `pizza view watch`: polls every order's status in a live view (again only when the file has
/// changed); each finding goes to stderr as it is seen, the summary to stdout at the end, after a
/// last poll.
async fn watch(
    db: &Path,
    codes: StatusCodes,
    every: Duration,
    stop_after: Option<Duration>,
    mut shutdown: Shutdown,
) -> Result<()> {
    let view = ViewStore::open_read_only(db)?;
    let mut watch = RegressionWatch::new(codes);
    let deadline = stop_after.map(|d| tokio::time::Instant::now() + d);
    let mut version = None;
    let mut poll = |watch: &mut RegressionWatch| -> Result<()> {
        let now = Some(view.data_version()?);
        if now == version {
            return Ok(());
        }
        watch.start_poll();
        view.for_each_status(|id, status| {
            if let Some(f) = watch.see(id, status) {
                eprintln!("status regression: {f}");
            }
        })?;
        version = now;
        for f in watch.finish_poll() {
            eprintln!("status regression: {f}");
        }
        Ok(())
    };
    // A service that just started may have made the file but not yet its tables: the first poll
    // is tried again for a while (a failed poll saw nothing, so it counts for nothing).
    let first_by = tokio::time::Instant::now() + FIRST_POLL_WITHIN;
    while let Err(e) = poll(&mut watch) {
        if tokio::time::Instant::now() >= first_by {
            return Err(e.context(format!("{} is not a view yet", db.display())));
        }
        tokio::time::sleep(every.min(Duration::from_millis(250))).await;
    }
    eprintln!("watching {} orders in {}", watch.orders(), db.display());
    loop {
        let tick = tokio::time::sleep(every);
        let end = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick => {}
            _ = end => break,
            _ = shutdown.wait() => break,
        }
        poll(&mut watch)?;
    }
    poll(&mut watch)?;
    println!(
        "watched {}: {} orders, {} polls, {} status regressions",
        db.display(),
        watch.orders(),
        watch.polls(),
        watch.regressions()
    );
    if watch.regressions() > 0 {
        bail!(
            "{} finding(s) in {} (a status moved back, a final one changed, or an order left the view)",
            watch.regressions(),
            db.display()
        );
    }
    Ok(())
}

/// Installs the SIGINT/SIGTERM handlers now (so a signal during start-up is not lost) and returns
/// the shutdown they fire. First signal: graceful shutdown. Second: exit at once.
fn shutdown_on_signals() -> Result<Shutdown> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (trigger, shutdown) = Shutdown::new();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        on_first_signal(&trigger);
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("forced exit");
        std::process::exit(130);
    });
    Ok(shutdown)
}

fn on_first_signal(trigger: &ShutdownTrigger) {
    tracing::info!("signal received: finishing in-flight work (again to force)");
    trigger.fire();
}

/// How long the demo's services get to finish what they hold once shutdown begins.
const DEMO_STOP_WITHIN: Duration = Duration::from_secs(30);

async fn demo(addr: SocketAddr, opts: ServiceOpts, web: WebOpts, mut shutdown: Shutdown) -> Result<()> {
    let started = Instant::now();
    let listener = web_app::bind(addr).await?;
    let (_tmp, data_dir) = demo_data_dir(&opts)?;
    let cfg = opts.service_config(opts.load_sys()?, data_dir);
    let broker = EmbeddedBroker::start(&cfg.sys)?;
    let props = broker.props();
    let shop = Shop::start(cfg.clone(), &ServiceName::CONSUMERS, Restart::WithBackoff, {
        let (props, sys) = (props.clone(), cfg.sys.clone());
        move |service| KafkaTransport::new(&props, &sys.client_id(service))
    });
    let transport = KafkaTransport::new(&props, &cfg.sys.client_id(ServiceName::Web))?;
    let health = shop_health(
        transport.clone(),
        &cfg.sys,
        cfg.time_scale,
        Some(shop.supervised()),
    );
    let mut web_app = tokio::spawn({
        let (cfg, shutdown) = (cfg.clone(), shutdown.clone());
        async move { web_app::serve(listener, transport, &cfg, &web, Arc::new(health), shutdown).await }
    });
    print_banner(addr, &broker, &cfg, started)?;
    // Until a signal, or until the web app could not start (its error is then reported at once).
    let served = tokio::select! {
        _ = shutdown.wait() => web_app.await,
        served = &mut web_app => served,
    };
    let stopped = shop.stop(DEMO_STOP_WITHIN).await;
    drop(broker);
    served.context("the web app's task")??;
    match stopped {
        // The demo's broker and log go with it: what was still being cooked is simply gone.
        Err(ShopError::StopTimedOut(late, within)) => {
            eprintln!("{late:?} did not finish within {within:?}; stopped them");
            Ok(())
        }
        other => other.map(drop).map_err(Into::into),
    }
}

/// The demo's data directory: the one given, else a fresh private one removed when the demo ends.
fn demo_data_dir(opts: &ServiceOpts) -> Result<(Option<tempfile::TempDir>, PathBuf)> {
    if let Some(d) = &opts.data_dir {
        return Ok((None, d.clone()));
    }
    let tmp = tempfile::Builder::new()
        .prefix("pizza-demo-")
        // The installation's own, as `private_dir` makes a data directory it creates.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()?;
    let path = tmp.path().to_owned();
    Ok((Some(tmp), path))
}

fn print_banner(
    addr: SocketAddr,
    broker: &EmbeddedBroker,
    cfg: &ServiceConfig,
    started: Instant,
) -> Result<()> {
    println!("pizza shop ready in {} ms", started.elapsed().as_millis());
    println!("  open:      http://{addr}/   (health: http://{addr}/health-check)");
    println!("  API:       curl -c jar -XPOST http://{addr}/api/login -H 'content-type: application/json' -d '{{\"username\":\"alice\"}}'");
    println!(
        "             curl -b jar -XPOST http://{addr}/api/orders -H 'content-type: application/json' \\"
    );
    println!("               -d '{{\"sauce\":\"Tomato\",\"cheese\":\"Mozzarella\",\"main_topping\":\"Pepperoni\"}}'");
    println!("             curl -b jar http://{addr}/api/orders/<order_id>");
    println!(
        "  broker:    {} (librdkafka mock cluster; topics created)",
        broker.bootstrap_servers()
    );
    println!("  data:      {}", cfg.data_dir.display());
    println!("  time scale {}; Ctrl-C stops", cfg.time_scale.factor());
    std::io::Write::flush(&mut std::io::stdout())?;
    Ok(())
}
