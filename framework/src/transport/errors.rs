//! What a Kafka error code means to us, for both transports: which failures a retry may cure,
//! which are final, which say "this record is too large", and when a failed produce may still
//! have been written. Codes are numbered as Kafka's protocol numbers them (positive) and as
//! librdkafka numbers its own client-side errors (negative), so the Kafka transport passes
//! librdkafka's code through and the simulated broker answers with the code Kafka would send.

use crate::error::BoxError;
use crate::mutants::{self, Mutant};

use super::TransportError;

/// A Kafka error code (`rd_kafka_resp_err_t`'s numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i32);

impl ErrorCode {
    // librdkafka's own, client-side codes.
    /// The client's fatal error state (an idempotent producer that lost its sequence).
    pub const FATAL: ErrorCode = ErrorCode(-150);
    /// A request went out and no answer came on that connection.
    pub const TRANSPORT: ErrorCode = ErrorCode(-195);
    /// `message.timeout.ms` passed before the record was acknowledged.
    pub const MSG_TIMED_OUT: ErrorCode = ErrorCode(-192);
    /// The topic is not in the cluster's metadata.
    pub const UNKNOWN_TOPIC: ErrorCode = ErrorCode(-188);
    /// The producer's queue is full.
    pub const QUEUE_FULL: ErrorCode = ErrorCode(-184);
    /// A record (or its batch) failed to parse, or its checksum.
    pub const BAD_MSG: ErrorCode = ErrorCode(-199);
    /// A compressed batch could not be decompressed.
    pub const BAD_COMPRESSION: ErrorCode = ErrorCode(-198);
    /// The client cannot do this: a batch compressed with a codec it was built without.
    pub const NOT_IMPLEMENTED: ErrorCode = ErrorCode(-170);
    /// The fetch position was out of range and was reset (`auto.offset.reset`).
    pub const AUTO_OFFSET_RESET: ErrorCode = ErrorCode(-140);

    // Kafka's protocol codes.
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(1);
    pub const CORRUPT_MESSAGE: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const LEADER_NOT_AVAILABLE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER_OR_FOLLOWER: ErrorCode = ErrorCode(6);
    pub const REQUEST_TIMED_OUT: ErrorCode = ErrorCode(7);
    pub const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(10);
    pub const COORDINATOR_LOAD_IN_PROGRESS: ErrorCode = ErrorCode(14);
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = ErrorCode(15);
    pub const NOT_COORDINATOR: ErrorCode = ErrorCode(16);
    pub const INVALID_TOPIC: ErrorCode = ErrorCode(17);
    pub const RECORD_LIST_TOO_LARGE: ErrorCode = ErrorCode(18);
    pub const NOT_ENOUGH_REPLICAS: ErrorCode = ErrorCode(19);
    pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: ErrorCode = ErrorCode(20);
    pub const INVALID_REQUIRED_ACKS: ErrorCode = ErrorCode(21);
    pub const ILLEGAL_GENERATION: ErrorCode = ErrorCode(22);
    pub const UNKNOWN_MEMBER_ID: ErrorCode = ErrorCode(25);
    pub const REBALANCE_IN_PROGRESS: ErrorCode = ErrorCode(27);
    pub const TOPIC_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(29);
    pub const GROUP_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(30);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(40);
    pub const POLICY_VIOLATION: ErrorCode = ErrorCode(44);
    pub const SASL_AUTHENTICATION_FAILED: ErrorCode = ErrorCode(58);
    pub const FENCED_LEADER_EPOCH: ErrorCode = ErrorCode(74);
    pub const UNKNOWN_LEADER_EPOCH: ErrorCode = ErrorCode(75);
    pub const UNSUPPORTED_COMPRESSION_TYPE: ErrorCode = ErrorCode(76);
    pub const INVALID_RECORD: ErrorCode = ErrorCode(87);
    pub const PRODUCER_FENCED: ErrorCode = ErrorCode(90);
    pub const FENCED_MEMBER_EPOCH: ErrorCode = ErrorCode(110);
    pub const STALE_MEMBER_EPOCH: ErrorCode = ErrorCode(113);

    /// Whether a commit was refused because the group is moving partitions (a rebalance under
    /// way, a generation or member epoch that has passed, a member the coordinator no longer
    /// knows): what the commit carried is read again by the partitions' next owner.
    pub fn membership_moved(self) -> bool {
        matches!(
            self,
            ErrorCode::ILLEGAL_GENERATION
                | ErrorCode::UNKNOWN_MEMBER_ID
                | ErrorCode::REBALANCE_IN_PROGRESS
                | ErrorCode::FENCED_MEMBER_EPOCH
                | ErrorCode::STALE_MEMBER_EPOCH
        )
    }

