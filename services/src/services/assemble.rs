//! Assemble: pizza-ordered -> (assembling time) -> pizza-assembled with the baking time.

use crate::clock::now_ms;
use crate::domain::{assemble_secs, bake_secs, encode, recipe_seed, Assembled, Ordered};
use crate::event::{parse, unexpected, Event};
use crate::services::ServiceConfig;
use crate::transport::{OutRecord, Record, Transport};
use crate::worker::{HandleError, Handler};

/// The pure step: how long to assemble, and the event to send when done (without its timestamp).
pub fn step(ordered: &Ordered, in_the_oven: i64) -> (i64, Assembled) {
    let o = &ordered.order;
    let seed = recipe_seed(&o.sauce, &o.cheese, &o.extra_toppings, &o.main_topping);
    (
        assemble_secs(seed),
        Assembled {
            status: in_the_oven,
            baking_time: bake_secs(seed),
            timestamp: None,
        },
    )
}

/// The assemble service's handler.
pub struct Assemble<T> {
    pub transport: T,
    pub cfg: ServiceConfig,
}

impl<T: Transport> Handler for Assemble<T> {
    async fn handle(&self, rec: &Record) -> Result<(), HandleError> {
        let (order_id, Event::Ordered(ordered)) = parse(&self.cfg.sys.topics, rec)? else {
            return Err(unexpected(rec).into());
        };
        let (secs, mut event) = step(&ordered, self.cfg.sys.codes.in_the_oven);
        self.cfg.time_scale.sleep_secs(secs as f64).await;
        event.timestamp = Some(now_ms());
        let out = OutRecord::new(&self.cfg.sys.topics.assembled, order_id.as_str(), encode(&event));
        self.transport.produce(out).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Order;

    #[test]
    fn assembles_with_the_spec_timings() {
        let ordered = Ordered {
            status: 100,
            timestamp: Some(1),
            order: Order {
                extra_toppings: vec!["Mushroom".into(), "Onion".into()],
                sauce: "Tomato".into(),
                cheese: "Mozzarella".into(),
                main_topping: "Pepperoni".into(),
                customer_id: "00".into(),
                username: "a".into(),
            },
        };
        let (secs, ev) = step(&ordered, 200);
        assert_eq!(secs, 8);
        assert_eq!(ev.baking_time, 12);
        assert_eq!(ev.status, 200);
    }
}
