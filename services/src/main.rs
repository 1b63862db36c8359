//! `pizza`: the pizza shop's services, the embedded broker and the demo. Thin: parses flags, reads
//! the configuration, and calls the library's entry points.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use pizza::admin::{create_topics, EmbeddedBroker, TopicOutcome};
use pizza::clock::{parse_duration, TimeScale};
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::health::{ServiceState, ShopHealth, Supervised};
use pizza::services::{self, ServiceConfig};
use pizza::shutdown::{Shutdown, ShutdownTrigger};
use pizza::store::ViewStore;
use pizza::transport::kafka::KafkaTransport;
use pizza::web::server::Limits;
use pizza::web::session::SessionKey;
use pizza::web::{self, AppState, LiveStreams};
use pizza::worker::WorkerStats;

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
        common: Common,
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
        common: Common,
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

#[derive(Args)]
struct Common {
    /// The original's config_sys/default.ini (topics, groups, status codes, menu, watchdog).
    #[arg(long, env = "PIZZA_SYS_CONFIG")]
    sys_config: Option<PathBuf>,
    /// Directory for the SQLite files (orders.db, delivery.db). `demo` uses a fresh temporary one by default.
    #[arg(long, env = "PIZZA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Scales every cooking, delivery and watchdog time: 1 is real time, 0 is instant.
    #[arg(long, env = "PIZZA_TIME_SCALE", default_value = "1")]
    time_scale: TimeScale,
    /// Records each service handles at once (ovens, drivers).
    #[arg(long, env = "PIZZA_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// Records each service may hold received but unfinished (running or queued behind their order);
    /// what it holds is finished on shutdown. Default: 16 × concurrency, at least 1024.
    #[arg(long, env = "PIZZA_MAX_IN_FLIGHT", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_in_flight: Option<u32>,
    /// The web app's session signing key, 64 hex characters. Default: the installation's key in
    /// <data-dir>/session.key, generated on first start.
    #[arg(long, env = "PIZZA_SESSION_KEY", hide_env_values = true, value_parser = parse_session_key)]
    session_key: Option<SessionKey>,
    /// Connections the web app keeps open at once; more wait until one closes.
    #[arg(long, env = "PIZZA_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// How long a web client may take to send a request's headers; an idle connection is closed
    /// after it too (500ms, 10s, 1m).
    #[arg(long, env = "PIZZA_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// On shutdown, how long the web app's open connections get to finish (500ms, 10s, 1m).
    #[arg(long, env = "PIZZA_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

fn parse_session_key(s: &str) -> Result<SessionKey, String> {
    SessionKey::from_hex(s).ok_or_else(|| "expected 64 hex characters (32 bytes)".into())
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be above 0".into()),
        d => Ok(d),
    }
}

impl Common {
    fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections as usize,
            header_read_timeout: self.header_timeout,
            shutdown_grace: self.shutdown_grace,
        }
    }

    fn service_config(&self, data_dir: PathBuf) -> Result<ServiceConfig> {
        let mut cfg = ServiceConfig::new(load_sys(self.sys_config.as_deref())?, data_dir);
        cfg.time_scale = self.time_scale;
        cfg.concurrency = self.concurrency as usize;
        cfg.max_in_flight = match self.max_in_flight {
            Some(n) => n as usize,
            None => (self.concurrency as usize * 16).max(1024),
        };
        Ok(cfg)
    }
}

fn load_sys(path: Option<&Path>) -> Result<SysConfig> {
    Ok(match path {
        Some(p) => SysConfig::load(p)?,
        None => SysConfig::default(),
    })
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
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
        Command::Demo { listen, common } => demo(listen, common, shutdown).await,
        Command::Serve {
            service,
            kafka,
            listen,
            common,
        } => {
            let data_dir = common
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("pizza-data"));
            let cfg = common.service_config(data_dir)?;
            let transport = KafkaTransport::new(&kafka.props()?, &cfg.sys.client_id(service))?;
            if service == ServiceName::Web {
                let web = Web {
                    session_key: common.session_key.clone(),
                    limits: common.limits(),
                    supervised: None,
                };
                return serve_web(transport, cfg, listen, web, shutdown).await;
            }
            let stats = Arc::new(WorkerStats::default());
            services::run(service, cfg, transport, stats, shutdown).await?;
            Ok(())
        }
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
        Command::Broker { sys_config } => {
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
            let mut shutdown = shutdown;
            shutdown.wait().await;
            Ok(())
        }
        Command::View {
            action:
                ViewAction::Rebuild {
                    kafka,
                    sys_config,
                    out,
                    compare,
                },
        } => {
            let cfg = ServiceConfig::new(load_sys(sys_config.as_deref())?, PathBuf::from("."));
            let transport = KafkaTransport::new(&kafka.props()?, "pizza-view-rebuild")?;
            let stats = pizza::view::rebuild(&transport, &cfg, &out).await?;
            println!(
                "rebuilt {} from {} records ({} skipped as malformed)",
                out.display(),
                stats.records,
                stats.skipped
            );
            if let Some(live) = compare {
                let a = ViewStore::open_read_only(&live)?.dump()?;
                let b = ViewStore::open_read_only(&out)?.dump()?;
                if a != b {
                    bail!("the rebuilt view differs from {}", live.display());
                }
                println!("equal to {} ({} orders)", live.display(), a.status.len());
            }
            Ok(())
        }
    }
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