    /// Whether a consumer that got this error at an offset got it for the record there: one it
    /// cannot decode, parse or fetch whole. Such an error comes back at every fetch of that
    /// offset, so the record is given up on after a few (`transport::unreadable`); any other
    /// error at an offset (authorization, a leader moving) is the consumer's, not the record's.
    pub fn unreadable_record(self) -> bool {
        matches!(
            self,
            ErrorCode::BAD_MSG
                | ErrorCode::BAD_COMPRESSION
                | ErrorCode::NOT_IMPLEMENTED
                | ErrorCode::CORRUPT_MESSAGE
                | ErrorCode::MESSAGE_TOO_LARGE
                | ErrorCode::UNSUPPORTED_COMPRESSION_TYPE
                | ErrorCode::INVALID_RECORD
        )
    }

    /// Whether a consumer that got this error at a partition had its position put back to where
    /// `auto.offset.reset` says: the log no longer has the offset it was at (a topic made again,
    /// a log cut back).
    pub fn position_reset(self) -> bool {
        matches!(
            self,
            ErrorCode::OFFSET_OUT_OF_RANGE | ErrorCode::AUTO_OFFSET_RESET
        )
    }

    /// What a retry of ours can do about this error.
    pub fn class(self) -> Class {
        match self {
            ErrorCode::MESSAGE_TOO_LARGE | ErrorCode::RECORD_LIST_TOO_LARGE => Class::TooLarge,
            // Refusals no retry changes: the client is unusable, the topic does not exist or is
            // not ours to use, the configuration or a broker policy refuses us, the record will
            // never be taken. librdkafka exports no such table (its `rd_kafka_err_action` is
            // internal), and by the time a delivery report fails it has retried what it deems
            // transient.
            ErrorCode::FATAL
            | ErrorCode::UNKNOWN_TOPIC
            | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            | ErrorCode::INVALID_TOPIC
            | ErrorCode::INVALID_REQUIRED_ACKS
            | ErrorCode::TOPIC_AUTHORIZATION_FAILED
            | ErrorCode::GROUP_AUTHORIZATION_FAILED
            | ErrorCode::INVALID_CONFIG
            | ErrorCode::POLICY_VIOLATION
            | ErrorCode::SASL_AUTHENTICATION_FAILED
            | ErrorCode::INVALID_RECORD
            | ErrorCode::PRODUCER_FENCED => Class::Final,
            ErrorCode::NOT_ENOUGH_REPLICAS if mutants::on(Mutant::RefusalIsFinal) => Class::Final,
            // Everything else passes: a leader moving, replicas short, a broker away, a timeout.
            _ => Class::Transient,
        }
    }
}

/// What a retry can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A later attempt may succeed.
    Transient,
    /// No attempt will.
    Final,
    /// This record will never be taken; a smaller one would.
    TooLarge,
}

/// An error with this code as the transport's error, the cause kept.
pub fn classify(code: ErrorCode, cause: impl Into<BoxError>) -> TransportError {
    match code.class() {
        Class::Transient => TransportError::retriable(cause),
        Class::Final => TransportError::fatal(cause),
        Class::TooLarge => TransportError::too_large(cause),
    }
}

/// A produce that failed for good. A record that may have reached a broker (a request went out
/// and its answer never came, librdkafka's `RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED`) may be in
/// the log whatever the last error says, so it is [`TransportError::MaybeWritten`], never "not
/// written". One never sent keeps its code's class.
pub fn delivery_failed(
    code: ErrorCode,
    may_have_been_sent: bool,
    cause: impl Into<BoxError>,
) -> TransportError {
    if may_have_been_sent {
        TransportError::maybe_written(cause)
    } else {
        classify(code, cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_for_now_pass_and_refusals_for_good_do_not() {
        for code in [
            ErrorCode::NOT_ENOUGH_REPLICAS,
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode::TRANSPORT,
            ErrorCode::MSG_TIMED_OUT,
            ErrorCode::QUEUE_FULL,
        ] {
            assert_eq!(code.class(), Class::Transient, "{code:?}");
            assert!(classify(code, "x").is_retriable());
        }
        for code in [ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, ErrorCode::PRODUCER_FENCED] {
            assert!(
                matches!(classify(code, "x"), TransportError::Fatal(_)),
                "{code:?}"
            );
        }
        assert!(matches!(
            classify(ErrorCode::MESSAGE_TOO_LARGE, "x"),
            TransportError::TooLarge(_)
        ));
    }

    #[test]
    fn a_record_that_may_have_been_sent_may_have_been_written_whatever_the_error() {
        for code in [
            ErrorCode::MSG_TIMED_OUT,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::MESSAGE_TOO_LARGE,
        ] {
            assert!(
                delivery_failed(code, true, "x").may_have_been_written(),
                "{code:?}"
            );
            assert!(
                !delivery_failed(code, false, "x").may_have_been_written(),
                "{code:?}"
            );
        }
    }
}
