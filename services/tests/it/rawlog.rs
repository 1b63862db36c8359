//! Record batches written byte for byte with Kafka's produce protocol, for what librdkafka's
//! producer never writes: a batch no client can decode, a transaction marker without a
//! transaction. librdkafka's mock cluster keeps a batch as it was sent (Apache Kafka checks and
//! decompresses it first, and would refuse the broken one), so these tests run on the embedded
//! broker.
//!
//! The formats are Kafka's: a RecordBatch (magic 2) with its CRC-32C, records with zig-zag
//! varints, and a Produce request v3 (`kafka/clients/src/main/resources/common/message/`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A record batch's attributes: the low three bits name the codec.
pub const GZIP: i16 = 1;
/// A transactional batch.
const TRANSACTIONAL: i16 = 0x10;
/// A control batch (a transaction marker).
const CONTROL: i16 = 0x20;

/// A batch of `count` records whose payload claims gzip and is not: no client can decode it.
pub fn undecodable_batch(count: i32) -> Vec<u8> {
    batch(GZIP, -1, count, b"these bytes are not gzip at all".to_vec())
}

/// A transaction marker: a control batch of one COMMIT record, as a transaction coordinator
/// writes it to each partition a transaction touched.
pub fn commit_marker() -> Vec<u8> {
    // Key: version 0, type 1 (COMMIT). Value: version 0, coordinator epoch 0.
    let record = record(0, &[0, 0, 0, 1], &[0, 0, 0, 0, 0, 0]);
    batch(TRANSACTIONAL | CONTROL, 4242, 1, record)
}

/// One record of a batch, at `offset_delta`, without headers.
fn record(offset_delta: i64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, offset_delta);
    varint(&mut body, key.len() as i64);
    body.extend_from_slice(key);
    varint(&mut body, value.len() as i64);
    body.extend_from_slice(value);
    varint(&mut body, 0); // headers
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

/// A RecordBatch (magic 2) of `count` records whose encoded records are `records`.
fn batch(attributes: i16, producer_id: i64, count: i32, records: Vec<u8>) -> Vec<u8> {
    let now = pizza::clock::now_ms();
    // From the attributes on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend(attributes.to_be_bytes());
    tail.extend((count - 1).to_be_bytes()); // last offset delta
    tail.extend(now.to_be_bytes()); // base timestamp
    tail.extend(now.to_be_bytes()); // max timestamp
    tail.extend(producer_id.to_be_bytes());
    tail.extend(if producer_id < 0 { -1i16 } else { 0 }.to_be_bytes()); // producer epoch
    tail.extend((-1i32).to_be_bytes()); // base sequence
    tail.extend(count.to_be_bytes());
    tail.extend(records);
    let mut after_length = Vec::new();
    after_length.extend((-1i32).to_be_bytes()); // partition leader epoch
    after_length.push(2); // magic
    after_length.extend(crc32c(&tail).to_be_bytes());
    after_length.extend(tail);
    let mut out = Vec::new();
    out.extend(0i64.to_be_bytes()); // base offset: the broker assigns it
    out.extend((after_length.len() as i32).to_be_bytes());
    out.extend(after_length);
    out
}

/// Appends `n` as Kafka's zig-zag varint.
fn varint(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// CRC-32C (Castagnoli), bit by bit: a batch's checksum.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Writes `batch` to `topic`/`partition` on the broker at `addr` (the partition's leader) with a
/// Produce request v3 and `acks=-1`; returns the offset the broker gave its first record.
pub fn produce_batch(addr: &str, topic: &str, partition: i32, batch: &[u8]) -> i64 {
    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // Produce
    req.extend(3i16.to_be_bytes()); // version 3
    req.extend(7i32.to_be_bytes()); // correlation id
    string(&mut req, "it-rawlog");
    req.extend((-1i16).to_be_bytes()); // no transactional id
    req.extend((-1i16).to_be_bytes()); // acks: all
    req.extend(10_000i32.to_be_bytes()); // timeout
    req.extend(1i32.to_be_bytes()); // one topic
    string(&mut req, topic);
    req.extend(1i32.to_be_bytes()); // one partition
    req.extend(partition.to_be_bytes());
    req.extend((batch.len() as i32).to_be_bytes());
    req.extend_from_slice(batch);
    let mut conn = TcpStream::connect(addr).expect("connect to the broker");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).expect("a produce response");
    let mut rsp = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut rsp).unwrap();
    // correlation id, topics (1), name, partitions (1), partition, error code, base offset.
    let mut at = 4 + 4;
    let name_len = i16::from_be_bytes([rsp[at], rsp[at + 1]]) as usize;
    at += 2 + name_len + 4 + 4;
    let error = i16::from_be_bytes([rsp[at], rsp[at + 1]]);
    assert_eq!(error, 0, "the broker refused the batch");
    i64::from_be_bytes(rsp[at + 2..at + 10].try_into().unwrap())
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[test]
fn crc32c_and_varints_are_kafkas() {
    // RFC 3720's check value, and Kafka's zig-zag varints.
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    let enc = |n| {
        let mut v = Vec::new();
        varint(&mut v, n);
        v
    };
    assert_eq!(enc(0), [0]);
    assert_eq!(enc(-1), [1]);
    assert_eq!(enc(1), [2]);
    assert_eq!(enc(300), [0xd8, 0x04]);
}
