//! Hostile records: what a careless or malicious producer can put on the topics the shop consumes,
//! and what the shop must do with each. One catalogue, used by the simulation (the `hostile`
//! scenario and swarm mix these into normal traffic) and by the integration tests (which produce
//! every one of them onto a real broker), so both hunt the same class of bug.
//!
//! The rule they check: no record stops a service. A record that is not the topic's event (as
//! judged by [`crate::event::parse`]) is dead-lettered by every service that consumes
//! its topic; a valid one is handled like any other; one over the size limit is refused by the
//! broker (or the producer) and reaches no one.

use crate::config::Topics;
use crate::domain::{customer_id_for, encode, Assembled, Order, OrderId, Ordered, StatusEvent, StatusOnly};
use crate::transport::RawRecord;

/// The header the simulation tags its hostile records with (the value is the record's number), so
/// its checker can find them in the log whatever the producer was told.
pub const TAG_HEADER: &str = "sim.hostile";

/// What the shop must do with a hostile record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Every service that consumes its topic dead-letters it, and goes on.
    DeadLettered,
    /// It is a valid event (whatever else is odd about it): handled like any other. A valid order
    /// must be delivered.
    Handled,
    /// Larger than the broker's `message.max.bytes`: the produce is refused.
    Refused,
}

/// A kind of hostile record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A valid order whose headers have keys that are not UTF-8, NUL bytes, null values, and
    /// spoofed `dlq.*` names.
    HeaderBytes,
    /// A value that is not JSON, so large that the record fits the limit but its dead-letter copy
    /// (which adds headers) does not.
    HugeValue,
    /// One byte over the limit.
    OverLimit,
    /// A key that is not UTF-8.
    NonUtf8Key,
    /// A key of 200,000 characters.
    LongKey,
    /// A UTF-8 key that is not 8 lower-case hex characters.
    NotAnOrderId,
    /// No key at all (null).
    NoKey,
    /// No value at all (null): a tombstone (pizza-baked's older form is exactly that, so not there).
    Tombstone,
    /// The topic's event cut in half.
    TruncatedJson,
    /// The topic's event twice in one value.
    DuplicatedJson,
    /// The right fields with the wrong JSON types.
    WrongTypes,
    /// Numbers too large for their fields (or a baking time of 10^15 seconds).
    HugeNumbers,
    /// 10,000 nested arrays.
    DeepNesting,
    /// A JSON string that is not UTF-8.
    NotUtf8Value,
    /// An order with an empty `customer_id`.
    EmptyCustomer,
    /// A status code the shop does not know: valid, ignored by the view.
    UnknownStatus,
    /// The topic's event, valid, on a partition its key does not belong on (written there by
    /// hand): not the order's record. On pizza-ordered, with another customer: taking the order
    /// over in every view that read it first, before issue 25.
    Misplaced,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::HeaderBytes,
        Kind::HugeValue,
        Kind::OverLimit,
        Kind::NonUtf8Key,
        Kind::LongKey,
        Kind::NotAnOrderId,
        Kind::NoKey,
        Kind::Tombstone,
        Kind::TruncatedJson,
        Kind::DuplicatedJson,
        Kind::WrongTypes,
        Kind::HugeNumbers,
        Kind::DeepNesting,
        Kind::NotUtf8Value,
        Kind::EmptyCustomer,
        Kind::UnknownStatus,
        Kind::Misplaced,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::HeaderBytes => "header-bytes",
            Kind::HugeValue => "huge-value",
            Kind::OverLimit => "over-limit",
            Kind::NonUtf8Key => "non-utf8-key",
            Kind::LongKey => "long-key",
            Kind::NotAnOrderId => "not-an-order-id",
            Kind::NoKey => "no-key",
            Kind::Tombstone => "tombstone",
            Kind::TruncatedJson => "truncated-json",
            Kind::DuplicatedJson => "duplicated-json",
            Kind::WrongTypes => "wrong-types",
            Kind::HugeNumbers => "huge-numbers",
            Kind::DeepNesting => "deep-nesting",
            Kind::NotUtf8Value => "not-utf8-value",
            Kind::EmptyCustomer => "empty-customer",
            Kind::UnknownStatus => "unknown-status",
            Kind::Misplaced => "misplaced",
        }
    }
}

