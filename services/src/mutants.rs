//! The pizza shop's own bug classes, beside the framework's (re-exported here, so
//! `pizza::mutants::{on, Mutant}` reach both): switched on by the simulation only, through the
//! framework's one switch ([`framework::mutants`]).

pub use framework::mutants::*;

/// A deliberate bug of the pizza shop's own services (the framework's are
/// [`framework::mutants::Mutant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShopMutant {
    /// Delivery keeps its early warnings (and deliveries) in memory only, with no changelog (the
    /// design before issue 13): a restart forgets them.
    DeliveryStateInMemory,
    /// The status fold applies any known status, even one ranked below the current.
    NoMonotonicGuard,
    /// Delivery does not recognise a redelivered input: it delivers again.
    NoDedup,
    /// The watchdog's stuck mark does not carry the status it observed, so a mark decided before
    /// progress lands after it.
    WatchdogRace,
    /// The watchdog sends a round's marks one after another and starts the next round a period
    /// after this one ended (the bug the simulation found first): after an outage, orders are
    /// marked long past the SLA plus one period.
    WatchdogDrift,
    /// The rank table puts in-the-oven (200) above out-for-delivery (300), so a late 200 moves an
    /// order back from 300. The fold, the rebuild and any checker using the same table agree
    /// with it; only a checker with its own order of codes sees it.
    OvenOutranksBaked,
    /// Deliver sends a driver again for a pizza it already delivered, but announces the first
    /// delivery's time: the log shows one delivery, the customer got two.
    RedriveKeepsTime,
    /// The command side tells the customer "not placed" whenever the produce failed, also when
    /// it timed out after the record may have been written (the behaviour before issue 13).
    TimeoutSaysNotPlaced,
    /// The watchdog ages an order by its event's timestamp, stamped by another node's clock,
    /// instead of by when its own view took the status (the behaviour before issue 13).
    WatchdogTrustsEventTime,
    /// Deliver's facts stay in its own store: nothing goes to its changelog, and a partition
    /// newly assigned to it is not restored (the design before issue 15): what earlier owners of
    /// the partition knew stays on their instances.
    DeliverStateStaysLocal,
    /// Each status instance folds only what its group gives it into its view, and nothing else
    /// does (the design before issue 15): with several instances, each view holds some orders.
    StatusFoldsItsPartitions,
}

impl ShopMutant {
    /// Every one of them.
    pub const ALL: [ShopMutant; 11] = [
        ShopMutant::DeliveryStateInMemory,
        ShopMutant::NoMonotonicGuard,
        ShopMutant::NoDedup,
        ShopMutant::WatchdogRace,
        ShopMutant::WatchdogDrift,
        ShopMutant::OvenOutranksBaked,
        ShopMutant::RedriveKeepsTime,
        ShopMutant::TimeoutSaysNotPlaced,
        ShopMutant::WatchdogTrustsEventTime,
        ShopMutant::DeliverStateStaysLocal,
        ShopMutant::StatusFoldsItsPartitions,
    ];
}

impl BugClass for ShopMutant {
    fn name(self) -> &'static str {
        match self {
            ShopMutant::DeliveryStateInMemory => "delivery-state-in-memory",
            ShopMutant::NoMonotonicGuard => "no-monotonic-guard",
            ShopMutant::NoDedup => "no-dedup",
            ShopMutant::WatchdogRace => "watchdog-race",
            ShopMutant::WatchdogDrift => "watchdog-drift",
            ShopMutant::OvenOutranksBaked => "oven-outranks-baked",
            ShopMutant::RedriveKeepsTime => "redrive-keeps-time",
            ShopMutant::TimeoutSaysNotPlaced => "timeout-says-not-placed",
            ShopMutant::WatchdogTrustsEventTime => "watchdog-trusts-event-time",
            ShopMutant::DeliverStateStaysLocal => "deliver-state-stays-local",
            ShopMutant::StatusFoldsItsPartitions => "status-folds-its-partitions",
        }
    }
}
