//! Error paths a real broker rarely produces on demand, through librdkafka's mock cluster:
//! produce request errors, the broker going down and coming back, and a fatal idempotence
//! error that forces a new producer. In each, every record arrives, in order per key.
//! (The real-broker tests are in `delivery.rs` and `end_to_end.rs`.)

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_bridge::clock::wall_ms;
use edge_bridge::cluster::Cluster;
use edge_bridge::outbox::{spool_of, Outbox};
use edge_bridge::sink::Sink;
use edge_bridge::stats::Stats;
use edge_bridge::tasks::Tasks;
use edge_bridge::Config;
use edge_bridge_core::{OutRecord, Routed, Stream};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "raw-temperature";
const KEYS: usize = 7;

fn record(i: usize) -> Routed {
    Routed {
        stream: Stream::Raw,
        record: OutRecord {
            key: Bytes::from(format!("sensor-{}", i % KEYS)),
            value: Bytes::from(format!("{i}")),
            timestamp_ms: 1_718_000_000_000 + i as i64,
            headers: vec![("edge.id".into(), Bytes::from(format!("{i:016x}")))],
        },
        topic: None,
    }
}

fn config(mock: &MockCluster<'_, DefaultProducerContext>, state: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = mock.bootstrap_servers();
    c.state_dir = state.to_owned();
    c.spool.spill_after = Duration::from_millis(500);
    c.spool.fsync_interval = Duration::from_millis(50);
    // librdkafka's retry backoff, so that retries happen within the test's patience.
    c.kafka
        .options
        .insert("retry.backoff.max.ms".into(), "200".into());
    if std::env::var("TEST_LOG").is_ok() {
        edge_bridge::run::init_logging(&c);
    }
    c
}

/// Pumps until every record submitted is confirmed and the spool is empty.
async fn settle(outbox: &mut Outbox, stats: &Stats, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        outbox.pump(false).await.unwrap();
        let s = stats.snapshot();
        if s.raw.delivered >= n && s.spool_records == 0 && outbox.sink().in_flight() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the topic back: values in arrival order.
fn read_back(mock: &MockCluster<'_, DefaultProducerContext>, want: usize) -> Vec<(String, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet = Instant::now();
    while Instant::now() < deadline
        && !(out.len() >= want && quiet.elapsed() > Duration::from_millis(500))
    {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            let v: usize = std::str::from_utf8(m.payload().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            out.push((key, v));
            quiet = Instant::now();
        }
    }
    out
}

/// Every record arrived, and per key the first arrivals are in submission order.
fn check(got: &[(String, usize)], n: usize) -> usize {
    let distinct: HashSet<usize> = got.iter().map(|(_, v)| *v).collect();
    assert_eq!(distinct.len(), n, "every record arrives");
    let mut seen = HashSet::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (k, v) in got {
        if seen.insert(*v) {
            if let Some(prev) = last.insert(k, *v) {
                assert!(prev < *v, "{k}: {v} arrived after {prev}");
            }
        }
    }
    got.len() - n
}

/// An outbox to `mock`, with its spool under `state`.
fn open_outbox(
    mock: &MockCluster<'_, DefaultProducerContext>,
    state: &std::path::Path,
    stats: &Arc<Stats>,
) -> Outbox {
    let config = config(mock, state);
    Outbox::open(
        &config,
        Cluster::Main,
        spool_of(&config, Cluster::Main, stats).unwrap(),
        stats.clone(),
        &Tasks::new(),
        Default::default(),
    )
    .unwrap()
}

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(TOPIC, 1, 1).unwrap();
    mock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_request_errors_are_retried_without_loss_or_duplicates() {
    let mock = cluster();
    let state = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let mut outbox = open_outbox(&mock, state.path(), &stats);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    let n = 2_000;
    for i in 0..n {
        outbox.submit(record(i), None, wall_ms()).await.unwrap();
    }
    settle(&mut outbox, &stats, n as u64).await;
    let dups = check(&read_back(&mock, n), n);
    assert_eq!(
        dups, 0,
        "the idempotent producer retries without duplicates"
    );
    assert_eq!(stats.snapshot().raw.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_spools_and_delivers_everything_in_order() {
    let mock = cluster();
    let state = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let mut outbox = open_outbox(&mock, state.path(), &stats);
    let n = 6_000;
    for i in 0..1_000 {
        outbox.submit(record(i), None, wall_ms()).await.unwrap();
    }
    mock.broker_down(1).unwrap();
    let down = Instant::now();
    for i in 1_000..n {
        outbox.submit(record(i), None, wall_ms()).await.unwrap();
        // Readings keep coming at about 5,000/s while the broker is away.
        if i % 10 == 0 {
            outbox.pump(false).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    while down.elapsed() < Duration::from_secs(2) {
        outbox.pump(false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = stats.snapshot();
    assert!(s.raw.spooled > 0, "the outage spilled to the spool: {s}");
    mock.broker_up(1).unwrap();
    settle(&mut outbox, &stats, n as u64).await;
    check(&read_back(&mock, n), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_producer_error_recreates_the_producer_without_losing_records() {
    let mock = cluster();
    // Slow responses, so that records are in flight when the error strikes.
    mock.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let mut outbox = open_outbox(&mock, state.path(), &stats);
    let n = 3_000;
    for i in 0..n / 2 {
        outbox.submit(record(i), None, wall_ms()).await.unwrap();
    }
    assert!(outbox.sink().in_flight() > 0);
    outbox.sink().inject_fatal_error();
    for i in n / 2..n {
        outbox.submit(record(i), None, wall_ms()).await.unwrap();
    }
    settle(&mut outbox, &stats, n as u64).await;
    let s = stats.snapshot();
    eprintln!("{s}");
    assert!(
        s.raw.spooled > 0,
        "the failed producer's records were taken back"
    );
    assert_eq!(s.raw.failed, 0);
    let dups = check(&read_back(&mock, n), n);
    eprintln!("{dups} duplicates after the producer was replaced");
}
