//! `/metrics`: the counters of [`Stats`] in the Prometheus / OpenMetrics text format, read at
//! scrape time. Labels are only ever a stream, a reason code or a cluster: bounded sets, never
//! a sensor id.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use edge_bridge_core::{raw_policy, DecodeError, Refusal, Stream, IGNORED_REASONS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::memory::Memory;
use crate::stats::{ClusterStats, MqttDisconnect, MqttRefusal, Stats, StreamSummary, Summary};

/// The registry behind `/metrics`.
pub fn registry(stats: Arc<Stats>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(BridgeCollector { stats }));
    r
}

/// The text a scrape returns.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct BridgeCollector {
    stats: Arc<Stats>,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter with one label, one series per `(label value, count)`.
fn labelled(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn per_stream(s: &Summary, f: impl Fn(&StreamSummary) -> u64) -> Vec<(&'static str, u64)> {
    [
        (Stream::Raw, &s.raw),
        (Stream::Aggregate, &s.aggregate),
        (Stream::DeadLetter, &s.dead_letter),
        (Stream::Late, &s.late_stream),
    ]
    .iter()
    .map(|(stream, c)| (stream.as_str(), f(c)))
    .collect()
}

/// One metric family's value(s) at scrape time.
enum Value {
    Counter(u64),
    Gauge(f64),
    /// A counter with one label: one series per `(label value, count)`.
    Labelled(&'static str, Vec<(&'static str, u64)>),
    /// A gauge per Kafka-API cluster (label `cluster`: `main`, and `raw` with
    /// `kafka.raw_brokers`).
    PerCluster(Vec<(&'static str, f64)>),
}

/// A gauge with one label, one series per `(label value, value)`.
fn labelled_gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, f64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, v) in values {
        ConstGauge::new(*v).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// Every family but the latency histogram, as `(name, help, value)`: the table is the list of
/// what `/metrics` exports, in order.
fn families(st: &Stats, s: &Summary, mem: &Memory) -> Vec<(&'static str, &'static str, Value)> {
    use Value::{Counter, Gauge, Labelled};
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
    let by_reason = |reasons: &[&'static str], counts: &[std::sync::atomic::AtomicU64]| {
        let series = reasons.iter().zip(counts).map(|(r, n)| (*r, load(n)));
        Labelled("reason", series.collect())
    };
    let by_stream = |f: fn(&StreamSummary) -> u64| Labelled("stream", per_stream(s, f));
    let per_cluster = |f: fn(&ClusterStats) -> &std::sync::atomic::AtomicU64| {
        let series = st
            .clusters()
            .iter()
            .map(|c| (c.as_str(), load(f(st.cluster(*c))) as f64));
        Value::PerCluster(series.collect())
    };
    // The larger of the cluster's two producers' round trips (raw, aggregates).
    let round_trip = || {
        let series = st.clusters().iter().map(|c| {
            let us = st.cluster(*c).round_trip_us.iter().map(load).max();
            (c.as_str(), us.unwrap_or(0) as f64 / 1e6)
        });
        Value::PerCluster(series.collect())
    };
    let raw_cluster = s.raw_cluster.unwrap_or_default();
    let mqtt_refused = MqttRefusal::ALL
        .iter()
        .map(|r| (r.as_str(), load(&st.mqtt_refused[*r as usize])))
        .collect();
    let mqtt_disconnects = MqttDisconnect::ALL
        .iter()
        .map(|r| (r.as_str(), load(&st.mqtt_disconnects[*r as usize])))
        .collect();
    let mut families = vec![
        ("edge_bridge_readings_received", "MQTT publishes received on the subscription.", Counter(s.readings_in)),
        ("edge_bridge_received_bytes", "MQTT payload bytes received.", Counter(s.bytes_in)),
        ("edge_bridge_readings_decoded", "Readings decoded (aggregated, late or refused).", Counter(s.aggregated + s.late + s.refused)),
        ("edge_bridge_readings_late", "Readings whose window had closed: raw only.", Counter(s.late)),
        ("edge_bridge_readings_rejected", "Undecodable payloads, sent to the dead-letter topic, by reason.", by_reason(&DecodeError::REASONS, &st.rejected_by_reason)),
        ("edge_bridge_readings_thinned", "Readings in the aggregates that the raw policy (raw.policy) left out of the raw stream, by reason (deadband, sample).", by_reason(&raw_policy::REASONS, &st.thinned_by_reason)),
        ("edge_bridge_readings_refused", "Readings left out of the aggregates by a memory bound, by reason (still in the raw topic).", by_reason(&Refusal::REASONS, &st.refused_by_reason)),
        ("edge_bridge_messages_ignored", "Publishes dropped by the routes' rules, by reason: excluded (matched a route's exclude), no_measurement (none of the route's measurements, with no_measurement = \"drop\"), unrouted (brought by a subscription widened because routes' filters overlap, and taken by no route), control (Sparkplug B DEATH, commands, host STATE, and BIRTH or DATA without a numeric metric).", by_reason(&IGNORED_REASONS, &st.ignored_by_reason)),
        ("edge_bridge_sparkplug_rebirths_requested", "Sparkplug B rebirth requests (NCMD Node Control/Rebirth) published to nodes whose DATA used an unknown alias (routes with ask_rebirth).", Counter(load(&st.rebirths_requested))),
        ("edge_bridge_readings_broker_dropped", "Readings the embedded broker accepted but deleted before the bridge read them.", Counter(s.broker_dropped)),
        ("edge_bridge_windows_open", "Open windows over all sensors.", Gauge(load(&st.open_windows) as f64)),
        ("edge_bridge_sensors", "Series tracked: one per sensor, and per sensor and measurement on routes with several (window.max_sensors bounds it per route).", Gauge(load(&st.sensors) as f64)),
        ("edge_bridge_aggregates_emitted", "Windows closed and their aggregates handed on.", Counter(s.windows_emitted)),
        ("edge_bridge_records_produced", "Records handed to the Kafka producer, by stream.", by_stream(|c| c.produced)),
        ("edge_bridge_records_delivered", "Records confirmed by a delivery report, by stream.", by_stream(|c| c.delivered)),
        ("edge_bridge_records_delivered_from_spool", "Of the delivered records, those replayed from the spool, by stream.", by_stream(|c| c.delivered_from_spool)),
        ("edge_bridge_records_failed", "Records the broker refused for good, by stream.", by_stream(|c| c.failed)),
        ("edge_bridge_records_spooled", "Records written to the spool, by stream.", by_stream(|c| c.spooled)),
        ("edge_bridge_records_dropped", "Records given up (full spool, failed spool write), by stream.", by_stream(|c| c.dropped)),
        ("edge_bridge_sent_bytes", "Key and value bytes of delivered records (before compression), by stream.", by_stream(|c| c.bytes_delivered)),
        ("edge_bridge_bandwidth_reduction_ratio", "MQTT payload bytes received per key and value byte of the aggregates delivered, before compression and protocol overhead: the aggregates alone, not what the link carries (0 before the first aggregate).", Gauge(s.reduction_factor().unwrap_or(0.0))),
        ("edge_bridge_uplink_sent_bytes", "Bytes the Kafka producers wrote to the sockets of kafka.brokers: every stream it takes (with kafka.raw_brokers, the aggregates only), compressed, Kafka protocol included (TLS and TCP/IP overhead not); updated every second.", Counter(s.wire_sent_bytes)),
        ("edge_bridge_uplink_raw_sent_bytes", "The part of edge_bridge_uplink_sent_bytes written by the raw stream's producer (raw and late records; the rest is aggregates, dead letters and their protocol; 0 with kafka.raw_brokers); updated every second.", Counter(s.wire_raw_sent_bytes)),
        ("edge_bridge_uplink_received_bytes", "Bytes the Kafka producers read from the sockets of kafka.brokers; updated every second.", Counter(s.wire_received_bytes)),
        ("edge_bridge_uplink_reduction_ratio", "MQTT payload bytes received per byte sent on the wire to kafka.brokers (0 before the first count).", Gauge(s.uplink_reduction().unwrap_or(0.0))),
        ("edge_bridge_raw_cluster_sent_bytes", "Bytes the Kafka producers wrote to the sockets of kafka.raw_brokers (raw, late and dead-letter records, compressed, Kafka protocol included); 0 without a second cluster; updated every second.", Counter(raw_cluster.wire_sent_bytes)),
        ("edge_bridge_raw_cluster_received_bytes", "Bytes the Kafka producers read from the sockets of kafka.raw_brokers; updated every second.", Counter(raw_cluster.wire_received_bytes)),
        ("edge_bridge_spool_records", "Records in the cluster's spool waiting for delivery.", per_cluster(|c| &c.spool_records)),
        ("edge_bridge_spool_bytes", "Size of the cluster's spool on disk.", per_cluster(|c| &c.spool_bytes)),
        ("edge_bridge_spool_capacity_bytes", "The cap of the cluster's spool (spool.max_mib); 0 when the spool is off.", per_cluster(|c| &c.spool_capacity_bytes)),
        ("edge_bridge_spool_damaged_records", "Damaged spool records skipped (torn or corrupted).", Counter(s.spool_damaged)),
        ("edge_bridge_producer_queue_records", "Records in the cluster's Kafka producers awaiting a delivery report.", per_cluster(|c| &c.producer_queue)),
        ("edge_bridge_kafka_round_trip_seconds", "The slowest request round trip to the cluster's brokers in the producers' last statistics interval (librdkafka's mean per broker, from request sent to response read); 0 when no request was answered. Records wait longer for their reports, and more of them are in the producers, as it grows.", round_trip()),
        ("edge_bridge_mqtt_connected", "1 while connected to the MQTT broker.", Gauge(load(&st.mqtt_connected) as f64)),
        ("edge_bridge_mqtt_subscribed", "1 while the subscription is in place.", Gauge(load(&st.mqtt_subscribed) as f64)),
        ("edge_bridge_mqtt_reconnects", "MQTT connections lost or refused since start.", Counter(load(&st.mqtt_reconnects))),
        ("edge_bridge_mqtt_unacked_messages", "QoS 1 messages from the external broker whose record is not yet delivered or synced to the spool: the broker redelivers them after a restart.", Gauge(load(&st.mqtt_unacked) as f64)),
        ("edge_bridge_mqtt_acks_unsent", "QoS 1 acks released (the record is safe) but not yet in the MQTT client's request queue (up to 8,192 more wait there to be written).", Gauge(load(&st.mqtt_acks_unsent) as f64)),
        ("edge_bridge_mqtt_connections_refused", "Connections the embedded broker refused: failed TLS handshake, plaintext on the TLS port, bad credentials, no CONNECT.", Labelled("reason", mqtt_refused)),
        ("edge_bridge_mqtt_disconnects", "Connections the embedded broker closed after admitting them, because the device broke a limit: packet_too_large (a packet over mqtt.max_packet_size), malformed_packet.", Labelled("reason", mqtt_disconnects)),
        ("edge_bridge_kafka_reachable", "1 if the cluster's brokers answered the last metadata probe (or a delivery report since).", per_cluster(|c| &c.kafka_reachable)),
        ("edge_bridge_uplink_down", "1 while the cluster's records wait in its spool because its brokers stopped confirming them.", per_cluster(|c| &c.uplink_down)),
        ("edge_bridge_memory_resident_bytes", "The process's resident set as the kernel counts it (what a memory limit sees).", Gauge(mem.resident as f64)),
    ];
    if let Some(h) = mem.heap {
        families.extend([
            ("edge_bridge_heap_allocated_bytes", "Bytes in allocations the bridge holds (jemalloc's stats.allocated, librdkafka's included).", Gauge(h.allocated as f64)),
            ("edge_bridge_heap_resident_bytes", "Bytes of the allocator's pages in memory: the allocations, the gaps between them, metadata, and freed pages not yet returned (jemalloc's stats.resident). Growing while edge_bridge_heap_allocated_bytes is flat means the allocator, not a leak.", Gauge(h.resident as f64)),
        ]);
    }
    families
}

impl Collector for BridgeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let st = &self.stats;
        let e = &mut e;
        for (name, help, value) in families(st, &st.snapshot(), &crate::memory::sample()) {
            match value {
                Value::Counter(v) => counter(e, name, help, v)?,
                Value::Gauge(v) => gauge(e, name, help, v)?,
                Value::Labelled(label, series) => labelled(e, name, help, label, &series)?,
                Value::PerCluster(series) => labelled_gauge(e, name, help, "cluster", &series)?,
            }
        }
        let h = &st.aggregate_latency.0;
        h.encode(e.encode_descriptor(
            "edge_bridge_aggregate_delivery_latency_seconds",
            "From a window's close to its aggregate's delivery report.",
            None,
            h.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_bridge_core::Verdict;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let stats = Arc::new(Stats::default());
        stats.count_publish(10, Verdict::Rejected("not_json"), 1);
        stats.count_publish(20, Verdict::Aggregated, 2);
        let text = render(&registry(stats.clone()));
        assert!(
            text.contains("edge_bridge_readings_received_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_received_bytes_total 30\n"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_readings_rejected_total{reason=\"not_json\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_readings_decoded_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_records_delivered_total{stream=\"aggregate\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_aggregate_delivery_latency_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains("edge_bridge_uplink_down{cluster=\"main\"} 0.0\n"),
            "{text}"
        );
        assert!(!text.contains("cluster=\"raw\""), "{text}");
        stats.set_split(true);
        stats
            .cluster(crate::cluster::Cluster::Raw)
            .uplink_down
            .store(1, Relaxed);
        let text = render(&registry(stats));
        assert!(
            text.contains("edge_bridge_uplink_down{cluster=\"raw\"} 1.0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn renders_the_memory_figures_given() {
        let st = Stats::default();
        let value = |mem: &Memory, name: &str| {
            families(&st, &st.snapshot(), mem)
                .into_iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, _, v)| match v {
                    Value::Gauge(g) => g,
                    _ => panic!("{name} is a gauge"),
                })
        };
        let heap = crate::memory::Heap {
            allocated: 10,
            active: 12,
            resident: 30,
        };
        let mem = Memory {
            resident: 4096,
            heap: Some(heap),
        };
        assert_eq!(
            value(&mem, "edge_bridge_memory_resident_bytes"),
            Some(4096.0)
        );
        assert_eq!(value(&mem, "edge_bridge_heap_allocated_bytes"), Some(10.0));
        assert_eq!(value(&mem, "edge_bridge_heap_resident_bytes"), Some(30.0));
        // Without jemalloc there are no heap figures, rather than zeros that would read as
        // an empty heap.
        let bare = Memory { heap: None, ..mem };
        assert_eq!(value(&bare, "edge_bridge_heap_allocated_bytes"), None);
        assert_eq!(
            value(&bare, "edge_bridge_memory_resident_bytes"),
            Some(4096.0)
        );
    }
}