/// A hostile record and what the shop must do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hostile {
    pub kind: Kind,
    pub record: RawRecord,
    pub expect: Expect,
}

/// Where a hostile record goes and what it is made of.
#[derive(Clone, Debug)]
pub struct Spec<'a> {
    pub topics: &'a Topics,
    pub topic: &'a str,
    /// The key of kinds that need a valid one. A fresh id: a [`Expect::Handled`] order is a real
    /// order, and an unknown status must not land on a real one.
    pub order_id: &'a OrderId,
    /// The events' timestamp.
    pub ts_ms: i64,
    /// The broker's (and producer's) `message.max.bytes`.
    pub max_record_bytes: usize,
    /// The topic's partition count (where a key belongs).
    pub partitions: i32,
    /// Headers every record carries besides its own (the simulation's tag).
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The topic's event, valid, as JSON.
fn valid_event(topics: &Topics, topic: &str, ts: i64) -> Vec<u8> {
    let status = |status| {
        encode(&StatusOnly {
            status,
            timestamp: Some(ts),
        })
    };
    if topic == topics.ordered {
        encode(&Ordered {
            status: 100,
            timestamp: Some(ts),
            order: Order {
                extra_toppings: vec!["Mushroom".into()],
                sauce: "Tomato".into(),
                cheese: "Mozzarella".into(),
                main_topping: "Pepperoni".into(),
                customer_id: customer_id_for("hostile"),
                username: "hostile".into(),
            },
        })
    } else if topic == topics.assembled {
        encode(&Assembled {
            status: 200,
            baking_time: 9,
            timestamp: Some(ts),
        })
    } else if topic == topics.baked {
        status(300)
    } else if topic == topics.delivered {
        status(999)
    } else if topic == topics.pending {
        status(150)
    } else {
        encode(&StatusEvent {
            status: 200,
            timestamp: Some(ts),
            observed_status: None,
        })
    }
}

