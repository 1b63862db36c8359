//! The original's configuration files, accepted as they are:
//! - `config_kafka/<name>.ini`: `[kafka]` holds librdkafka properties, an optional `[ksqldb]` is ignored.
//! - `config_sys/default.ini`: topics, consumer groups, client ids, status codes and labels, the menu,
//!   and the state stores' settings.
//!
//! The parser follows Python's `configparser` (the original reads these files with it): `[section]`
//! headers, `key = value` or `key: value`, values continued on indented lines, `#` and `;` comments.
//! Every error names the file, and the line or the section and key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::domain::{Menu, StatusCodes, StatusLabels};

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: [{section}] {key}: {message}", path.display())]
    Value {
        path: PathBuf,
        section: String,
        key: String,
        message: String,
    },
    #[error("{}: missing section [{section}]", path.display())]
    MissingSection { path: PathBuf, section: String },
}

/// A parsed ini file: sections of ordered key/value pairs, keys lower-cased as configparser does.
#[derive(Clone, Debug, Default)]
pub struct Ini {
    /// Where it came from, for error messages.
    pub path: PathBuf,
    sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Ini {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Ini, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ini::parse(path, &text)
    }

    /// Parses `text`; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Ini, ConfigError> {
        let syntax = |line: usize, message: &str| ConfigError::Syntax {
            path: path.to_owned(),
            line,
            message: message.to_owned(),
        };
        let mut ini = Ini {
            path: path.to_owned(),
            sections: BTreeMap::new(),
        };
        let mut section: Option<String> = None;
        // The key whose value an indented line continues.
        let mut last_key: Option<(String, usize)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            if trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            let indented = raw.starts_with(' ') || raw.starts_with('\t');
            if indented {
                if let (Some(sec), Some((_, idx))) = (&section, &last_key) {
                    let entry = &mut ini.sections.get_mut(sec).expect("section exists")[*idx];
                    if !entry.1.is_empty() {
                        entry.1.push('\n');
                    }
                    entry.1.push_str(trimmed);
                    continue;
                }
            }
            if let Some(rest) = trimmed.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| syntax(line_no, "section header without a closing `]`"))?
                    .trim();
                if name.is_empty() {
                    return Err(syntax(line_no, "empty section name"));
                }
                ini.sections.entry(name.to_owned()).or_default();
                section = Some(name.to_owned());
                last_key = None;
                continue;
            }
            let Some(sec) = &section else {
                return Err(syntax(line_no, "a key before any [section] header"));
            };
            let split = trimmed
                .find(['=', ':'])
                .ok_or_else(|| syntax(line_no, "expected `key = value`"))?;
            let key = trimmed[..split].trim().to_lowercase();
            if key.is_empty() {
                return Err(syntax(line_no, "empty key"));
            }
            let value = trimmed[split + 1..].trim().to_owned();
            let entries = ini.sections.get_mut(sec).expect("section exists");
            if let Some(idx) = entries.iter().position(|(k, _)| *k == key) {
                entries[idx].1 = value;
                last_key = Some((key, idx));
            } else {
                entries.push((key.clone(), value));
                last_key = Some((key, entries.len() - 1));
            }
        }
        Ok(ini)
    }

    /// The pairs of a section, in file order.
    pub fn section(&self, name: &str) -> Option<&[(String, String)]> {
        self.sections.get(name).map(Vec::as_slice)
    }

    /// One value.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn value_error(&self, section: &str, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::Value {
            path: self.path.clone(),
            section: section.to_owned(),
            key: key.to_owned(),
            message: message.to_string(),
        }
    }

    /// A value parsed as `T`, or `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(
        &self,
        section: &str,
        key: &str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(section, key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| self.value_error(section, key, format!("`{v}`: {e}"))),
        }
    }

    /// A multi-line list value (one item a line, or comma-separated on one line).
    pub(crate) fn list(&self, section: &str, key: &str) -> Option<Vec<String>> {
        let v = self.get(section, key)?;
        let sep = if v.contains('\n') { '\n' } else { ',' };
        Some(
            v.split(sep)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }
}

/// librdkafka properties (the transport's), here read from a `config_kafka/*.ini` file.
pub use crate::transport::KafkaProps;

