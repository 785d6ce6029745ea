//! What the librdkafka clients (the producer, the topic admin and the probe) share: their
//! settings, the topic names, and how their errors read.

use std::time::Duration;

use edge_bridge_core::Stream;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;

use crate::cluster::Cluster;
use crate::config::{Config, KafkaConfig, REDACTED};

/// Topic names per stream, and the routes' own topics.
#[derive(Debug, Clone)]
pub struct Topics {
    pub raw: String,
    pub aggregate: String,
    pub dead_letter: String,
    pub late: Option<String>,
    /// Topics of `[[routes]]` that name their own (records carry them, see
    /// [`edge_bridge_core::Routed::topic`]); listed here to be created.
    pub routes: Vec<String>,
    /// The streams whose topics are created in this cluster.
    pub streams: Vec<Stream>,
}

impl Topics {
    /// The topics of the streams that go to `cluster`, the routes' own among them.
    pub fn for_cluster(config: &Config, cluster: Cluster) -> Self {
        let k = &config.kafka;
        let streams = cluster.streams(k.has_raw_cluster());
        Self {
            raw: k.raw_topic.clone(),
            aggregate: k.agg_topic.clone(),
            dead_letter: k.dead_letter_topic.clone(),
            late: (!k.late_topic.is_empty()).then(|| k.late_topic.clone()),
            routes: config.route_topic_names(&streams),
            streams,
        }
    }

    pub(super) fn of(&self, s: Stream) -> &str {
        match s {
            Stream::Raw => &self.raw,
            Stream::Aggregate => &self.aggregate,
            Stream::DeadLetter => &self.dead_letter,
            Stream::Late => self.late.as_deref().unwrap_or(&self.raw),
        }
    }

    /// The topics to create: those of this cluster's streams.
    pub(super) fn all(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for s in &self.streams {
            let t = match s {
                Stream::Late => self.late.as_deref(),
                _ => Some(self.of(*s)),
            };
            if let Some(t) = t.filter(|t| !v.contains(t)) {
                v.push(t);
            }
        }
        for r in &self.routes {
            if !v.contains(&r.as_str()) {
                v.push(r);
            }
        }
        v
    }
}

/// An rdkafka error as an operator may see it. A configuration error names the property but
/// not its value, which may be a password.
pub fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, description, key, _value) => {
            let description = description.replace(_value.as_str(), REDACTED);
            format!("{description} (librdkafka property {key:?}; check it in [kafka] or [kafka.options])")
        }
        other => other.to_string(),
    }
}

/// The bridge's two producers. librdkafka batches per producer (`linger.ms` is not a topic
/// setting), and the streams want different batching: the raw stream is most of the bytes and
/// nobody waits on it, the aggregates are few and a dashboard waits on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Raw and late records: batched for `kafka.raw_linger`, compressed at
    /// `kafka.raw_compression_level`, with `[kafka.raw_options]` over `[kafka.options]`.
    Raw,
    /// Aggregates and dead letters: sent within 20 ms.
    Prompt,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Raw, Role::Prompt];

    pub fn of(stream: Stream) -> Self {
        match stream {
            Stream::Raw | Stream::Late => Role::Raw,
            Stream::Aggregate | Stream::DeadLetter => Role::Prompt,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// A short, stable name, safe as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Raw => "raw",
            Role::Prompt => "prompt",
        }
    }
}

/// The settings of one producer: ours first, then the operator's pass-through options over
/// them. `raw_linger`: [`crate::Config::raw_linger`].
pub fn producer_config(
    k: &KafkaConfig,
    cluster: Cluster,
    role: Role,
    raw_linger: Duration,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    // The client id names the producer in the brokers' logs and quotas; the main cluster's
    // keep the names they had before there could be a second.
    let client_id = match cluster {
        Cluster::Main => format!("edge-bridge-{}", role.as_str()),
        Cluster::Raw => format!("edge-bridge-raw-cluster-{}", role.as_str()),
    };
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("compression.type", &k.compression)
        // Aggregates within 20 ms: batches still form in a flood of closing windows (the raw
        // stream's is set below).
        .set("linger.ms", "20")
        // Bound librdkafka's in-memory queue for a small gateway (its default is 1 GiB). At
        // 20 ms of linger even 200,000 readings/s fill only 4,000 records per batch, so this
        // holds five such batches. Each queued record costs about 200 bytes of librdkafka
        // bookkeeping besides its payload: with 50,000 records (as before) a Kafka broker that
        // lagged in a flood put the bridge over its 64 MiB budget, and throughput did not gain.
        // The raw producer's longer linger is cut short by full batches (librdkafka's 10,000
        // records): at 40,000 readings/s into one partition a batch is full in 250 ms, and the
        // 500 ms default took that rate without spooling (BENCHMARKS.md, CPU per reading); with
        // several partitions each batch fills more slowly, which is not measured yet.
        .set("queue.buffering.max.kbytes", "4096")
        .set("queue.buffering.max.messages", "20000")
        // Never give up on a record by time: while the uplink is down, records wait (in this
        // queue, then in the spool) instead of failing after librdkafka's default 5 minutes.
        // Ordering depends on it: a record timing out while later ones are delivered would
        // come back out of order.
        .set("message.timeout.ms", "0")
        // Reconnect within 2 s of the uplink coming back (librdkafka's default backs off to
        // 10 s); a gateway has two producers, so the extra attempts cost nothing.
        .set("reconnect.backoff.max.ms", "2000")
        // Bytes on the wire per broker (txbytes, rxbytes), for the uplink figures.
        .set(
            "statistics.interval.ms",
            super::wire::STATISTICS_INTERVAL_MS.to_string(),
        )
        .set_log_level(RDKafkaLogLevel::Warning);
    c.set(
        "security.protocol",
        k.security_protocol.to_ascii_lowercase(),
    );
    if k.security_protocol.to_ascii_lowercase().starts_with("sasl") {
        c.set("sasl.mechanisms", &k.sasl_mechanism)
            .set("sasl.username", &k.sasl_username)
            .set("sasl.password", &k.sasl_password);
    }
    for (key, value) in [
        ("ssl.ca.location", &k.ssl_ca_location),
        ("ssl.certificate.location", &k.ssl_certificate_location),
        ("ssl.key.location", &k.ssl_key_location),
        ("ssl.key.password", &k.ssl_key_password),
    ] {
        if !value.is_empty() {
            c.set(key, value);
        }
    }
    for (key, value) in &k.options {
        c.set(key, value);
    }
    // The raw stream's own settings come after [kafka.options], so that a `linger.ms` there
    // (for the aggregates) does not undo kafka.raw_linger; [kafka.raw_options] comes last.
    if role == Role::Raw {
        c.set("linger.ms", raw_linger.as_millis().to_string())
            .set("compression.level", k.raw_compression_level.to_string());
        for (key, value) in &k.raw_options {
            c.set(key, value);
        }
    }
    c
}
