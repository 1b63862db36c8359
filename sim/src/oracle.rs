//! The checkers' own idea of what the view must hold, written from `docs/wire.md` (and the
//! README's two rules of ours) without a line of the services' code: the order of the status
//! codes, and a model of the view as a fold of pizza-status. A bug in the services' rank table or
//! fold then disagrees with the checker instead of agreeing with itself.
//!
//! From the spec: 100 < 150 < 200 < 300 < 999; 999, 499, 430 and 410 are final; 50 (stuck) is a
//! flag the next progress clears; a stale or duplicate event never moves an order back. Ours
//! (README, "Decisions"): a stuck mark carries the status it was decided on (`OBSERVED_STATUS`),
//! and one that no longer matches the order's status raced with progress and changes nothing.

use std::collections::BTreeMap;

/// The stuck flag's code.
pub const STUCK: i64 = 50;
/// Progress, in the order an order moves through it.
const PROGRESS: [i64; 4] = [100, 150, 200, 300];
/// Nothing moves an order after these.
const FINAL: [i64; 4] = [999, 499, 430, 410];

/// Where a code stands: its place in `PROGRESS` (1..=4), 5 for a final code, `None` for the stuck
/// flag and codes the spec does not know.
pub fn rank(code: i64) -> Option<u8> {
    match PROGRESS.iter().position(|c| *c == code) {
        Some(i) => Some(i as u8 + 1),
        None => FINAL.contains(&code).then_some(5),
    }
}

/// Whether nothing can change an order at `code`.
pub fn is_final(code: i64) -> bool {
    FINAL.contains(&code)
}

/// An order as the view must show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub status: i64,
    pub stuck: bool,
}

/// The view as a fold of pizza-status events, applied in the order the status service reads
/// them (each order's events sit in one partition).
#[derive(Debug, Default)]
pub struct ViewModel {
    pub orders: BTreeMap<String, Expected>,
}

impl ViewModel {
    /// Applies one pizza-status value for `order`; values that are not a status event (as the
    /// spec writes it: a JSON object with an integer `STATUS`, or `status` in the older form)
    /// change nothing.
    pub fn apply(&mut self, order: &str, value: &[u8]) {
        let Ok(serde_json::Value::Object(event)) = serde_json::from_slice(value) else {
            return;
        };
        let field = |upper: &str, lower: &str| {
            event
                .get(upper)
                .or_else(|| event.get(lower))
                .and_then(|v| v.as_i64())
        };
        let Some(status) = field("STATUS", "status") else {
            return;
        };
        let observed = field("OBSERVED_STATUS", "observed_status");
        let current = self.orders.get(order).copied();
        let next = if status == STUCK {
            match current {
                Some(c) if !c.stuck && !is_final(c.status) && observed.is_none_or(|o| o == c.status) => {
                    Some(Expected { stuck: true, ..c })
                }
                _ => None,
            }
        } else {
            match (rank(status), current.and_then(|c| rank(c.status))) {
                (Some(new), Some(old)) if new <= old => None,
                (Some(_), _) => Some(Expected { status, stuck: false }),
                (None, _) => None,
            }
        };
        if let Some(n) = next {
            self.orders.insert(order.to_owned(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: i64) -> Vec<u8> {
        format!(r#"{{"STATUS":{s},"TIMESTAMP":1}}"#).into_bytes()
    }

    #[test]
    fn the_spec_order_of_codes() {
        let ranks: Vec<_> = [100, 150, 200, 300, 999, 499, 430, 410, 50, 12345]
            .map(rank)
            .to_vec();
        let p = |n| Some(n);
        assert_eq!(
            ranks,
            [p(1), p(2), p(3), p(4), p(5), p(5), p(5), p(5), None, None]
        );
        assert!(is_final(410) && !is_final(300));
    }

    #[test]
    fn the_model_follows_the_spec() {
        let mut m = ViewModel::default();
        for s in [100, 300, 200, 150, 300] {
            m.apply("a", &status(s));
        }
        assert_eq!(
            m.orders["a"],
            Expected {
                status: 300,
                stuck: false
            },
            "stale events never move back"
        );
        m.apply("a", br#"{"STATUS":50,"OBSERVED_STATUS":200}"#);
        assert!(
            !m.orders["a"].stuck,
            "a mark decided at another status raced with progress"
        );
        m.apply("a", br#"{"STATUS":50,"OBSERVED_STATUS":300}"#);
        assert!(m.orders["a"].stuck);
        m.apply("a", br#"{"status":999}"#);
        assert_eq!(
            m.orders["a"],
            Expected {
                status: 999,
                stuck: false
            },
            "progress clears the flag"
        );
        m.apply("a", &status(STUCK));
        m.apply("a", &status(100));
        assert_eq!(
            m.orders["a"],
            Expected {
                status: 999,
                stuck: false
            },
            "final is final"
        );
        m.apply("b", &status(STUCK));
        m.apply("b", b"not json");
        m.apply("b", &status(12345));
        assert!(
            !m.orders.contains_key("b"),
            "a mark or an unknown code alone makes no row"
        );
    }
}
