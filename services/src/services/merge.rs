//! Merge: what ksqlDB does in the original (`INSERT INTO PIZZA_STATUS SELECT ...` from each source
//! stream): copies each source event's status and timestamp into pizza-status, keyed by order id.
//! `ksql/pizza_status.sql` in the repository has the equivalent statements for ksqlDB users.

use crate::config::Topics;
use crate::domain::{encode, Malformed, OrderId, StatusCodes, StatusEvent};
use crate::event::event_ts;
use crate::event::{parse, unexpected, Event};
use crate::services::ServiceConfig;
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// The pure step: the pizza-status event for a source record, judged by [`parse`] as the service
/// that consumes the source topic judges it, so an event that service dead-letters never shows in
/// the view.
pub fn step(topics: &Topics, codes: &StatusCodes, rec: &Record) -> Result<(OrderId, StatusEvent), Malformed> {
    let (order_id, event) = parse(topics, rec)?;
    let (status, ts) = match event {
        Event::Ordered(e) => (e.status, e.timestamp),
        Event::Assembled(e) => (e.status, e.timestamp),
        Event::Baked(Some(e)) | Event::Delivered(e) | Event::Pending(e) => (e.status, e.timestamp),
        Event::Baked(None) => (codes.out_for_delivery, None),
        Event::Status(_) => return Err(unexpected(rec)),
    };
    let event = StatusEvent {
        status,
        timestamp: Some(event_ts(ts, rec)),
        observed_status: None,
    };
    Ok((order_id, event))
}

/// The merge service's handler.
pub struct Merge<T> {
    pub transport: T,
    pub cfg: ServiceConfig,
}

impl<T: Transport> Handler for Merge<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let (order_id, event) = step(&self.cfg.sys.topics, &self.cfg.sys.codes, rec)?;
        let out = OutRecord::new(&self.cfg.sys.topics.status, order_id.as_str(), encode(&event));
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
        let (id, e) = step(
            &t,
            &c,
            &rec(
                "pizza-assembled",
                br#"{"status":200,"baking_time":9,"timestamp":7}"#,
            ),
        )
        .unwrap();
        assert_eq!(id.as_str(), "0000abcd");
        assert_eq!(encode(&e), br#"{"STATUS":200,"TIMESTAMP":7}"#);
        // Empty pizza-baked: status from the topic, time from the record.
        let (_, e) = step(&t, &c, &rec("pizza-baked", b"")).unwrap();
        assert_eq!((e.status, e.timestamp), (300, Some(42)));
        let (_, e) = step(&t, &c, &rec("pizza-delivered", br#"{"status":999}"#)).unwrap();
        assert_eq!((e.status, e.timestamp), (999, Some(42)));
        assert!(step(&t, &c, &rec("pizza-ordered", br#"{"status":100}"#)).is_err());
        // What bake dead-letters, merge does not forward.
        let huge = br#"{"status":200,"baking_time":1000000000000000,"timestamp":7}"#;
        assert!(step(&t, &c, &rec("pizza-assembled", huge)).is_err());
    }
}
