//! The command side: placing an order is validating it against the menu and producing one
//! pizza-ordered event, durable before the customer hears "placed". That single write is the whole
//! of it: there is no second store to fall out of step with (the original's web app wrote its own
//! database too, and an order could be left half-created).

use crate::config::SysConfig;
use crate::domain::{customer_id_for, encode, InvalidField, Order, OrderId, OrderRequest, Ordered};
use crate::transport::{Acked, OutRecord, Transport, TransportError};

/// Why an order was not placed. Nothing was produced in either case.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// A field is not on the menu (the customer's mistake: a 4xx).
    #[error("invalid order: {0}")]
    Invalid(#[from] InvalidField),
    /// The event could not be made durable (the shop's problem: a 5xx, try again).
    #[error("the order could not be recorded")]
    Unavailable(#[from] TransportError),
}

/// A placed order.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub order_id: OrderId,
    pub event: Ordered,
    /// Where pizza-ordered was written.
    pub acked: Acked,
}

/// The pizza-ordered event for a valid request.
pub fn ordered_event(sys: &SysConfig, req: &OrderRequest, now_ms: i64) -> Result<Ordered, InvalidField> {
    sys.menu.validate(req)?;
    let username = req.username.trim().to_owned();
    Ok(Ordered {
        status: sys.codes.order_received,
        timestamp: Some(now_ms),
        order: Order {
            extra_toppings: req.extra_toppings.clone(),
            sauce: req.sauce.clone(),
            cheese: req.cheese.clone(),
            main_topping: req.main_topping.clone(),
            customer_id: customer_id_for(&username),
            username,
        },
    })
}

/// Places an order: validates it and produces pizza-ordered keyed by `order_id`, returning once the
/// event is durable. The caller brings the id (and the time), so seeded callers stay deterministic.
pub async fn place_order<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    req: &OrderRequest,
    order_id: OrderId,
    now_ms: i64,
) -> Result<Placed, PlaceError> {
    let event = ordered_event(sys, req, now_ms)?;
    let out = OutRecord::new(&sys.topics.ordered, order_id.as_str(), encode(&event));
    let acked = transport.produce(out).await?;
    Ok(Placed {
        order_id,
        event,
        acked,
    })
}
