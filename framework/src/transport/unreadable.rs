//! When a consumer gives up on a record, for both transports: an error that comes back at the
//! same offset of a partition (a batch the client cannot decode, a record that fails its checks)
//! will come back for ever, and the partition behind it waits for ever. After
//! [`REPEATS`] times at one offset, the record there is given up on: the consumer moves past it
//! (one offset on) and hands it on as [`Unreadable`], once. An error that comes again at the
//! first offset of a batch already given up on, while the consumer is further into that batch,
//! is the same batch: the record at the consumer's position is given up on at once, so a batch
//! of many records is passed one record at a time without waiting out the repeats for each.
//!
//! What counts is the error's offset and the consumer's own position: librdkafka reports a batch
//! it cannot decode at the batch's first offset wherever in the batch the consumer is.

use std::collections::BTreeMap;

use super::Unreadable;
use crate::mutants::{self, Mutant};
use crate::probes::{self, Probe};

/// Times an error comes back at one offset before the record there is given up on.
pub const REPEATS: u32 = 3;

/// One partition's trouble.
#[derive(Debug, Default)]
struct Trouble {
    /// The offset the error came at and how many times in a row.
    at: Option<(i64, u32)>,
    /// The first offsets of batches given up on (an error there again is that batch).
    given_up: Vec<i64>,
}

/// Per (topic, partition): see the module.
#[derive(Debug, Default)]
pub struct Judge {
    parts: BTreeMap<(String, i32), Trouble>,
}

impl Judge {
    /// The consumer of `topic`/`partition`, at `position` (the offset of the next record it would
    /// deliver), got `error` reported at `offset`. Returns the record to give up on, when this is
    /// the time: the consumer must then move to its offset + 1.
    pub fn failed(
        &mut self,
        topic: &str,
        partition: i32,
        position: i64,
        offset: i64,
        error: &str,
    ) -> Option<Unreadable> {
        if mutants::on(Mutant::UnreadableRetriedForever) {
            return None;
        }
        let t = self.parts.entry((topic.to_owned(), partition)).or_default();
        let known_batch = offset < position && t.given_up.contains(&offset);
        let repeats = match t.at {
            Some((o, n)) if o == offset => n + 1,
            _ => 1,
        };
        t.at = Some((offset, repeats));
        if !known_batch && repeats < REPEATS {
            return None;
        }
        t.at = None;
        if !t.given_up.contains(&offset) {
            // A few batches at most are remembered: one is passed record by record.
            if t.given_up.len() >= 8 {
                t.given_up.remove(0);
            }
            t.given_up.push(offset);
        }
        probes::hit(Probe::RecordUnreadable, "");
        Some(Unreadable {
            topic: topic.to_owned(),
            partition,
            offset: offset.max(position),
            error: error.to_owned(),
        })
    }

    /// A record of `topic`/`partition` was read: its trouble, if any, is over.
    pub fn read(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.parts.get_mut(&(topic.to_owned(), partition)) {
            t.at = None;
        }
    }

    /// The consumer no longer reads `topic`/`partition`.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_that_keeps_coming_back_at_one_offset_gives_the_record_up() {
        let mut j = Judge::default();
        for _ in 1..REPEATS {
            assert_eq!(j.failed("t", 0, 10, 10, "codec"), None);
        }
        let u = j.failed("t", 0, 10, 10, "codec").expect("given up");
        assert_eq!((u.partition, u.offset, u.error.as_str()), (0, 10, "codec"));
        // The batch began at 10: at 11, 12 the same error at 10 is that batch, given up at once.
        assert_eq!(j.failed("t", 0, 11, 10, "codec").map(|u| u.offset), Some(11));
        assert_eq!(j.failed("t", 0, 12, 10, "codec").map(|u| u.offset), Some(12));
    }

    #[test]
    fn errors_that_move_or_partitions_that_read_start_counting_again() {
        let mut j = Judge::default();
        assert_eq!(j.failed("t", 0, 5, 5, "e"), None);
        assert_eq!(j.failed("t", 0, 5, 5, "e"), None);
        j.read("t", 0);
        assert_eq!(j.failed("t", 0, 5, 5, "e"), None, "a record came in between");
        assert_eq!(j.failed("t", 0, 6, 6, "e"), None, "another offset");
        assert_eq!(
            j.failed("t", 1, 6, 6, "e"),
            None,
            "another partition counts on its own"
        );
        assert_eq!(j.failed("t", 0, 6, 6, "e"), None);
        assert!(j.failed("t", 0, 6, 6, "e").is_some());
    }
}
