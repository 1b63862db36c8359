//! A librdkafka consumer whose event queue we poll ourselves. rdkafka's own poll turns a consumer
//! error into a bare code and drops where it happened; the poison-record path needs the
//! partition and offset (librdkafka reports a batch it cannot decode at the batch's first offset,
//! again at every fetch), and "read to the end" needs the end-of-partition event's offset (the
//! fetch position, past transaction markers). Everything else an event can be is handled as
//! rdkafka handles it: a rebalance goes to the context's `rebalance` (our commit before a
//! revocation), a commit's result to its `commit_callback`.
//!
//! The queue wakes a [`Notify`] when it becomes non-empty (rdkafka's own nonempty callback), so
//! [`Polled::next`] waits without a thread.

use std::ffi::CStr;
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

use super::headers_from_ptr;
use crate::transport::errors::ErrorCode;
use crate::transport::Record;

/// What the consumer's queue brought, besides what this module handles itself.
#[derive(Debug)]
pub enum Event {
    Record(Record),
    /// A partition's fetch reached the end of what it may read (its high watermark, or the last
    /// stable offset under read_committed): `offset` is the fetch position then.
    Eof {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A consumer error; `at` is the topic, partition and offset it came at, when it came at one.
    Error {
        code: ErrorCode,
        fatal: bool,
        at: Option<(String, i32, i64)>,
        message: String,
    },
}

/// The consumer and a handle of its queue. See the module.
pub struct Polled<C: ConsumerContext + 'static> {
    /// Declared first, so dropped first: a queue handle must be gone before its client is
    /// destroyed (the consumer's own drop closes it and destroys the client).
    queue: Queue,
    consumer: BaseConsumer<C>,
    woken: Arc<Notify>,
}

/// A handle of the consumer's queue, destroyed with it.
struct Queue(*mut rd::rd_kafka_queue_t);

// SAFETY: librdkafka's queues are thread-safe; the handle is only polled and destroyed.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_queue_get_consumer` and is destroyed once.
        unsafe { rd::rd_kafka_queue_destroy(self.0) }
    }
}

/// What a consumer's context does with an assignment before librdkafka takes it: it may set
/// where each partition starts (`Offset::Invalid`, as it comes, is "from the group's commit").
pub trait BeforeAssign: ConsumerContext {
    fn before_assign(&self, _consumer: &BaseConsumer<Self>, _assigned: &mut TopicPartitionList) {}
}

impl BeforeAssign for rdkafka::consumer::DefaultConsumerContext {}

impl<C: BeforeAssign + 'static> Polled<C> {
    /// Takes over `consumer`'s queue (it must have a `group.id`, which points librdkafka's main
    /// queue at the consumer queue).
    pub fn new(mut consumer: BaseConsumer<C>) -> Result<Polled<C>, String> {
        let woken = Arc::new(Notify::new());
        let wake = woken.clone();
        consumer.set_nonempty_callback(move || wake.notify_one());
        // SAFETY: the client is alive for as long as `consumer`, which outlives the handle (see
        // the fields' order).
        let q = unsafe { rd::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        if q.is_null() {
            return Err("the consumer has no queue (no group.id)".into());
        }
        Ok(Polled {
            queue: Queue(q),
            consumer,
            woken,
        })
    }

    /// The consumer, for what rdkafka does well (assign, seek, commit, pause).
    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// The next event, waiting while there is none. Cancel-safe: an event is taken off the queue
    /// only when it is returned (or handled here).
    pub async fn next(&self) -> Event {
        loop {
            let woken = self.woken.notified();
            if let Some(e) = self.poll() {
                return e;
            }
            woken.await;
        }
    }

    /// The next event, if one is queued now.
    pub fn poll(&self) -> Option<Event> {
        loop {
            // SAFETY: the queue handle is valid while `self` is; a null event is "none".
            let ev = unsafe { rd::rd_kafka_queue_poll(self.queue.0, 0) };
            if ev.is_null() {
                return None;
            }
            let ev = EventPtr(ev);
            if let Some(e) = self.handle(&ev) {
                return Some(e);
            }
        }
    }

    /// One event: what the caller needs, or `None` when it was handled here.
    fn handle(&self, ev: &EventPtr) -> Option<Event> {
        // SAFETY: `ev` is a valid event until it is dropped at the end of the caller's loop.
        let kind = unsafe { rd::rd_kafka_event_type(ev.0) };
        match kind {
            rd::RD_KAFKA_EVENT_FETCH => {
                // SAFETY: a fetch event carries one message, owned by the event.
                let m = unsafe { rd::rd_kafka_event_message_next(ev.0) };
                (!m.is_null()).then(|| Event::Record(unsafe { record_of(m) }))
            }
            rd::RD_KAFKA_EVENT_ERROR => Some(unsafe { error_of(ev.0) }),
            rd::RD_KAFKA_EVENT_REBALANCE => {
                // SAFETY: the list belongs to the event; it is copied before the event goes.
                let (err, mut tpl) = unsafe {
                    (
                        rd::rd_kafka_event_error(ev.0),
                        copy_list(rd::rd_kafka_event_topic_partition_list(ev.0)),
                    )
                };
                if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
                    self.consumer.context().before_assign(&self.consumer, &mut tpl);
                }
                self.consumer.context().rebalance(&self.consumer, err, &mut tpl);
                None
            }
            rd::RD_KAFKA_EVENT_OFFSET_COMMIT => {
                // SAFETY: as above.
                let (err, tpl) = unsafe {
                    (
                        rd::rd_kafka_event_error(ev.0),
                        copy_list(rd::rd_kafka_event_topic_partition_list(ev.0)),
                    )
                };
                let result = if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Ok(())
                } else {
                    Err(rdkafka::error::KafkaError::ConsumerCommit(err.into()))
                };
                self.consumer.context().commit_callback(result, &tpl);
                None
            }
            // Statistics and the like: nothing of ours.
            _ => None,
        }
    }
}