/// The hostile record of `kind` for `spec.topic`; `None` when that kind means nothing there.
pub fn make(kind: Kind, spec: &Spec<'_>) -> Option<Hostile> {
    let t = spec.topics;
    let topic = spec.topic;
    let is = |name: &String| topic == name;
    let status_field = if is(&t.status) { "STATUS" } else { "status" };
    let valid = valid_event(t, topic, spec.ts_ms);
    let key = Some(spec.order_id.as_str().as_bytes().to_vec());
    let mut headers = spec.headers.clone();
    let dead = Expect::DeadLettered;
    let (key, payload, expect) = match kind {
        Kind::HeaderBytes if is(&t.ordered) => {
            headers.extend([
                (b"\xff\xfe\x00key".to_vec(), Some(b"\x00\xffvalue".to_vec())),
                (Vec::new(), Some(b"empty key".to_vec())),
                (b"null-value".to_vec(), None),
                (b"dlq.reason".to_vec(), Some(b"spoofed".to_vec())),
                (b"dlq.source.offset".to_vec(), Some(b"-1".to_vec())),
                ("\u{202e}bidi".as_bytes().to_vec(), Some(vec![0; 64])),
            ]);
            headers.extend((0..40).map(|i| (format!("h{i}").into_bytes(), Some(vec![i as u8; 16]))));
            (key, Some(valid), Expect::Handled)
        }
        Kind::HeaderBytes => return None,
        Kind::HugeValue | Kind::OverLimit => return Some(sized(kind, spec, key, headers)),
        Kind::NonUtf8Key => (
            Some(b"\xff\xfe\xfd\xfc\x00\x80\x81\x82".to_vec()),
            Some(valid),
            dead,
        ),
        Kind::LongKey => (Some(vec![b'a'; 200_000]), Some(valid), dead),
        Kind::NotAnOrderId => (Some(b"ORDER-1".to_vec()), Some(valid), dead),
        Kind::NoKey => (None, Some(valid), dead),
        Kind::Tombstone if is(&t.baked) => return None,
        Kind::Tombstone => (key, None, dead),
        Kind::TruncatedJson => (key, Some(valid[..valid.len() / 2].to_vec()), dead),
        Kind::DuplicatedJson => (key, Some([&valid[..], &valid[..]].concat()), dead),
        Kind::WrongTypes | Kind::HugeNumbers | Kind::DeepNesting | Kind::NotUtf8Value => {
            (key, Some(bad_json(kind, t, topic, status_field)?), dead)
        }
        Kind::EmptyCustomer if is(&t.ordered) => {
            let mut e: Ordered = serde_json::from_slice(&valid).expect("the valid order parses");
            e.order.customer_id.clear();
            (key, Some(encode(&e)), dead)
        }
        Kind::EmptyCustomer => return None,
        // Bake and deliver would act on a valid event for an order nobody placed; only where the
        // code goes no further than the view (which ignores it) is an unknown status harmless.
        Kind::UnknownStatus if is(&t.delivered) || is(&t.pending) || is(&t.status) => {
            let v = format!(r#"{{"{status_field}":12345,"timestamp":{}}}"#, spec.ts_ms);
            (key, Some(v.into_bytes()), Expect::Handled)
        }
        Kind::UnknownStatus => return None,
        Kind::Misplaced => return misplaced(spec, key, valid, headers),
    };
    Some(Hostile {
        kind,
        record: RawRecord {
            topic: topic.to_owned(),
            partition: None,
            key,
            payload,
            headers,
        },
        expect,
    })
}

/// The topic's valid event on the partition after the one its key belongs on; `None` with one
/// partition, where every record is where its key belongs.
fn misplaced(
    spec: &Spec<'_>,
    key: Option<Vec<u8>>,
    valid: Vec<u8>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Option<Hostile> {
    let k = key.as_deref()?;
    // Where neither murmur2 nor librdkafka's CRC-32 puts the key (none with two partitions or
    // fewer, when those two differ).
    let wrong =
        (0..spec.partitions).find(|p| crate::partitioner::misplaced(k, *p, spec.partitions).is_some())?;
    Some(Hostile {
        kind: Kind::Misplaced,
        record: RawRecord {
            topic: spec.topic.to_owned(),
            partition: Some(wrong),
            key,
            payload: Some(valid),
            headers,
        },
        expect: Expect::DeadLettered,
    })
}

/// A value that is not the topic's event: JSON of the wrong shape, numbers no field holds, nesting
/// deeper than a parser allows, bytes that are not UTF-8.
fn bad_json(kind: Kind, t: &Topics, topic: &str, status_field: &str) -> Option<Vec<u8>> {
    let is = |name: &String| topic == name;
    let v = match kind {
        Kind::WrongTypes => {
            let v = if is(&t.ordered) {
                r#"{"status":"100","timestamp":"now","order":"pizza"}"#.to_owned()
            } else if is(&t.assembled) {
                r#"{"status":200,"baking_time":"9","timestamp":1}"#.to_owned()
            } else {
                format!(r#"{{"{status_field}":"300","timestamp":[]}}"#)
            };
            v.into_bytes()
        }
        Kind::HugeNumbers => {
            let v = if is(&t.assembled) {
                r#"{"status":200,"baking_time":1000000000000000,"timestamp":1}"#.to_owned()
            } else {
                format!(r#"{{"{status_field}":99999999999999999999999,"timestamp":1e300}}"#)
            };
            v.into_bytes()
        }
        Kind::DeepNesting => {
            let v = format!(
                r#"{{"{status_field}":{}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            );
            v.into_bytes()
        }
        Kind::NotUtf8Value => {
            let mut v = format!(r#"{{"{status_field}":300,"note":""#).into_bytes();
            v.extend_from_slice(b"\xff\xfe\"}");
            v
        }
        _ => return None,
    };
    Some(v)
}

/// A record sized against the producer's limit: just under it (too large to dead-letter whole),
/// or just over it (refused).
fn sized(
    kind: Kind,
    spec: &Spec<'_>,
    key: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Hostile {
    let mut r = RawRecord {
        topic: spec.topic.to_owned(),
        partition: None,
        key,
        payload: Some(Vec::new()),
        headers,
    };
    let room = spec.max_record_bytes.saturating_sub(r.size());
    // Huge: 100 bytes under the limit (producers count a few dozen bytes of framing on top), less
    // than the ~150 bytes of headers a dead-letter copy adds.
    let (len, expect) = match kind {
        Kind::HugeValue => (room.saturating_sub(100), Expect::DeadLettered),
        _ => (room + 1, Expect::Refused),
    };
    r.payload = Some(vec![b'~'; len]);
    Hostile {
        kind,
        record: r,
        expect,
    }
}

/// The topics the shop consumes: where hostile records go.
pub fn consumed_topics(topics: &Topics) -> [&str; 6] {
    [
        &topics.ordered,
        &topics.assembled,
        &topics.baked,
        &topics.delivered,
        &topics.pending,
        &topics.status,
    ]
}

/// Every (kind, topic) pair that means something on topics of `partitions` partitions, with what
/// the shop must do: the whole catalogue.
pub fn pairs(topics: &Topics, partitions: i32) -> Vec<(Kind, String, Expect)> {
    let id = OrderId::from_u32(0);
    let mut out = Vec::new();
    for topic in consumed_topics(topics) {
        for kind in Kind::ALL {
            let spec = Spec {
                topics,
                topic,
                order_id: &id,
                ts_ms: 0,
                max_record_bytes: 1000,
                partitions,
                headers: Vec::new(),
            };
            if let Some(h) = make(kind, &spec) {
                out.push((kind, topic.to_owned(), h.expect));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{misplaced, parse};
    use crate::transport::{header_from_raw, Record};

    fn as_consumed(r: &RawRecord) -> Record {
        let partition = match (&r.partition, &r.key) {
            (Some(p), _) => *p,
            (None, Some(k)) => crate::partitioner::partition_for(k, 6),
            (None, None) => 0,
        };
        Record {
            topic: r.topic.clone(),
            partition,
            offset: 0,
            key: r.key.clone(),
            payload: r.payload.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| header_from_raw(k, v.as_deref()))
                .collect(),
            timestamp_ms: Some(1),
        }
    }

    /// Each record is what it says: dead-lettered ones fail the services' judgement, handled ones
    /// pass it, refused ones are over the limit and the huge one is just under.
    #[test]
    fn the_catalogue_means_what_it_says() {
        let topics = Topics::default();
        let pairs = pairs(&topics, 6);
        assert!(pairs.iter().any(|(k, ..)| *k == Kind::Misplaced));
        assert!(super::pairs(&topics, 1)
            .iter()
            .all(|(k, ..)| *k != Kind::Misplaced));
        assert!(pairs.len() > 60, "{}", pairs.len());
        let id = OrderId::from_u32(7);
        for (kind, topic, expect) in pairs {
            let spec = Spec {
                topics: &topics,
                topic: &topic,
                order_id: &id,
                ts_ms: 5,
                max_record_bytes: 1_000_000,
                partitions: 6,
                headers: vec![(TAG_HEADER.as_bytes().to_vec(), Some(b"1".to_vec()))],
            };
            let h = make(kind, &spec).unwrap();
            assert_eq!(h.expect, expect);
            let consumed = as_consumed(&h.record);
            let judged = match misplaced(&consumed, 6) {
                Some(why) => Err(why),
                None => parse(&topics, &consumed).map(|_| ()),
            };
            match h.expect {
                Expect::DeadLettered => assert!(judged.is_err(), "{kind:?} on {topic}: {judged:?}"),
                Expect::Handled => assert!(judged.is_ok(), "{kind:?} on {topic}: {judged:?}"),
                Expect::Refused => assert_eq!(h.record.size(), 1_000_001, "{kind:?}"),
            }
            if kind == Kind::HugeValue {
                assert!((999_800..1_000_000).contains(&h.record.size()));
            }
            assert!(h.record.headers.iter().any(|(k, _)| k == TAG_HEADER.as_bytes()));
        }
    }
}
