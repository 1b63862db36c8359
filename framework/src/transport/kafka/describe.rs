//! A topic's id (KIP-516) through librdkafka's DescribeTopics, which rdkafka does not wrap: a
//! topic deleted and made again under the same name has a new id, so a reader that kept offsets
//! of the old one can tell that the log under the name is a new one.

use std::ffi::{CStr, CString};
use std::time::Duration;

use rdkafka::bindings as rd;

use crate::transport::errors::{self, ErrorCode};
use crate::transport::TransportError;

/// The id base64 prints for a broker that has none (all zero bits).
const NO_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// `topic`'s id as Kafka prints it (base64), or `None` when the broker gives none. Blocks for at
/// most `timeout`.
///
/// # Safety
/// `rk` is a live client handle for the whole call.
pub unsafe fn topic_id(
    rk: *mut rd::rd_kafka_t,
    topic: &str,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let name = CString::new(topic).map_err(|_| TransportError::fatal("a topic name with a NUL byte"))?;
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut names = [name.as_ptr()];
    let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
    let options =
        rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS);
    let mut errstr = [0 as std::os::raw::c_char; 256];
    rd::rd_kafka_AdminOptions_set_request_timeout(options, timeout_ms, errstr.as_mut_ptr(), errstr.len());
    let queue = rd::rd_kafka_queue_new(rk);
    // The request copies what it needs of the collection and the options.
    rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
    rd::rd_kafka_TopicCollection_destroy(topics);
    rd::rd_kafka_AdminOptions_destroy(options);
    let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
    let got = if event.is_null() {
        Err(errors::classify(
            ErrorCode::REQUEST_TIMED_OUT,
            format!("describing topic {topic}: no answer in {timeout:?}"),
        ))
    } else {
        let got = id_of(event, topic);
        rd::rd_kafka_event_destroy(event);
        got
    };
    rd::rd_kafka_queue_destroy(queue);
    got
}

/// The id in a DescribeTopics result event.
///
/// # Safety
/// `event` is a valid DescribeTopics result event.
unsafe fn id_of(event: *mut rd::rd_kafka_event_t, topic: &str) -> Result<Option<String>, TransportError> {
    let err = rd::rd_kafka_event_error(event);
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        let why = CStr::from_ptr(rd::rd_kafka_event_error_string(event)).to_string_lossy();
        return Err(errors::classify(
            ErrorCode(err as i32),
            format!("describing topic {topic}: {why}"),
        ));
    }
    let result = rd::rd_kafka_event_DescribeTopics_result(event);
    let mut n = 0usize;
    let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
    if n == 0 || descriptions.is_null() {
        return Ok(None);
    }
    let d = *descriptions;
    let e = rd::rd_kafka_TopicDescription_error(d);
    if !e.is_null() {
        let code = rd::rd_kafka_error_code(e);
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let why = CStr::from_ptr(rd::rd_kafka_error_string(e)).to_string_lossy();
            return Err(errors::classify(
                ErrorCode(code as i32),
                format!("topic {topic}: {why}"),
            ));
        }
    }
    let id = rd::rd_kafka_TopicDescription_topic_id(d);
    if id.is_null() {
        return Ok(None);
    }
    let id = CStr::from_ptr(rd::rd_kafka_Uuid_base64str(id))
        .to_string_lossy()
        .into_owned();
    Ok((id != NO_ID).then_some(id))
}
