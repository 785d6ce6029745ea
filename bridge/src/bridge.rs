//! The bridge's main loop: MQTT publishes in, the pure pipeline, records out to Kafka.
//!
//! Only this loop touches the pipeline, so the core needs no locks. It waits on three things:
//! the shutdown future, the next publish, and a clock tick for idle flushes. Backpressure is
//! natural: while the producer's queue is full, `send` waits and no further publish is read.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use edge_bridge_core::{Pipeline, Routed, Stream, Verdict};
use tracing::{debug, info, warn};

use crate::config::{Config, MqttSource as SourceConfig};
use crate::mqtt::embedded::{Embedded, Listeners};
use crate::mqtt::external::{External, ExternalOptions, Protocol};
use crate::mqtt::MqttSource;
use crate::sink::KafkaSink;
use crate::stats::Stats;

/// How long shutdown waits for outstanding delivery reports.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(30);

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Starts the MQTT side the configuration asks for.
pub fn start_source(config: &Config, stats: &Arc<Stats>) -> anyhow::Result<MqttSource> {
    let source = config.mqtt_source().map_err(anyhow::Error::msg)?;
    Ok(match source {
        SourceConfig::Embedded(v4) => {
            let v5 = if config.mqtt.listen_v5.is_empty() {
                None
            } else {
                Some(
                    config
                        .mqtt
                        .listen_v5
                        .parse()
                        .map_err(|e| anyhow::anyhow!("mqtt.listen_v5: {e}"))?,
                )
            };
            let file = (!config.mqtt.broker_config.is_empty())
                .then(|| Path::new(&config.mqtt.broker_config));
            MqttSource::Embedded(Embedded::start(
                file,
                &Listeners { v4, v5 },
                &config.mqtt.topic,
                stats.clone(),
            )?)
        }
        SourceConfig::External(url) => MqttSource::External(External::start(ExternalOptions {
            url,
            client_id: config.mqtt.client_id.clone(),
            filter: config.mqtt.topic.clone(),
            qos: config.mqtt.qos,
            protocol: if config.mqtt.protocol == "5" {
                Protocol::V5
            } else {
                Protocol::V311
            },
            keep_alive: config.mqtt.keep_alive,
        })?),
    })
}

/// Runs until `shutdown` resolves or a fatal error, then closes the open windows, waits for
/// delivery reports, and returns.
pub async fn run(
    config: Config,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::new(
        config.decode_options().map_err(anyhow::Error::msg)?,
        config.window_options().map_err(anyhow::Error::msg)?,
        &config.window.measurement,
        !config.kafka.late_topic.is_empty(),
    )?;
    let mut sink = KafkaSink::new(&config.kafka, stats.clone())?;
    if config.kafka.create_topics {
        sink.create_topics(&config.kafka)
            .await
            .context("creating the Kafka topics")?;
    }
    let mut source = start_source(&config, &stats)?;
    info!(
        topic = config.mqtt.topic,
        brokers = config.kafka.brokers,
        raw = config.kafka.raw_topic,
        aggregates = config.kafka.agg_topic,
        "Bridge running"
    );

    let mut out: Vec<Routed> = Vec::new();
    let mut rejections = RateLimitedWarn::new(Duration::from_secs(10));
    let tick_every =
        (config.window.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary = SummaryLine::new(config.log.summary_interval);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            msg = source.next() => {
                let msg = msg?;
                let now = wall_ms();
                let verdict = pipeline.ingest(
                    &msg.topic,
                    msg.payload.clone(),
                    &msg.user_properties,
                    now,
                    &mut out,
                );
                stats.count_publish(msg.payload.len(), verdict, now);
                match verdict {
                    Verdict::Rejected(reason) => rejections.note(reason, &msg.topic, &out),
                    Verdict::Refused(reason) => rejections.note(reason, &msg.topic, &out),
                    _ => {}
                }
                send_all(&mut sink, &stats, &mut out).await?;
                if let Some(token) = msg.ack {
                    source.ack(token).await;
                }
            }
            _ = tick.tick() => {
                pipeline.flush_idle(wall_ms(), &mut out);
                send_all(&mut sink, &stats, &mut out).await?;
                summary.maybe_log(&stats, &pipeline, &sink);
            }
        }
    }

    info!("Shutting down: closing open windows and waiting for deliveries");
    pipeline.drain(&mut out);
    send_all(&mut sink, &stats, &mut out).await?;
    if !sink.flush(SHUTDOWN_FLUSH).await {
        warn!(
            in_flight = sink.in_flight(),
            "Records still undelivered at shutdown; they are lost unless the spool holds them"
        );
    }
    Ok(())
}

async fn send_all(
    sink: &mut KafkaSink,
    stats: &Stats,
    out: &mut Vec<Routed>,
) -> anyhow::Result<()> {
    for r in out.drain(..) {
        if r.stream == Stream::Aggregate {
            stats.windows_emitted.fetch_add(1, Relaxed);
        }
        sink.send(&r).await?;
    }
    Ok(())
}

/// The periodic one-line INFO summary.
struct SummaryLine {
    every: Duration,
    last: Instant,
    last_readings: u64,
}

impl SummaryLine {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            last_readings: 0,
        }
    }

    fn maybe_log(&mut self, stats: &Stats, pipeline: &Pipeline, sink: &KafkaSink) {
        let elapsed = self.last.elapsed();
        if self.every.is_zero() || elapsed < self.every {
            return;
        }
        let s = stats.snapshot();
        let rate = (s.readings_in - self.last_readings) as f64 / elapsed.as_secs_f64();
        info!(
            readings_in = s.readings_in,
            readings_per_s = rate.round() as u64,
            late = s.late,
            rejected = s.rejected,
            broker_dropped = s.broker_dropped,
            windows_emitted = s.windows_emitted,
            open_windows = pipeline.windower().open_windows(),
            raw_delivered = s.raw.delivered,
            aggregates_delivered = s.aggregate.delivered,
            failed =
                s.raw.failed + s.aggregate.failed + s.dead_letter.failed + s.late_stream.failed,
            in_flight = sink.in_flight(),
            reduction = s
                .reduction_factor()
                .map_or(0.0, |r| (r * 10.0).round() / 10.0),
            "Summary"
        );
        self.last = Instant::now();
        self.last_readings = s.readings_in;
    }
}

/// Logs bad input at WARN at most once per period, with a count of what was skipped; every
/// occurrence is logged at DEBUG and counted in the metrics.
struct RateLimitedWarn {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarn {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    fn note(&mut self, reason: &str, topic: &str, out: &[Routed]) {
        let detail = out
            .iter()
            .rev()
            .find(|r| r.stream == Stream::DeadLetter)
            .and_then(|r| r.record.headers.iter().find(|(k, _)| k == "error.message"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        debug!(reason, topic, detail, "Reading not aggregated");
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        warn!(
            reason,
            topic,
            detail,
            similar_since_last = self.suppressed,
            "Reading not aggregated; undecodable payloads go to the dead-letter topic"
        );
        self.last = Some(now);
        self.suppressed = 0;
    }
}
