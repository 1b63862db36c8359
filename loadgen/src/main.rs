//! `loadgen`: open-loop load against a live pizza shop, honestly measured.
//!
//! Orders go out on a fixed schedule (`--rate` per second) whatever the system does, and every
//! latency counts from the order's *intended* send time, so a stall in the shop or in the client
//! shows in the numbers instead of hiding (no coordinated omission). Orders are placed through the
//! command side over Kafka (default) or the web app's JSON API (`--via http`), and followed on
//! pizza-status until final. Exits 1 when an order was lost or a send failed.

mod http;
mod plot;
mod report;
mod schedule;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use http::SendError;
use pizza::admin::{group_lag, group_reader, EmbeddedBroker};
use pizza::clock::{now_ms, TimeScale};
use pizza::command::{confirm_order, place_order, PlaceError};
use pizza::config::{KafkaProps, ServiceName, SysConfig};
use pizza::domain::{decode, OrderId, OrderRequest, StatusEvent};
use pizza::services::ServiceConfig;
use pizza::shop::{Restart, Shop};
use pizza::transport::kafka::KafkaTransport;
use pizza::transport::{end_offsets_within, ENDS_WITHIN};
use report::{Latencies, Percentiles, Summary, STAGES};

/// Open-loop load against the pizza shop, with end-to-end latency from the intended send time.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Orders per second, sent on a fixed schedule.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to measure, e.g. 60s or 2m.
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    duration: f64,
    /// Load sent before measuring starts (not counted).
    #[arg(long, default_value = "2s", value_parser = parse_secs)]
    warmup: f64,
    /// Seed of the random orders (the menu choices; order ids are unique per run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How orders are placed: through the command side over Kafka, or the web app's JSON API.
    #[arg(long, value_enum, default_value_t = Via::Kafka)]
    via: Via,
    /// The web app, for --via http.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Bootstrap servers of the shop's cluster.
    #[arg(long, env = "PIZZA_BROKERS")]
    brokers: Option<String>,
    /// The original's config_kafka/<name>.ini instead of --brokers.
    #[arg(long, env = "PIZZA_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
    /// Start the embedded broker and every service in this process (--via kafka only).
    #[arg(long)]
    embedded: bool,
    /// The services' time scale: what --embedded runs them at, and what the report states for a
    /// live cluster (0 = instant cooking, so latency is the system's own).
    #[arg(long, default_value = "0")]
    services_time_scale: TimeScale,
    #[command(flatten)]
    sys: pizza::options::SysArgs,
    /// How long after the last send an order may take to become final before it counts as lost.
    #[arg(long, default_value = "30s", value_parser = parse_secs)]
    timeout: f64,
    /// Only produce (no following): the client's own throughput.
    #[arg(long)]
    produce_only: bool,
    /// Distinct customers the orders come from.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    customers: u32,
    /// Print the summary as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the histograms as an HdrHistogram interval log.
    #[arg(long)]
    hlog: Option<PathBuf>,
    /// Write an SVG plot: each stage's p99 over time, the send and completion rates against the
    /// target, and each stage's percentile curve.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Via {
    Kafka,
    Http,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let (num, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => match s.strip_suffix('s') {
            Some(n) => (n, 1.0),
            None => match s.strip_suffix('m') {
                Some(n) => (n, 60.0),
                None => (s, 1.0),
            },
        },
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 2m, 500ms)"))?;
    let secs = v * unit;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` must be between 0 and 24h"));
    }
    Ok(secs)
}

/// What is known of one order in flight.
struct Tracked {
    intended: Instant,
    /// Sent after the warm-up: its latencies count.
    measured: bool,
    seen: [Option<Instant>; 3],
    done: bool,
    /// The customer was told it is placed: it must become final. An order never acknowledged
    /// (its fate unknown after confirming) is not promised, and not lost if it never shows.
    promised: bool,
    /// The delivery's timestamp, from the first final status: a final status with another one
    /// means a second delivery (a redelivered input re-sends the same timestamp).
    final_ts: Option<i64>,
    delivered_twice: bool,
}

#[derive(Default)]
struct Tracker {
    orders: HashMap<String, Tracked>,
    /// Status events of orders not registered yet (--via http learns the id from the response).
    early: HashMap<String, Vec<(StatusEvent, Instant)>>,
    completed: u64,
    /// Orders with final statuses of two different timestamps.
    delivered_twice: u64,
    /// The last time a measured order became final, and the longest time between two such.
    last_completion: Option<Instant>,
    longest_gap: Duration,
    lat: Latencies,
    measure_start: Option<Instant>,
}

impl Tracker {
    fn register(&mut self, id: String, intended: Instant, measured: bool, promised: bool, sys: &SysConfig) {
        self.orders.insert(
            id.clone(),
            Tracked {
                intended,
                measured,
                seen: [None; 3],
                done: false,
                promised,
                final_ts: None,
                delivered_twice: false,
            },
        );
        for (ev, at) in self.early.remove(&id).unwrap_or_default() {
            self.observe(&id, &ev, at, sys);
        }
    }

    fn observe(&mut self, id: &str, ev: &StatusEvent, at: Instant, sys: &SysConfig) {
        let codes = &sys.codes;
        let status = ev.status;
        let Some(o) = self.orders.get_mut(id) else {
            self.early
                .entry(id.to_owned())
                .or_default()
                .push((ev.clone(), at));
            return;
        };
        if o.done {
            if codes.is_final(status) && ev.timestamp != o.final_ts && !o.delivered_twice {
                o.delivered_twice = true;
                self.delivered_twice += 1;
            }
            return;
        }
        let slot = [codes.order_received, codes.in_the_oven, codes.out_for_delivery]
            .iter()
            .position(|c| *c == status);
        if let Some(i) = slot {
            o.seen[i].get_or_insert(at);
            return;
        }
        if !codes.is_final(status) {
            return;
        }
        o.done = true;
        o.final_ts = ev.timestamp;
        self.completed += 1;
        if !o.measured {
            return;
        }
        let since = self.last_completion.or(self.measure_start).unwrap_or(at);
        self.longest_gap = self.longest_gap.max(at.saturating_duration_since(since));
        self.last_completion = Some(at);
        let us = |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        let (seen, intended) = (o.seen, o.intended);
        let intended_s = self.since_start(intended);
        self.lat.record(0, intended_s, us(intended, at));
        let stages = [
            (seen[0], seen[1], 1),
            (seen[1], seen[2], 2),
            (seen[2], Some(at), 3),
        ];
        for (from, to, stage) in stages {
            if let (Some(f), Some(t)) = (from, to) {
                if t >= f {
                    self.lat.record(stage, intended_s, us(f, t));
                }
            }
        }
        let at_s = self.since_start(at);
        self.lat.timeline.completed(at_s);
    }

    /// Measuring starts at `start` and lasts `duration_s`.
    fn start_measuring(&mut self, start: Instant, duration_s: f64) {
        self.measure_start = Some(start);
        self.lat = Latencies::new(duration_s);
    }

    /// Seconds from the start of measuring to `at` (negative before it).
    fn since_start(&self, at: Instant) -> f64 {
        let Some(start) = self.measure_start else {
            return 0.0;
        };
        if at >= start {
            (at - start).as_secs_f64()
        } else {
            -(start - at).as_secs_f64()
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(run(args)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            2
        }
    };
    // The report is out; do not wait for librdkafka clients to finish closing.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

/// Runs the load; `Ok(false)` when orders were lost or sends failed.
async fn run(args: Args) -> Result<bool> {
    check_args(&args)?;
    let sys = Arc::new(args.sys.load()?);
    // Dropped in reverse order: the embedded services before the embedded broker.
    let mut _broker = None;
    let mut services = None;
    let props = match (&args.kafka_config, &args.brokers, args.embedded) {
        (Some(p), _, false) => pizza::config::load_kafka_props(p)?,
        (None, Some(b), false) => KafkaProps::bootstrap(b),
        (None, None, true) => {
            let (props, broker, shop) = start_embedded_shop(&args, &sys)?;
            (_broker, services) = (Some(broker), shop);
            props
        }
        _ => bail!("give exactly one of --brokers, --kafka-config or --embedded"),
    };
    let transport = KafkaTransport::new(&props, "loadgen")?;
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let follower = if args.produce_only {
        None
    } else {
        Some(tokio::spawn(
            follow(transport.clone(), sys.clone(), tracker.clone()).await?,
        ))
    };
    // Order ids are the run's n-th ids under a random salt, so no two collide (random 8-hex
    // ids would within ~100,000 orders).
    let salt = u32::from_str_radix(OrderId::random().as_str(), 16).expect("hex");
    if let Some((shop, _)) = &mut services {
        // One order through first, so every group has formed before the clock starts; its id is
        // one no order of the run takes.
        let warm_up = OrderId::nth(u32::MAX, salt);
        shop.ready(&transport, warm_up, Duration::from_secs(60)).await?;
    }
    let http = match args.via {
        Via::Http => Some(Arc::new(
            http::Client::login_all(&args.url, args.customers).await?,
        )),
        Via::Kafka => None,
    };
    let shared = Shared {
        sys,
        tracker,
        transport,
        http,
        counts: Arc::default(),
        follow: !args.produce_only,
        salt,
    };
    let sent = send_all(&args, &shared).await;
    if shared.follow {
        wait_final(&shared.tracker, Duration::from_secs_f64(args.timeout)).await;
    }
    if let Some(f) = follower {
        f.abort();
    }
    let consumer_lag = if shared.follow {
        settled_lag(&shared.transport, &shared.sys).await
    } else {
        vec![]
    };
    let ok = report(&args, &props, &shared, &sent, consumer_lag)?;
    // Embedded services leave their groups while the broker still runs.
    if let Some((shop, _dir)) = services {
        if let Err(e) = shop.stop(Duration::from_secs(30)).await {
            eprintln!("loadgen: embedded {}", pizza::error::Report(&e));
        }
    }
    Ok(ok)
}

/// Refuses flag values the run cannot honour.
fn check_args(args: &Args) -> Result<()> {
    if !(args.rate > 0.0 && args.rate <= 1_000_000.0) {
        bail!("--rate must be between 0 and 1000000 orders/s");
    }
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if args.embedded && args.via == Via::Http {
        bail!(
            "--embedded starts no web app: use --via kafka, or run `pizza demo` and --via http --brokers ..."
        );
    }
    Ok(())
}

/// The in-process shop and its data directory (removed when dropped).
type EmbeddedShop = (Shop, tempfile::TempDir);

/// `--embedded`: the shop in this process, on librdkafka's mock cluster. The one place that decides
/// how the in-process shop starts: the broker, its address, and every service (none with
/// `--produce-only`, which measures the client alone).
fn start_embedded_shop(
    args: &Args,
    sys: &SysConfig,
) -> Result<(KafkaProps, EmbeddedBroker, Option<EmbeddedShop>)> {
    let broker = EmbeddedBroker::start(sys)?;
    let props = broker.props();
    // Producer-only measures the client alone: no services competing for the cores.
    let services = if args.produce_only {
        None
    } else {
        let dir = tempfile::tempdir()?;
        let mut cfg = ServiceConfig::new(sys.clone(), dir.path().to_owned());
        cfg.time_scale = args.services_time_scale;
        let shop = Shop::start(cfg, &ServiceName::CONSUMERS, Restart::Never, {
            let props = props.clone();
            move |service| KafkaTransport::new(&props, service.as_str())
        });
        Some((shop, dir))
    };
    Ok((props, broker, services))
}

/// What the send tasks share with the run.
#[derive(Clone)]
struct Shared {
    sys: Arc<SysConfig>,
    tracker: Arc<Mutex<Tracker>>,
    transport: KafkaTransport,
    /// The web app's client, for --via http.
    http: Option<Arc<http::Client>>,
    counts: Arc<Counts>,
    /// Whether orders are followed on pizza-status (not --produce-only).
    follow: bool,
    /// Order `i` of the run is `OrderId::nth(i, salt)`.
    salt: u32,
}

/// Sends that were acknowledged, and sends that failed.
#[derive(Default)]
struct Counts {
    acked: AtomicU64,
    /// Of those acknowledged: orders first answered "being confirmed", then confirmed.
    confirmed_late: AtomicU64,
    errors: AtomicU64,
    /// Of the errors: orders whose fate stayed unknown (they may or may not be in the log).
    unknown: AtomicU64,
}

/// How the sending went.
struct Sent {
    /// Orders sent, warm-up included.
    total: u64,
    /// Orders sent during the warm-up (not measured).
    warm: u64,
    /// Seconds from the first send to the last.
    sending_s: f64,
    /// The client's worst lag behind its own schedule.
    max_lag: Duration,
}

/// One order on the schedule.
struct Order {
    id: OrderId,
    req: OrderRequest,
    intended: Instant,
    /// Sent after the warm-up: its latencies count.
    measured: bool,
}

/// Sends every order on the open-loop schedule, then waits for the sends still in flight.
async fn send_all(args: &Args, shared: &Shared) -> Sent {
    let total = schedule::count(args.rate, args.warmup + args.duration);
    let warm = schedule::count(args.rate, args.warmup);
    let salt = shared.salt;
    let mut orders = schedule::Orders::new(args.seed, shared.sys.menu.clone(), args.customers);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1 << 16));
    let start = Instant::now();
    let measure_start = start + schedule::due(warm, args.rate);
    shared
        .tracker
        .lock()
        .unwrap()
        .start_measuring(measure_start, args.duration);
    let mut max_lag = Duration::ZERO;
    let mut last_progress = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..total {
        let intended = start + schedule::due(i, args.rate);
        tokio::time::sleep_until(intended).await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore open");
        let now = Instant::now();
        max_lag = max_lag.max(now.saturating_duration_since(intended));
        let (_, req) = orders.next();
        if i >= warm {
            let mut t = shared.tracker.lock().unwrap();
            let at_s = t.since_start(now);
            t.lat.timeline.sent(at_s);
        }
        let order = Order {
            id: OrderId::nth(i as u32, salt),
            req,
            intended,
            measured: i >= warm,
        };
        sends.spawn(send_one(shared.clone(), order, permit));
        while sends.try_join_next().is_some() {}
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            print_progress(shared, start, i + 1, total);
        }
    }
    let sending_s = start.elapsed().as_secs_f64();
    while sends.join_next().await.is_some() {}
    Sent {
        total,
        warm,
        sending_s,
        max_lag,
    }
}

/// Places one order (registering it with the tracker first when it goes over Kafka, whose id is
/// known before the send) and records its acknowledgement's latency.
async fn send_one(shared: Shared, order: Order, _permit: tokio::sync::OwnedSemaphorePermit) {
    let Order {
        id,
        req,
        intended,
        measured,
    } = order;
    let sent_at = Instant::now();
    let placed = match &shared.http {
        None => {
            if shared.follow {
                let mut t = shared.tracker.lock().unwrap();
                t.register(id.to_string(), intended, measured, false, &shared.sys);
            }
            place_kafka(&shared, &req, id.clone()).await
        }
        Some(client) => client.place(&req).await,
    };
    match placed {
        Ok((order_id, confirmed_late)) => {
            shared.counts.acked.fetch_add(1, Ordering::Relaxed);
            if confirmed_late {
                shared.counts.confirmed_late.fetch_add(1, Ordering::Relaxed);
            }
            let mut t = shared.tracker.lock().unwrap();
            if measured {
                let intended_s = t.since_start(intended);
                t.lat.record(4, intended_s, sent_at.elapsed().as_micros() as u64);
            }
            if shared.http.is_some() && shared.follow {
                t.register(order_id, intended, measured, true, &shared.sys);
            } else if let Some(o) = t.orders.get_mut(&order_id) {
                o.promised = true;
            }
        }
        Err(e) => {
            if shared.counts.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                eprintln!("loadgen: order failed: {e}");
            }
            match e {
                // Never written: nothing to follow.
                SendError::NotPlaced(_) => {
                    shared.tracker.lock().unwrap().orders.remove(id.as_str());
                }
                // It may yet appear (and then must become final), but nobody was promised it.
                SendError::Unknown(_) => {
                    shared.counts.unknown.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Places one order over Kafka; its id, and whether it was first "being confirmed" (the
/// produce may have written it) and then confirmed by sending it again, as the web app's
/// customers confirm: up to `http::CONFIRM_ATTEMPTS` times, `http::CONFIRM_PAUSE` apart.
async fn place_kafka(shared: &Shared, req: &OrderRequest, id: OrderId) -> Result<(String, bool), SendError> {
    let report = |e: &PlaceError| pizza::error::Report(e).to_string();
    let (id, ordered_at_ms) = match place_order(&shared.transport, &shared.sys, req, id, now_ms()).await {
        Ok(p) => return Ok((p.order_id.to_string(), false)),
        Err(PlaceError::Unconfirmed {
            order_id,
            ordered_at_ms,
            ..
        }) => (order_id, ordered_at_ms),
        Err(e) => return Err(SendError::NotPlaced(report(&e))),
    };
    for _ in 0..http::CONFIRM_ATTEMPTS {
        tokio::time::sleep(http::CONFIRM_PAUSE).await;
        match confirm_order(&shared.transport, &shared.sys, req, id.clone(), ordered_at_ms).await {
            Ok(p) => return Ok((p.order_id.to_string(), true)),
            // Not written this time, or maybe: the first attempt may still be in the log.
            Err(PlaceError::Unconfirmed { .. } | PlaceError::Unavailable(_)) => continue,
            // The first attempt may still be in the log.
            Err(e) => return Err(SendError::Unknown(report(&e))),
        }
    }
    Err(SendError::Unknown(format!(
        "order {id} still being confirmed after {} attempts",
        http::CONFIRM_ATTEMPTS
    )))
}

/// The progress line on stderr.
fn print_progress(shared: &Shared, start: Instant, sent: u64, total: u64) {
    let done = shared.tracker.lock().unwrap().completed;
    eprintln!(
        "[{:>5.1}s] sent {:>8}/{total}  acked {:>8}  final {:>8}",
        start.elapsed().as_secs_f64(),
        sent,
        shared.counts.acked.load(Ordering::Relaxed),
        done
    );
}

/// Waits for every order to become final, or `timeout`.
async fn wait_final(tracker: &Mutex<Tracker>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, known) = {
            let t = tracker.lock().unwrap();
            (t.completed, t.orders.len() as u64)
        };
        if done >= known || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints the summary and writes the files asked for; `Ok(false)` when orders were lost or sends
/// failed. The tracker's lock is held throughout: nothing here awaits.
fn report(
    args: &Args,
    props: &KafkaProps,
    shared: &Shared,
    sent: &Sent,
    consumer_lag: Vec<(String, i64)>,
) -> Result<bool> {
    let t = shared.tracker.lock().unwrap();
    let summary = summarize(args, props, &t, &shared.counts, sent, consumer_lag);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if let Some(path) = &args.hlog {
        write_hlog(path, &t.lat)?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&t.lat, args.rate)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary.lost == 0 && summary.errors == 0 && summary.delivered_twice == 0)
}

/// The run's summary, from what the tracker saw and the send counts.
fn summarize(
    args: &Args,
    props: &KafkaProps,
    t: &Tracker,
    counts: &Counts,
    sent: &Sent,
    consumer_lag: Vec<(String, i64)>,
) -> Summary {
    let measured = |done: bool| t.orders.values().filter(|o| o.measured && o.done == done).count() as u64;
    let max_send_lag_ms = sent.max_lag.as_secs_f64() * 1000.0;
    Summary {
        via: format!("{:?}", args.via).to_lowercase(),
        brokers: props.bootstrap_servers().to_owned(),
        seed: args.seed,
        services_time_scale: args.services_time_scale.factor(),
        target_rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        sent: sent.total - sent.warm,
        achieved_rate: sent.total as f64 / sent.sending_s,
        client_kept_up: max_send_lag_ms < 100.0,
        max_send_lag_ms: (max_send_lag_ms * 10.0).round() / 10.0,
        completed: if args.produce_only {
            counts.acked.load(Ordering::Relaxed)
        } else {
            measured(true)
        },
        lost: if args.produce_only {
            0
        } else {
            t.orders
                .values()
                .filter(|o| o.measured && o.promised && !o.done)
                .count() as u64
        },
        unknown: counts.unknown.load(Ordering::Relaxed),
        delivered_twice: t.delivered_twice,
        longest_gap_ms: (t.longest_gap.as_secs_f64() * 10_000.0).round() / 10.0,
        errors: counts.errors.load(Ordering::Relaxed),
        confirmed_late: counts.confirmed_late.load(Ordering::Relaxed),
        latency: STAGES
            .iter()
            .zip(&t.lat.stages)
            .map(|(s, h)| Percentiles::of(s, h))
            .filter(|p| p.count > 0)
            .collect(),
        consumer_lag,
    }
}

/// Follows pizza-status from its current end (no consumer group: nothing is committed). The end
/// is asked again while a retriable error keeps it (leaders not yet elected on new topics).
async fn follow(
    transport: KafkaTransport,
    sys: Arc<SysConfig>,
    tracker: Arc<Mutex<Tracker>>,
) -> Result<impl std::future::Future<Output = ()>> {
    let consumer: StreamConsumer = transport
        .client_config()
        .set("group.id", format!("loadgen-{}", OrderId::random()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let topic = sys.topics.status.clone();
    let ends = end_offsets_within(&transport, &topic, ENDS_WITHIN)
        .await
        .with_context(|| format!("the end of {topic} (run `pizza topics create` first)"))?;
    let mut tpl = TopicPartitionList::new();
    for (p, high) in ends.into_iter().enumerate() {
        tpl.add_partition_offset(&topic, p as i32, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    Ok(async move {
        loop {
            let Ok(m) = consumer.recv().await else { continue };
            let at = Instant::now();
            let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
                continue;
            };
            let (Ok(id), Ok(ev)) = (std::str::from_utf8(key), decode::<StatusEvent>(payload)) else {
                continue;
            };
            tracker.lock().unwrap().observe(id, &ev, at, &sys);
        }
    })
}

/// How long the groups get, once every order is final, to commit what they finished (they
/// commit every 500 ms, and a restarted member may still be joining; a member fenced while its
/// coordinator was unreachable has its partitions' uncommitted records read again by the next
/// owner, seen on three nodes under the consumer group protocol: 15,648 records, more than 15 s).
const LAG_SETTLES_WITHIN: Duration = Duration::from_secs(60);

/// Each group's lag once it is 0 everywhere, or as it is after [`LAG_SETTLES_WITHIN`]. A lag that
/// cannot be read is not 0: it is reported as -1 under a name that says why.
async fn settled_lag(transport: &KafkaTransport, sys: &SysConfig) -> Vec<(String, i64)> {
    let deadline = Instant::now() + LAG_SETTLES_WITHIN;
    loop {
        let lag = consumer_lag(transport, sys).unwrap_or_else(|e| vec![(format!("unreadable ({e:#})"), -1)]);
        if lag.iter().all(|(_, l)| *l == 0) || Instant::now() >= deadline {
            return lag;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per consumer group of the shop, the records of its topics not yet committed.
fn consumer_lag(transport: &KafkaTransport, sys: &SysConfig) -> Result<Vec<(String, i64)>> {
    let timeout = Duration::from_secs(10);
    let partitions = transport.topic_partitions(timeout)?;
    let mut out = Vec::new();
    for service in ServiceName::CONSUMERS {
        let group = sys.group(service);
        let topics: Vec<(&str, usize)> = sys
            .topics
            .consumed_by(service)
            .into_iter()
            .map(|t| (t, partitions.iter().find(|(n, _)| n == t).map_or(0, |(_, n)| *n)))
            .collect();
        let reader = group_reader(transport, group)?;
        out.push((group.to_owned(), group_lag(&reader, &topics, timeout)?.lag));
    }
    Ok(out)
}

fn write_hlog(path: &std::path::Path, lat: &Latencies) -> Result<()> {
    use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("pizza-shop loadgen; values in microseconds; one histogram per stage for the whole run");
    let mut writer = builder.begin_log_with(&mut file, &mut serializer)?;
    for (stage, h) in STAGES.iter().zip(&lat.stages) {
        let tag = stage.replace(['→', ' '], "-");
        writer
            .write_histogram(h, Duration::ZERO, Duration::from_secs(1), Tag::new(&tag))
            .map_err(|e| anyhow::anyhow!("writing the histogram log: {e:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_status_records_every_stage_in_the_window_of_its_intended_send() {
        let sys = SysConfig::default();
        let c = sys.codes.clone();
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let ev = |status, ts| StatusEvent {
            status,
            timestamp: Some(ts),
            observed_status: None,
        };
        let mut t = Tracker::default();
        t.start_measuring(t0, 10.0);
        t.register("warm".into(), t0, false, true, &sys);
        t.register("a".into(), t0 + ms(1_500), true, true, &sys);
        // Status events may come before the order is registered (--via http).
        t.observe("b", &ev(c.order_received, 1), t0 + ms(2_050), &sys);
        t.register("b".into(), t0 + ms(2_000), true, true, &sys);
        for (status, at) in [
            (c.order_received, 1_520),
            (c.in_the_oven, 1_540),
            (c.out_for_delivery, 1_570),
            (c.delivered, 1_600),
        ] {
            t.observe("a", &ev(status, at as i64), t0 + ms(at), &sys);
            t.observe("warm", &ev(status, at as i64), t0 + ms(at), &sys);
        }
        t.observe("b", &ev(c.delivered, 3_100), t0 + ms(3_100), &sys);
        assert_eq!(t.completed, 3);
        // The longest time without a completion: from the start of measuring to a's, 1.6 s.
        assert_eq!(t.longest_gap, ms(1_600));
        // A redelivered input re-sends the same delivery; another delivery has another time.
        t.observe("a", &ev(c.delivered, 1_600), t0 + ms(3_200), &sys);
        assert_eq!(t.delivered_twice, 0);
        t.observe("a", &ev(c.delivered, 3_300), t0 + ms(3_300), &sys);
        t.observe("a", &ev(c.delivered, 3_400), t0 + ms(3_400), &sys);
        assert_eq!(t.delivered_twice, 1, "counted once per order");
        assert_eq!(t.lat.stages[0].len(), 2, "the warm-up order is not measured");
        let e2e = |w: usize| t.lat.timeline.latency[w][0].max() / 1000;
        // The windows' histograms keep 2 significant digits.
        assert_eq!(e2e(1), 100);
        assert!((1_100..=1_111).contains(&e2e(2)), "{}", e2e(2));
        for stage in 1..=3 {
            assert_eq!(t.lat.timeline.latency[1][stage].len(), 1, "stage {stage}");
        }
        assert_eq!(t.lat.timeline.latency[2][1].len(), 0, "b was never in the oven");
        assert_eq!(t.lat.timeline.completed, [0, 1, 0, 1]);
        assert_eq!(t.since_start(t0 - ms(500)), -0.5);
    }

    #[test]
    fn durations_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_secs("10s"), Ok(10.0));
        assert_eq!(parse_secs("2m"), Ok(120.0));
        assert_eq!(parse_secs("500ms"), Ok(0.5));
        assert_eq!(parse_secs("7"), Ok(7.0));
        assert!(parse_secs("ten").unwrap_err().contains("`ten` is not a duration"));
        assert!(parse_secs("-1s").is_err());
    }
}
