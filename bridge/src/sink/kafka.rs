//! The librdkafka producer behind [`Sink`]: records to Kafka topics, delivery reports back as
//! [`Event`]s, and every rdkafka error sorted once, by [`classify`], into what the caller must
//! do.
//!
//! The producer is idempotent, so librdkafka's own retries neither duplicate nor reorder
//! records within a partition, and records are keyed by sensor id, so per-sensor order holds
//! end to end. The sink never waits and never decides where a record goes next: that is the
//! outbox's part.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_bridge_core::{OutRecord, Routed, Stream};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use tracing::{debug, error, warn};

use super::admin::TopicAdmin;
use super::client::{describe, producer_config, Role, Topics};
use super::wire::{round_trip_us, WireMeter};
use super::{ErrorClass, Event, Origin, SendError, Sink, SinkError, Tag};
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::log_throttle::LogThrottle;
use crate::stats::Stats;

/// The one place where rdkafka error codes are mapped to actions.
pub fn classify(e: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode as C;
    let Some(code) = e.rdkafka_error_code() else {
        return ErrorClass::Permanent;
    };
    match code {
        C::Fatal => ErrorClass::Fatal,
        // Taken back from the producer on purpose (shutdown, replacement).
        C::PurgeQueue | C::PurgeInflight => ErrorClass::TakenBack,
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

/// What the operator must change, for the client errors that say. librdkafka reports a TLS
/// alert from the brokers as a transport failure, so the text is read too.
fn advice(e: &KafkaError, reason: &str) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    if matches!(code, Some(C::Authentication | C::SaslAuthenticationFailed)) {
        return Some("the brokers refused the credentials; check kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password");
    }
    let has = |needles: &[&str]| needles.iter().any(|n| reason.contains(n));
    if has(&[
        "certificate required",
        "alert bad certificate",
        "alert unknown ca",
        "alert certificate unknown",
    ]) {
        Some("the brokers want a client certificate they trust; check kafka.ssl_certificate_location and kafka.ssl_key_location")
    } else if has(&[
        "certificate verify failed",
        "Broker certificate could not be verified",
    ]) {
        Some("the brokers' certificate is not signed by kafka.ssl_ca_location (or does not name the host in kafka.brokers)")
    } else if code == Some(C::SSL) {
        Some("the TLS handshake with the brokers failed; check kafka.ssl_ca_location, kafka.ssl_certificate_location and kafka.ssl_key_location")
    } else {
        None
    }
}

/// Receives delivery reports and librdkafka's own log and error events.
pub struct SinkContext {
    stats: Arc<Stats>,
    events: mpsc::Sender<Event>,
    /// librdkafka repeats a failure every second or so while it lasts: one line per kind a
    /// minute, with the count held back.
    repeats: Mutex<LogThrottle>,
    /// This producer's bytes on the wire as of its last statistics report.
    wire: WireMeter,
    role: Role,
    /// The cluster this producer writes to: whose gauges it updates.
    cluster: Cluster,
}

/// How often one kind of librdkafka warning or error is written while it repeats.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

impl SinkContext {
    fn admit(&self, key: &str) -> Option<u64> {
        let mut repeats = self.repeats.lock().unwrap_or_else(|p| p.into_inner());
        repeats.admit(key, Instant::now())
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: Statistics) {
        let grown = self.wire.observe(&statistics);
        let cluster = self.stats.cluster(self.cluster);
        cluster.wire_sent_bytes.fetch_add(grown.sent, Relaxed);
        cluster
            .wire_received_bytes
            .fetch_add(grown.received, Relaxed);
        if self.role == Role::Raw {
            cluster.wire_raw_sent_bytes.fetch_add(grown.sent, Relaxed);
        }
        cluster.round_trip_us[self.role.index()].store(round_trip_us(&statistics), Relaxed);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                if let Some(held_back) = self.admit(&format!("log {fac}")) {
                    warn!(facility = fac, held_back, "librdkafka: {log_message}")
                }
            }
            _ => debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Broker transport failures repeat every few seconds while the link is down; records
        // stay queued (and spool once the link has been down for spool.spill_after). Refused
        // credentials and certificates repeat too, but need the operator: ERROR, with the keys.
        let Some(held_back) = self.admit(&format!("error {error}")) else {
            return;
        };
        let cluster = self.cluster.brokers_key();
        match advice(&error, reason) {
            Some(advice) => {
                // The second cluster's keys are the first's with `raw_` (kafka.raw_brokers).
                let advice = match self.cluster {
                    Cluster::Main => advice.to_owned(),
                    Cluster::Raw => advice.replace("kafka.", "kafka.raw_"),
                };
                error!(%error, held_back, cluster, "Kafka refused the bridge: {advice}: {reason}")
            }
            None => warn!(%error, held_back, cluster, "Kafka client error: {reason}"),
        }
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<Tag>;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: Box<Tag>) {
        let tag = *tag;
        let counters = self.stats.stream(tag.stream);
        let event = match result {
            Ok(msg) => {
                counters.delivered.fetch_add(1, Relaxed);
                self.stats
                    .cluster(self.cluster)
                    .kafka_reachable
                    .store(1, Relaxed);
                let bytes = msg.key().map_or(0, <[u8]>::len) + msg.payload().map_or(0, <[u8]>::len);
                counters.bytes_delivered.fetch_add(bytes as u64, Relaxed);
                if tag.stream == Stream::Aggregate {
                    let secs = (crate::clock::wall_ms() - tag.made_ms).max(0) as f64 / 1000.0;
                    self.stats.aggregate_latency.0.observe(secs);
                }
                match tag.origin {
                    Origin::Direct => return,
                    Origin::Spooled(..) => {
                        counters.delivered_from_spool.fetch_add(1, Relaxed);
                    }
                    Origin::Carrier(_) => {}
                }
                Event::Delivered(tag)
            }
            Err((e, msg)) => Event::Failed {
                record: record_of(msg, tag.timestamp_ms),
                tag,
                class: classify(e),
                error: e.to_string(),
            },
        };
        // The receiver lives as long as the bridge; after it is gone nobody needs reports.
        let _ = self.events.send(event);
    }
}

