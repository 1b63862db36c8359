//! Watching a live view for what its fold promises never to do: move an order back in rank, or
//! change a final status. `pizza view watch` and the crash tests poll a view's status rows and
//! feed each poll here.

use std::collections::HashMap;

use crate::domain::StatusCodes;

/// How many regressions a watch keeps word of (the count goes on past it).
const KEPT: usize = 100;

/// Every order's last seen status, and each time one moved back in rank (or left a final status)
/// between two polls.
#[derive(Debug)]
pub struct RegressionWatch {
    codes: StatusCodes,
    last: HashMap<String, i64>,
    polls: u64,
    regressions: u64,
    kept: Vec<String>,
}

impl RegressionWatch {
    pub fn new(codes: StatusCodes) -> RegressionWatch {
        RegressionWatch {
            codes,
            last: HashMap::new(),
            polls: 0,
            regressions: 0,
            kept: Vec::new(),
        }
    }

    /// One poll of the view: each order's current status. Returns the regressions this poll
    /// found, as "order: before -> now".
    pub fn observe<'a>(&mut self, rows: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<String> {
        self.polls += 1;
        let mut found = Vec::new();
        for (order_id, status) in rows {
            let prev = match self.last.get_mut(order_id) {
                Some(prev) => std::mem::replace(prev, status),
                None => {
                    self.last.insert(order_id.to_owned(), status);
                    continue;
                }
            };
            let moved_back = self.codes.rank(status) < self.codes.rank(prev);
            if moved_back || (self.codes.is_final(prev) && status != prev) {
                found.push(format!("{order_id}: {prev} -> {status}"));
            }
        }
        self.regressions += found.len() as u64;
        let room = KEPT.saturating_sub(self.kept.len());
        self.kept.extend(found.iter().take(room).cloned());
        found
    }

    /// Orders seen so far.
    pub fn orders(&self) -> usize {
        self.last.len()
    }

    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Regressions seen so far.
    pub fn regressions(&self) -> u64 {
        self.regressions
    }

    /// The first regressions seen (at most 100), as "order: before -> now".
    pub fn first_regressions(&self) -> &[String] {
        &self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_that_moves_back_is_a_regression_and_progress_or_a_new_order_is_not() {
        let mut w = RegressionWatch::new(StatusCodes::default());
        assert!(w.observe([("a", 100), ("b", 200)]).is_empty());
        assert!(w.observe([("a", 150), ("b", 200), ("c", 300)]).is_empty());
        assert_eq!(
            w.observe([("a", 100), ("b", 999), ("c", 200)]),
            ["a: 150 -> 100", "c: 300 -> 200"]
        );
        // Measured against the last poll: staying at the lower status is not counted again.
        assert!(w.observe([("a", 100), ("b", 999), ("c", 200)]).is_empty());
        assert_eq!(w.observe([("b", 300)]), ["b: 999 -> 300"]);
        // A final status that changes, even to another final one, breaks the fold's promise.
        assert!(w.observe([("b", 999)]).is_empty());
        assert_eq!(w.observe([("b", 430)]), ["b: 999 -> 430"]);
        assert_eq!((w.orders(), w.polls(), w.regressions()), (3, 7, 4));
        assert_eq!(w.first_regressions().len(), 4);
    }

    #[test]
    fn the_count_goes_on_past_the_regressions_kept() {
        let mut w = RegressionWatch::new(StatusCodes::default());
        let ids: Vec<String> = (0..KEPT + 10).map(|i| format!("{i:08x}")).collect();
        w.observe(ids.iter().map(|id| (id.as_str(), 300)));
        w.observe(ids.iter().map(|id| (id.as_str(), 100)));
        assert_eq!(w.regressions(), (KEPT + 10) as u64);
        assert_eq!(w.first_regressions().len(), KEPT);
    }
}
