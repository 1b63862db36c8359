//! What a record on one of the shop's topics means, judged once for every service: the key must
//! be an order id, the value the topic's event, and the event must pass the checks of the service
//! that consumes the topic (a non-empty `customer_id` for assemble and deliver, a `baking_time`
//! bake will bake). Merge and the view's rebuild judge with the same function, so an event that a
//! consumer dead-letters never reaches pizza-status or the view by another way.

use crate::config::Topics;
use crate::domain::{decode, decode_baked, Assembled, Malformed, OrderId, Ordered, StatusEvent, StatusOnly};
use crate::transport::Record;

/// The event's own timestamp, else the record's, else 0 (older events carry none).
pub fn event_ts(own: Option<i64>, rec: &Record) -> i64 {
    own.or(rec.timestamp_ms).unwrap_or(0)
}

/// The longest baking time accepted, in seconds: a larger one is a broken event, not a slow oven.
pub const MAX_BAKING_SECS: i64 = 3600;

/// A record's event, by topic.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Ordered(Ordered),
    Assembled(Assembled),
    /// `None` for the older form's empty value.
    Baked(Option<StatusOnly>),
    Delivered(StatusOnly),
    Pending(StatusOnly),
    Status(StatusEvent),
}

/// The record's key as an order id: 8 lower-case hex characters (`docs/wire.md`).
pub fn order_key(rec: &Record) -> Result<OrderId, Malformed> {
    let Some(key) = rec.key.as_deref() else {
        return Err(Malformed("record has no key (order_id)".into()));
    };
    std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse::<OrderId>().ok())
        .ok_or_else(|| {
            let shown = String::from_utf8_lossy(&key[..key.len().min(32)]).into_owned();
            Malformed(format!(
                "record key is not an order id (8 lower-case hex characters): {shown:?}{} ({} bytes)",
                if key.len() > 32 { "..." } else { "" },
                key.len()
            ))
        })
}

/// Judges a record of any of the shop's consumed topics; a record of any other topic is malformed.
pub fn parse(topics: &Topics, rec: &Record) -> Result<(OrderId, Event), Malformed> {
    let order_id = order_key(rec)?;
    if rec.payload.is_none() && rec.topic != topics.baked {
        return Err(Malformed("record has no value (a tombstone)".into()));
    }
    let payload = rec.payload();
    let event = if rec.topic == topics.ordered {
        let e: Ordered = decode(payload)?;
        if e.order.customer_id.is_empty() {
            return Err(Malformed("order.customer_id is empty".into()));
        }
        Event::Ordered(e)
    } else if rec.topic == topics.assembled {
        let e: Assembled = decode(payload)?;
        if !(0..=MAX_BAKING_SECS).contains(&e.baking_time) {
            return Err(Malformed(format!(
                "baking_time {} is outside 0..={MAX_BAKING_SECS}",
                e.baking_time
            )));
        }
        Event::Assembled(e)
    } else if rec.topic == topics.baked {
        // The older form leaves pizza-baked empty (or null): the topic says what happened.
        Event::Baked(decode_baked(payload)?)
    } else if rec.topic == topics.delivered {
        Event::Delivered(decode(payload)?)
    } else if rec.topic == topics.pending {
        Event::Pending(decode(payload)?)
    } else if rec.topic == topics.status {
        Event::Status(decode(payload)?)
    } else {
        return Err(Malformed(format!(
            "topic {} is not one the shop consumes",
            rec.topic
        )));
    };
    Ok((order_id, event))
}

/// Whether `rec` sits where no ordinary producer puts its key among the topic's `partitions`
/// (neither Java's murmur2 partitioner, as the shop's producers place them, nor librdkafka's
/// default CRC-32 one, as a Python producer left at its defaults does): a record there was put
/// there by hand, and is not the order's record, whatever it says (an order's id written with
/// another customer on another partition would otherwise take the order over in every view
/// that read it first). A record without a key is judged by `parse`.
pub fn misplaced(rec: &Record, partitions: i32) -> Option<Malformed> {
    let why = crate::partitioner::misplaced(rec.key.as_deref()?, rec.partition, partitions)?;
    Some(Malformed(format!("{why}: not the order's record")))
}

/// A record on a topic its service does not read (a misconfigured topic list).
pub fn unexpected(rec: &Record) -> Malformed {
    Malformed(format!("this service does not handle topic {}", rec.topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, key: Option<&[u8]>, payload: Option<&[u8]>) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
            headers: vec![],
            timestamp_ms: Some(1),
        }
    }

    #[test]
    fn a_record_off_its_keys_partition_is_misplaced() {
        let mut r = rec("pizza-ordered", Some(b"abc"), Some(b"{}"));
        // "abc" belongs on partition 3 of 6 (the spec's vector).
        r.partition = 3;
        assert!(misplaced(&r, 6).is_none());
        r.partition = 4;
        let why = misplaced(&r, 6).unwrap();
        assert!(why.0.contains("belongs on 3"), "{why}");
        r.key = None;
        assert!(misplaced(&r, 6).is_none(), "no key: parse judges it");
    }

    #[test]
    fn keys_must_be_order_ids() {
        let t = Topics::default();
        let ok = br#"{"status":300}"#;
        assert!(parse(&t, &rec("pizza-baked", Some(b"0000abcd"), Some(ok))).is_ok());
        for key in [
            None,
            Some(&b""[..]),
            Some(b"ABCDEF12"),
            Some(b"0000abcd0"),
            Some(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"),
        ] {
            let err = parse(&t, &rec("pizza-baked", key, Some(ok))).unwrap_err();
            assert!(err.0.starts_with("record"), "{key:?}: {err}");
        }
        let long = vec![b'a'; 200_000];
        let err = parse(&t, &rec("pizza-baked", Some(&long), Some(ok))).unwrap_err();
        assert!(
            err.0.len() < 200,
            "the reason does not carry the key: {}",
            err.0.len()
        );
    }

    #[test]
    fn each_topic_is_judged_as_its_consumer_judges_it() {
        let t = Topics::default();
        let k = Some(&b"0000abcd"[..]);
        let bad = |topic: &str, payload: &[u8]| parse(&t, &rec(topic, k, Some(payload))).is_err();
        assert!(bad(
            "pizza-assembled",
            br#"{"status":200,"baking_time":1000000000000000}"#
        ));
        assert!(bad("pizza-assembled", br#"{"status":200,"baking_time":-1}"#));
        assert!(!bad("pizza-assembled", br#"{"status":200,"baking_time":3600}"#));
        let no_customer = br#"{"status":100,"order":{"extra_toppings":[],"sauce":"a","cheese":"b","main_topping":"c","customer_id":"","username":"u"}}"#;
        assert!(bad("pizza-ordered", no_customer));
        assert!(bad("pizza-status", br#"{"STATUS":"200"}"#));
        assert!(bad("pizza-delivered", br#"{"status":999}{"status":999}"#));
        assert!(bad("pizza-other", br#"{"status":999}"#));
        // Tombstones: only pizza-baked's older form has no value.
        assert!(parse(&t, &rec("pizza-ordered", k, None)).is_err());
        assert_eq!(
            parse(&t, &rec("pizza-baked", k, None)).unwrap().1,
            Event::Baked(None)
        );
    }
}