/// The record a failed delivery report carries, to be spooled instead. `timestamp_ms` comes
/// from the delivery tag: the report itself has none.
fn record_of(msg: &BorrowedMessage<'_>, timestamp_ms: i64) -> OutRecord {
    let headers = msg.headers().map_or_else(Vec::new, |hs| {
        hs.iter()
            .map(|h| {
                (
                    h.key.to_owned().into(),
                    Bytes::copy_from_slice(h.value.unwrap_or_default()),
                )
            })
            .collect()
    });
    OutRecord {
        key: Bytes::copy_from_slice(msg.key().unwrap_or_default()),
        value: Bytes::copy_from_slice(msg.payload().unwrap_or_default()),
        timestamp_ms,
        headers,
    }
}

/// The Kafka producer side of the bridge: one producer per [`Role`], so that the raw stream
/// batches long while the aggregates go out at once. Per sensor, each stream is in one
/// producer, so its order holds.
pub struct KafkaSink {
    /// By [`Role::index`].
    producers: [ThreadedProducer<SinkContext>; 2],
    /// Numbers records in the order they are handed to the producers.
    next_seq: std::sync::atomic::AtomicU64,
    /// By [`Role::index`].
    client_configs: [ClientConfig; 2],
    topics: Topics,
    stats: Arc<Stats>,
    events: mpsc::Sender<Event>,
    cluster: Cluster,
    /// The cluster's settings, for its topic admin.
    admin_cfg: KafkaConfig,
}

impl KafkaSink {
    /// The sink to one cluster, and the receiving end of its delivery events.
    /// `cfg`: that cluster's settings ([`KafkaConfig::raw_cluster`] for the second);
    /// `raw_linger`: [`crate::Config::raw_linger`]; `topics`: the topics of the streams it
    /// takes, to be created.
    pub fn new(
        cfg: &KafkaConfig,
        cluster: Cluster,
        raw_linger: Duration,
        topics: Topics,
        stats: Arc<Stats>,
    ) -> Result<(Self, mpsc::Receiver<Event>), SinkError> {
        let (events, rx) = mpsc::channel();
        let client_configs = Role::ALL.map(|role| producer_config(cfg, cluster, role, raw_linger));
        let producers = create_producers(&client_configs, cluster, &stats, &events)
            .map_err(|e| SinkError::Create(describe(&e)))?;
        Ok((
            Self {
                producers,
                next_seq: Default::default(),
                client_configs,
                topics,
                stats,
                events,
                cluster,
                admin_cfg: cfg.clone(),
            },
            rx,
        ))
    }

