//! Counters an operator asks about, shared between the ingest loop and the Kafka delivery
//! callbacks. Plain atomics: the hot path pays one relaxed add per counter.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use edge_bridge_core::{raw_policy, DecodeError, Refusal, Stream, Verdict, IGNORED_REASONS};
use prometheus_client::metrics::histogram::Histogram;

use crate::cluster::Cluster;

/// Per output stream.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Handed to the producer.
    pub produced: AtomicU64,
    /// Confirmed by a delivery report: the only thing that counts as delivered.
    pub delivered: AtomicU64,
    /// Reported failed by the producer, or refused at enqueue as permanently undeliverable.
    pub failed: AtomicU64,
    /// Key + value bytes of delivered records, before compression.
    pub bytes_delivered: AtomicU64,
    /// Of `delivered`, those replayed from the spool.
    pub delivered_from_spool: AtomicU64,
    /// Written to the on-disk spool to wait for the uplink (including records taken back
    /// from a failed producer).
    pub spooled: AtomicU64,
    /// Given up: dropped from a full spool, or lost in a failed spool write. Counted, logged.
    pub dropped: AtomicU64,
}

/// Why the embedded broker's gate refused a connection (a metric label: a bounded set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttRefusal {
    /// The TLS handshake failed or did not finish in time.
    Handshake = 0,
    /// A plaintext MQTT client on the TLS port.
    PlaintextOnTls = 1,
    /// No username, or a wrong username or password.
    Credentials = 2,
    /// The first packet was not a CONNECT, or nothing came in time.
    NoConnect = 3,
}

impl MqttRefusal {
    pub const ALL: [MqttRefusal; 4] = [
        MqttRefusal::Handshake,
        MqttRefusal::PlaintextOnTls,
        MqttRefusal::Credentials,
        MqttRefusal::NoConnect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MqttRefusal::Handshake => "tls_handshake",
            MqttRefusal::PlaintextOnTls => "plaintext_on_tls",
            MqttRefusal::Credentials => "bad_credentials",
            MqttRefusal::NoConnect => "no_connect",
        }
    }
}

/// Why the embedded broker's gate closed an admitted MQTT connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttDisconnect {
    /// A packet over `mqtt.max_packet_size`.
    PacketTooLarge = 0,
    /// A packet whose length is not MQTT.
    MalformedPacket = 1,
}

