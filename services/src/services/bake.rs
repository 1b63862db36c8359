//! Bake: pizza-assembled -> (baking time from the event) -> pizza-baked.

use crate::clock::now_ms;
use crate::domain::{decode, encode, Assembled, Malformed, StatusOnly};
use crate::services::{order_key, ServiceConfig};
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// The longest baking time accepted, in seconds: a larger one is a broken event, not a slow oven.
pub const MAX_BAKING_SECS: i64 = 3600;

/// The pure step: how long to bake.
pub fn step(assembled: &Assembled) -> Result<i64, Malformed> {
    match assembled.baking_time {
        t @ 0..=MAX_BAKING_SECS => Ok(t),
        t => Err(Malformed(format!(
            "baking_time {t} is outside 0..={MAX_BAKING_SECS}"
        ))),
    }
}

/// The bake service's handler.
pub struct Bake<T> {
    pub transport: T,
    pub cfg: ServiceConfig,
}

impl<T: Transport> Handler for Bake<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let order_id = order_key(rec)?;
        let assembled: Assembled = decode(rec.payload())?;
        let secs = step(&assembled)?;
        self.cfg.time_scale.sleep_secs(secs as f64).await;
        let event = StatusOnly {
            status: self.cfg.sys.codes.out_for_delivery,
            timestamp: Some(now_ms()),
        };
        let out = OutRecord::new(&self.cfg.sys.topics.baked, order_id, encode(&event));
        self.transport.produce(out).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_absurd_baking_times() {
        let ok = Assembled {
            status: 200,
            baking_time: 12,
            timestamp: None,
        };
        assert_eq!(step(&ok), Ok(12));
        let bad = Assembled {
            baking_time: -1,
            ..ok.clone()
        };
        assert!(step(&bad).is_err());
        let bad = Assembled {
            baking_time: MAX_BAKING_SECS + 1,
            ..ok
        };
        assert!(step(&bad).is_err());
    }
}
