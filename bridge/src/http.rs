//! The operator's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/status` (a live page)
//! and `/status.json` (what the page shows). Read-only; it shows figures, never configuration
//! secrets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::stats::Stats;
use crate::tasks::Tasks;

/// History kept for the page's sparklines: one point every `SAMPLE`, `POINTS` of them.
const SAMPLE: Duration = Duration::from_secs(2);
const POINTS: usize = 180;

const STATUS_PAGE: &str = include_str!("status.html");

/// What `/readyz` needs to know beyond the counters.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub spool_enabled: bool,
    pub spool_max_bytes: u64,
}

#[derive(Clone)]
struct AppState {
    stats: Arc<Stats>,
    registry: Arc<Registry>,
    readiness: Readiness,
    history: Arc<Mutex<VecDeque<Point>>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Point {
    /// Wall-clock ms at the end of the sample.
    t: i64,
    readings_per_s: f64,
    /// MQTT payload bytes in.
    received_bytes_per_s: f64,
    /// Bytes on the wire to the Kafka brokers (all streams, compressed, protocol included).
    uplink_sent_bytes_per_s: f64,
}

/// Binds `addr` and serves in `tasks` until they stop. Binding errors are returned at once, so a
/// port in use stops the bridge at start with a clear message.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    readiness: Readiness,
    tasks: &Tasks,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on http.listen {addr}: {e}; choose another address, or \"\" to turn the endpoint off")
    })?;
    let local = listener.local_addr()?;
    let state = AppState {
        registry: Arc::new(crate::metrics::registry(stats.clone())),
        stats,
        readiness,
        history: Arc::default(),
    };
    tasks.spawn(sample_history(state.stats.clone(), state.history.clone()));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(|| async { Html(STATUS_PAGE) }))
        .route("/status.json", get(status_json))
        .with_state(state);
    info!(%local, "HTTP endpoint: /metrics /healthz /readyz /status");
    // Gracefully: the server's per-connection tasks are its own, and end when it does.
    tasks.spawn_graceful(|stopping| async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
        {
            warn!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok(local)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
}

/// Ready when the subscription is in place and records can go somewhere: to Kafka, or to a
/// spool with room left. The body says which.
pub fn readiness(stats: &Stats, r: &Readiness) -> (bool, String) {
    let subscribed = stats.mqtt_subscribed.load(Relaxed) == 1;
    let mqtt_part = if subscribed {
        "MQTT subscribed".to_owned()
    } else if stats.mqtt_connected.load(Relaxed) == 1 {
        "MQTT connected but not subscribed".to_owned()
    } else {
        "MQTT not connected".to_owned()
    };
    // Each cluster's line; every one must be able to take its records (one line, "Kafka",
    // without a second cluster).
    let clusters = stats.clusters();
    let mut ready = subscribed;
    let mut kafka_parts = Vec::new();
    for c in clusters {
        let gauges = stats.cluster(*c);
        let kafka = gauges.kafka_reachable.load(Relaxed) == 1;
        let used = gauges.spool_bytes.load(Relaxed);
        let room = r.spool_enabled && used < r.spool_max_bytes / 100 * 95;
        let name = match (clusters.len(), c) {
            (1, _) => "Kafka".to_owned(),
            (_, Cluster::Main) => "Kafka (kafka.brokers)".to_owned(),
            (_, Cluster::Raw) => "raw cluster (kafka.raw_brokers)".to_owned(),
        };
        kafka_parts.push(match (kafka, r.spool_enabled) {
            (true, _) => format!("{name} reachable"),
            (false, true) => format!(
                "{name} unreachable, spooling ({}% of the spool used{})",
                used * 100 / r.spool_max_bytes.max(1),
                if room { "" } else { ", full" }
            ),
            (false, false) => format!("{name} unreachable and the spool is off"),
        });
        ready &= kafka || room;
    }
    let kafka_part = kafka_parts.join("; ");
    let verdict = if ready { "ready" } else { "not ready" };
    (ready, format!("{verdict}: {mqtt_part}; {kafka_part}\n"))
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let (ready, body) = readiness(&s.stats, &s.readiness);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

/// The figures the status page shows, named like the metrics they come from.
#[derive(Serialize)]
struct Status {
    ready: bool,
    readiness: String,
    readings_received: u64,
    received_bytes: u64,
    readings_rejected: u64,
    readings_late: u64,
    aggregates_emitted: u64,
    raw_delivered: u64,
    aggregates_delivered: u64,
    raw_sent_bytes: u64,
    aggregate_sent_bytes: u64,
    bandwidth_reduction_ratio: f64,
    /// What the uplink carries: bytes on the wire to the brokers, and MQTT bytes in per byte.
    uplink_sent_bytes: u64,
    /// The raw stream producer's part of `uplink_sent_bytes`.
    uplink_raw_sent_bytes: u64,
    uplink_received_bytes: u64,
    uplink_reduction_ratio: f64,
    /// With `kafka.raw_brokers`: bytes on the wire to the second cluster (raw, late and
    /// dead-letter records), which is not the uplink; `null` without one.
    raw_cluster_sent_bytes: Option<u64>,
    records_spooled: u64,
    records_dropped: u64,
    spool_records: u64,
    spool_bytes: u64,
    windows_open: u64,
    sensors: u64,
    mqtt_reconnects: u64,
    history: Vec<Point>,
}

async fn status_json(State(s): State<AppState>) -> impl IntoResponse {
    let st = &s.stats;
    let v = st.snapshot();
    let (ready, readiness) = readiness(st, &s.readiness);
    let all = [v.raw, v.aggregate, v.dead_letter, v.late_stream];
    Json(Status {
        ready,
        readiness,
        readings_received: v.readings_in,
        received_bytes: v.bytes_in,
        readings_rejected: v.rejected,
        readings_late: v.late,
        aggregates_emitted: v.windows_emitted,
        raw_delivered: v.raw.delivered,
        aggregates_delivered: v.aggregate.delivered,
        raw_sent_bytes: v.raw.bytes_delivered,
        aggregate_sent_bytes: v.aggregate.bytes_delivered,
        bandwidth_reduction_ratio: v.reduction_factor().unwrap_or(0.0),
        uplink_sent_bytes: v.wire_sent_bytes,
        uplink_raw_sent_bytes: v.wire_raw_sent_bytes,
        uplink_received_bytes: v.wire_received_bytes,
        uplink_reduction_ratio: v.uplink_reduction().unwrap_or(0.0),
        raw_cluster_sent_bytes: v.raw_cluster.map(|r| r.wire_sent_bytes),
        records_spooled: all.iter().map(|c| c.spooled).sum(),
        records_dropped: all.iter().map(|c| c.dropped).sum(),
        spool_records: v.spool_records,
        spool_bytes: v.spool_bytes,
        windows_open: st.open_windows.load(Relaxed),
        sensors: st.sensors.load(Relaxed),
        mqtt_reconnects: st.mqtt_reconnects.load(Relaxed),
        history: s
            .history
            .lock()
            .expect("not poisoned")
            .iter()
            .copied()
            .collect(),
    })
}

/// Every `SAMPLE`, the rates over the last sample, for the sparklines.
async fn sample_history(stats: Arc<Stats>, history: Arc<Mutex<VecDeque<Point>>>) {
    let totals = |s: &Stats| {
        let v = s.snapshot();
        (v.readings_in, v.bytes_in, v.wire_sent_bytes)
    };
    let mut last = totals(&stats);
    let mut tick = tokio::time::interval(SAMPLE);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = totals(&stats);
        let secs = SAMPLE.as_secs_f64();
        let mut h = history.lock().expect("not poisoned");
        if h.len() == POINTS {
            h.pop_front();
        }
        h.push_back(Point {
            t: crate::clock::wall_ms(),
            readings_per_s: (now.0 - last.0) as f64 / secs,
            received_bytes_per_s: (now.1 - last.1) as f64 / secs,
            uplink_sent_bytes_per_s: (now.2 - last.2) as f64 / secs,
        });
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_why() {
        let stats = Stats::default();
        let r = Readiness {
            spool_enabled: true,
            spool_max_bytes: 1000,
        };
        let (ready, body) = readiness(&stats, &r);
        assert!(!ready);
        assert_eq!(
            body,
            "not ready: MQTT not connected; Kafka unreachable, spooling (0% of the spool used)\n"
        );
        stats.mqtt_connected.store(1, Relaxed);
        stats.mqtt_subscribed.store(1, Relaxed);
        assert!(readiness(&stats, &r).0, "spooling with room is ready");
        let main = stats.cluster(Cluster::Main);
        main.spool_bytes.store(990, Relaxed);
        let (ready, body) = readiness(&stats, &r);
        assert!(!ready, "{body}");
        assert!(body.contains("full"), "{body}");
        main.kafka_reachable.store(1, Relaxed);
        assert_eq!(
            readiness(&stats, &r),
            (true, "ready: MQTT subscribed; Kafka reachable\n".to_owned())
        );
        // A second cluster has a line of its own, and must take its records too.
        stats.set_split(true);
        let raw = stats.cluster(Cluster::Raw);
        raw.spool_bytes.store(200, Relaxed);
        assert_eq!(
            readiness(&stats, &r),
            (true, "ready: MQTT subscribed; Kafka (kafka.brokers) reachable; raw cluster (kafka.raw_brokers) unreachable, spooling (20% of the spool used)\n".to_owned())
        );
        raw.spool_bytes.store(960, Relaxed);
        assert!(!readiness(&stats, &r).0, "the raw cluster's spool is full");
        raw.kafka_reachable.store(1, Relaxed);
        assert!(readiness(&stats, &r).0);
        let off = Readiness {
            spool_enabled: false,
            spool_max_bytes: 0,
        };
        main.kafka_reachable.store(0, Relaxed);
        assert!(!readiness(&stats, &off).0);
    }
}