/// Reads `[kafka]` from a file; `bootstrap.servers` is required.
pub fn load_kafka_props(path: &Path) -> Result<KafkaProps, ConfigError> {
    let ini = Ini::load(path)?;
    let props = ini
        .section("kafka")
        .ok_or_else(|| ConfigError::MissingSection {
            path: path.to_owned(),
            section: "kafka".into(),
        })?
        .to_vec();
    match props.iter().find(|(k, _)| k == "bootstrap.servers") {
        None => Err(ini.value_error("kafka", "bootstrap.servers", "is required")),
        Some((_, v)) if v.is_empty() || v.contains("{{") => Err(ini.value_error(
            "kafka",
            "bootstrap.servers",
            format!("`{v}` is not a host:port list"),
        )),
        Some(_) => Ok(KafkaProps(props)),
    }
}

/// Topic names, from `[kafka-topics]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Topics {
    pub ordered: String,
    pub assembled: String,
    pub baked: String,
    pub delivered: String,
    pub pending: String,
    pub status: String,
    pub dlq: String,
    /// Deliver's state, as facts per order (ours alone: not in the wire spec; see
    /// `services::changelog`).
    pub deliver_changelog: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            ordered: "pizza-ordered".into(),
            assembled: "pizza-assembled".into(),
            baked: "pizza-baked".into(),
            delivered: "pizza-delivered".into(),
            pending: "pizza-pending".into(),
            status: "pizza-status".into(),
            dlq: "pizza-dlq".into(),
            deliver_changelog: "pizza-deliver-changelog".into(),
        }
    }
}

impl Topics {
    /// Every topic to create: the shop's, then deliver's changelog.
    pub fn to_create(&self) -> [&str; 8] {
        let [a, b, c, d, e, f, g] = self.all();
        [a, b, c, d, e, f, g, &self.deliver_changelog]
    }

    /// Every topic of the wire spec, the DLQ last.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.ordered,
            &self.assembled,
            &self.baked,
            &self.delivered,
            &self.pending,
            &self.status,
            &self.dlq,
        ]
    }

    /// The topics a service consumes (none for the web app): the shop's wiring, in one place.
    pub fn consumed_by(&self, service: ServiceName) -> Vec<&str> {
        match service {
            ServiceName::Assemble => vec![&self.ordered],
            ServiceName::Bake => vec![&self.assembled],
            ServiceName::Deliver => vec![&self.ordered, &self.baked],
            ServiceName::Merge => self.sources().to_vec(),
            ServiceName::Status => vec![&self.status, &self.ordered],
            ServiceName::Web => vec![],
        }
    }

    /// The services that consume `topic`: each must dead-letter a malformed record of it.
    pub fn consumers_of(&self, topic: &str) -> Vec<ServiceName> {
        ServiceName::CONSUMERS
            .into_iter()
            .filter(|s| self.consumed_by(*s).contains(&topic))
            .collect()
    }

    /// The five topics whose events the merge stage copies into pizza-status.
    pub fn sources(&self) -> [&str; 5] {
        [
            &self.ordered,
            &self.assembled,
            &self.baked,
            &self.delivered,
            &self.pending,
        ]
    }
}

/// The services, as named on the command line and in the consumer group / client id sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Assemble,
    Bake,
    Deliver,
    Merge,
    Status,
    Web,
}

impl ServiceName {
    /// Every service that consumes, in pipeline order.
    pub const CONSUMERS: [ServiceName; 5] = [
        ServiceName::Assemble,
        ServiceName::Bake,
        ServiceName::Deliver,
        ServiceName::Merge,
        ServiceName::Status,
    ];

    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Assemble => "assemble",
            ServiceName::Bake => "bake",
            ServiceName::Deliver => "deliver",
            ServiceName::Merge => "merge",
            ServiceName::Status => "status",
            ServiceName::Web => "web",
        }
    }

    /// The key in `[kafka-consumer-group-id]` / `[kafka-client-id]`, as the original names them.
    fn config_key(self) -> &'static str {
        match self {
            ServiceName::Assemble => "microservice_assembled",
            ServiceName::Bake => "microservice_baked",
            ServiceName::Deliver => "microservice_delivery",
            ServiceName::Merge => "microservice_merge",
            ServiceName::Status => "microservice_status",
            ServiceName::Web => "webapp",
        }
    }

    fn default_group(self) -> &'static str {
        match self {
            ServiceName::Assemble => "pizza_assemble",
            ServiceName::Bake => "pizza_bake",
            ServiceName::Deliver => "pizza_delivery",
            ServiceName::Merge => "pizza_merge",
            ServiceName::Status => "pizza_status",
            ServiceName::Web => "pizza_webapp",
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [ServiceName::Web]
            .into_iter()
            .chain(ServiceName::CONSUMERS)
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("unknown service `{s}` (assemble, bake, deliver, merge, status, web)"))
    }
}

