//! The integration tests on Apache Kafka itself: a real single-node KRaft cluster, started for
//! each test by `scripts/kafka.sh` (the command people use too), with the shop's topics created
//! by `pizza topics create` through the admin API. The same test bodies run on the embedded
//! broker in their own modules.
//!
//! Needs Java (17) and Maven, or the broker's jars already in `target/kafka`; without them each
//! test says so on stderr and passes, except under CI (`CI` set), where it fails. The clusters
//! are stopped when a test ends, fails, or its process dies (`--owner`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use pizza::config::KafkaProps;

use crate::common::{cannot_run, data_dir, TestBroker};
use crate::pipeline::{full_pipeline, EndOffsets};

/// One cluster at a time: a JVM per node is heavy for two cores, and the tests stay independent.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Apache Kafka on 127.0.0.1, stopped on drop.
pub struct KafkaCluster {
    dir: tempfile::TempDir,
    bootstrap: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl KafkaCluster {
    /// Starts `nodes` nodes with the shop's topics; fails the test when this machine cannot run
    /// Kafka (its tests are ignored where `services/build.rs` found no Java or Maven).
    pub fn start(test: &str, nodes: usize) -> KafkaCluster {
        if let Some(why) = missing_tools() {
            cannot_run(test, &why);
        }
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new().prefix("pizza-kafka-").tempdir().unwrap();
        let out = script()
            .args([
                "start",
                "--nodes",
                &nodes.to_string(),
                // Free ports, chosen by the script.
                "--port",
                "0",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(["--owner", &std::process::id().to_string()])
            .output()
            .expect("run scripts/kafka.sh");
        assert!(
            out.status.success(),
            "scripts/kafka.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let cluster = KafkaCluster {
            dir,
            bootstrap,
            _turn: turn,
        };
        let created = Command::new(env!("CARGO_BIN_EXE_pizza"))
            .args(["topics", "create", "--brokers", &cluster.bootstrap])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "pizza topics create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        cluster
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = script().arg("stop").arg("--dir").arg(self.dir.path()).status();
    }
}

fn script() -> Command {
    Command::new(workspace().join("scripts/kafka.sh"))
}

/// Why Kafka cannot run here: no Java, or neither Maven nor the jars it would fetch.
fn missing_tools() -> Option<String> {
    let runs = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !runs("java", "-version") {
        return Some("Java is not installed (the broker runs on Java 17)".into());
    }
    let version = std::env::var("KAFKA_VERSION").unwrap_or_else(|_| "4.1.1".into());
    let cached = workspace()
        .join("target/kafka")
        .join(version)
        .join("libs/.complete")
        .exists();
    if !cached && !runs("mvn", "-v") {
        return Some("Maven is not installed, and the broker's jars are not in target/kafka".into());
    }
    None
}

fn on_kafka(test: &str) -> TestBroker {
    TestBroker::Kafka(KafkaCluster::start(test, 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn orders_reach_delivered_on_kafka() {
    let kafka = on_kafka("kafka::orders_reach_delivered_on_kafka");
    let props = KafkaProps::bootstrap(&kafka.bootstrap_servers());
    full_pipeline(&props, 20, EndOffsets::Exact).await;
}

/// The same pipeline with every consumer on Kafka 4's consumer group protocol (KIP-848): the
/// broker assigns partitions and keeps the session, and librdkafka refuses the classic protocol's
/// session and heartbeat settings, which the transport then leaves out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn orders_reach_delivered_on_kafka_with_the_consumer_group_protocol() {
    let kafka = on_kafka("kafka::orders_reach_delivered_on_kafka_with_the_consumer_group_protocol");
    let props = KafkaProps::bootstrap(&kafka.bootstrap_servers()).with("group.protocol", "consumer");
    full_pipeline(&props, 20, EndOffsets::Exact).await;
}

/// SIGKILL mid-flight with every service's consumer on the consumer group protocol: the dead
/// members' partitions move when the broker ends their sessions, and nothing is lost or delivered
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn sigkill_mid_flight_loses_nothing_and_delivers_once_with_the_consumer_group_protocol() {
    let kafka = on_kafka(
        "kafka::sigkill_mid_flight_loses_nothing_and_delivers_once_with_the_consumer_group_protocol",
    );
    let props = kafka.props().with("group.protocol", "consumer");
    crate::crash::sigkill_mid_flight_loses_nothing_and_delivers_once_with(&props).await;
}

/// A test on one Kafka node that runs `body` (a test of another module, written for any broker).
macro_rules! on_kafka {
    ($($name:ident => $body:path),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(not(kafka_runs), ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)")]
        async fn $name() {
            let kafka = on_kafka(concat!("kafka::", stringify!($name)));
            $body(&kafka).await;
        }
    )+};
}

/// Issue 15 on the consumer group protocol: the broker moves the partitions of the members
/// that die, join and leave, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with_the_consumer_group_protocol(
) {
    let kafka = on_kafka("kafka::instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with_the_consumer_group_protocol",);
    let props = kafka.props().with("group.protocol", "consumer");
    crate::crash::instances_hand_partitions_over_without_losing_or_repeating_a_delivery_with(&props).await;
}

on_kafka! {
    a_commit_of_another_log_is_read_from_the_start =>
        crate::log::a_commit_of_another_log_is_read_from_the_start_on,
    instances_hand_partitions_over_without_losing_or_repeating_a_delivery =>
        crate::crash::instances_hand_partitions_over_without_losing_or_repeating_a_delivery_on,
    sigkill_mid_flight_loses_nothing_and_delivers_once =>
        crate::crash::sigkill_mid_flight_loses_nothing_and_delivers_once_on,
    sigterm_finishes_what_it_holds_and_a_restart_resumes_without_duplicates =>
        crate::crash::sigterm_finishes_what_it_holds_and_a_restart_resumes_without_duplicates_on,
    malformed_events_are_dead_lettered_and_the_service_keeps_going =>
        crate::dlq::malformed_events_are_dead_lettered_and_the_service_keeps_going_on,
    baked_before_ordered_is_pending_then_delivered =>
        crate::dlq::baked_before_ordered_is_pending_then_delivered_on,
    a_stalled_order_is_marked_stuck_and_progress_clears_it =>
        crate::watchdog::a_stalled_order_is_marked_stuck_and_progress_clears_it_on,
    batches_of_every_codec_and_transaction_markers_leave_the_shop_running =>
        crate::log::codecs_and_transactions_on,
    a_topic_made_again_is_folded_anew_by_every_view =>
        crate::log::a_topic_made_again_on,
}

/// `pizza offsets`: after a run every group's lag is 0; a reset is refused while the group has a
/// member; a dry run commits nothing; the status group reset to the earliest offsets replays its
/// topics into a fresh view that equals `pizza view rebuild`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn offsets_show_lag_refuse_a_reset_under_members_and_replay_the_view_as_rebuild_does() {
    let kafka =
        on_kafka("kafka::offsets_show_lag_refuse_a_reset_under_members_and_replay_the_view_as_rebuild_does");
    let props = kafka.props();
    let brokers = kafka.bootstrap_servers().to_owned();
    full_pipeline(&props, 10, EndOffsets::Exact).await; // ends with the shop stopped cleanly
    let sys = pizza::config::SysConfig::default();
    let group = sys.group(pizza::config::ServiceName::Status).to_owned();

    let (ok, text) = pizza_on(&brokers, &["offsets", "show"]);
    assert!(ok, "{text}");
    for (g, _, _) in pizza::group_offsets::shop_groups(&sys) {
        assert!(
            text.contains(&format!("group {g}: lag 0\n")),
            "{g} caught up: {text}"
        );
    }

    // A status service in a fresh folder: the group has a member, and a reset is refused.
    let fresh = data_dir();
    let mut status = ServeProc::start("status", &brokers, fresh.path());
    let transport = pizza::transport::kafka::KafkaTransport::new(&props, "it-offsets").unwrap();
    crate::common::wait_for("the status service in its group", Duration::from_secs(60), || {
        let members = pizza::group_offsets::members(&transport, &group)
            .unwrap()
            .map_or(0, |m| m.0);
        async move { members > 0 }
    })
    .await;
    let reset = ["offsets", "reset", "--group", &group, "--to-earliest"];
    let (ok, text) = pizza_on(&brokers, &[&reset[..], &["--execute"]].concat());
    assert!(
        !ok && text.contains("member"),
        "refused while the group has a member: {text}"
    );
    status.stop();

    // A dry run commits nothing; --execute moves the group back to the start of its topics.
    let (ok, text) = pizza_on(&brokers, &reset);
    assert!(ok && text.contains("dry run"), "{text}");
    assert_eq!(lag_of(&brokers, &group), 0);
    let (ok, text) = pizza_on(&brokers, &[&reset[..], &["--execute"]].concat());
    assert!(ok, "{text}");
    let backlog = lag_of(&brokers, &group);
    // 11 orders (10 and the ready one), each a pizza-ordered and at least four statuses.
    assert!(
        backlog >= 11 * 5,
        "the group has its topics to read again: {backlog}"
    );

    // The status service's group judges them all again, and its view (folded from the whole
    // log by its own follower, whatever the group's offsets) equals the rebuilt one.
    let mut status = ServeProc::start("status", &brokers, fresh.path());
    crate::common::wait_for("the replay", Duration::from_secs(90), || {
        let lag = lag_of(&brokers, &group);
        async move { lag == 0 }
    })
    .await;
    let (equal, text) = equals_its_rebuild(&brokers, &fresh.path().join("orders.db")).await;
    status.stop();
    assert!(equal, "the replayed view equals the rebuilt one: {text}");

    other_targets_move_the_group(&brokers, &group, backlog);
}

/// The reset targets besides the earliest: back by 3 on one topic (at most 3 a partition), by
/// time to the start (the first record is later than 0) and past the end (none that late: the
/// end). `backlog` is the group's lag at the earliest offsets.
fn other_targets_move_the_group(brokers: &str, group: &str, backlog: i64) {
    let shift = [
        "offsets",
        "reset",
        "--group",
        group,
        "--topic",
        "pizza-status",
        "--shift-by",
        "-3",
    ];
    let (ok, text) = pizza_on(brokers, &[&shift[..], &["--execute"]].concat());
    assert!(ok, "{text}");
    let back = lag_of(brokers, group);
    assert!(back > 0 && back <= 3 * 6, "{back}");
    for (at, lag) in [("0", backlog), ("2100-01-01T00:00:00Z", 0)] {
        let (ok, text) = pizza_on(
            brokers,
            &[
                "offsets",
                "reset",
                "--group",
                group,
                "--to-datetime",
                at,
                "--execute",
            ],
        );
        assert!(ok, "{text}");
        assert_eq!(lag_of(brokers, group), lag, "to {at}");
    }
}

/// Under the consumer group protocol (KIP-848) the classic DescribeGroups does not show the group's
/// members, and the coordinator's refusal of an outside commit is what stops a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(kafka_runs),
    ignore = "needs Java 17, and Maven or the Kafka jars in target/kafka (services/build.rs)"
)]
async fn an_offsets_reset_is_refused_while_a_member_of_the_consumer_group_protocol_runs() {
    let kafka =
        on_kafka("kafka::an_offsets_reset_is_refused_while_a_member_of_the_consumer_group_protocol_runs");
    let brokers = kafka.bootstrap_servers().to_owned();
    let dir = data_dir();
    let ini = crate::crash::write_kafka_ini(dir.path(), &kafka.props().with("group.protocol", "consumer"));
    let mut status = ServeProc::start_with("status", &["--kafka-config", ini.to_str().unwrap()], dir.path());
    let reset = [
        "offsets",
        "reset",
        "--group",
        "pizza_status",
        "--to-earliest",
        "--execute",
    ];
    // Before the member has joined a reset may pass (the group is empty), or fail while the new
    // cluster makes its offsets topic; once the member has joined, it is refused for that.
    crate::common::wait_for(
        "a reset refused: the group has members",
        Duration::from_secs(60),
        || {
            let (ok, text) = pizza_on(&brokers, &reset);
            async move { !ok && text.contains("has members") }
        },
    )
    .await;
    status.stop();
    let (ok, text) = pizza_on(&brokers, &reset);
    assert!(ok, "a stopped group may be reset: {text}");
}

