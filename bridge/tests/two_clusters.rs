//! Raw and aggregates to different clusters (`kafka.raw_brokers`), the usual edge topology:
//! raw readings to a Kafka-API broker on the site's network, aggregates to the cloud. Each
//! cluster is a real broker (tansu) behind a TCP proxy the test cuts for 60 s (set
//! `EDGE_TEST_OUTAGE_SECS` to change it): nothing is lost on either cluster, each stream lands
//! only in its own cluster, and while one cluster is cut the other's records keep being
//! delivered as they are made, without going through the spool.
//!
//! Run with `scripts/test.sh`, which installs tansu once.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use edge_bridge::cluster::Cluster;
use edge_bridge::stats::Summary;
use edge_bridge::Config;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Message, Values};
use support::proxy::Proxy;
use support::{free_port, publish, read_topic, reference, Running, Tansu};

/// 20 sensors at 50 readings/s each, published in real time.
const SENSORS: u32 = 20;
const RATE: f64 = 50.0;

fn dataset(start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: SENSORS,
        rate: RATE,
        start_ms,
        seed: 11,
        values: Values::Walk,
        faults: Faults::default(),
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

fn config(main: &str, raw: &str, state: &Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = main.to_owned();
    c.kafka.raw_brokers = raw.to_owned();
    c.state_dir = state.to_owned();
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    c.window.idle_timeout = Duration::from_secs(2);
    c.spool.spill_after = Duration::from_secs(1);
    c.spool.fsync_interval = Duration::from_millis(100);
    c.kafka.shutdown_timeout = Duration::from_secs(3);
    c.http.listen = String::new();
    c
}

/// A broker behind a proxy the test can cut.
struct Site {
    proxy: Proxy,
    kafka: Tansu,
}

impl Site {
    fn start() -> Site {
        let port = free_port();
        let kafka = Tansu::start_advertising(Some(port));
        let proxy = Proxy::start(port, kafka.direct);
        Site { proxy, kafka }
    }
}

/// The other cluster's streams' records: (produced, delivered, spooled).
fn counts(s: &Summary, cluster: Cluster) -> (u64, u64, u64) {
    let streams = match cluster {
        Cluster::Main => vec![s.aggregate],
        Cluster::Raw => vec![s.raw, s.dead_letter, s.late_stream],
    };
    (
        streams.iter().map(|c| c.produced).sum(),
        streams.iter().map(|c| c.delivered).sum(),
        streams.iter().map(|c| c.spooled).sum(),
    )
}

/// How long the other cluster's records may take from the producer to their delivery report
/// while one cluster is cut: the raw stream lingers 500 ms, the test machine is busy.
const PROMPTLY: Duration = Duration::from_secs(3);

/// Cuts `cut` for the outage while readings flow, and checks both clusters afterwards.
async fn outage_of_one_cluster(cut: Cluster) {
    let outage = Duration::from_secs(
        std::env::var("EDGE_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let (main, raw) = (Site::start(), Site::start());
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&main.kafka.brokers, &raw.kafka.brokers, state.path());
    let port: u16 = cfg.mqtt.listen.rsplit(':').next().unwrap().parse().unwrap();
    let bridge = Running::start(cfg).await;
    let stats = bridge.stats.clone();
    let (cut_site, other) = match cut {
        Cluster::Main => (&main, Cluster::Raw),
        Cluster::Raw => (&raw, Cluster::Main),
    };

    let (before, after) = (Duration::from_secs(6), Duration::from_secs(6));
    let per_s = f64::from(SENSORS) * RATE;
    let n = (per_s * (before + outage + after).as_secs_f64()) as u64;
    let start_ms = support::now_ms();
    let publisher = tokio::spawn(publish(
        port,
        dataset(start_ms),
        n,
        Some(per_s),
        "sim-two-clusters",
    ));
    tokio::time::sleep(before).await;
    cut_site.proxy.cut();
    eprintln!("{} cluster cut for {outage:?}", cut.as_str());

    // While it is cut, the other cluster's records keep being delivered as they are made:
    // every record handed to its producer is confirmed within PROMPTLY, none goes to the
    // spool, and its cluster is never taken for down. The cut cluster's go to its spool.
    let cut_at = Instant::now();
    let mut produced_at: Vec<(Instant, u64)> = Vec::new();
    while cut_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = stats.snapshot();
        let (produced, delivered, spooled) = counts(&s, other);
        let now = Instant::now();
        produced_at.push((now, produced));
        if let Some((_, due)) = produced_at
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= PROMPTLY)
        {
            assert!(
                delivered >= *due,
                "{} s into the cut of the {} cluster, the {} cluster has {delivered} records confirmed of {due} produced {PROMPTLY:?} before: {s}",
                cut_at.elapsed().as_secs(),
                cut.as_str(),
                other.as_str()
            );
        }
        assert_eq!(
            spooled,
            0,
            "the {} cluster's records were spooled: {s}",
            other.as_str()
        );
        assert_eq!(stats.cluster(other).uplink_down.load(Relaxed), 0);
    }
    let (produced, ..) = counts(&stats.snapshot(), other);
    assert!(
        produced > 0,
        "the {} cluster got records during the cut",
        other.as_str()
    );
    let s = stats.snapshot();
    assert_eq!(stats.cluster(cut).uplink_down.load(Relaxed), 1, "{s}");
    assert!(
        counts(&s, cut).2 > 0,
        "the cut cluster's records went to its spool: {s}"
    );
    cut_site.proxy.restore();
    eprintln!("{} cluster restored; so far: {s}", cut.as_str());
    publisher.await.unwrap();

    stats_wait(&bridge, n).await;
    bridge.stop().await;
    let s = stats.snapshot();
    eprintln!("{s}");
    assert_eq!(s.raw.dropped + s.aggregate.dropped, 0);
    assert_eq!(s.raw.failed + s.aggregate.failed, 0);
    assert!(
        state.path().join("spool-raw").is_dir(),
        "the raw cluster has a spool of its own"
    );

    // Every reading in the raw cluster, in order per sensor; every aggregate in the main
    // cluster, equal to an independent computation.
    let sent: Vec<Message> = dataset(start_ms).take(n as usize).collect();
    let records = read_topic(
        &raw.kafka.brokers,
        "raw-temperature",
        n as usize,
        Duration::from_secs(60),
    );
    let mut seen = HashSet::new();
    for r in &records {
        seen.insert((r.key.clone(), r.value.clone()));
    }
    for m in &sent {
        assert!(
            seen.contains(&(m.sensor.clone(), m.payload.clone().into_bytes())),
            "reading of {} at {} never reached the raw cluster",
            m.sensor,
            m.ts_ms
        );
    }
    reference::check_order(&records, &sent, SENSORS);
    let aggregates = read_topic(
        &main.kafka.brokers,
        "agg-temperature",
        1,
        Duration::from_secs(30),
    );
    reference::check_aggregates(&aggregates, &sent);
    // Each stream only in its own cluster.
    let stray = read_topic(
        &main.kafka.brokers,
        "raw-temperature",
        0,
        Duration::from_secs(3),
    );
    assert!(stray.is_empty(), "raw readings in the main cluster");
    let stray = read_topic(
        &raw.kafka.brokers,
        "agg-temperature",
        0,
        Duration::from_secs(3),
    );
    assert!(stray.is_empty(), "aggregates in the raw cluster");
}