/// The web app's settings besides the services' configuration.
struct Web {
    session_key: Option<SessionKey>,
    limits: Limits,
    /// In `pizza demo`, what the supervisor knows of the services it runs.
    supervised: Option<Supervised>,
}

async fn serve_web(
    transport: KafkaTransport,
    cfg: ServiceConfig,
    addr: SocketAddr,
    web: Web,
    shutdown: Shutdown,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "web app listening");
    serve_web_on(listener, transport, cfg, web, shutdown).await
}

async fn demo(addr: SocketAddr, common: Common, shutdown: Shutdown) -> Result<()> {
    let started = Instant::now();
    let (_tmp, data_dir) = match &common.data_dir {
        Some(d) => (None, d.clone()),
        None => {
            let tmp = tempfile_dir()?;
            let p = tmp.clone();
            (Some(TempDir(tmp)), p)
        }
    };
    let cfg = common.service_config(data_dir)?;
    let broker = EmbeddedBroker::start(&cfg.sys)?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "embedded broker up, topics created"
    );
    let props = KafkaProps::bootstrap(&broker.bootstrap_servers());
    let supervised = Supervised::default();
    let mut tasks = tokio::task::JoinSet::new();
    for service in ServiceName::CONSUMERS {
        let (cfg, props, supervised, shutdown) =
            (cfg.clone(), props.clone(), supervised.clone(), shutdown.clone());
        tasks.spawn(async move {
            (
                service,
                supervise(service, cfg, props, supervised, shutdown).await,
            )
        });
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "services started"
    );
    let transport = KafkaTransport::new(&props, &cfg.sys.client_id(ServiceName::Web))?;
    // The status service creates the view; the web app opens the same file.
    let web_cfg = cfg.clone();
    let web = Web {
        session_key: common.session_key.clone(),
        limits: common.limits(),
        supervised: Some(supervised),
    };
    let web_shutdown = shutdown.clone();

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tasks.spawn(async move {
        let r = serve_web_on(listener, transport, web_cfg, web, web_shutdown).await;
        (ServiceName::Web, r)
    });
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
    let mut failed = None;
    while let Some(joined) = tasks.join_next().await {
        let (service, r) = joined.context("service task panicked")?;
        if let Err(e) = r {
            eprintln!("{service} stopped: {e:#}");
            failed.get_or_insert(e);
        }
    }
    drop(broker);
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The longest wait before a stopped service of the demo is started again.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Runs one of the demo's services until shutdown; when it stops on an error, says so (on stderr
/// and in `/health-check`) and starts it again after a backoff (1 s, doubling, at most 30 s), as a
/// process supervisor would restart `pizza serve`.
async fn supervise(
    service: ServiceName,
    cfg: ServiceConfig,
    props: KafkaProps,
    supervised: Supervised,
    mut shutdown: Shutdown,
) -> Result<()> {
    let mut restarts = 0u32;
    let mut backoff = Duration::from_secs(1);
    loop {
        let transport = KafkaTransport::new(&props, &cfg.sys.client_id(service))?;
        supervised.set(service, ServiceState::Running);
        let ran = Instant::now();
        let stats = Arc::new(WorkerStats::default());
        let e = match services::run(service, cfg.clone(), transport, stats, shutdown.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if ran.elapsed() > RESTART_BACKOFF_MAX * 2 {
            backoff = Duration::from_secs(1);
        }
        restarts += 1;
        eprintln!(
            "{service} stopped: {e}; starting it again in {}s",
            backoff.as_secs()
        );
        tracing::error!(%service, error = %e, restarts, "service stopped");
        supervised.set(
            service,
            ServiceState::Down {
                error: e.to_string(),
                restarts,
            },
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait() => return Err(e.into()),
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

async fn serve_web_on(
    listener: tokio::net::TcpListener,
    transport: KafkaTransport,
    cfg: ServiceConfig,
    web: Web,
    shutdown: Shutdown,
) -> Result<()> {
    pizza::store::private_dir(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let view = Arc::new(ViewStore::open(&cfg.view_path())?);
    let key = match web.session_key {
        Some(k) => k,
        None => SessionKey::load_or_create(&web::session_key_path(&cfg.data_dir))?,
    };
    let health = ShopHealth::new(transport.clone(), cfg.sys.clone(), cfg.time_scale, web.supervised);
    let state = Arc::new(AppState {
        transport,
        sys: cfg.sys.clone(),
        view,
        key,
        shutdown: shutdown.clone(),
        live: LiveStreams::for_connections(web.limits.max_connections),
        health: Arc::new(health),
    });
    web::server::serve(listener, web::router(state), web.limits, shutdown).await;
    Ok(())
}

/// A temporary directory removed when the demo ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pizza-demo-{}", pizza::domain::OrderId::random()));
    pizza::store::private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
