//! Where records go: the seam between the outbox and a Kafka-API cluster.
//!
//! Enqueue is not delivery: a record counts as delivered only when its delivery report says
//! so. A [`Sink`] takes records without waiting, reports on each one later as an [`Event`]
//! (through the channel it was created with), and sorts every error it meets, once, into an
//! [`ErrorClass`]: what the caller must do. Its callers never see the client library's types,
//! so the outbox is tested with a fake sink and a second cluster or another client needs only
//! another implementation.
//!
//! - [`kafka`]: the librdkafka producer, its delivery reports and its error classification.
//! - [`admin`]: topic creation and the broker probe.
//! - [`client`]: what those clients share: settings, topic names, error texts.

pub mod admin;
pub mod client;
pub mod kafka;
pub mod wire;

use std::future::Future;
use std::time::Duration;

use edge_bridge_core::{OutRecord, Routed, Stream};

use crate::spool::Lane;

pub use admin::{spawn_probe, ProbeLink, TopicAdmin};
pub use kafka::KafkaSink;

/// What the caller does about a failed send or delivery: decided once, by the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient (queue full, broker down, timeouts): wait and try again.
    Retry,
    /// Taken back from the sink on purpose (a purge at shutdown or when the producer is
    /// replaced): not a failure of the record, which goes to the spool.
    TakenBack,
    /// This record can never be delivered (too large, invalid, not authorized): count it as
    /// failed and log it; other records are unaffected.
    Permanent,
    /// The producer instance is unusable (fatal idempotence error): recreate it.
    Fatal,
}

/// Where a record handed to the producer came from: what its delivery report must update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent as soon as it was made; nobody waits for its report.
    Direct,
    /// Sent as soon as it was made, and the MQTT message with this ack sequence number waits
    /// for its report.
    Carrier(u64),
    /// Replayed from the spool: its report removes it there.
    Spooled(Lane, u64),
}

/// What the delivery callback attaches to each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub stream: Stream,
    pub origin: Origin,
    /// Wall-clock ms when the bridge made the record (for an aggregate: when its window
    /// closed), for the latency histogram.
    pub made_ms: i64,
    /// Order in which records were handed to the producer (across producers).
    pub seq: u64,
    /// The record's Kafka timestamp. librdkafka reports none for a failed message (its
    /// timestamp call answers "not available" once the message carries an error), and a
    /// record re-sent from the spool without it would be stamped with the time of the replay.
    pub timestamp_ms: i64,
    /// The record's own topic (a route's), to spool it with if it fails.
    pub topic: Option<edge_bridge_core::TopicName>,
}

/// A delivery report someone must act on.
#[derive(Debug)]
pub enum Event {
    /// Only for [`Origin::Carrier`] and [`Origin::Spooled`]; direct records are only counted.
    Delivered(Tag),
    /// Any failure, with the record, so that it can be spooled instead.
    Failed {
        tag: Tag,
        class: ErrorClass,
        /// The sink's error, as an operator reads it.
        error: String,
        record: OutRecord,
    },
}

/// Why one attempt to enqueue a record did not succeed.
#[derive(Debug)]
pub struct SendError {
    pub class: ErrorClass,
    /// The sink's error, as an operator reads it.
    pub error: String,
}

/// Why the sink could not start or send.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(String),
    #[error("cannot create topic {topic}: {error}")]
    CreateTopic { topic: String, error: String },
    #[error("cannot reach the Kafka brokers {brokers} to create topics: {error}; check kafka.brokers, or set kafka.create_topics = false if the topics exist")]
    Admin { brokers: String, error: String },
    #[error("the producer failed fatally and could not be recreated: {0}")]
    Fatal(String),
}

/// A destination for records (see the module documentation).
pub trait Sink {
    /// One attempt to enqueue a record; never waits.
    fn try_send(&self, routed: &Routed, origin: Origin, made_ms: i64) -> Result<(), SendError>;

    /// Records handed over and not yet reported on.
    fn in_flight(&self) -> i32;

    /// Why the sink cannot go on as it is, if it cannot: it must then be replaced.
    fn fatal_error(&self) -> Option<String>;

    /// The topic a stream's records go to, for logs.
    fn topic_of(&self, stream: Stream) -> &str;

    /// Takes every record back: each returns as a failed report of class
    /// [`ErrorClass::TakenBack`]. Waits up to `timeout` for those reports; false if some are
    /// still missing then.
    fn purge(&self, timeout: Duration) -> impl Future<Output = bool> + Send;

    /// Takes every record back, as [`Sink::purge`], and starts afresh.
    fn replace(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;
}
