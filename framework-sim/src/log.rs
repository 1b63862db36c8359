//! One partition's log as Kafka keeps it, for the simulated broker: record batches with a codec,
//! batches no client can decode, transaction markers and aborted transactions that take offsets
//! but are never delivered, and gaps in the offsets (as compaction leaves them). A read from a
//! position returns the records a `read_committed` consumer gets, and its position after them:
//! past every marker, aborted record and gap up to the high watermark, so "read to the end" is
//! the position reaching the end offset, as on Kafka.

use framework::transport::errors::ErrorCode;

/// A record as the broker stores it: bytes, as a producer sent them (a null key or value, header
/// keys that are not UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// When the broker appended it (epoch ms).
    pub timestamp_ms: i64,
}

impl Stored {
    /// The key's bytes (empty when null).
    pub fn key(&self) -> &[u8] {
        self.key.as_deref().unwrap_or_default()
    }

    /// The value's bytes (empty when null).
    pub fn payload(&self) -> &[u8] {
        self.payload.as_deref().unwrap_or_default()
    }

    /// The first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned())
    }
}

/// How a batch's records are compressed. Clients read every codec Kafka has; a batch that claims
/// one and holds something else cannot be decoded ([`Batch::decodable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    pub const ALL: [Codec; 5] = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];

    /// Its number in a batch's attributes.
    pub fn id(self) -> u8 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }
}

/// The batch an offset was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Its first and last offsets.
    pub base: i64,
    pub last: i64,
    pub codec: Codec,
    /// Whether a client can decode it: when not, a fetch from inside it fails at its base
    /// offset, every time, as librdkafka's does ("Decompression (codec 0x4) of message at ...").
    pub decodable: bool,
    /// Written in a transaction that was aborted: its records are never delivered.
    pub aborted: bool,
}

/// What an offset holds.
#[derive(Clone, Debug)]
pub enum Entry {
    Record(Stored),
    /// A transaction marker (a control record): it takes an offset and is never delivered.
    Marker {
        commit: bool,
    },
}

/// One offset of the log.
#[derive(Clone, Debug)]
pub struct Slot {
    pub offset: i64,
    pub entry: Entry,
    pub batch: Batch,
    /// When the in-sync replicas have it: at once for a producer that waits for all of them
    /// (`acks=all`), later for one that does not. Consumers read only what is replicated.
    pub replicated_at_ms: i64,
    /// The producer and sequence that wrote it.
    pub origin: (u64, u64),
}

impl Slot {
    /// The record a `read_committed` consumer is given here, if any.
    pub fn delivered(&self) -> Option<&Stored> {
        match &self.entry {
            Entry::Record(r) if self.batch.decodable && !self.batch.aborted => Some(r),
            _ => None,
        }
    }
}

/// What a read of a partition from a position got.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartRead {
    /// Records, with their offsets.
    pub records: Vec<(i64, Stored)>,
    /// The position after them: the offset of the next record this consumer may be given.
    pub next: i64,
    /// A batch at the position no client can decode: its base offset, the client's code and
    /// what it says. Nothing moves while it is there.
    pub error: Option<(i64, ErrorCode, String)>,
}

/// One partition. See the module.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    slots: Vec<Slot>,
    /// The offset the next append gets: past the last slot, and past a gap at the end.
    end: i64,
    /// How many slots from the start were on every in-sync replica at the time given: the high
    /// watermark is looked for after them (it is asked for at every fetch, of every partition).
    replicated: std::cell::Cell<(usize, i64)>,
}

impl Partition {
    /// The offset the next record gets.
    pub fn end(&self) -> i64 {
        self.end
    }

    /// Every offset held, in order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The records a `read_committed` consumer reads, with their offsets.
    pub fn delivered(&self) -> impl Iterator<Item = (i64, &Stored)> {
        self.slots
            .iter()
            .filter_map(|s| s.delivered().map(|r| (s.offset, r)))
    }