/// Waits until every reading and every aggregate is delivered and both spools are empty.
async fn stats_wait(bridge: &Running, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = bridge.stats.snapshot();
        if s.raw.delivered >= n && s.spool_records == 0 && s.readings_in >= n {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last windows close by the idle flush.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.stats.snapshot().spool_records > 0 {
        assert!(Instant::now() < deadline, "the spools did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records a run without `kafka.raw_brokers` left in its spool (an outage, then a stop) go,
/// once it is set, to the cluster that now takes their stream: raw to the raw cluster,
/// aggregates to the main one; none stays behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_spooled_before_the_second_cluster_go_to_the_cluster_of_their_stream() {
    use edge_bridge::spool::fs::DiskFs;
    use edge_bridge::spool::{Lane, Spool, SpoolOptions};
    use edge_bridge_core::{OutRecord, Routed, Stream};

    let (main, raw) = (Tansu::start(), Tansu::start());
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&main.brokers, &raw.brokers, state.path());
    let record = |stream: Stream, i: u64| Routed {
        stream,
        record: OutRecord {
            key: format!("s-{i}").into(),
            value: format!("{{\"n\":{i}}}").into(),
            timestamp_ms: support::now_ms(),
            headers: Vec::new(),
        },
        topic: None,
    };
    {
        let opts = SpoolOptions { max_bytes: 1 << 24 };
        let (mut old, _) = Spool::open(
            DiskFs,
            &edge_bridge::outbox::spool_dir(&cfg, Cluster::Main),
            opts,
        )
        .unwrap();
        for i in 0..300 {
            let stream = if i % 3 == 0 {
                Stream::Aggregate
            } else {
                Stream::Raw
            };
            old.append(Lane::for_stream(stream), &record(stream, i), 0)
                .unwrap();
        }
        old.sync().unwrap();
    }
    let bridge = Running::start(cfg).await;
    let stats = bridge.stats.clone();
    support::wait_for("the spooled records delivered", || {
        let s = stats.snapshot();
        s.raw.delivered_from_spool == 200 && s.aggregate.delivered_from_spool == 100
    })
    .await;
    bridge.stop().await;
    let raw_records = read_topic(
        &raw.brokers,
        "raw-temperature",
        200,
        Duration::from_secs(30),
    );
    assert_eq!(
        raw_records.len(),
        200,
        "every spooled raw record in the raw cluster"
    );
    let aggregates = read_topic(
        &main.brokers,
        "agg-temperature",
        100,
        Duration::from_secs(30),
    );
    assert_eq!(
        aggregates.len(),
        100,
        "every spooled aggregate in the main cluster"
    );
    let stray = read_topic(&main.brokers, "raw-temperature", 0, Duration::from_secs(3));
    assert!(stray.is_empty(), "raw records left for the main cluster");
    assert_eq!(stats.snapshot().spool_records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_cluster_cut_holds_back_no_aggregate_and_loses_nothing() {
    outage_of_one_cluster(Cluster::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_cluster_cut_holds_back_no_raw_reading_and_loses_nothing() {
    outage_of_one_cluster(Cluster::Main).await;
}
