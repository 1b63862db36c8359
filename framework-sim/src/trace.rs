//! The run's trace: one event per line (simulated time in seconds, node, then topic, partition,
//! offset, key and what happened for log events; faults and group changes in their own words).
//! Its hash is the determinism check: the same seed must give the same hash.

use std::hash::Hasher;

/// Events so far and their running hash.
#[derive(Debug, Default)]
pub struct Trace {
    lines: Vec<String>,
    hash: FnvHasher,
}

impl Trace {
    pub fn push(&mut self, line: String) {
        self.hash.write(line.as_bytes());
        self.hash.write_u8(b'\n');
        self.lines.push(line);
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }
}

/// 64-bit FNV-1a: stable across builds and platforms (std's hasher makes no such promise).
#[derive(Debug)]
struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_every_line_and_its_order() {
        let mut a = Trace::default();
        let mut b = Trace::default();
        a.push("x".into());
        a.push("y".into());
        b.push("y".into());
        b.push("x".into());
        assert_ne!(a.hash(), b.hash());
        let mut c = Trace::default();
        c.push("x".into());
        c.push("y".into());
        assert_eq!(a.hash(), c.hash());
    }
}
