//! The pizza shop's own code probes, beside the framework's (re-exported here, so
//! `pizza::probes::{hit, Probe}` reach both): counted by the simulation only, through the
//! framework's one counter ([`framework::probes`]).

pub use framework::probes::*;

/// A branch (or an effect) of the pizza shop's services the simulation must see taken (the
/// framework's are [`framework::probes::Probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShopProbe {
    /// Deliver saw the pizza baked before it knew the order: pending.
    Pending,
    /// Deliver saw a baked pizza it had already delivered: it re-sent the delivery, no new drive.
    DeliveryResent,
    /// A driver delivered a pizza (keyed by order).
    DeliveryDriven,
    /// A stuck mark that was decided before progress arrived after it, and changed nothing.
    WatchdogMarkRaced,
    /// A stale or duplicate status that the view's fold ignored.
    StaleStatusIgnored,
}

impl ShopProbe {
    /// Every one of them.
    pub const ALL: [ShopProbe; 5] = [
        ShopProbe::Pending,
        ShopProbe::DeliveryResent,
        ShopProbe::DeliveryDriven,
        ShopProbe::WatchdogMarkRaced,
        ShopProbe::StaleStatusIgnored,
    ];
}

impl ProbeKind for ShopProbe {
    fn name(self) -> &'static str {
        match self {
            ShopProbe::Pending => "pending",
            ShopProbe::DeliveryResent => "delivery-resent",
            ShopProbe::DeliveryDriven => "delivery-driven",
            ShopProbe::WatchdogMarkRaced => "watchdog-mark-raced",
            ShopProbe::StaleStatusIgnored => "stale-status-ignored",
        }
    }

    fn keyed(self) -> bool {
        self == ShopProbe::DeliveryDriven
    }
}