impl MqttDisconnect {
    pub const ALL: [MqttDisconnect; 2] = [
        MqttDisconnect::PacketTooLarge,
        MqttDisconnect::MalformedPacket,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MqttDisconnect::PacketTooLarge => "packet_too_large",
            MqttDisconnect::MalformedPacket => "malformed_packet",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// MQTT publishes received on the subscription.
    pub readings_in: AtomicU64,
    /// Payload bytes of those publishes.
    pub bytes_in: AtomicU64,
    pub aggregated: AtomicU64,
    pub late: AtomicU64,
    /// Undecodable (dead-lettered).
    pub rejected: AtomicU64,
    /// Decoded but left out of the aggregates by a memory bound.
    pub refused: AtomicU64,
    pub windows_emitted: AtomicU64,
    /// Publishes the embedded broker accepted from sensors but deleted from its bounded log
    /// before the bridge read them (the bridge fell behind the inflow).
    pub broker_dropped: AtomicU64,
    /// Damaged spool records skipped (torn by a power cut, corrupted on disk).
    pub spool_damaged: AtomicU64,
    /// Rejections by [`DecodeError::REASONS`] index, refusals by [`Refusal::REASONS`] index.
    pub rejected_by_reason: [AtomicU64; DecodeError::REASONS.len()],
    pub refused_by_reason: [AtomicU64; Refusal::REASONS.len()],
    /// Readings aggregated but left out of the raw stream by the raw policy (also counted in
    /// `aggregated`), by reason.
    pub thinned_by_reason: [AtomicU64; raw_policy::REASONS.len()],
    /// Publishes a route dropped by its own rules (an exclusion, or no measurement with
    /// `no_measurement = "drop"`), by [`IGNORED_REASONS`] index.
    pub ignored_by_reason: [AtomicU64; IGNORED_REASONS.len()],
    /// Gauges the main loop sets: open windows, sensors tracked.
    pub open_windows: AtomicU64,
    pub sensors: AtomicU64,
    /// MQTT side: connected and subscribed (0 or 1), reconnections since start.
    pub mqtt_connected: AtomicU64,
    pub mqtt_subscribed: AtomicU64,
    pub mqtt_reconnects: AtomicU64,
    /// External broker, QoS 1: messages received whose record is not yet delivered or synced
    /// to the spool (their acks wait), and acks released but not yet written to the broker.
    pub mqtt_unacked: AtomicU64,
    pub mqtt_acks_unsent: AtomicU64,
    /// Connections the embedded broker's gate refused, by [`MqttRefusal`].
    pub mqtt_refused: [AtomicU64; MqttRefusal::ALL.len()],
    /// Sparkplug B rebirth requests published (routes with `ask_rebirth`).
    pub rebirths_requested: AtomicU64,
    /// Admitted connections the gate closed, by [`MqttDisconnect`].
    pub mqtt_disconnects: [AtomicU64; MqttDisconnect::ALL.len()],
    /// Seconds from a window's close to its aggregate's delivery report.
    pub aggregate_latency: Latency,
    /// Wall-clock ms of the first and the latest publish: the busy period for rates.
    first_ms: AtomicI64,
    last_ms: AtomicI64,
    streams: [StreamCounters; 4],
    /// By [`Cluster::index`]; the second only with `kafka.raw_brokers`.
    clusters: [ClusterStats; 2],
    /// Whether a second cluster takes the per-reading streams (`kafka.raw_brokers`).
    split: AtomicBool,
}

/// Per Kafka-API cluster ([`Cluster`]): its producers, spool and outage state.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Whether the brokers answered lately: the last metadata probe, or a delivery report
    /// since (0 or 1).
    pub kafka_reachable: AtomicU64,
    /// 1 while the outbox considers this cluster down (its records go to its spool).
    pub uplink_down: AtomicU64,
    /// Records waiting in this cluster's spool, and its size on disk.
    pub spool_records: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// The spool's cap in bytes (`spool.max_mib`); 0 while the spool is off.
    pub spool_capacity_bytes: AtomicU64,
    /// Records in the producers awaiting a delivery report.
    pub producer_queue: AtomicU64,
    /// Bytes the producers wrote to and read from the brokers' sockets (see
    /// [`crate::sink::wire`]), over every producer since start.
    pub wire_sent_bytes: AtomicU64,
    pub wire_received_bytes: AtomicU64,
    /// The part of `wire_sent_bytes` the raw stream's producer wrote (raw and late records).
    pub wire_raw_sent_bytes: AtomicU64,
    /// Each producer's request round trip in its last statistics interval, in microseconds
    /// (see [`crate::sink::wire::round_trip_us`]), indexed by [`crate::sink::Role`].
    pub round_trip_us: [AtomicU64; 2],
}

impl Stats {
    pub fn stream(&self, s: Stream) -> &StreamCounters {
        &self.streams[index(s)]
    }

    pub fn cluster(&self, c: Cluster) -> &ClusterStats {
        &self.clusters[c.index()]
    }

