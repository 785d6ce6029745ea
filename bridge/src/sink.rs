//! Routed records -> Kafka topics, through librdkafka.
//!
//! Enqueue is not delivery: a record counts as delivered only when its delivery report says so
//! ([`SinkContext::delivery`]). The producer is idempotent, so librdkafka's own retries neither
//! duplicate nor reorder records within a partition, and records are keyed by sensor id, so
//! per-sensor order holds end to end.
//!
//! Every rdkafka error is sorted once, by [`classify`], into what the caller must do.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use edge_bridge_core::{Routed, Stream};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tracing::{debug, error, info, warn};

use crate::config::KafkaConfig;
use crate::stats::{self, Stats};

/// What to do about an rdkafka error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient (queue full, broker down, timeouts): wait and try again.
    Retry,
    /// This record can never be delivered (too large, invalid, not authorized): count it as
    /// failed and log it; other records are unaffected.
    Permanent,
    /// The producer instance is unusable (fatal idempotence error): recreate it.
    Fatal,
}

/// The one place where rdkafka error codes are mapped to actions.
pub fn classify(e: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode as C;
    let Some(code) = e.rdkafka_error_code() else {
        return ErrorClass::Permanent;
    };
    match code {
        C::Fatal => ErrorClass::Fatal,
        C::MessageSizeTooLarge
        | C::InvalidMessage
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::InvalidTimestamp
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::UnknownTopic
        | C::InvalidTopic
        | C::UnsupportedForMessageFormat
        | C::InvalidArgument => ErrorClass::Permanent,
        _ => ErrorClass::Retry,
    }
}

/// Receives delivery reports and librdkafka's own log and error events.
pub struct SinkContext {
    stats: Arc<Stats>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                warn!(facility = fac, "librdkafka: {log_message}")
            }
            _ => debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker transport failures repeat every few seconds while the link is down; librdkafka
        // keeps the records queued and retries, so this is recovered trouble, not data loss.
        warn!(%error, "Kafka client error: {reason}");
    }
}

impl ProducerContext for SinkContext {
    /// The stream index of the record.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, stream: usize) {
        let Some(stream) = Stream::ALL.iter().find(|s| stats::index(**s) == stream) else {
            return;
        };
        let counters = self.stats.stream(*stream);
        match result {
            Ok(msg) => {
                counters.delivered.fetch_add(1, Relaxed);
                let bytes = msg.key().map_or(0, <[u8]>::len) + msg.payload().map_or(0, <[u8]>::len);
                counters.bytes_delivered.fetch_add(bytes as u64, Relaxed);
            }
            Err((e, msg)) => {
                counters.failed.fetch_add(1, Relaxed);
                error!(
                    stream = stream.as_str(),
                    topic = msg.topic(),
                    error = %e,
                    "Record not delivered; it is lost unless the spool holds it"
                );
            }
        }
    }
}

/// Why the sink could not start or send.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("cannot create topic {topic}: {error}")]
    CreateTopic { topic: String, error: String },
    #[error("cannot reach the Kafka brokers {brokers} to create topics: {error}; check kafka.brokers, or set kafka.create_topics = false if the topics exist")]
    Admin { brokers: String, error: String },
    #[error("the producer failed fatally and could not be recreated: {0}")]
    Fatal(KafkaError),
}

/// Topic names per stream.
#[derive(Debug, Clone)]
pub struct Topics {
    pub raw: String,
    pub aggregate: String,
    pub dead_letter: String,
    pub late: Option<String>,
}

impl Topics {
    pub fn from_config(k: &KafkaConfig) -> Self {
        Self {
            raw: k.raw_topic.clone(),
            aggregate: k.agg_topic.clone(),
            dead_letter: k.dead_letter_topic.clone(),
            late: (!k.late_topic.is_empty()).then(|| k.late_topic.clone()),
        }
    }

    fn of(&self, s: Stream) -> &str {
        match s {
            Stream::Raw => &self.raw,
            Stream::Aggregate => &self.aggregate,
            Stream::DeadLetter => &self.dead_letter,
            Stream::Late => self.late.as_deref().unwrap_or(&self.raw),
        }
    }

    fn all(&self) -> Vec<&str> {
        let mut v = vec![
            self.raw.as_str(),
            self.aggregate.as_str(),
            self.dead_letter.as_str(),
        ];
        v.extend(self.late.as_deref());
        v
    }
}

