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
use pizza::health::ShopHealth;
use pizza::options::{load_sys, ServiceConfig, ServiceOpts};
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
        /// The original's config_sys/default.ini (topics, partitions).
        #[arg(long, env = "PIZZA_SYS_CONFIG")]
        sys_config: Option<PathBuf>,
    },
    /// The status view.
    View {
        #[command(subcommand)]
        action: ViewAction,
    },
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create the shop's topics that are missing; existing ones are left alone.
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The original's config_sys/default.ini (topic names, partitions, replication).
        #[arg(long, env = "PIZZA_SYS_CONFIG")]
        sys_config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ViewAction {
    /// Rebuild the view from the log into a new SQLite file; with --compare, check it equals a live one.
    Rebuild {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The original's config_sys/default.ini.
        #[arg(long, env = "PIZZA_SYS_CONFIG")]
        sys_config: Option<PathBuf>,
        /// The new file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// A live view (orders.db) to compare the rebuilt one with; exits 1 when they differ.
        #[arg(long)]
        compare: Option<PathBuf>,
    },
    /// Poll a live view (orders.db) until SIGTERM/SIGINT or --for ends, reporting every order
    /// whose status moved back; exits 1 when one did.
    Watch {
        /// The live view to watch (opened read-only).
        #[arg(long)]
        db: PathBuf,
        /// The original's config_sys/default.ini (the status codes and their order).
        #[arg(long, env = "PIZZA_SYS_CONFIG")]
        sys_config: Option<PathBuf>,
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
            (Some(path), _) => Ok(KafkaProps::load(path)?),
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
            action: TopicsAction::Create { kafka, sys_config },
        } => {
            let sys = load_sys(sys_config.as_deref())?;
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
        Command::Broker { sys_config } => broker(sys_config, shutdown).await,
        Command::View {
            action:
                ViewAction::Rebuild {
                    kafka,
                    sys_config,
                    out,
                    compare,
                },
        } => rebuild(&kafka, sys_config, &out, compare).await,
        Command::View {
            action:
                ViewAction::Watch {
                    db,
                    sys_config,
                    every,
                    stop_after,
                },
        } => {
            let codes = load_sys(sys_config.as_deref())?.codes;
            watch(&db, codes, every, stop_after, shutdown).await
        }
    }
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
        let health = ShopHealth::new(transport.clone(), cfg.sys.clone(), cfg.time_scale, None);
        let listener = web_app::bind(listen).await?;
        web_app::serve(listener, transport, &cfg, web, Arc::new(health), shutdown).await?;
        return Ok(());
    }
    let node = Service::open(service, &cfg)?;
    services::run(cfg, transport, node, shutdown).await?;
    Ok(())
}

/// `pizza broker`: the embedded broker alone, until a signal.
async fn broker(sys_config: Option<PathBuf>, mut shutdown: Shutdown) -> Result<()> {
    let sys = load_sys(sys_config.as_deref())?;
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
async fn rebuild(
    kafka: &KafkaArgs,
    sys_config: Option<PathBuf>,
    out: &Path,
    compare: Option<PathBuf>,
) -> Result<()> {
    let sys = load_sys(sys_config.as_deref())?;
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

/// `pizza view watch`: polls every order's status in a live view; each regression goes to stderr
/// as it is seen, the summary to stdout at the end.
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
    loop {
        let rows = view.status_rows()?;
        for r in watch.observe(rows.iter().map(|r| (r.0.as_str(), r.1))) {
            eprintln!("status regression: {r}");
        }
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
    }
    println!(
        "watched {}: {} orders, {} polls, {} status regressions",
        db.display(),
        watch.orders(),
        watch.polls(),
        watch.regressions()
    );
    if watch.regressions() > 0 {
        bail!("an order's status moved back in {}", db.display());
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
    let health = ShopHealth::new(
        transport.clone(),
        cfg.sys.clone(),
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
