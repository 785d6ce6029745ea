//! `/metrics`: the counters of [`Stats`] in the Prometheus / OpenMetrics text format, read at
//! scrape time. Labels are only ever a stream, a reason code or a lane: bounded sets, never a
//! sensor id.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use edge_bridge_core::{DecodeError, Refusal, Stream};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::stats::{MqttRefusal, Stats, StreamSummary, Summary};

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

impl Collector for BridgeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let st = &self.stats;
        let s = st.snapshot();
        let e = &mut e;
        counter(
            e,
            "edge_bridge_readings_received",
            "MQTT publishes received on the subscription.",
            s.readings_in,
        )?;
        counter(
            e,
            "edge_bridge_received_bytes",
            "MQTT payload bytes received.",
            s.bytes_in,
        )?;
        counter(
            e,
            "edge_bridge_readings_decoded",
            "Readings decoded (aggregated, late or refused).",
            s.aggregated + s.late + s.refused,
        )?;
        counter(
            e,
            "edge_bridge_readings_late",
            "Readings whose window had closed: raw only.",
            s.late,
        )?;
        let rejected: Vec<(&str, u64)> = DecodeError::REASONS
            .iter()
            .zip(&st.rejected_by_reason)
            .map(|(r, n)| (*r, n.load(Relaxed)))
            .collect();
        labelled(
            e,
            "edge_bridge_readings_rejected",
            "Undecodable payloads, sent to the dead-letter topic, by reason.",
            "reason",
            &rejected,
        )?;
        let refused: Vec<(&str, u64)> = Refusal::REASONS
            .iter()
            .zip(&st.refused_by_reason)
            .map(|(r, n)| (*r, n.load(Relaxed)))
            .collect();
        labelled(e, "edge_bridge_readings_refused", "Readings left out of the aggregates by a memory bound, by reason (still in the raw topic).", "reason", &refused)?;
        counter(
            e,
            "edge_bridge_readings_broker_dropped",
            "Readings the embedded broker accepted but deleted before the bridge read them.",
            s.broker_dropped,
        )?;
        gauge(
            e,
            "edge_bridge_windows_open",
            "Open windows over all sensors.",
            st.open_windows.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "edge_bridge_sensors",
            "Sensors tracked.",
            st.sensors.load(Relaxed) as f64,
        )?;
        counter(
            e,
            "edge_bridge_aggregates_emitted",
            "Windows closed and their aggregates handed on.",
            s.windows_emitted,
        )?;
        labelled(
            e,
            "edge_bridge_records_produced",
            "Records handed to the Kafka producer, by stream.",
            "stream",
            &per_stream(&s, |c| c.produced),
        )?;
        labelled(
            e,
            "edge_bridge_records_delivered",
            "Records confirmed by a delivery report, by stream.",
            "stream",
            &per_stream(&s, |c| c.delivered),
        )?;
        labelled(
            e,
            "edge_bridge_records_delivered_from_spool",
            "Of the delivered records, those replayed from the spool, by stream.",
            "stream",
            &per_stream(&s, |c| c.delivered_from_spool),
        )?;
        labelled(
            e,
            "edge_bridge_records_failed",
            "Records the broker refused for good, by stream.",
            "stream",
            &per_stream(&s, |c| c.failed),
        )?;
        labelled(
            e,
            "edge_bridge_records_spooled",
            "Records written to the spool, by stream.",
            "stream",
            &per_stream(&s, |c| c.spooled),
        )?;
        labelled(
            e,
            "edge_bridge_records_dropped",
            "Records given up (full spool, failed spool write), by stream.",
            "stream",
            &per_stream(&s, |c| c.dropped),
        )?;
        labelled(
            e,
            "edge_bridge_sent_bytes",
            "Key and value bytes of delivered records (before compression), by stream.",
            "stream",
            &per_stream(&s, |c| c.bytes_delivered),
        )?;
        gauge(
            e,
            "edge_bridge_bandwidth_reduction_ratio",
            "MQTT payload bytes received per aggregate byte sent (0 before the first aggregate).",
            s.reduction_factor().unwrap_or(0.0),
        )?;
        gauge(
            e,
            "edge_bridge_spool_records",
            "Records in the spool waiting for delivery.",
            s.spool_records as f64,
        )?;
        gauge(
            e,
            "edge_bridge_spool_bytes",
            "Size of the spool on disk.",
            s.spool_bytes as f64,
        )?;
        counter(
            e,
            "edge_bridge_spool_damaged_records",
            "Damaged spool records skipped (torn or corrupted).",
            s.spool_damaged,
        )?;
        gauge(
            e,
            "edge_bridge_producer_queue_records",
            "Records in the Kafka producer awaiting a delivery report.",
            st.producer_queue.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "edge_bridge_mqtt_connected",
            "1 while connected to the MQTT broker.",
            st.mqtt_connected.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "edge_bridge_mqtt_subscribed",
            "1 while the subscription is in place.",
            st.mqtt_subscribed.load(Relaxed) as f64,
        )?;
        counter(
            e,
            "edge_bridge_mqtt_reconnects",
            "MQTT connections lost or refused since start.",
            st.mqtt_reconnects.load(Relaxed),
        )?;
        let refused: Vec<(&str, u64)> = MqttRefusal::ALL
            .iter()
            .map(|r| (r.as_str(), st.mqtt_refused[*r as usize].load(Relaxed)))
            .collect();
        labelled(
            e,
            "edge_bridge_mqtt_connections_refused",
            "Connections the embedded broker refused: failed TLS handshake, plaintext on the TLS port, bad credentials, no CONNECT.",
            "reason",
            &refused,
        )?;
        gauge(
            e,
            "edge_bridge_kafka_reachable",
            "1 if the Kafka brokers answered the last metadata probe.",
            st.kafka_reachable.load(Relaxed) as f64,
        )?;
        gauge(
            e,
            "edge_bridge_uplink_down",
            "1 while records wait in the spool because the brokers stopped confirming them.",
            st.uplink_down.load(Relaxed) as f64,
        )?;
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
        let text = render(&registry(stats));
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
        assert!(text.ends_with("# EOF\n"));
    }
}