    /// The clusters records go to: the main one, and the raw stream's if there is one.
    pub fn clusters(&self) -> &'static [Cluster] {
        if self.split.load(Relaxed) {
            &Cluster::ALL
        } else {
            &Cluster::ALL[..1]
        }
    }

    /// Says that a second cluster takes the per-reading streams (`kafka.raw_brokers`).
    pub fn set_split(&self, split: bool) {
        self.split.store(split, Relaxed);
    }

    /// Counts one publish, received at wall-clock `now_ms`, and its verdict.
    pub fn count_publish(&self, payload_len: usize, verdict: Verdict, now_ms: i64) {
        let _ = self.first_ms.compare_exchange(0, now_ms, Relaxed, Relaxed);
        self.last_ms.store(now_ms, Relaxed);
        self.readings_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(payload_len as u64, Relaxed);
        let counter = match verdict {
            Verdict::Aggregated => &self.aggregated,
            Verdict::Thinned(reason) => {
                if let Some(i) = raw_policy::REASONS.iter().position(|r| *r == reason) {
                    self.thinned_by_reason[i].fetch_add(1, Relaxed);
                }
                &self.aggregated
            }
            Verdict::Late => &self.late,
            Verdict::Rejected(reason) => {
                if let Some(i) = DecodeError::REASONS.iter().position(|r| *r == reason) {
                    self.rejected_by_reason[i].fetch_add(1, Relaxed);
                }
                &self.rejected
            }
            Verdict::Refused(reason) => {
                if let Some(i) = Refusal::REASONS.iter().position(|r| *r == reason) {
                    self.refused_by_reason[i].fetch_add(1, Relaxed);
                }
                &self.refused
            }
            Verdict::Ignored(reason) => {
                let i = IGNORED_REASONS.iter().position(|r| *r == reason);
                &self.ignored_by_reason[i.unwrap_or(0)]
            }
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A point-in-time copy for summaries.
    pub fn snapshot(&self) -> Summary {
        let s = |st: Stream| {
            let c = self.stream(st);
            StreamSummary {
                produced: c.produced.load(Relaxed),
                delivered: c.delivered.load(Relaxed),
                failed: c.failed.load(Relaxed),
                bytes_delivered: c.bytes_delivered.load(Relaxed),
                delivered_from_spool: c.delivered_from_spool.load(Relaxed),
                spooled: c.spooled.load(Relaxed),
                dropped: c.dropped.load(Relaxed),
            }
        };
        let (main, raw) = (self.cluster(Cluster::Main), self.cluster(Cluster::Raw));
        let spooled = |f: fn(&ClusterStats) -> &AtomicU64| {
            self.clusters.iter().map(|c| f(c).load(Relaxed)).sum()
        };
        Summary {
            readings_in: self.readings_in.load(Relaxed),
            wire_sent_bytes: main.wire_sent_bytes.load(Relaxed),
            wire_received_bytes: main.wire_received_bytes.load(Relaxed),
            wire_raw_sent_bytes: main.wire_raw_sent_bytes.load(Relaxed),
            raw_cluster: self.split.load(Relaxed).then(|| RawCluster {
                wire_sent_bytes: raw.wire_sent_bytes.load(Relaxed),
                wire_received_bytes: raw.wire_received_bytes.load(Relaxed),
                spool_records: raw.spool_records.load(Relaxed),
            }),
            bytes_in: self.bytes_in.load(Relaxed),
            aggregated: self.aggregated.load(Relaxed),
            late: self.late.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            refused: self.refused.load(Relaxed),
            thinned: self.thinned_by_reason.iter().map(|c| c.load(Relaxed)).sum(),
            windows_emitted: self.windows_emitted.load(Relaxed),
            broker_dropped: self.broker_dropped.load(Relaxed),
            spool_records: spooled(|c| &c.spool_records),
            spool_bytes: spooled(|c| &c.spool_bytes),
            spool_damaged: self.spool_damaged.load(Relaxed),
            busy_ms: (self.last_ms.load(Relaxed) - self.first_ms.load(Relaxed)).max(0),
            raw: s(Stream::Raw),
            aggregate: s(Stream::Aggregate),
            dead_letter: s(Stream::DeadLetter),
            late_stream: s(Stream::Late),
        }
    }
}

/// A histogram of seconds, from 5 ms to about 3 hours: a delivery right away, and one after an
/// outage of hours, both land in a bucket of their own.
#[derive(Debug)]
pub struct Latency(pub Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.005, 4.0, 12),
        ))
    }
}