    /// What creating topics and probing the brokers need, for a task of its own.
    pub fn admin_handle(&self) -> TopicAdmin {
        TopicAdmin::new(
            self.client_configs[Role::Prompt.index()].clone(),
            self.topics.clone(),
            self.cluster,
            &self.admin_cfg,
        )
    }

    /// Waits up to `timeout` until every enqueued record has its delivery report.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Raises a fatal error in both producers, as librdkafka's test hook does: for tests of
    /// the recovery path, which a real broker rarely exercises.
    #[doc(hidden)]
    pub fn inject_fatal_error(&self) {
        use rdkafka::types::RDKafkaRespErr;
        let reason = std::ffi::CString::new("injected by a test").expect("no NUL");
        for producer in &self.producers {
            // SAFETY: the client pointer is valid while the producer lives; the function only
            // records the error in the client.
            unsafe {
                rdkafka::bindings::rd_kafka_test_fatal_error(
                    producer.client().native_ptr(),
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                    reason.as_ptr(),
                );
            }
        }
    }
}

impl Sink for KafkaSink {
    /// One attempt to enqueue a record; never waits.
    fn try_send(&self, routed: &Routed, origin: Origin, made_ms: i64) -> Result<(), SendError> {
        let stream = routed.stream;
        let rec = &routed.record;
        let topic = routed
            .topic
            .as_deref()
            .unwrap_or_else(|| self.topics.of(stream));
        let mut record = BaseRecord::with_opaque_to(
            topic,
            Box::new(Tag {
                stream,
                origin,
                made_ms,
                seq: self.next_seq.fetch_add(1, Relaxed),
                timestamp_ms: rec.timestamp_ms,
                topic: routed.topic.clone(),
            }),
        )
        .key(&rec.key[..])
        .payload(&rec.value[..])
        .timestamp(rec.timestamp_ms);
        // No header list at all for a record without headers (the default raw and aggregate
        // records): an empty one is still a C allocation and a free per record.
        if !rec.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (k, v) in &rec.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(&v[..]),
                });
            }
            record = record.headers(headers);
        }
        match self.producers[Role::of(stream).index()].send(record) {
            Ok(()) => {
                self.stats.stream(stream).produced.fetch_add(1, Relaxed);
                Ok(())
            }
            Err((error, _)) => Err(SendError {
                class: classify(&error),
                error: error.to_string(),
            }),
        }
    }

    /// Records handed to the producers and not yet reported on.
    fn in_flight(&self) -> i32 {
        self.producers.iter().map(|p| p.in_flight_count()).sum()
    }

    /// A producer's fatal error, if one has one: the sink must then be replaced.
    fn fatal_error(&self) -> Option<String> {
        self.producers.iter().find_map(|p| {
            p.client()
                .fatal_error()
                .map(|(code, text)| format!("{code}: {text}"))
        })
    }

    fn topic_of(&self, stream: Stream) -> &str {
        self.topics.of(stream)
    }

    /// Takes every record back from the producers: each comes back as a failed delivery report
    /// (class [`ErrorClass::TakenBack`]), so the caller can spool it. Waits up to `timeout` for those reports.
    async fn purge(&self, timeout: Duration) -> bool {
        for producer in &self.producers {
            producer.purge(PurgeConfig::default().queue().inflight());
        }
        self.wait_idle(timeout).await
    }

    /// Takes every record back from the producers (each returns as a failed delivery report,
    /// to be spooled) and starts fresh producers. Fresh ones rather than the same after a
    /// purge: purging records the broker may have half-received makes an idempotent producer
    /// bump its epoch, which not every Kafka-API broker handles (tansu answers with
    /// ProducerFenced forever).
    async fn replace(&mut self) -> Result<(), SinkError> {
        if !self.purge(Duration::from_secs(5)).await {
            error!(
                in_flight = self.in_flight(),
                "The producer did not give all its records back; those are lost"
            );
        }
        self.producers = create_producers(
            &self.client_configs,
            self.cluster,
            &self.stats,
            &self.events,
        )
        .map_err(|e| SinkError::Fatal(describe(&e)))?;
        Ok(())
    }
}

fn create_producers(
    configs: &[ClientConfig; 2],
    cluster: Cluster,
    stats: &Arc<Stats>,
    events: &mpsc::Sender<Event>,
) -> Result<[ThreadedProducer<SinkContext>; 2], KafkaError> {
    let [raw, prompt] = configs;
    Ok([
        create_producer(raw, Role::Raw, cluster, stats, events)?,
        create_producer(prompt, Role::Prompt, cluster, stats, events)?,
    ])
}

