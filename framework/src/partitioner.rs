//! Java's default partitioner, so our records land on the same partitions as those of the original
//! services (librdkafka `partitioner=murmur2_random`, Kafka's `DefaultPartitioner`).

/// The murmur2 hash as Kafka's Java client computes it (the `murmur2` crate's endianness-free
/// MurmurHash2 with Kafka's seed, `0x9747b28c`), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    murmur2::murmur2(data, murmur2::KAFKA_SEED) as i32
}

/// The wire contract's partition vectors (`docs/wire.md`): keys and their partition of six.
pub const SPEC_VECTORS: [(&str, i32); 5] = [
    ("b32ad", 2),
    ("4ad8d269", 4),
    ("abc", 3),
    ("foobar", 0),
    ("order-1", 4),
];

/// The partition Java's default partitioner picks for a keyed record:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// # Panics
/// If `partitions` is not positive (a topic always has at least one partition).
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Where a keyed record sits, against where the producers of the shop's events put its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Where Java's default partitioner (murmur2) puts it: ours, the Java clients', ksqlDB's.
    Home,
    /// Where librdkafka's default partitioner (`consistent_random`: CRC-32 of the key) puts it,
    /// and murmur2 does not: a Python or Go producer left at its defaults.
    Librdkafka,
    /// Neither: placed by hand (a producer that names the partition), with why.
    Elsewhere(String),
}

/// Where librdkafka's default partitioner puts `key` among `partitions` (> 0).
pub fn crc32_partition(key: &[u8], partitions: i32) -> i32 {
    (crc32fast::hash(key) % partitions as u32) as i32
}

/// Where a record keyed `key` on `partition` of `partitions` sits ([`Placement`]); `Home` when
/// the partition count is unknown (0).
pub fn placement(key: &[u8], partition: i32, partitions: i32) -> Placement {
    if partitions <= 0 {
        return Placement::Home;
    }
    let belongs = partition_for(key, partitions);
    if belongs == partition {
        return Placement::Home;
    }
    if crc32_partition(key, partitions) == partition {
        return Placement::Librdkafka;
    }
    Placement::Elsewhere(format!(
        "record is on partition {partition} of {partitions}, but its key belongs on {belongs} (murmur2; {} by librdkafka's CRC-32)",
        crc32_partition(key, partitions)
    ))
}

/// Why a record keyed `key` on `partition` of `partitions` is where no ordinary producer puts
/// it ([`Placement::Elsewhere`]); `None` when it is where one does.
pub fn misplaced(key: &[u8], partition: i32, partitions: i32) -> Option<String> {
    match placement(key, partition, partitions) {
        Placement::Elsewhere(why) => Some(why),
        Placement::Home | Placement::Librdkafka => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_java_client_vectors() {
        assert_eq!(murmur2(b"21"), -973_932_308);
        assert_eq!(murmur2(b"foobar"), -790_332_482);
        assert_eq!(murmur2(b"abc"), 479_470_107);
    }

    #[test]
    fn partitions_match_the_spec_vectors() {
        for (key, expected) in SPEC_VECTORS {
            assert_eq!(partition_for(key.as_bytes(), 6), expected, "key {key}");
        }
    }

    #[test]
    fn every_tail_length_is_hashed() {
        // Keys of length 0..=7 exercise the 0-3 byte tails; all must differ.
        let hashes: Vec<i32> = (0..8).map(|n| murmur2(&b"abcdefgh"[..n])).collect();
        let mut unique = hashes.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), hashes.len(), "{hashes:?}");
    }

    #[test]
    fn a_record_is_placed_by_murmur2_or_librdkafkas_crc32_and_nothing_else() {
        // CRC-32 (zlib's, as librdkafka's consistent partitioner) of "abc" is 891568578: 0 of 6;
        // murmur2 puts it on 3.
        assert_eq!(crc32_partition(b"abc", 6), 0);
        assert_eq!(crc32_partition(b"order-1", 6), 1);
        assert_eq!(placement(b"abc", 3, 6), Placement::Home);
        assert_eq!(placement(b"abc", 0, 6), Placement::Librdkafka);
        let Placement::Elsewhere(why) = placement(b"abc", 4, 6) else {
            panic!("abc on 4 of 6 is where neither partitioner puts it");
        };
        assert!(why.contains("belongs on 3"), "{why}");
        assert_eq!(misplaced(b"abc", 0, 6), None);
        assert!(misplaced(b"abc", 5, 6).is_some());
        assert_eq!(
            placement(b"abc", 5, 0),
            Placement::Home,
            "an unknown count judges nothing"
        );
    }
}