    /// The high watermark at `now`: the first offset not on every in-sync replica yet (past
    /// a gap before it), or the end.
    pub fn high_watermark(&self, now: i64) -> i64 {
        let (known, at) = self.replicated.get();
        // Replicated by `at` is replicated by any later time (a clock that went back looks again).
        let from = if now >= at { known.min(self.slots.len()) } else { 0 };
        match self.slots[from..].iter().position(|s| s.replicated_at_ms > now) {
            Some(i) => {
                self.replicated.set((from + i, now));
                self.slots[from + i].offset
            }
            None => {
                self.replicated.set((self.slots.len(), now));
                self.end
            }
        }
    }

    /// Appends `entries` as one batch after a gap of `gap` offsets (which compaction would have
    /// left); returns the batch.
    pub fn append(
        &mut self,
        entries: Vec<Entry>,
        (codec, decodable, aborted): (Codec, bool, bool),
        gap: i64,
        (replicated_at_ms, origin): (i64, (u64, u64)),
    ) -> Batch {
        let base = self.end + gap.max(0);
        let batch = Batch {
            base,
            last: base + entries.len().max(1) as i64 - 1,
            codec,
            decodable,
            aborted,
        };
        for (i, entry) in entries.into_iter().enumerate() {
            self.slots.push(Slot {
                offset: base + i as i64,
                entry,
                batch,
                replicated_at_ms,
                origin,
            });
        }
        self.end = batch.last + 1;
        batch
    }

    /// Takes off the last slots that are not replicated at `now` (a leader change loses them);
    /// returns them. The next append reuses their offsets.
    pub fn truncate_unreplicated(&mut self, now: i64) -> Vec<Slot> {
        let keep = self
            .slots
            .iter()
            .rposition(|s| s.replicated_at_ms <= now)
            .map_or(0, |i| i + 1);
        let lost = self.slots.split_off(keep);
        self.replicated.set((0, i64::MIN));
        if let Some(first) = lost.first() {
            self.end = first.offset;
        }
        lost
    }

