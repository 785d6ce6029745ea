//! The operator's endpoint against a real run: `/metrics` after a known dataset, each counter
//! checked to the exact value (including the reduction factor); `/healthz` and `/readyz`; and
//! the `/status` page loaded in headless Chromium (Debian's package): it renders, shows the
//! same numbers as `/metrics`, reports no error, and a screenshot is saved.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_bridge::stats::Stats;
use edge_bridge::Config;
use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Message, Values};
use support::{free_port, read_topic, reference, Tansu};

const N: u64 = 2_000;

fn dataset(start_ms: i64) -> Dataset {
    Dataset::new(DatasetOptions {
        sensors: 8,
        rate: 20.0,
        start_ms,
        seed: 77,
        values: Values::Walk,
        faults: Faults {
            out_of_order: 0.05,
            late: 0.04,
            malformed: 0.04,
            duplicate: 0.0,
        },
        topic_template: "sensors/{sensor}/temperature".into(),
    })
}

/// The dead-letter reason of each malformed payload the simulator sends, from the record
/// contract (not from the decoder).
fn reason_of(payload: &str) -> &'static str {
    match payload {
        "not json at all" => "not_json",
        p if !p.contains("value") => "missing_value",
        p if p.contains("\"hot\"") => "value_not_number",
        p if p.contains("yesterday") => "bad_timestamp",
        p => panic!("unknown malformed payload {p}"),
    }
}

/// GET over plain HTTP/1.0: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// `name{labels} value` lines of an OpenMetrics text -> value by series.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn config(brokers: &str, state: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_owned();
    c.state_dir = state.to_owned();
    c.mqtt.listen = format!("127.0.0.1:{}", free_port());
    c.mqtt.listen_v5 = String::new();
    c.http.listen = format!("127.0.0.1:{}", free_port());
    c.window.idle_timeout = Duration::from_secs(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_status_page_after_a_known_dataset() {
    readyz_says_why_it_is_not_ready().await;
    let kafka = Tansu::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&kafka.brokers, state.path());
    let (mqtt, http) = (
        support::port_of(&cfg.mqtt.listen),
        support::port_of(&cfg.http.listen),
    );
    let stats = Arc::new(Stats::default());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(cfg, stats.clone(), async {
        let _ = rx.await;
    })
    .await;
    assert_eq!(get(http, "/healthz"), (200, "ok\n".to_owned()));

    let start_ms = support::now_ms() - 300_000;
    support::publish(mqtt, dataset(start_ms), N, None, "sim-http").await;

    // What the dataset must produce, computed here.
    let sent: Vec<Message> = dataset(start_ms).take(N as usize).collect();
    let (good, bad, readings) = reference::split(&sent);
    let (windows, late) = reference::windows(&readings, 10_000, 1_000);
    let bytes_in: u64 = sent.iter().map(|m| m.payload.len() as u64).sum();
    let raw_bytes: u64 = good
        .iter()
        .map(|m| (m.sensor.len() + m.payload.len()) as u64)
        .sum();
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &bad {
        *reasons.entry(reason_of(&m.payload)).or_default() += 1;
    }

    // Wait until everything is delivered (the idle flush closes the last windows) and the
    // broker probe has run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats.snapshot();
        if s.aggregate.delivered == windows.len() as u64
            && s.raw.delivered == good.len() as u64
            && s.dead_letter.delivered == bad.len() as u64
            && stats.snapshot().raw_cluster.is_none()
            && stats
                .cluster(edge_bridge::cluster::Cluster::Main)
                .kafka_reachable
                .load(Relaxed)
                == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agg = read_topic(
        &kafka.brokers,
        "agg-temperature",
        windows.len(),
        Duration::from_secs(20),
    );
    assert_eq!(agg.len(), windows.len());
    let agg_bytes: u64 = agg
        .iter()
        .map(|r| (r.key.len() + r.value.len()) as u64)
        .sum();

    let (code, text) = get(http, "/metrics");
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let v = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no series {k} in\n{text}"))
    };
    assert_eq!(v("edge_bridge_readings_received_total"), N as f64);
    assert_eq!(v("edge_bridge_received_bytes_total"), bytes_in as f64);
    assert_eq!(v("edge_bridge_readings_decoded_total"), good.len() as f64);
    assert_eq!(v("edge_bridge_readings_late_total"), late as f64);
    for reason in edge_bridge_core::DecodeError::REASONS {
        let want = reasons.get(reason).copied().unwrap_or(0);
        assert_eq!(
            v(&format!(
                "edge_bridge_readings_rejected_total{{reason=\"{reason}\"}}"
            )),
            want as f64,
            "{reason}"
        );
    }
    assert_eq!(
        v("edge_bridge_aggregates_emitted_total"),
        windows.len() as f64
    );
    assert_eq!(
        v("edge_bridge_records_delivered_total{stream=\"raw\"}"),
        good.len() as f64
    );
    assert_eq!(
        v("edge_bridge_records_delivered_total{stream=\"aggregate\"}"),
        windows.len() as f64
    );
    assert_eq!(
        v("edge_bridge_records_delivered_total{stream=\"dead_letter\"}"),
        bad.len() as f64
    );
    assert_eq!(v("edge_bridge_records_failed_total{stream=\"raw\"}"), 0.0);
    assert_eq!(v("edge_bridge_records_dropped_total{stream=\"raw\"}"), 0.0);
    assert_eq!(
        v("edge_bridge_sent_bytes_total{stream=\"raw\"}"),
        raw_bytes as f64
    );
    assert_eq!(
        v("edge_bridge_sent_bytes_total{stream=\"aggregate\"}"),
        agg_bytes as f64
    );
    let ratio = v("edge_bridge_bandwidth_reduction_ratio");
    let want = bytes_in as f64 / agg_bytes as f64;
    assert!(
        (ratio - want).abs() < 1e-9 * want,
        "reduction {ratio} vs {want}"
    );
    assert_eq!(v("edge_bridge_spool_records{cluster=\"main\"}"), 0.0);
    assert_eq!(v("edge_bridge_mqtt_connected"), 1.0);
    assert_eq!(v("edge_bridge_mqtt_subscribed"), 1.0);
    assert_eq!(v("edge_bridge_kafka_reachable{cluster=\"main\"}"), 1.0);
    assert_eq!(
        v("edge_bridge_aggregate_delivery_latency_seconds_count"),
        windows.len() as f64
    );
    assert!(!text.contains("Sensor1"), "no sensor id in any label");

    let (code, body) = get(http, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (200, "ready: MQTT subscribed; Kafka reachable\n")
    );

    // The sparklines need two samples of history (one every 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(http, "/status.json")
        .1
        .matches("\"readings_per_s\"")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no history in /status.json");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    status_page_in_chromium(http, &m);

    stop.send(()).unwrap();
    bridge.await.unwrap().unwrap();
}

