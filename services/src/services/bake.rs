//! Bake: pizza-assembled -> (baking time from the event) -> pizza-baked.

use crate::clock::now_ms;
use crate::config::Topics;
use crate::domain::{encode, Malformed, OrderId, StatusOnly};
use crate::event::{parse, unexpected, Event};
use crate::services::ServiceConfig;
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// The pure step: which order to bake and for how long, from a pizza-assembled record judged by
/// [`parse`] (which refuses a `baking_time` outside `0..=MAX_BAKING_SECS`).
pub fn step(topics: &Topics, rec: &Record) -> Result<(OrderId, i64), Malformed> {
    match parse(topics, rec)? {
        (order_id, Event::Assembled(e)) => Ok((order_id, e.baking_time)),
        _ => Err(unexpected(rec)),
    }
}

/// The bake service's handler.
pub struct Bake<T> {
    pub transport: T,
    pub cfg: ServiceConfig,
}

impl<T: Transport> Handler for Bake<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let (order_id, secs) = step(&self.cfg.sys.topics, rec)?;
        self.cfg.time_scale.sleep_secs(secs as f64).await;
        let event = StatusOnly {
            status: self.cfg.sys.codes.out_for_delivery,
            timestamp: Some(now_ms()),
        };
        let out = OutRecord::new(&self.cfg.sys.topics.baked, order_id.as_str(), encode(&event));
        self.transport.produce(out).await?;
        Ok(())
    }
}
