//! The same pipeline against tansu, an independent Kafka-protocol broker, started here.
//!
//! Needs the `tansu` binary (`cargo install tansu --locked --features dynostore`, about 8 minutes
//! to build). Apache Kafka itself now runs in every `cargo test` (`kafka.rs`), so this one is
//! ignored unless asked for: `cargo test -p pizza --test it tansu -- --ignored`. Asked for without
//! tansu, it says so on stderr (uncaptured) and passes, except under CI (`CI` set), where it fails.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pizza::admin::{create_topics, TopicOutcome};
use pizza::config::{KafkaProps, SysConfig};
use pizza::transport::kafka::KafkaTransport;

use crate::common::{free_port, wait_for};
use crate::pipeline::{full_pipeline, EndOffsets};

struct Tansu(Child);

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu_binary() -> Option<String> {
    if let Ok(p) = std::env::var("PIZZA_TANSU") {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tansu (cargo install tansu --locked --features dynostore); Apache Kafka runs in kafka.rs"]
async fn orders_reach_delivered_on_tansu() {
    let Some(bin) = tansu_binary() else {
        crate::common::cannot_run(
            "tansu::orders_reach_delivered_on_tansu",
            "tansu is not installed (cargo install tansu --locked --features dynostore)",
        );
    };
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let _tansu = Tansu(child);
    wait_for("tansu to listen", Duration::from_secs(30), || async {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let props = KafkaProps::bootstrap(&format!("127.0.0.1:{port}"));
    let sys = SysConfig::default();
    let admin = KafkaTransport::new(&props, "it-admin").unwrap();
    let created = create_topics(&admin, &sys).await.expect("create topics on tansu");
    assert!(
        created
            .iter()
            .all(|o| matches!(o, TopicOutcome::Created { partitions: 6, .. })),
        "{created:?}"
    );
    // A second run leaves them alone.
    let again = create_topics(&admin, &sys).await.unwrap();
    assert!(
        again
            .iter()
            .all(|o| matches!(o, TopicOutcome::Exists { partitions: 6, .. })),
        "{again:?}"
    );
    full_pipeline(&props, 10, EndOffsets::Unreliable).await;
}
