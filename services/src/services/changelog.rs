//! Deliver's state, kept where every instance of deliver can read it: facts per order in a
//! changelog topic (`pizza-deliver-changelog`), written to the partition of the input they come
//! from, and folded in log order into the instance's own store ([`DeliveryStore`], a cache), by
//! the framework's changelog ([`framework::changelog`]: restored before a partition's record is
//! handled, followed while owned, decided after the log, a new log a new history).
//!
//! What is the shop's: the facts (where an order goes, that it is baked, that a driver was sent
//! out arriving at a given time), their JSON, and **the first claim stands**: a driver goes out
//! only after its claim is read back from the log as the first for its order ([`claim`]), so of
//! two instances that decide at once, one drives and the other re-sends the same
//! pizza-delivered. A claim is made before the drive, with its arrival time, so a crash during
//! the drive does not send a second driver: whoever handles the order next announces the first
//! driver's arrival. The topic is not compacted: it is retained like the shop's own topics.

use serde::{Deserialize, Serialize};

pub use framework::changelog::{FactStore, FOLD_BATCH, WAIT_WITHIN};

use crate::store::{Claim, DeliveryFact, DeliveryStore, StoreError};
use crate::transport::{Record, Transport};
use crate::worker::HandleError;

/// Deliver's changelog, folded into its store.
pub type Changelog<T> = framework::changelog::Changelog<T, DeliveryStore>;

/// A fact as its record's value: JSON with exactly one of the fields.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    baked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_at_ms: Option<i64>,
}

/// A fact's record value.
pub fn encode_fact(fact: &DeliveryFact) -> Vec<u8> {
    let json = match fact {
        DeliveryFact::Customer(c) => FactJson {
            customer_id: Some(c.clone()),
            ..FactJson::default()
        },
        DeliveryFact::Baked => FactJson {
            baked: true,
            ..FactJson::default()
        },
        DeliveryFact::Claimed { at_ms } => FactJson {
            claimed_at_ms: Some(*at_ms),
            ..FactJson::default()
        },
    };
    serde_json::to_vec(&json).expect("a fact serializes")
}

/// A changelog record's order id and fact; `Err` says why it is not one.
pub fn decode_fact(rec: &Record) -> Result<(String, DeliveryFact), String> {
    let order_id = rec.key_str().ok_or("no UTF-8 key")?.to_owned();
    let json: FactJson = serde_json::from_slice(rec.payload()).map_err(|e| e.to_string())?;
    let fact = match json {
        FactJson {
            customer_id: Some(c),
            baked: false,
            claimed_at_ms: None,
        } => DeliveryFact::Customer(c),
        FactJson {
            customer_id: None,
            baked: true,
            claimed_at_ms: None,
        } => DeliveryFact::Baked,
        FactJson {
            customer_id: None,
            baked: false,
            claimed_at_ms: Some(at_ms),
        } => DeliveryFact::Claimed { at_ms },
        _ => return Err("not exactly one fact".into()),
    };
    Ok((order_id, fact))
}

impl FactStore for DeliveryStore {
    type Fact = DeliveryFact;
    type Error = StoreError;

    fn encode(fact: &DeliveryFact) -> Vec<u8> {
        encode_fact(fact)
    }

    fn decode(rec: &Record) -> Result<(String, DeliveryFact), String> {
        decode_fact(rec)
    }

    fn apply(&self, facts: &[(String, i64, DeliveryFact)]) -> Result<(), StoreError> {
        DeliveryStore::apply(self, facts)
    }

    fn follow_log(&self, topic: &str, identity: &str) -> Result<bool, StoreError> {
        DeliveryStore::follow_log(self, topic, identity)
    }

    fn is_busy(error: &StoreError) -> bool {
        error.is_busy()
    }
}

/// Claims the drive of `order_id` in `log`, arriving at `at_ms`; returns the claim that stands
/// (the first in the log) and whether it is this one.
pub async fn claim<T: Transport>(
    log: &Changelog<T>,
    partition: i32,
    order_id: &str,
    at_ms: i64,
) -> Result<(Claim, bool), HandleError> {
    let offset = log
        .write(partition, order_id, DeliveryFact::Claimed { at_ms })
        .await?;
    let Some(stands) = log.store().get(order_id)?.claim else {
        // Folded past it and not there: the changelog under the name is another log than
        // the one the partition was restored from (a topic made again). Restored anew, the
        // record finds its claim.
        log.let_go(partition);
        return Err(HandleError::retriable(format!(
            "the claim of {order_id} at {offset} was read back and is not there: restoring {} partition {partition} anew",
            log.topic()
        )));
    };
    Ok((stands, stands.offset == offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, payload: &[u8]) -> Record {
        Record {
            topic: "c".into(),
            partition: 0,
            offset: 0,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(payload.to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    #[test]
    fn facts_round_trip_and_anything_else_is_refused() {
        for fact in [
            DeliveryFact::Customer("ab".into()),
            DeliveryFact::Baked,
            DeliveryFact::Claimed { at_ms: 17 },
        ] {
            let r = rec("o1", &encode_fact(&fact));
            assert_eq!(decode_fact(&r), Ok(("o1".to_owned(), fact)));
        }
        assert_eq!(encode_fact(&DeliveryFact::Baked), br#"{"baked":true}"#);
        for bad in [
            &br#"{}"#[..],
            br#"{"baked":true,"claimed_at_ms":3}"#,
            br#"{"baked":false}"#,
            br#"{"customer":"x"}"#,
            b"not json",
        ] {
            assert!(
                decode_fact(&rec("o1", bad)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut no_key = rec("o1", br#"{"baked":true}"#);
        no_key.key = None;
        assert!(decode_fact(&no_key).is_err());
    }
}