    /// Reads from `position` up to `max` records below the high watermark at `now`. See
    /// [`PartRead`].
    pub fn read(&self, position: i64, max: usize, now: i64) -> PartRead {
        let hw = self.high_watermark(now);
        let mut out = PartRead {
            next: position,
            ..PartRead::default()
        };
        if position >= hw {
            return out;
        }
        let first = self.slots.partition_point(|s| s.offset < position);
        for s in self.slots[first..].iter().take_while(|s| s.offset < hw) {
            if !s.batch.decodable {
                if out.records.is_empty() {
                    out.error = Some((
                        s.batch.base,
                        ErrorCode::BAD_COMPRESSION,
                        format!(
                            "Decompression (codec 0x{:x}) of message at {} of {} records failed",
                            s.batch.codec.id(),
                            s.batch.base,
                            s.batch.last - s.batch.base + 1
                        ),
                    ));
                }
                // Nothing is read past it in this fetch.
                return out;
            }
            if out.records.len() >= max.max(1) {
                return out;
            }
            if let Some(r) = s.delivered() {
                out.records.push((s.offset, r.clone()));
            }
            out.next = s.offset + 1;
        }
        // Everything up to the high watermark was passed: markers, aborted records and gaps
        // behind the last record included.
        out.next = hw;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> Entry {
        Entry::Record(Stored {
            key: Some(vec![n]),
            payload: Some(vec![n]),
            headers: Vec::new(),
            timestamp_ms: 0,
        })
    }

    const PLAIN: (Codec, bool, bool) = (Codec::None, true, false);

    fn offsets(r: &PartRead) -> Vec<i64> {
        r.records.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn markers_aborted_records_and_gaps_take_offsets_and_are_never_delivered() {
        let mut p = Partition::default();
        p.append(vec![rec(0), rec(1)], PLAIN, 0, (0, (1, 0)));
        p.append(vec![rec(2)], (Codec::Zstd, true, true), 0, (0, (2, 0)));
        p.append(vec![Entry::Marker { commit: false }], PLAIN, 0, (0, (2, 1)));
        // Compaction left 3 offsets out.
        let b = p.append(vec![rec(3)], (Codec::Lz4, true, false), 3, (0, (1, 1)));
        assert_eq!((b.base, p.end()), (7, 8));
        p.append(vec![Entry::Marker { commit: true }], PLAIN, 0, (0, (3, 0)));
        let all = p.read(0, 100, 0);
        assert_eq!(offsets(&all), [0, 1, 7]);
        assert_eq!(all.next, 9, "read to the end: past the marker that ends the log");
        assert!(all.error.is_none());
        // A read that stops at `max` is only as far as its last record.
        let two = p.read(0, 2, 0);
        assert_eq!((offsets(&two), two.next), (vec![0, 1], 2));
        // A read from inside the gap or at the marker moves to the end with nothing.
        let tail = p.read(8, 10, 0);
        assert_eq!((offsets(&tail), tail.next), (vec![], 9));
        assert_eq!(p.delivered().count(), 3);
    }

    #[test]
    fn a_batch_no_one_can_decode_fails_every_read_at_its_base_until_passed() {
        let mut p = Partition::default();
        p.append(vec![rec(0)], PLAIN, 0, (0, (1, 0)));
        p.append(
            vec![rec(1), rec(2), rec(3)],
            (Codec::Gzip, false, false),
            0,
            (0, (1, 1)),
        );
        p.append(vec![rec(4)], PLAIN, 0, (0, (1, 2)));
        // The record before it is read; the read stops there.
        let r = p.read(0, 10, 0);
        assert_eq!((offsets(&r), r.next, r.error.is_none()), (vec![0], 1, true));
        for at in 1..=3 {
            let r = p.read(at, 10, 0);
            let (base, code, why) = r.error.expect("undecodable");
            assert_eq!((base, code, r.next), (1, ErrorCode::BAD_COMPRESSION, at));
            assert!(why.contains("codec 0x1"), "{why}");
            assert!(r.records.is_empty());
        }
        assert_eq!(offsets(&p.read(4, 10, 0)), [4]);
    }

    #[test]
    fn only_what_every_replica_has_is_read_and_a_leader_change_loses_the_rest() {
        let mut p = Partition::default();
        p.append(vec![rec(0)], PLAIN, 0, (0, (1, 0)));
        p.append(vec![rec(1)], PLAIN, 0, (200, (1, 1)));
        assert_eq!(p.high_watermark(100), 1);
        let r = p.read(0, 10, 100);
        assert_eq!((offsets(&r), r.next), (vec![0], 1));
        let lost = p.truncate_unreplicated(100);
        assert_eq!(lost.len(), 1);
        assert_eq!(p.end(), 1, "the next append takes the lost offset");
    }

    /// The high watermark, remembered between asks, is the first offset not yet on every replica
    /// at each time asked: as time goes on, back (a clock fault), across appends and truncations.
    #[test]
    fn the_high_watermark_is_the_first_unreplicated_offset_at_any_time_asked() {
        let naive = |p: &Partition, now: i64| {
            p.slots()
                .iter()
                .find(|s| s.replicated_at_ms > now)
                .map_or(p.end(), |s| s.offset)
        };
        let mut p = Partition::default();
        let mut x: u64 = 7;
        let mut draw = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n
        };
        let mut now = 0_i64;
        for step in 0..2_000 {
            match draw(10) {
                0..=4 => {
                    // Replicated at once (acks=all) or a little later (acks=1).
                    let lag = if draw(3) == 0 { draw(300) as i64 } else { 0 };
                    p.append(vec![rec(0)], PLAIN, 0, (now + lag, (1, step)));
                }
                5 => {
                    p.truncate_unreplicated(now);
                }
                6 => now -= draw(100) as i64,
                _ => now += draw(100) as i64,
            }
            assert_eq!(p.high_watermark(now), naive(&p, now), "step {step} at {now}");
        }
    }
}
