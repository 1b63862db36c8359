//! The guide's example (`docs/guide.md`): a one-service application on the framework. `greet`
//! reads names from `names` and writes `hello, <name>` to `greetings`, keyed as the name was; a
//! record that is not a name (not UTF-8, empty, longer than 64 bytes) goes to `greeter-dlq`.
//!
//! Everything the framework gives it (at-least-once, per-key order, dead-lettering, restarts)
//! comes from [`run_worker`]; what is its own is the handler, the topology, and for the
//! simulation a workload and one invariant ([`every_name_greeted`]).

use std::sync::Arc;

use framework::app::{Application, Instance, Stopped};
use framework::error::Malformed;
use framework::shutdown::Shutdown;
use framework::transport::{OutRecord, Record, Transport};
use framework::worker::{run_worker, HandleError, Handler, WorkerConfig, WorkerStats};

pub const NAMES: &str = "names";
pub const GREETINGS: &str = "greetings";
pub const DLQ: &str = "greeter-dlq";
pub const GROUP: &str = "greeter";

/// The greeting for a name, or why the record is not one.
pub fn greeting(name: &[u8]) -> Result<String, Malformed> {
    let name = std::str::from_utf8(name).map_err(|_| Malformed("a name is UTF-8".into()))?;
    if name.is_empty() || name.len() > 64 {
        return Err(Malformed(format!("a name has 1 to 64 bytes, not {}", name.len())));
    }
    Ok(format!("hello, {name}"))
}

/// The service's handler: one greeting per name, durable before the name is done.
pub struct Greet<T>(pub T);

impl<T: Transport> Handler for Greet<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let text = greeting(rec.payload())?;
        let key = rec.key.clone().unwrap_or_default();
        self.0
            .produce(OutRecord::new(GREETINGS, key, text.into_bytes()))
            .await?;
        Ok(())
    }
}

/// The application: its topics, its one service, and how an instance of it runs.
pub struct Greeter;

impl Application for Greeter {
    fn topics(&self) -> Vec<String> {
        [NAMES, GREETINGS, DLQ].map(String::from).to_vec()
    }

    fn services(&self) -> Vec<String> {
        vec!["greet".into()]
    }

    async fn run<T: Transport>(
        &self,
        _: &str,
        transport: T,
        _: Instance,
        shutdown: Shutdown,
    ) -> Result<(), Stopped> {
        let cfg = WorkerConfig::new("greet", GROUP, &[NAMES], DLQ);
        let handler = Arc::new(Greet(transport.clone()));
        Ok(run_worker(
            transport,
            cfg,
            handler,
            Arc::new(WorkerStats::default()),
            shutdown,
        )
        .await?)
    }
}

/// The invariant, on (key, value) pairs as either world reads them from the log: every name has
/// its greeting under its key (at least once, each copy the same), and every greeting is of a
/// name. Returns what is wrong.
pub fn every_name_greeted(names: &[(Vec<u8>, Vec<u8>)], greetings: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    let expected: Vec<(&[u8], String)> = names
        .iter()
        .filter_map(|(k, v)| Some((k.as_slice(), greeting(v).ok()?)))
        .collect();
    let mut wrong = Vec::new();
    for (key, text) in &expected {
        if !greetings.iter().any(|(k, v)| k == key && v == text.as_bytes()) {
            wrong.push(format!("{} was never greeted", String::from_utf8_lossy(key)));
        }
    }
    for (key, value) in greetings {
        if !expected
            .iter()
            .any(|(k, t)| k == key && t.as_bytes() == value.as_slice())
        {
            let (k, v) = (String::from_utf8_lossy(key), String::from_utf8_lossy(value));
            wrong.push(format!("{k}: `{v}` greets no name of that key"));
        }
    }
    wrong
}

/// The simulation's side: the inputs a seed draws, and the invariant read from the broker.
#[cfg(madsim)]
pub mod sim {
    use std::time::Duration;

    use framework::probes::Hits;
    use framework::transport::{OutRecord, Transport};
    use framework_sim::broker::Broker;
    use framework_sim::node::SimTransport;
    use framework_sim::rng::SplitMix64;
    use framework_sim::world::{Violation, Workload};

    use super::*;

    impl Workload for Greeter {
        /// 200 names, one in ten not a name; each written until the broker takes it.
        async fn feed(&self, mut rng: SplitMix64, t: SimTransport) {
            for n in 0..200 {
                tokio::time::sleep(Duration::from_millis(rng.between(20, 300))).await;
                let name: Vec<u8> = match rng.below(10) {
                    0 => vec![0xff, 0xfe],
                    _ => (0..rng.between(1, 12))
                        .map(|_| b'a' + rng.below(26) as u8)
                        .collect(),
                };
                let rec = OutRecord::new(NAMES, format!("n{n}"), name);
                // Until the broker takes it, for at most 5 minutes (the faults last less).
                for _ in 0..600 {
                    if t.produce(rec.clone()).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }

        fn groups(&self) -> Vec<(String, Vec<String>)> {
            vec![(GROUP.into(), vec![NAMES.into()])]
        }

        fn dead_letter_topics(&self) -> Vec<String> {
            vec![DLQ.into()]
        }

        fn check(&self, b: &Broker, _: &Hits) -> Vec<Violation> {
            let read = |topic| -> Vec<(Vec<u8>, Vec<u8>)> {
                let log = b.log(topic).into_iter().flatten();
                log.map(|(_, r)| (r.key().to_vec(), r.payload().to_vec()))
                    .collect()
            };
            let wrong = every_name_greeted(&read(NAMES), &read(GREETINGS));
            wrong
                .into_iter()
                .map(|w| Violation::new("every-name-greeted", w))
                .collect()
        }
    }
}