fn chromium() -> PathBuf {
    let p =
        PathBuf::from(std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(p.exists(), "{} not found: run the tests with scripts/test.sh, which installs Debian's chromium, or set CHROMIUM_BIN", p.display());
    p
}

/// Loads /status headlessly: the DOM after the page's scripts ran, and a screenshot.
fn status_page_in_chromium(http: u16, metrics: &HashMap<String, f64>) {
    let url = format!("http://127.0.0.1:{http}/status");
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--no-first-run".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
        "--virtual-time-budget=5000".to_owned(),
        "--enable-logging=stderr".to_owned(),
        "--v=0".to_owned(),
    ];
    let out = Command::new(chromium())
        .args(&common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("running chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page did not load its figures:\n{dom}\n{log}"
    );
    let text_of = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no #{id}"))
            + id.len()
            + 6;
        dom[start..].split('<').next().unwrap().to_owned()
    };
    // Byte counts are shown in units, the exact figure in data-exact.
    let exact_of = |id: &str| -> (String, String) {
        let tag = format!("id=\"{id}\" data-exact=\"");
        let start = dom.find(&tag).unwrap_or_else(|| panic!("no exact #{id}")) + tag.len();
        let exact = dom[start..].split('"').next().unwrap().to_owned();
        let shown = dom[start..].split_once('>').unwrap().1;
        (exact, shown.split('<').next().unwrap().to_owned())
    };
    let (exact, shown) = exact_of("received_bytes");
    assert_eq!(
        exact,
        format!("{}", metrics["edge_bridge_received_bytes_total"] as u64)
    );
    assert!(
        [" B", " kB", " MB"].iter().any(|u| shown.ends_with(u)),
        "bytes in units: {shown}"
    );
    let (exact, shown) = exact_of("uplink_sent_bytes");
    assert!(
        exact.parse::<u64>().unwrap() > 0,
        "bytes on the wire: {exact}"
    );
    assert!(shown.ends_with("B"), "{shown}");
    let (_, shown) = exact_of("uplink_reduction_ratio");
    assert!(
        shown.ends_with("x less") || shown.ends_with("x MORE"),
        "{shown}"
    );
    for (id, series) in [
        ("readings_received", "edge_bridge_readings_received_total"),
        ("aggregates_emitted", "edge_bridge_aggregates_emitted_total"),
        (
            "aggregates_delivered",
            "edge_bridge_records_delivered_total{stream=\"aggregate\"}",
        ),
        (
            "raw_delivered",
            "edge_bridge_records_delivered_total{stream=\"raw\"}",
        ),
        ("readings_late", "edge_bridge_readings_late_total"),
    ] {
        assert_eq!(
            text_of(id),
            format!("{}", metrics[series] as u64),
            "#{id} vs {series}"
        );
    }
    let ratio: f64 = text_of("bandwidth_reduction_ratio").parse().unwrap();
    assert!((ratio - metrics["edge_bridge_bandwidth_reduction_ratio"]).abs() < 0.06);
    assert_eq!(text_of("errors"), "", "the page reported errors");
    assert!(dom.contains("<polyline"), "the sparklines are drawn");
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let status = Command::new(chromium())
        .args(&common)
        .arg("--window-size=1200,900")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("running chromium");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
    eprintln!("status page screenshot: {}", shot.display());
}

/// Run by the test above, before its own bridge starts: two bridges at once in one test
/// process would race for free ports.
async fn readyz_says_why_it_is_not_ready() {
    let state = tempfile::tempdir().unwrap();
    let mut cfg = config(&format!("127.0.0.1:{}", free_port()), state.path());
    cfg.spool.enabled = false;
    cfg.kafka.create_topics = false;
    let http = support::port_of(&cfg.http.listen);
    let stats = Arc::new(Stats::default());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let bridge = support::spawn_bridge(cfg, stats.clone(), async {
        let _ = rx.await;
    })
    .await;
    // The first broker probe fails within its 5 s timeout.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (code, body) = get(http, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (
            503,
            "not ready: MQTT subscribed; Kafka unreachable and the spool is off\n"
        )
    );
    assert_eq!(get(http, "/healthz").0, 200);
    stop.send(()).unwrap();
    bridge.await.unwrap().unwrap();
}
