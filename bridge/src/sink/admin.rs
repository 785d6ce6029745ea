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
        let mut client_config = client_config;
        // The producers' settings, but no statistics: nothing reads an admin client's (see
        // `serve_main_queue`).
        client_config.set("statistics.interval.ms", "0");
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
            let ok = c
                .inner()
                .fetch_metadata(None, Duration::from_secs(5))
                .is_ok();
            serve_main_queue(&c);
            ok
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

/// Frees what librdkafka queued for the application on `client`'s main queue: its logs and
/// errors (rdkafka sends logs there too), and statistics if they were on. rdkafka's
/// `AdminClient` serves only the queue of its own results, so these stayed allocated for the
/// life of the probe: with the producers' 1 s statistics, about 3 KB a second, the steady
/// growth the hour soak measured. They repeat what the producers report (logged, throttled,
/// by the sink), so they are dropped. Returns how many were served.
///
/// Taken as events, not with `rd_kafka_poll`: that serves them through librdkafka's default
/// callbacks, which print every log line to stderr, raw and unthrottled (rdkafka sets no log
/// callback: it reads logs as events), and turn each error into one more log line.
fn serve_main_queue<C: rdkafka::ClientContext>(client: &AdminClient<C>) -> usize {
    use rdkafka::bindings as rd;
    let mut served = 0;
    // SAFETY: the pointer is the live client's, borrowed for the call; the queue handle is
    // released below, and each event is destroyed once, right after it is taken. Queue
    // operations are thread-safe, and a zero timeout never blocks.
    unsafe {
        let queue = rd::rd_kafka_queue_get_main(client.inner().native_ptr());
        loop {
            let event = rd::rd_kafka_queue_poll(queue, 0);
            if event.is_null() {
                break;
            }
            rd::rd_kafka_event_destroy(event);
            served += 1;
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events queued on the client's main queue.
    fn main_queue_len<C: rdkafka::ClientContext>(client: &AdminClient<C>) -> usize {
        // SAFETY: the live client's pointer; the queue handle is released right after.
        unsafe {
            let rk = client.inner().native_ptr();
            let q = rdkafka::bindings::rd_kafka_queue_get_main(rk);
            let n = rdkafka::bindings::rd_kafka_queue_length(q);
            rdkafka::bindings::rd_kafka_queue_destroy(q);
            n
        }
    }

    #[test]
    fn the_probe_frees_what_librdkafka_queues_for_it() {
        // A port nothing listens on: librdkafka queues an error and logs for a failed
        // connection, as during an outage; the next attempt only 10 s later.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("statistics.interval.ms", "100")
            .set("reconnect.backoff.ms", "10000")
            .set("reconnect.backoff.max.ms", "10000");
        let admin = TopicAdmin::new(
            config,
            Topics::for_cluster(&crate::Config::default(), Cluster::Main),
            Cluster::Main,
            &KafkaConfig::default(),
        );
        assert_eq!(
            admin.client_config.get("statistics.interval.ms"),
            Some("0"),
            "an admin client's statistics have no reader"
        );
        let client: AdminClient<DefaultClientContext> = admin.client_config.create().unwrap();
        // Until the first attempt's events are all queued: none new for 300 ms.
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        let (mut len, mut since) = (0, std::time::Instant::now());
        while len == 0 || since.elapsed() < Duration::from_millis(300) {
            assert!(
                std::time::Instant::now() < deadline,
                "librdkafka queued nothing for a client that cannot connect"
            );
            std::thread::sleep(Duration::from_millis(10));
            let now = main_queue_len(&client);
            if now != len {
                (len, since) = (now, std::time::Instant::now());
            }
        }
        // Exactly what was queued: served as events, an error is not logged (and queued)
        // once more, nor printed.
        assert_eq!(serve_main_queue(&client), len);
        assert_eq!(main_queue_len(&client), 0);
    }
}
