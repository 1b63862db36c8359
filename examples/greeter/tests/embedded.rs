//! The greeter on the embedded broker (librdkafka's mock cluster): the same application, hosted
//! in this process, judged by the same invariant.

use std::sync::Arc;
use std::time::Duration;

use framework::host::Host;
use framework::transport::kafka::{EmbeddedBroker, KafkaTransport};
use framework::transport::{OutRecord, ReadToEnd, Transport};
use greeter::{every_name_greeted, Greeter, GREETINGS, NAMES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_is_greeted_on_the_embedded_broker() {
    let broker = EmbeddedBroker::with_topics(
        framework::app::Application::topics(&Greeter)
            .iter()
            .map(String::as_str),
        3,
    )
    .expect("the mock cluster starts");
    let props = broker.props();
    let dir = tempfile::tempdir().expect("a data directory");
    let connect = |name: &str| KafkaTransport::new(&props, name);
    let host = Host::start(Arc::new(Greeter), connect, dir.path(), 2).expect("the services start");

    let t = KafkaTransport::new(&props, "feeder").expect("a client");
    let mut names = Vec::new();
    for n in 0..50 {
        let name = if n % 10 == 0 {
            vec![0xff]
        } else {
            format!("name{n}").into_bytes()
        };
        t.produce(OutRecord::new(NAMES, format!("n{n}"), name.clone()))
            .await
            .expect("written");
        names.push((format!("n{n}").into_bytes(), name));
    }
    let mut greetings = Vec::new();
    for _ in 0..100 {
        greetings = read_all(&t, GREETINGS).await;
        if greetings.len() >= 45 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        host.stop(Duration::from_secs(30)).await,
        "the services stopped in time"
    );
    assert_eq!(every_name_greeted(&names, &greetings), Vec::<String>::new());
    assert_eq!(
        greetings.len(),
        45,
        "one greeting per name, none for the 5 that are not"
    );
}

async fn read_all(t: &KafkaTransport, topic: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut log = ReadToEnd::open(t, &[topic]).await.expect("end offsets");
    let mut out = Vec::new();
    while let Some(r) = log.next(t, Duration::from_secs(10)).await.expect("read") {
        out.push((r.key.clone().unwrap_or_default(), r.payload().to_vec()));
    }
    out
}
