//! Merge: what ksqlDB does in the original (`INSERT INTO PIZZA_STATUS SELECT ...` from each source
//! stream): copies each source event's status and timestamp into pizza-status, keyed by order id.
//! `ksql/pizza_status.sql` in the repository has the equivalent statements for ksqlDB users.

use crate::config::Topics;
use crate::domain::{decode, decode_baked, encode, Assembled, Ordered, StatusEvent, StatusOnly};
use crate::domain::{Malformed, StatusCodes};
use crate::services::{event_ts, order_key, ServiceConfig};
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// The pure step: the pizza-status event for a source record. The same checks as the service that
/// consumes the source topic, so an event that service dead-letters never shows in the view.
pub fn step(topics: &Topics, codes: &StatusCodes, rec: &Record) -> Result<StatusEvent, Malformed> {
    let payload = rec.payload();
    let (status, ts) = if rec.topic == topics.ordered {
        let e: Ordered = decode(payload)?;
        (e.status, e.timestamp)
    } else if rec.topic == topics.assembled {
        let e: Assembled = decode(payload)?;
        (e.status, e.timestamp)
    } else if rec.topic == topics.baked {
        // The older form leaves pizza-baked empty: the topic says what happened.
        match decode_baked(payload)? {
            Some(e) => (e.status, e.timestamp),
            None => (codes.out_for_delivery, None),
        }
    } else {
        let e: StatusOnly = decode(payload)?;
        (e.status, e.timestamp)
    };
    Ok(StatusEvent {
        status,
        timestamp: Some(event_ts(ts, rec)),
        observed_status: None,
    })
}

/// The merge service's handler.
pub struct Merge<T> {
    pub transport: T,
    pub cfg: ServiceConfig,
}

impl<T: Transport> Handler for Merge<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let order_id = order_key(rec)?;
        let event = step(&self.cfg.sys.topics, &self.cfg.sys.codes, rec)?;
        let out = OutRecord::new(&self.cfg.sys.topics.status, order_id, encode(&event));
        self.transport.produce(out).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, payload: &[u8]) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            key: Some(b"0000abcd".to_vec()),
            payload: Some(payload.to_vec()),
            headers: vec![],
            timestamp_ms: Some(42),
        }
    }

    #[test]
    fn copies_status_and_timestamp() {
        let t = Topics::default();
        let c = StatusCodes::default();
        let e = step(
            &t,
            &c,
            &rec(
                "pizza-assembled",
                br#"{"status":200,"baking_time":9,"timestamp":7}"#,
            ),
        )
        .unwrap();
        assert_eq!(encode(&e), br#"{"STATUS":200,"TIMESTAMP":7}"#);
        // Empty pizza-baked: status from the topic, time from the record.
        let e = step(&t, &c, &rec("pizza-baked", b"")).unwrap();
        assert_eq!((e.status, e.timestamp), (300, Some(42)));
        let e = step(&t, &c, &rec("pizza-delivered", br#"{"status":999}"#)).unwrap();
        assert_eq!((e.status, e.timestamp), (999, Some(42)));
        assert!(step(&t, &c, &rec("pizza-ordered", br#"{"status":100}"#)).is_err());
    }
}