fn create_producer(
    cfg: &ClientConfig,
    role: Role,
    cluster: Cluster,
    stats: &Arc<Stats>,
    events: &mpsc::Sender<Event>,
) -> Result<ThreadedProducer<SinkContext>, KafkaError> {
    cfg.create_with_context(SinkContext {
        stats: stats.clone(),
        events: events.clone(),
        repeats: Mutex::new(LogThrottle::new(REPEAT_EVERY)),
        wire: WireMeter::default(),
        role,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(500);

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
    fn sasl_ssl_settings_reach_librdkafka_and_it_accepts_them() {
        let mut k = KafkaConfig {
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: "SCRAM-SHA-512".into(),
            sasl_username: "edge".into(),
            sasl_password: "s3cret".into(),
            ..KafkaConfig::default()
        };
        let c = producer_config(&k, Cluster::Main, Role::Raw, LINGER);
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("edge"));
        // librdkafka refuses unknown mechanisms and SSL when built without it: creating the
        // producer proves this build can talk to a managed cluster.
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            k.sasl_mechanism = mechanism.into();
            let (events, _rx) = mpsc::channel();
            let _producer = create_producer(
                &producer_config(&k, Cluster::Main, Role::Raw, LINGER),
                Role::Raw,
                Cluster::Main,
                &Arc::default(),
                &events,
            )
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
    }

    #[test]
    fn configuration_errors_name_the_property_not_its_value() {
        let mut k = KafkaConfig::default();
        k.options.insert(
            "sasl.oauthbearer.client.secret".into(),
            "hunter2-xyz".into(),
        );
        k.options
            .insert("no.such.property".into(), "hunter3-xyz".into());
        let (events, _rx) = mpsc::channel();
        let Err(e) = create_producer(
            &producer_config(&k, Cluster::Main, Role::Prompt, LINGER),
            Role::Prompt,
            Cluster::Main,
            &Arc::default(),
            &events,
        ) else {
            panic!("librdkafka accepted an unknown property");
        };
        let shown = SinkError::Create(describe(&e)).to_string();
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("librdkafka property"), "{shown}");
    }

    #[test]
    fn pass_through_options_override_ours() {
        let mut k = KafkaConfig::default();
        k.options.insert("linger.ms".into(), "5".into());
        k.options.insert("batch.num.messages".into(), "100".into());
        k.raw_options.insert("linger.ms".into(), "700".into());
        let raw = producer_config(&k, Cluster::Main, Role::Raw, LINGER);
        let prompt = producer_config(&k, Cluster::Main, Role::Prompt, LINGER);
        assert_eq!(raw.get("linger.ms"), Some("700"));
        assert_eq!(prompt.get("linger.ms"), Some("5"));
        for c in [&raw, &prompt] {
            assert_eq!(c.get("batch.num.messages"), Some("100"));
            assert_eq!(c.get("enable.idempotence"), Some("true"));
            assert_eq!(c.get("compression.type"), Some("zstd"));
        }
    }

    #[test]
    fn the_raw_stream_batches_longer_and_compresses_harder() {
        let mut k = KafkaConfig::default();
        // A linger in [kafka.options] is the aggregates'; the raw stream keeps its own.
        k.options.insert("linger.ms".into(), "20".into());
        let raw = producer_config(&k, Cluster::Main, Role::Raw, LINGER);
        let prompt = producer_config(&k, Cluster::Main, Role::Prompt, LINGER);
        assert_eq!(raw.get("linger.ms"), Some("500"));
        assert_eq!(raw.get("compression.level"), Some("6"));
        assert_eq!(prompt.get("linger.ms"), Some("20"));
        assert_eq!(prompt.get("compression.level"), None);
        // librdkafka takes both.
        let (events, _rx) = mpsc::channel();
        let _producers =
            create_producers(&[raw, prompt], Cluster::Main, &Arc::default(), &events).unwrap();
        for stream in [Stream::Raw, Stream::Late] {
            assert_eq!(Role::of(stream), Role::Raw);
        }
        for stream in [Stream::Aggregate, Stream::DeadLetter] {
            assert_eq!(Role::of(stream), Role::Prompt);
        }
    }
}