/// Everything `config_sys/default.ini` says, with the spec's defaults for what it leaves out.
#[derive(Clone, Debug)]
pub struct SysConfig {
    pub topics: Topics,
    /// Partitions of each topic `pizza topics create` makes.
    pub num_partitions: i32,
    pub replication_factor: i32,
    groups: BTreeMap<ServiceName, String>,
    client_ids: BTreeMap<ServiceName, String>,
    pub codes: StatusCodes,
    pub labels: StatusLabels,
    pub menu: Menu,
    /// How often the watchdog looks for stuck orders, in shop seconds.
    pub watchdog_period_secs: f64,
    /// How long an order may sit at one status before it is marked stuck, in shop seconds.
    pub stuck_after_secs: f64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig {
            topics: Topics::default(),
            num_partitions: 6,
            replication_factor: 1,
            groups: BTreeMap::new(),
            client_ids: BTreeMap::new(),
            codes: StatusCodes::default(),
            labels: StatusLabels::default(),
            menu: Menu::default(),
            watchdog_period_secs: 15.0,
            stuck_after_secs: 45.0,
        }
    }
}

impl SysConfig {
    /// Reads `config_sys/default.ini` (or a file of that form).
    pub fn load(path: &Path) -> Result<SysConfig, ConfigError> {
        SysConfig::from_ini(&Ini::load(path)?)
    }

    /// Builds the configuration from a parsed file; absent keys keep their defaults.
    pub fn from_ini(ini: &Ini) -> Result<SysConfig, ConfigError> {
        let mut c = SysConfig::default();
        let t = &mut c.topics;
        for (key, slot) in [
            ("pizza_ordered", &mut t.ordered),
            ("pizza_assembled", &mut t.assembled),
            ("pizza_baked", &mut t.baked),
            ("pizza_delivered", &mut t.delivered),
            ("pizza_pending", &mut t.pending),
            ("pizza_status", &mut t.status),
            ("pizza_dlq", &mut t.dlq),
        ] {
            if let Some(v) = ini.get("kafka-topics", key) {
                if v.is_empty() {
                    return Err(ini.value_error("kafka-topics", key, "empty topic name"));
                }
                *slot = v.to_owned();
            }
        }
        c.num_partitions = ini.parse_or("kafka-topic-config", "num_partitions", c.num_partitions)?;
        if c.num_partitions < 1 {
            return Err(ini.value_error("kafka-topic-config", "num_partitions", "must be at least 1"));
        }
        c.replication_factor =
            ini.parse_or("kafka-topic-config", "replication_factor", c.replication_factor)?;
        if c.replication_factor < 1 {
            return Err(ini.value_error("kafka-topic-config", "replication_factor", "must be at least 1"));
        }
        for name in [ServiceName::Web].into_iter().chain(ServiceName::CONSUMERS) {
            if let Some(v) = ini.get("kafka-consumer-group-id", name.config_key()) {
                c.groups.insert(name, v.to_owned());
            }
            if let Some(v) = ini.get("kafka-client-id", name.config_key()) {
                c.client_ids.insert(name, v.to_owned());
            }
        }
        c.codes = status_codes(ini)?;
        c.labels = status_labels(ini);
        for (key, slot) in [
            ("sauce", &mut c.menu.sauces),
            ("cheese", &mut c.menu.cheeses),
            ("main_topping", &mut c.menu.main_toppings),
            ("extra_toppings", &mut c.menu.extra_toppings),
        ] {
            if let Some(list) = ini.list("pizza", key) {
                if list.is_empty() {
                    return Err(ini.value_error("pizza", key, "the menu needs at least one item"));
                }
                *slot = list;
            }
        }
        // The newer original names the section [state-store-orders], the older [sqlite-orders].
        for section in ["sqlite-orders", "state-store-orders"] {
            let minutes = ini.parse_or(section, "status_watchdog_minutes", c.watchdog_period_secs / 60.0)?;
            c.watchdog_period_secs = minutes * 60.0;
            let minutes = ini.parse_or(
                section,
                "status_invalid_timeout_minutes",
                c.stuck_after_secs / 60.0,
            )?;
            c.stuck_after_secs = minutes * 60.0;
        }
        if !(c.watchdog_period_secs > 0.0 && c.stuck_after_secs > 0.0) {
            return Err(ini.value_error(
                "state-store-orders",
                "status_watchdog_minutes",
                "must be positive",
            ));
        }
        Ok(c)
    }