/// The index of a stream in per-stream arrays; also the delivery opaque of its records.
pub fn index(s: Stream) -> usize {
    match s {
        Stream::Raw => 0,
        Stream::Aggregate => 1,
        Stream::DeadLetter => 2,
        Stream::Late => 3,
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSummary {
    pub produced: u64,
    pub delivered: u64,
    pub failed: u64,
    pub bytes_delivered: u64,
    pub delivered_from_spool: u64,
    pub spooled: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub readings_in: u64,
    pub bytes_in: u64,
    /// Bytes on the wire to and from the brokers of `kafka.brokers` (everything the uplink
    /// carries for the producers: all streams it takes, protocol and compression included).
    pub wire_sent_bytes: u64,
    pub wire_received_bytes: u64,
    /// The raw stream producer's part of `wire_sent_bytes`.
    pub wire_raw_sent_bytes: u64,
    /// The second cluster's figures, with `kafka.raw_brokers`.
    pub raw_cluster: Option<RawCluster>,
    pub aggregated: u64,
    pub late: u64,
    pub rejected: u64,
    pub refused: u64,
    /// Aggregated readings the raw policy left out of the raw stream.
    pub thinned: u64,
    pub windows_emitted: u64,
    pub broker_dropped: u64,
    /// Over every cluster's spool.
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub spool_damaged: u64,
    /// From the first publish to the latest.
    pub busy_ms: i64,
    pub raw: StreamSummary,
    pub aggregate: StreamSummary,
    pub dead_letter: StreamSummary,
    pub late_stream: StreamSummary,
}

/// What went to the second cluster (`kafka.raw_brokers`): on the site's network, usually,
/// so not part of the uplink's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCluster {
    pub wire_sent_bytes: u64,
    pub wire_received_bytes: u64,
    pub spool_records: u64,
}

impl Summary {
    /// MQTT payload bytes in per byte the producer put on the wire to the brokers (every
    /// stream, compression and Kafka protocol included): what the uplink carries compared with
    /// forwarding the payloads. `None` before the first statistics report.
    pub fn uplink_reduction(&self) -> Option<f64> {
        (self.wire_sent_bytes > 0).then(|| self.bytes_in as f64 / self.wire_sent_bytes as f64)
    }

    /// MQTT payload bytes in per key and value byte of the aggregate records (before
    /// compression and protocol overhead): what the aggregates alone would weigh, not what
    /// the link carries. `None` before any aggregate.
    pub fn reduction_factor(&self) -> Option<f64> {
        (self.aggregate.bytes_delivered > 0)
            .then(|| self.bytes_in as f64 / self.aggregate.bytes_delivered as f64)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "readings in: {} ({} bytes); aggregated {}, late {}, rejected {}, refused {}",
            self.readings_in,
            self.bytes_in,
            self.aggregated,
            self.late,
            self.rejected,
            self.refused
        )?;
        if self.thinned > 0 {
            writeln!(
                f,
                "left out of the raw stream by the raw policy (in the aggregates): {}",
                self.thinned
            )?;
        }
        if self.broker_dropped > 0 {
            writeln!(
                f,
                "DROPPED by the embedded broker before the bridge could read them: {}",
                self.broker_dropped
            )?;
        }
        if self.busy_ms > 0 {
            writeln!(
                f,
                "rate: {:.0} readings/s over {:.3} s from the first reading to the last",
                self.readings_in as f64 * 1000.0 / self.busy_ms as f64,
                self.busy_ms as f64 / 1000.0
            )?;
        }
        for (name, s) in [
            ("raw", self.raw),
            ("aggregate", self.aggregate),
            ("dead-letter", self.dead_letter),
            ("late", self.late_stream),
        ] {
            if s.produced > 0 || s.failed > 0 || s.spooled > 0 || s.dropped > 0 {
                write!(
                    f,
                    "{name:>11}: produced {}, delivered {}, failed {}, {} bytes sent",
                    s.produced, s.delivered, s.failed, s.bytes_delivered
                )?;
                if s.spooled > 0 || s.dropped > 0 {
                    write!(f, "; spooled {}, DROPPED {}", s.spooled, s.dropped)?;
                }
                writeln!(f)?;
            }
        }
        if self.spool_records > 0 || self.spool_damaged > 0 {
            writeln!(
                f,
                "spool: {} records ({} bytes) wait for the uplink; {} damaged records skipped",
                self.spool_records, self.spool_bytes, self.spool_damaged
            )?;
        }
        let less_or_more = |r: f64| {
            if r >= 1.0 {
                format!("{r:.1}x less than")
            } else {
                format!("{:.1}x MORE than", 1.0 / r)
            }
        };
        match (self.uplink_reduction(), self.raw_cluster) {
            (Some(r), None) => writeln!(
                f,
                "uplink: {} bytes on the wire to the brokers (every stream, compressed, Kafka protocol included; the raw stream {}), {} back: {} the {} MQTT payload bytes in",
                self.wire_sent_bytes,
                self.wire_raw_sent_bytes,
                self.wire_received_bytes,
                less_or_more(r),
                self.bytes_in
            )?,
            (Some(r), Some(_)) => writeln!(
                f,
                "uplink: {} bytes on the wire to kafka.brokers (the aggregates, compressed, Kafka protocol included), {} back: {} the {} MQTT payload bytes in",
                self.wire_sent_bytes,
                self.wire_received_bytes,
                less_or_more(r),
                self.bytes_in
            )?,
            (None, _) => writeln!(f, "uplink: no bytes on the wire counted yet")?,
        }
        if let Some(raw) = self.raw_cluster {
            writeln!(
                f,
                "raw cluster: {} bytes on the wire to kafka.raw_brokers (raw, late and dead-letter records), {} back",
                raw.wire_sent_bytes, raw.wire_received_bytes
            )?;
        }
        match self.reduction_factor() {
            Some(r) => write!(
                f,
                "aggregates alone: {} key and value bytes before compression: {} the MQTT payload bytes in{}",
                self.aggregate.bytes_delivered,
                less_or_more(r),
                // Windows that held few readings (a short run, sparse sensors): each aggregate
                // is larger than the payloads it summarises.
                if r < 1.0 { " (too few readings per window to gain)" } else { "" }
            ),
            None => write!(f, "aggregates alone: none delivered yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduction_reads_the_right_way_round() {
        let mut s = Summary {
            readings_in: 10,
            bytes_in: 1_000,
            ..Summary::default()
        };
        assert!(s.to_string().ends_with(
            "uplink: no bytes on the wire counted yet\naggregates alone: none delivered yet"
        ));
        s.aggregate.bytes_delivered = 100;
        s.wire_sent_bytes = 500;
        s.wire_raw_sent_bytes = 400;
        assert!(
            s.to_string().contains(
                "aggregates alone: 100 key and value bytes before compression: 10.0x less than"
            ),
            "{s}"
        );
        assert!(s.to_string().contains("uplink: 500 bytes on the wire to the brokers (every stream, compressed, Kafka protocol included; the raw stream 400), 0 back: 2.0x less than the 1000 MQTT payload bytes in"), "{s}");
        s.aggregate.bytes_delivered = 4_000;
        s.wire_sent_bytes = 2_000;
        assert!(
            s.to_string()
                .contains("4.0x MORE than the MQTT payload bytes in (too few"),
            "{s}"
        );
        assert!(
            s.to_string().contains("2.0x MORE than the 1000 MQTT"),
            "{s}"
        );
        // With a second cluster, the uplink is kafka.brokers; the raw cluster is shown apart.
        s.wire_sent_bytes = 100;
        s.raw_cluster = Some(RawCluster {
            wire_sent_bytes: 900,
            wire_received_bytes: 50,
            spool_records: 0,
        });
        let text = s.to_string();
        assert!(text.contains("uplink: 100 bytes on the wire to kafka.brokers (the aggregates, compressed, Kafka protocol included), 0 back: 10.0x less than the 1000 MQTT payload bytes in"), "{text}");
        assert!(text.contains("raw cluster: 900 bytes on the wire to kafka.raw_brokers (raw, late and dead-letter records), 50 back"), "{text}");
    }
}