/// `pizza ARGS --brokers BROKERS`: whether it succeeded, and what it said (stdout, then stderr).
/// Whether the live view at `live` equals `pizza view rebuild`'s, with what the last compare
/// said. A view's follower may still be reading: compared again, a second apart, for at most 30 s.
async fn equals_its_rebuild(brokers: &str, live: &Path) -> (bool, String) {
    let rebuilt = live.with_file_name("rebuilt.db");
    let mut last = (false, String::new());
    for _ in 0..30 {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", rebuilt.display()));
        }
        let args = [
            "view",
            "rebuild",
            "--out",
            rebuilt.to_str().unwrap(),
            "--compare",
            live.to_str().unwrap(),
        ];
        last = pizza_on(brokers, &args);
        if last.0 && last.1.contains("equal to") {
            return (true, last.1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (false, last.1)
}

fn pizza_on(brokers: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_pizza"))
        .args(args)
        .args(["--brokers", brokers])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The lag `pizza offsets show --group GROUP` reports.
fn lag_of(brokers: &str, group: &str) -> i64 {
    let (ok, text) = pizza_on(brokers, &["offsets", "show", "--group", group]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("group {group}: lag ")))
        .unwrap_or_else(|| panic!("no line for {group}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `pizza serve SERVICE` as a process, stopped with SIGTERM (and killed if the test ends first).
struct ServeProc(std::process::Child);

impl ServeProc {
    fn start(service: &str, brokers: &str, dir: &Path) -> ServeProc {
        ServeProc::start_with(service, &["--brokers", brokers], dir)
    }

    /// With `kafka`: `--brokers B` or `--kafka-config FILE`.
    fn start_with(service: &str, kafka: &[&str], dir: &Path) -> ServeProc {
        let log = std::fs::File::create(dir.join(format!("{service}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pizza"))
            .args(["serve", service, "--time-scale", "0", "--data-dir"])
            .arg(dir)
            .args(kafka)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        ServeProc(child)
    }

    fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "a graceful stop: {status:?}");
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
