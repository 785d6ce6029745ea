//! The brokers' side that is not producing: creating the bridge's topics, and probing
//! whether the brokers answer.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use tokio::sync::watch;
use tracing::{info, warn};

use super::client::{describe, Topics};
use super::SinkError;
use crate::cluster::Cluster;
use crate::config::KafkaConfig;
use crate::stats::Stats;
use crate::tasks::Tasks;

/// Creates the bridge's topics in one cluster.
#[derive(Clone)]
pub struct TopicAdmin {
    client_config: ClientConfig,
    topics: Topics,
    cluster: Cluster,
    /// Its bootstrap servers, for messages.
    pub brokers: String,
    /// Partitions of the topics it creates.
    partitions: i32,
}

impl TopicAdmin {
    pub(super) fn new(
        client_config: ClientConfig,
        topics: Topics,
        cluster: Cluster,
        cfg: &KafkaConfig,
    ) -> Self {
        Self {
            client_config,
            topics,
            cluster,
            brokers: cfg.brokers.clone(),
            partitions: cfg.topic_partitions,
        }
    }

    /// Creates the bridge's topics where missing. Existing topics are left as they are.
    pub async fn create_topics(&self) -> Result<(), SinkError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config.create().map_err(|e| SinkError::Admin {
                brokers: self.brokers.clone(),
                error: describe(&e),
            })?;
        let names = self.topics.all();
        let new: Vec<NewTopic> = names
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(30)))
            .request_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .map_err(|e| SinkError::Admin {
                brokers: self.brokers.clone(),
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
}

/// What the broker probe and the outbox tell each other: the outbox publishes whether the
/// uplink is down (the probe then asks more often), the probe publishes the wall-clock ms at
/// which its last successful probe started (the outbox takes one that started after an
/// outage began as the uplink back).
pub struct ProbeLink {
    pub uplink_down: watch::Sender<bool>,
    pub probe_ok_ms: watch::Receiver<i64>,
}

/// Starts the broker probe in `tasks`; it ends with them, or when the returned link is
/// dropped.
pub fn spawn_probe(admin: TopicAdmin, stats: Arc<Stats>, tasks: &Tasks) -> ProbeLink {
    let (uplink_down, down_rx) = watch::channel(false);
    let (ok_tx, probe_ok_ms) = watch::channel(0);
    tasks.spawn(probe_brokers(admin, stats, down_rx, ok_tx));
    ProbeLink {
        uplink_down,
        probe_ok_ms,
    }
}

/// Probe cadence while the uplink is down, and otherwise: a metered link pays for each probe.
const PROBE_DOWN_EVERY: Duration = Duration::from_secs(2);
const PROBE_EVERY: Duration = Duration::from_secs(30);

/// Asks the brokers for metadata, and records whether they answered in
/// `stats.kafka_reachable` (for `/readyz` and the metrics) and when in `probe_ok_ms`. Probes
/// again at once when the uplink goes down or comes back. Ends when the outbox's side of the
/// link is gone.
async fn probe_brokers(
    admin: TopicAdmin,
    stats: Arc<Stats>,
    mut uplink_down: watch::Receiver<bool>,
    probe_ok_ms: watch::Sender<i64>,
) {
    let client: AdminClient<DefaultClientContext> = match admin.client_config.create() {
        Ok(c) => c,
        Err(e) => {
            warn!(
                error = describe(&e),
                "Cannot create the Kafka probe client; kafka_reachable stays 0"
            );
            return;
        }
    };
    let client = Arc::new(client);
    loop {
        let c = client.clone();
        let started = crate::clock::wall_ms();
        let ok = tokio::task::spawn_blocking(move || {
            c.inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        stats
            .cluster(admin.cluster)
            .kafka_reachable
            .store(u64::from(ok), Relaxed);
        if ok && probe_ok_ms.send(started).is_err() {
            return;
        }
        let every = if *uplink_down.borrow_and_update() {
            PROBE_DOWN_EVERY
        } else {
            PROBE_EVERY
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = uplink_down.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
