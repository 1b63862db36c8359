//! A Kafka client's properties.

/// librdkafka properties: a client's configuration, as `key = value` pairs in the order given (the
/// application reads them from its own files: the pizza shop from a `config_kafka/*.ini` file's
/// `[kafka]` section).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KafkaProps(pub Vec<(String, String)>);

impl KafkaProps {
    /// Just a bootstrap address (the embedded broker, `--brokers`).
    pub fn bootstrap(servers: &str) -> KafkaProps {
        KafkaProps(vec![("bootstrap.servers".into(), servers.into())])
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or("")
    }

    /// A property's value (the last one given, as librdkafka takes it).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// With `key` set to `value` (after any earlier value, so it wins).
    pub fn with(mut self, key: &str, value: &str) -> KafkaProps {
        self.0.push((key.into(), value.into()));
        self
    }
}