/// An event, destroyed when dropped.
struct EventPtr(*mut rd::rd_kafka_event_t);

impl Drop for EventPtr {
    fn drop(&mut self) {
        // SAFETY: polled from the queue, destroyed once.
        unsafe { rd::rd_kafka_event_destroy(self.0) }
    }
}

/// A consumed message as a [`Record`] (copied: the message goes with its event).
///
/// # Safety
/// `m` is a valid message without an error, alive for the call.
unsafe fn record_of(m: *const rd::rd_kafka_message_t) -> Record {
    let msg = &*m;
    let bytes = |p: *mut std::os::raw::c_void, len: usize| {
        (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
    };
    let mut ts_type = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
    let ts = rd::rd_kafka_message_timestamp(m, &mut ts_type);
    Record {
        topic: topic_name(msg.rkt),
        partition: msg.partition,
        offset: msg.offset,
        key: bytes(msg.key, msg.key_len),
        payload: bytes(msg.payload, msg.len),
        headers: headers_from_ptr(m),
        timestamp_ms: (ts_type != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
            .then_some(ts),
    }
}

/// The name of a topic handle.
///
/// # Safety
/// `rkt` is a valid topic handle or null.
unsafe fn topic_name(rkt: *const rd::rd_kafka_topic_t) -> String {
    if rkt.is_null() {
        return String::new();
    }
    CStr::from_ptr(rd::rd_kafka_topic_name(rkt))
        .to_string_lossy()
        .into_owned()
}

/// An error event as an [`Event`]: end of partition, or an error with where it came.
///
/// # Safety
/// `ev` is a valid error event.
unsafe fn error_of(ev: *mut rd::rd_kafka_event_t) -> Event {
    let err = rd::rd_kafka_event_error(ev);
    let tp = rd::rd_kafka_event_topic_partition(ev);
    let at = (!tp.is_null()).then(|| {
        let t = &*tp;
        let at = (
            CStr::from_ptr(t.topic).to_string_lossy().into_owned(),
            t.partition,
            t.offset,
        );
        rd::rd_kafka_topic_partition_destroy(tp);
        at
    });
    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
        if let Some((topic, partition, offset)) = at.clone() {
            return Event::Eof {
                topic,
                partition,
                offset,
            };
        }
    }
    let message = {
        let s = rd::rd_kafka_event_error_string(ev);
        if s.is_null() {
            format!("{err:?}")
        } else {
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    };
    Event::Error {
        code: ErrorCode(err as i32),
        fatal: rd::rd_kafka_event_error_is_fatal(ev) != 0,
        at,
        message,
    }
}

/// Each partition of `tpl` with its metadata's bytes as they are (rdkafka's own `metadata`
/// panics on bytes that are not UTF-8, which any client of the group may commit).
pub fn metadata_of(tpl: &TopicPartitionList) -> Vec<(String, i32, Vec<u8>)> {
    // SAFETY: the list is alive and unchanged while `tpl` is borrowed; a metadata pointer is
    // null or points at `metadata_size` bytes.
    unsafe {
        let l = &*tpl.ptr();
        (0..l.cnt.max(0) as usize)
            .map(|i| {
                let e = &*l.elems.add(i);
                let topic = CStr::from_ptr(e.topic).to_string_lossy().into_owned();
                let meta = if e.metadata.is_null() || e.metadata_size == 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(e.metadata.cast::<u8>(), e.metadata_size).to_vec()
                };
                (topic, e.partition, meta)
            })
            .collect()
    }
}

/// A copy of librdkafka's partition list (topic, partition, offset) as rdkafka's own.
///
/// # Safety
/// `list` is a valid list or null.
unsafe fn copy_list(list: *const rd::rd_kafka_topic_partition_list_t) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    if list.is_null() {
        return tpl;
    }
    let l = &*list;
    for i in 0..l.cnt.max(0) as usize {
        let e = &*l.elems.add(i);
        let topic = CStr::from_ptr(e.topic).to_string_lossy();
        let _ = tpl.add_partition_offset(&topic, e.partition, Offset::from_raw(e.offset));
    }
    tpl
}