    /// The consumer group a service joins.
    pub fn group(&self, service: ServiceName) -> &str {
        self.groups
            .get(&service)
            .map(String::as_str)
            .unwrap_or(service.default_group())
    }

    /// The client id a service's Kafka clients use.
    pub fn client_id(&self, service: ServiceName) -> String {
        self.client_ids
            .get(&service)
            .cloned()
            .unwrap_or_else(|| format!("pizza-{service}"))
    }
}

/// `[status-id]`: the codes, each defaulting to the original's.
fn status_codes(ini: &Ini) -> Result<StatusCodes, ConfigError> {
    let mut c = StatusCodes::default();
    for (key, slot) in [
        ("stuck", &mut c.stuck),
        ("order_received", &mut c.order_received),
        ("pending", &mut c.pending),
        ("in_the_oven", &mut c.in_the_oven),
        ("out_for_delivery", &mut c.out_for_delivery),
        ("delivered", &mut c.delivered),
        ("unknown", &mut c.unknown),
        ("something_wrong", &mut c.something_wrong),
        ("cancelled", &mut c.cancelled),
    ] {
        *slot = ini.parse_or("status-id", key, *slot)?;
    }
    Ok(c)
}

/// `[status-label]`: the customer-facing texts, each defaulting to the original's.
fn status_labels(ini: &Ini) -> StatusLabels {
    let mut l = StatusLabels::default();
    for (key, slot) in [
        ("stuck", &mut l.stuck),
        ("order_received", &mut l.order_received),
        ("pending", &mut l.pending),
        ("in_the_oven", &mut l.in_the_oven),
        ("out_for_delivery", &mut l.out_for_delivery),
        ("delivered", &mut l.delivered),
        ("unknown", &mut l.unknown),
        ("something_wrong", &mut l.something_wrong),
        ("cancelled", &mut l.cancelled),
        ("else", &mut l.other),
    ] {
        if let Some(v) = ini.get("status-label", key) {
            *slot = v.to_owned();
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wiring `docs/wire.md` and the README's table give, written out by hand: what each service
    /// reads decides where a malformed record must be dead-lettered, so it must not drift.
    #[test]
    fn each_service_reads_the_topics_of_the_spec() {
        let t = Topics::default();
        assert_eq!(t.consumed_by(ServiceName::Assemble), ["pizza-ordered"]);
        assert_eq!(t.consumed_by(ServiceName::Bake), ["pizza-assembled"]);
        assert_eq!(
            t.consumed_by(ServiceName::Deliver),
            ["pizza-ordered", "pizza-baked"]
        );
        assert_eq!(
            t.consumed_by(ServiceName::Merge),
            [
                "pizza-ordered",
                "pizza-assembled",
                "pizza-baked",
                "pizza-delivered",
                "pizza-pending"
            ]
        );
        assert_eq!(
            t.consumed_by(ServiceName::Status),
            ["pizza-status", "pizza-ordered"]
        );
        assert!(t.consumed_by(ServiceName::Web).is_empty());
        use ServiceName::*;
        assert_eq!(
            t.consumers_of("pizza-ordered"),
            [Assemble, Deliver, Merge, Status]
        );
        assert_eq!(t.consumers_of("pizza-status"), [Status]);
        assert!(t.consumers_of("pizza-dlq").is_empty());
    }

    const ORIGINAL: &str = "[kafka-topics]\npizza_status = pizza-status\npizza_ordered = pizza-ordered\n\n[kafka-consumer-group-id]\nmicroservice_status = pizza_status\nmicroservice_delivery = pizza_delivery\n\n[status-label]\nstuck = Oops! Your order has fallen through the cracks\n\n[pizza]\nsauce =\n    Tomato\n    Pesto\ncheese =\n    Mozzarella\n; a comment\n# another\n[sqlite-orders]\nstatus_watchdog_minutes = 0.25\nstatus_invalid_timeout_minutes = 0.75\nstatus_completed_when = \n    delivered\n    cancelled\n";

    #[test]
    fn reads_the_originals_format() {
        let ini = Ini::parse(Path::new("default.ini"), ORIGINAL).unwrap();
        assert_eq!(ini.get("pizza", "sauce"), Some("Tomato\nPesto"));
        let c = SysConfig::from_ini(&ini).unwrap();
        assert_eq!(c.menu.sauces, ["Tomato", "Pesto"]);
        assert_eq!(c.menu.cheeses, ["Mozzarella"]);
        assert_eq!(c.menu.main_toppings.len(), 6, "absent keys keep the default menu");
        assert_eq!(c.watchdog_period_secs, 15.0);
        assert_eq!(c.stuck_after_secs, 45.0);
        assert_eq!(c.group(ServiceName::Deliver), "pizza_delivery");
        assert_eq!(c.group(ServiceName::Merge), "pizza_merge");
        assert_eq!(c.labels.stuck, "Oops! Your order has fallen through the cracks");
    }

    #[test]
    fn the_shipped_default_ini_is_the_spec() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config_sys/default.ini"));
        let c = SysConfig::load(path).unwrap();
        let d = SysConfig::default();
        assert_eq!(c.topics, d.topics);
        assert_eq!((c.num_partitions, c.replication_factor), (6, 1));
        assert_eq!(c.codes, d.codes);
        assert_eq!(c.labels, d.labels);
        assert_eq!(c.menu, d.menu);
        assert_eq!((c.watchdog_period_secs, c.stuck_after_secs), (15.0, 45.0));
        for s in ServiceName::CONSUMERS {
            assert_eq!(c.group(s), d.group(s));
        }
        assert_eq!(c.client_id(ServiceName::Deliver), "pizza-deliver");
    }

    #[test]
    fn errors_name_the_file_and_line_or_key() {
        let err = Ini::parse(Path::new("x.ini"), "[kafka]\nbootstrap.servers\n").unwrap_err();
        assert_eq!(err.to_string(), "x.ini:2: expected `key = value`");
        let err = Ini::parse(Path::new("x.ini"), "key = 1\n").unwrap_err();
        assert_eq!(err.to_string(), "x.ini:1: a key before any [section] header");
        let ini = Ini::parse(
            Path::new("sys.ini"),
            "[kafka-topic-config]\nnum_partitions = six\n",
        )
        .unwrap();
        let err = SysConfig::from_ini(&ini).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sys.ini: [kafka-topic-config] num_partitions: `six`"),
            "{err}"
        );
    }

    #[test]
    fn kafka_ini_needs_a_real_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("example.ini");
        std::fs::write(
            &p,
            "[kafka]\nbootstrap.servers = {{ host:port }}\nsecurity.protocol = SASL_SSL\n",
        )
        .unwrap();
        let err = load_kafka_props(&p).unwrap_err().to_string();
        assert!(err.contains("[kafka] bootstrap.servers"), "{err}");
        std::fs::write(
            &p,
            "[kafka]\nbootstrap.servers = 127.0.0.1:9092\nsasl.mechanisms = PLAIN\n[ksqldb]\nendpoint = x\n",
        )
        .unwrap();
        let props = load_kafka_props(&p).unwrap();
        assert_eq!(props.bootstrap_servers(), "127.0.0.1:9092");
        assert_eq!(props.0.len(), 2);
        let err = load_kafka_props(&dir.path().join("missing.ini"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.ini"), "{err}");
    }
}
