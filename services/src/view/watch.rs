//! Watching a live view for what its fold promises never to do: move an order back in rank,
//! change a final status, or lose an order. `pizza view watch` and the crash tests poll a view's status rows and
//! feed each poll here.

use std::collections::HashMap;

use crate::domain::StatusCodes;

/// How many regressions a watch keeps word of (the count goes on past it).
const KEPT: usize = 100;

/// Every order's last seen status, and each time one moved back in rank, left a final status,
/// took a code the watch cannot rank, or went from the view, between two polls.
#[derive(Debug)]
pub struct RegressionWatch {
    codes: StatusCodes,
    /// Each order's status at the poll that last saw it.
    last: HashMap<String, (i64, u64)>,
    polls: u64,
    /// Orders seen in the current poll.
    seen: usize,
    regressions: u64,
    kept: Vec<String>,
}

impl RegressionWatch {
    pub fn new(codes: StatusCodes) -> RegressionWatch {
        RegressionWatch {
            codes,
            last: HashMap::new(),
            polls: 0,
            seen: 0,
            regressions: 0,
            kept: Vec::new(),
        }
    }

    /// One poll of the view, each order's current status: what this poll found wrong, as
    /// "order: before -> now" (or what else happened to it).
    pub fn observe<'a>(&mut self, rows: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<String> {
        self.start_poll();
        let mut found: Vec<String> = rows.into_iter().filter_map(|(id, s)| self.see(id, s)).collect();
        found.extend(self.finish_poll());
        found
    }

    /// Begins a poll; [`see`](Self::see) each row, then [`finish_poll`](Self::finish_poll).
    pub fn start_poll(&mut self) {
        self.polls += 1;
        self.seen = 0;
    }

    /// One order's status in the current poll; what is wrong with it, if anything.
    pub fn see(&mut self, order_id: &str, status: i64) -> Option<String> {
        let poll = self.polls;
        self.seen += 1;
        let Some(entry) = self.last.get_mut(order_id) else {
            self.last.insert(order_id.to_owned(), (status, poll));
            return self.note(self.unranked(order_id, status));
        };
        let (prev, _) = std::mem::replace(entry, (status, poll));
        if status == prev {
            return None;
        }
        let finding = if self.codes.rank(status).is_none() {
            self.unranked(order_id, status)
        } else if self.codes.rank(status) < self.codes.rank(prev) || self.codes.is_final(prev) {
            Some(format!("{order_id}: {prev} -> {status}"))
        } else {
            None
        };
        self.note(finding)
    }

    /// Ends a poll: the orders of earlier polls it did not see have gone from the view.
    pub fn finish_poll(&mut self) -> Vec<String> {
        let poll = self.polls;
        if self.last.len() == self.seen {
            return Vec::new();
        }
        let gone: Vec<String> = self
            .last
            .iter()
            .filter(|(_, (_, p))| *p != poll)
            .map(|(id, (s, _))| format!("{id}: {s} -> gone from the view"))
            .collect();
        self.last.retain(|_, (_, p)| *p == poll);
        gone.into_iter().filter_map(|g| self.note(Some(g))).collect()
    }

    fn unranked(&self, order_id: &str, status: i64) -> Option<String> {
        self.codes.rank(status).is_none().then(|| {
            format!("{order_id}: status {status} has no rank here (is --sys-config the status service's?)")
        })
    }

    fn note(&mut self, finding: Option<String>) -> Option<String> {
        let f = finding?;
        self.regressions += 1;
        if self.kept.len() < KEPT {
            self.kept.push(f.clone());
        }
        Some(f)
    }

    /// Orders seen so far (and still in the view).
    pub fn orders(&self) -> usize {
        self.last.len()
    }

    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Findings so far.
    pub fn regressions(&self) -> u64 {
        self.regressions
    }

    /// The first findings (at most 100).
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
        assert_eq!(w.observe([("a", 100), ("b", 300), ("c", 200)]), ["b: 999 -> 300"]);
        // A final status that changes, even to another final one, breaks the fold's promise.
        assert!(w.observe([("a", 100), ("b", 999), ("c", 200)]).is_empty());
        assert_eq!(w.observe([("a", 100), ("b", 430), ("c", 200)]), ["b: 999 -> 430"]);
        assert_eq!((w.orders(), w.polls(), w.regressions()), (3, 7, 4));
        assert_eq!(w.first_regressions().len(), 4);
    }

    #[test]
    fn an_order_gone_from_the_view_or_a_code_without_rank_is_reported() {
        let mut w = RegressionWatch::new(StatusCodes::default());
        assert!(w.observe([("a", 100), ("b", 200)]).is_empty());
        assert_eq!(w.observe([("b", 300)]), ["a: 100 -> gone from the view"]);
        // The view never holds the stuck code (50) or one the configuration does not know: a
        // watch given other codes than the status service's says so instead of misjudging ranks.
        let found = w.observe([("b", 50), ("c", 7)]);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|f| f.contains("has no rank here")), "{found:?}");
        assert!(w.observe([("b", 50), ("c", 7)]).is_empty(), "said once");
        assert_eq!(w.orders(), 2);
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