/// The Kafka producer side of the bridge.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    client_config: ClientConfig,
    topics: Topics,
    stats: Arc<Stats>,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig, stats: Arc<Stats>) -> Result<Self, SinkError> {
        let client_config = producer_config(cfg);
        let producer = create_producer(&client_config, &stats).map_err(SinkError::Create)?;
        Ok(Self {
            producer,
            client_config,
            topics: Topics::from_config(cfg),
            stats,
        })
    }

    /// Creates the bridge's topics where missing. Existing topics are left as they are.
    pub async fn create_topics(&self, cfg: &KafkaConfig) -> Result<(), SinkError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config.create().map_err(|e| SinkError::Admin {
                brokers: cfg.brokers.clone(),
                error: e.to_string(),
            })?;
        let names = self.topics.all();
        let new: Vec<NewTopic> = names
            .iter()
            .map(|t| NewTopic::new(t, cfg.topic_partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| SinkError::Admin {
                brokers: cfg.brokers.clone(),
                error: e.to_string(),
            })?;
        for r in results {
            match r {
                Ok(topic) => info!(topic, "Created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(SinkError::CreateTopic {
                        topic,
                        error: code.to_string(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Enqueues a record, waiting while librdkafka's queue is full (backpressure). A record
    /// that can never be delivered is counted as failed and logged; a fatal producer error
    /// recreates the producer.
    pub async fn send(&mut self, routed: &Routed) -> Result<(), SinkError> {
        let stream = routed.stream;
        let rec = &routed.record;
        let topic = self.topics.of(stream);
        let mut backoff = Duration::from_micros(200);
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (k, v) in &rec.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(&v[..]),
                });
            }
            let record = BaseRecord::with_opaque_to(topic, stats::index(stream))
                .key(&rec.key[..])
                .payload(&rec.value[..])
                .timestamp(rec.timestamp_ms)
                .headers(headers);
            match self.producer.send(record) {
                Ok(()) => {
                    self.stats.stream(stream).produced.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err((e, _)) => match classify(&e) {
                    ErrorClass::Retry => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(100));
                    }
                    ErrorClass::Permanent => {
                        self.stats.stream(stream).failed.fetch_add(1, Relaxed);
                        error!(stream = stream.as_str(), topic, error = %e, "Record can never be delivered; dropped");
                        return Ok(());
                    }
                    ErrorClass::Fatal => {
                        recreate(&mut self.producer, &self.client_config, &self.stats)?
                    }
                },
            }
        }
    }

    /// Records handed to the producer and not yet reported on.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `timeout` for every enqueued record's delivery report.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Replaces a producer that failed fatally (for example an idempotence sequence error).
fn recreate(
    producer: &mut ThreadedProducer<SinkContext>,
    cfg: &ClientConfig,
    stats: &Arc<Stats>,
) -> Result<(), SinkError> {
    let reason = producer
        .client()
        .fatal_error()
        .map(|(code, text)| format!("{code}: {text}"))
        .unwrap_or_default();
    error!(reason, "Kafka producer failed fatally; recreating it");
    *producer = create_producer(cfg, stats).map_err(SinkError::Fatal)?;
    Ok(())
}

fn create_producer(
    cfg: &ClientConfig,
    stats: &Arc<Stats>,
) -> Result<ThreadedProducer<SinkContext>, KafkaError> {
    cfg.create_with_context(SinkContext {
        stats: stats.clone(),
    })
}

/// The producer settings: ours first, then the operator's pass-through options over them.
fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", "edge-bridge")
        .set("enable.idempotence", "true")
        .set("compression.type", &k.compression)
        // Batch for up to 20 ms: upstream links are metered, and larger batches compress better.
        .set("linger.ms", "20")
        // Bound librdkafka's in-memory queue for a small gateway (its default is 1 GiB). At
        // 20 ms of linger even 200,000 readings/s fill only 4,000 records per batch; each
        // queued record costs about 200 bytes of librdkafka bookkeeping besides its payload.
        .set("queue.buffering.max.kbytes", "8192")
        .set("queue.buffering.max.messages", "50000")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in &k.options {
        c.set(key, value);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_what_the_caller_must_do() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(classify(&e(RDKafkaErrorCode::QueueFull)), ErrorClass::Retry);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::BrokerTransportFailure)),
            ErrorClass::Retry
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageTimedOut)),
            ErrorClass::Retry
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::TopicAuthorizationFailed)),
            ErrorClass::Permanent
        );
        assert_eq!(classify(&e(RDKafkaErrorCode::Fatal)), ErrorClass::Fatal);
    }

    #[test]
    fn pass_through_options_override_ours() {
        let mut k = KafkaConfig::default();
        k.options.insert("linger.ms".into(), "5".into());
        let c = producer_config(&k);
        assert_eq!(c.get("linger.ms"), Some("5"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
    }
}
