//! What the web app's `/health-check` reports: the framework's health by consumer lag
//! (`framework::health`) over the shop's consuming services, each with its consumer group, the
//! topics it reads there and its stall window (its longest step, scaled, plus
//! [`STALL_SLACK`]); in `pizza demo`, with what the supervisor knows of each in-process service
//! ([`crate::supervised::Supervised`]).

use framework::health::{GroupHealth, Watched};

use crate::config::{ServiceName, SysConfig};
use crate::transport::kafka::KafkaTransport;

pub use framework::health::{CACHE_FOR, CHECK_TIMEOUT, PROBE_TIMEOUT, STALL_SLACK};

/// The shop's health check.
pub type ShopHealth = GroupHealth;

/// The health of the shop `sys` describes, reached through `transport`. `time_scale` scales the
/// services' steps (as their own `--time-scale` does); `supervised`, in `pizza demo`.
pub fn shop_health(
    transport: KafkaTransport,
    sys: &SysConfig,
    time_scale: crate::clock::TimeScale,
    supervised: Option<crate::supervised::Supervised>,
) -> ShopHealth {
    // The longest step of each service at scale 1 (docs/wire.md): assembling 4-11 s, baking
    // 8-15 s, delivering up to 2 x 14 s when pending; merge and status do not wait.
    let longest = |s: ServiceName| match s {
        ServiceName::Assemble => 11.0,
        ServiceName::Bake => 15.0,
        ServiceName::Deliver => 28.0,
        _ => 0.0,
    };
    let watched = ServiceName::CONSUMERS
        .into_iter()
        .map(|s| Watched {
            service: s.as_str().to_owned(),
            group: sys.group(s).to_owned(),
            topics: sys.topics.consumed_by(s).into_iter().map(str::to_owned).collect(),
            stall: STALL_SLACK + time_scale.scale_secs(longest(s)),
        })
        .collect();
    GroupHealth::new(transport, watched, supervised)
}

impl crate::web::HealthCheck for GroupHealth {
    fn problems(&self) -> futures::future::BoxFuture<'_, Vec<String>> {
        Box::pin(GroupHealth::problems(self))
    }
}
