//! The command side: placing an order is validating it against the menu and producing one
//! pizza-ordered event, durable before the customer hears "placed". That single write is the whole
//! of it: there is no second store to fall out of step with (the original's web app wrote its own
//! database too, and an order could be left half-created).
//!
//! The customer hears one of three answers, and each is true:
//! - **placed**: the event is in the log;
//! - **not placed**: nothing was written (the menu refused it, or the broker refused the write or
//!   could not be reached before it);
//! - **being confirmed**: the produce failed after its request may have reached the broker (a
//!   timeout), so the order may still appear. The order id was chosen before producing, so the
//!   customer holds it; [`confirm_order`] sends the very same event again (same id, request and
//!   time), which the shop takes as the duplicate it is: placing is idempotent.

use crate::config::SysConfig;
use crate::domain::{customer_id_for, encode, InvalidField, Order, OrderId, OrderRequest, Ordered};
use crate::mutants::{self, ShopMutant};
use crate::transport::{Acked, OutRecord, Transport, TransportError};

/// The longest placing an order waits for the broker: below the web app's 15 s request timeout,
/// so the customer always gets an answer that carries the order id.
pub const PLACE_WITHIN: std::time::Duration = std::time::Duration::from_secs(12);

/// Why an order was not (or not yet known to be) placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// A field is not on the menu (the customer's mistake: a 4xx). Nothing was produced.
    #[error("invalid order: {0}")]
    Invalid(#[from] InvalidField),
    /// The event was not written (the shop's problem: a 5xx, try again).
    #[error("the order could not be recorded")]
    Unavailable(#[source] TransportError),
    /// The event may have been written: tell the customer the order is being confirmed, never that
    /// it was not placed, and confirm it with [`confirm_order`].
    #[error("order {order_id} is being confirmed: it may have been recorded")]
    Unconfirmed {
        order_id: OrderId,
        /// The time the event carries: a confirmation sends the same.
        ordered_at_ms: i64,
        #[source]
        source: TransportError,
    },
}

/// A placed order.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub order_id: OrderId,
    pub event: Ordered,
    /// Where pizza-ordered was written.
    pub acked: Acked,
}

/// The pizza-ordered event for a valid request, for the customer its username names
/// ([`customer_id_for`]: callers without a login, as the simulation's customers and the load
/// generator's producers; the web app places for its session's customer, [`ordered_event_as`]).
pub fn ordered_event(sys: &SysConfig, req: &OrderRequest, now_ms: i64) -> Result<Ordered, InvalidField> {
    ordered_event_as(sys, req, &customer_id_for(req.username.trim()), now_ms)
}

/// The pizza-ordered event for a valid request of customer `customer_id`.
pub fn ordered_event_as(
    sys: &SysConfig,
    req: &OrderRequest,
    customer_id: &str,
    now_ms: i64,
) -> Result<Ordered, InvalidField> {
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
            customer_id: customer_id.to_owned(),
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
    let customer = customer_id_for(req.username.trim());
    place_order_as(transport, sys, (req, &customer), order_id, now_ms).await
}

/// [`place_order`] for customer `customer_id` (a login's, not its username's).
pub async fn place_order_as<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    (req, customer_id): (&OrderRequest, &str),
    order_id: OrderId,
    now_ms: i64,
) -> Result<Placed, PlaceError> {
    produce_ordered(transport, sys, (req, customer_id), order_id, now_ms, false).await
}

/// Sends an order that is being confirmed again: the same id, request and time as the attempt
/// that was answered [`PlaceError::Unconfirmed`], so it is the same event (a duplicate the shop
/// handles once, as any redelivered record). Never answers `Unavailable`: an earlier attempt may
/// be in the log whatever this one met.
pub async fn confirm_order<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    req: &OrderRequest,
    order_id: OrderId,
    ordered_at_ms: i64,
) -> Result<Placed, PlaceError> {
    let customer = customer_id_for(req.username.trim());
    confirm_order_as(transport, sys, (req, &customer), order_id, ordered_at_ms).await
}

/// [`confirm_order`] for customer `customer_id` (a login's, not its username's).
pub async fn confirm_order_as<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    (req, customer_id): (&OrderRequest, &str),
    order_id: OrderId,
    ordered_at_ms: i64,
) -> Result<Placed, PlaceError> {
    produce_ordered(transport, sys, (req, customer_id), order_id, ordered_at_ms, true).await
}

async fn produce_ordered<T: Transport>(
    transport: &T,
    sys: &SysConfig,
    (req, customer_id): (&OrderRequest, &str),
    order_id: OrderId,
    ordered_at_ms: i64,
    earlier_attempt: bool,
) -> Result<Placed, PlaceError> {
    let event = ordered_event_as(sys, req, customer_id, ordered_at_ms)?;
    let out = OutRecord::new(&sys.topics.ordered, order_id.as_str(), encode(&event));
    // However long the producer is configured to try, the customer hears within PLACE_WITHIN;
    // a produce still under way then may yet be written.
    let produced = tokio::time::timeout(PLACE_WITHIN, transport.produce(out))
        .await
        .unwrap_or_else(|_| {
            Err(TransportError::maybe_written(format!(
                "no answer from the broker within {PLACE_WITHIN:?}"
            )))
        });
    match produced {
        Ok(acked) => Ok(Placed {
            order_id,
            event,
            acked,
        }),
        Err(source) if mutants::on(ShopMutant::TimeoutSaysNotPlaced) => Err(PlaceError::Unavailable(source)),
        Err(source) if earlier_attempt || source.may_have_been_written() => Err(PlaceError::Unconfirmed {
            order_id,
            ordered_at_ms,
            source,
        }),
        Err(source) => Err(PlaceError::Unavailable(source)),
    }
}
