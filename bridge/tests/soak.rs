//! The soak: the bridge for a long run at the tutorial's rate, with the failures a site sees,
//! and a check of everything at the end. Run by `scripts/soak.sh` (one hour by default; CI runs
//! three minutes); ignored by `cargo test` otherwise.
//!
//! Setup: the simulator publishes `SOAK_SENSORS` sensors (10,000) at `SOAK_RATE` readings/s
//! each (4) to Mosquitto at QoS 1; the bridge reads them through a persistent session and
//! produces to tansu through a TCP proxy, the uplink. Over `SOAK_SECONDS` (3,600), in periods
//! of a sixth of the run (10 minutes): the uplink is cut for a quarter period (at most 60 s) at
//! the start of periods 1 to 5; the bridge is stopped with SIGTERM and restarted at 1.5 and
//! 2.5 periods, and killed with SIGKILL in the middle of the third cut, then restarted.
//!
//! Checked at the end, against the dataset regenerated from its seed (not against anything the
//! bridge reports):
//! - Mosquitto (queueing for the bridge without a cap here) received every publish and dropped
//!   none, by its own `$SYS` counts, and every published reading is in the raw topic at least
//!   once, with its exact payload;
//! - every aggregate equals the one computed from the published readings; the documented
//!   exception is the kill -9: windows open then may miss readings since the last periodic
//!   save, or count a redelivered one twice (README, "Window state"), or be missing when the
//!   kill took their aggregate from the producer's memory (README, "Delivery guarantees");
//!   those must all lie in one span around the kill, and otherwise differ in count only;
//! - resident memory at the steady points (the median of the last 20 s of samples) after the
//!   first period (10 minutes) grows by at most 10 %, over the run and per bridge process from
//!   half a period of its own on (judged for 10-minute periods only: shorter runs print the
//!   figures); each process's open file descriptors stay within 4 of each other;
//! - after each outage the spool is back to direct sends within half a period;
//! - the spool ends as it began: no record left, no segment file left;
//! - the counters: records delivered per stream (over all processes; each process's exit
//!   summary, or its last scrape for the killed one) are never more than the topic holds, and
//!   those it holds uncounted are all copies (written by the broker while their producer lost
//!   the link or its life, then resent); readings received cover every reading published.

mod support;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_sim::dataset::{Dataset, DatasetOptions, Faults, Values};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::proxy::Proxy;
use support::{free_port, reference::Expected, BridgeProcess, Mosquitto, Tansu};

const SEED: u64 = 2026;
const WINDOW_MS: i64 = 10_000;
const GRACE_MS: i64 = 1_000;
/// The bridge's default `window.save_interval`: the state a kill -9 falls back to.
const SAVE_INTERVAL_MS: i64 = 60_000;
const RAW_TOPIC: &str = "raw-temperature";
const AGG_TOPIC: &str = "agg-temperature";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not valid"))
        })
        .unwrap_or(default)
}

struct Plan {
    sensors: u32,
    rate: f64,
    seconds: u64,
    start_ms: i64,
}

impl Plan {
    fn count(&self) -> u64 {
        (f64::from(self.sensors) * self.rate * self.seconds as f64) as u64
    }

    fn dataset(&self) -> Dataset {
        Dataset::new(DatasetOptions {
            sensors: self.sensors,
            rate: self.rate,
            start_ms: self.start_ms,
            seed: SEED,
            values: Values::Walk,
            faults: Faults::default(),
            topic_template: "sensors/{sensor}/temperature".into(),
        })
    }

    fn period_ms(&self) -> i64 {
        (1000.0 / self.rate) as i64
    }

    /// The dataset's index of the reading of sensor `k` at `ts_ms` (see `Dataset::next`).
    fn index_of(&self, k: u32, ts_ms: i64) -> Option<u64> {
        let period = self.period_ms();
        let offset = (i64::from(k) * period) / i64::from(self.sensors);
        let since = ts_ms - self.start_ms - offset;
        (since >= 0 && since % period == 0 && k < self.sensors)
            .then(|| (since / period) as u64 * u64::from(self.sensors) + u64::from(k))
    }
}

fn sensor_index(key: &[u8]) -> Option<u32> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix("Sensor")?
        .parse::<u32>()
        .ok()?
        .checked_sub(1)
}

fn payload_hash(n: u64, payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (n, payload).hash(&mut h);
    h.finish()
}

/// What the consumer has read so far from both topics (through tansu directly, not the uplink).
#[derive(Default)]
struct Seen {
    raw_records: u64,
    raw_distinct: u64,
    raw_foreign: u64,
    /// Wrapping sum of `payload_hash` over the first copy of each reading.
    raw_hash: u64,
    raw_bits: Vec<u64>,
    /// Second of the run (event time) -> copies of readings already seen.
    raw_copies_at: std::collections::BTreeMap<i64, u64>,
    agg_records: u64,
    /// (sensor, window start) -> the copy with the largest count, and how many copies.
    aggs: HashMap<(u32, i64), (Expected, u32)>,
    agg_differing_copies: u64,
}

/// How long the checking consumer leaves the topics unread once it has caught up, while the
/// run goes on. tansu 0.6's in-memory storage lists every batch the partition holds on each
/// fetch from below the high watermark (`DynoStore::fetch` in tansu-storage): a consumer that
/// keeps up live fetches tens of times a second, and each fetch costs more as the hour's
/// batches pile up. In the ninth hour run the broker went from 5 % to 64 % of a core within 25
/// minutes, on the two cores the bridge shares, and its round trip from 0.8 to 5.7 ms; the
/// bridge's records in flight and its memory grew with it. Read in bursts, the same records
/// take a few fetches of up to 16 MiB.
const CATCH_UP_EVERY: Duration = Duration::from_secs(20);

/// Reads both topics into `seen` until `stop`: in bursts every [`CATCH_UP_EVERY`], and
/// continuously once `follow` is set (the drain, which waits for the counts to settle).
fn consume(brokers: &str, plan: &Plan, seen: &Mutex<Seen>, stop: &AtomicBool, follow: &AtomicBool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "soak-check")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "16777216")
        // Fetch again only once the last fetch's records are read: while this thread waits,
        // the fetcher does not follow the topics. It checks that queue every
        // `fetch.queue.backoff.ms` (1 s by default, which would pace the catch-up and the
        // drain at one fetch a second).
        .set("queued.min.messages", "1")
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .unwrap();
    let topics = [RAW_TOPIC, AGG_TOPIC];
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        tpl.add_partition_offset(t, 0, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    // By topic, as in `topics`: the next offset to read, and the high watermarks this burst
    // reads up to, taken at its first empty poll.
    let mut next = [0i64; 2];
    let mut burst_end: Option<[i64; 2]> = None;
    while !stop.load(Relaxed) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            // Nothing for 200 ms: caught up, or a catch-up fetch slower than that (late in the
            // hour a fetch lists some 200,000 batches first). Pause only once this burst has
            // read what both topics held when it met its first empty poll: not the current
            // high watermarks, which move on while the sensors publish, and not the first
            // empty poll, after which the checker would fall further behind each burst. A
            // watermark that cannot be read counts as reached.
            let end = *burst_end.get_or_insert_with(|| {
                topics.map(|t| {
                    consumer
                        .fetch_watermarks(t, 0, Duration::from_secs(10))
                        .map_or(0, |(_, high)| high)
                })
            });
            if next.iter().zip(end).any(|(next, end)| *next < end) {
                continue;
            }
            burst_end = None;
            let until = Instant::now() + CATCH_UP_EVERY;
            while Instant::now() < until && !stop.load(Relaxed) && !follow.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        };
        let Ok(msg) = msg else { continue };
        if let Some(i) = topics.iter().position(|t| *t == msg.topic()) {
            next[i] = msg.offset() + 1;
        }
        let mut s = seen.lock().unwrap();
        let key = msg.key().unwrap_or_default();
        let value = msg.payload().unwrap_or_default();
        if msg.topic() == RAW_TOPIC {
            s.raw_records += 1;
            let ts = msg.timestamp().to_millis().unwrap_or(-1);
            let Some(n) = sensor_index(key).and_then(|k| plan.index_of(k, ts)) else {
                s.raw_foreign += 1;
                continue;
            };
            let (word, bit) = ((n / 64) as usize, n % 64);
            if s.raw_bits.len() <= word {
                s.raw_bits.resize(word + 1, 0);
            }
            if s.raw_bits[word] & (1 << bit) == 0 {
                s.raw_bits[word] |= 1 << bit;
                s.raw_distinct += 1;
                s.raw_hash = s.raw_hash.wrapping_add(payload_hash(n, value));
            } else {
                *s.raw_copies_at
                    .entry((ts - plan.start_ms) / 1000)
                    .or_default() += 1;
            }
        } else {
            s.agg_records += 1;
            let v: serde_json::Value = serde_json::from_slice(value).expect("aggregate JSON");
            let t = &v["temperature"];
            let e = Expected {
                count: t["count"].as_u64().unwrap(),
                min: t["min"].as_f64().unwrap(),
                max: t["max"].as_f64().unwrap(),
                sum: t["sum"].as_f64().unwrap(),
            };
            let k = sensor_index(key).expect("aggregate key is a sensor");
            let start = v["start"].as_i64().unwrap();
            let mut differing = false;
            s.aggs
                .entry((k, start))
                .and_modify(|(best, copies)| {
                    *copies += 1;
                    differing = *best != e;
                    if e.count > best.count {
                        *best = e;
                    }
                })
                .or_insert((e, 1));
            s.agg_differing_copies += u64::from(differing);
        }
    }
}

/// The published dataset's aggregates and payload hash, computed here from its seed.
fn expected(plan: &Plan) -> (HashMap<(u32, i64), Expected>, u64) {
    let mut out: HashMap<(u32, i64), Expected> = HashMap::new();
    let mut watermark = vec![i64::MIN; plan.sensors as usize];
    let mut hash = 0u64;
    for (n, m) in plan.dataset().take(plan.count() as usize).enumerate() {
        hash = hash.wrapping_add(payload_hash(n as u64, m.payload.as_bytes()));
        let k = sensor_index(m.sensor.as_bytes()).unwrap();
        let w = &mut watermark[k as usize];
        *w = (*w).max(m.ts_ms);
        let start = m.ts_ms - m.ts_ms.rem_euclid(WINDOW_MS);
        assert!(
            start + WINDOW_MS > *w - GRACE_MS,
            "the soak's data is in order"
        );
        out.entry((k, start))
            .and_modify(|e| {
                e.count += 1;
                e.min = e.min.min(m.value);
                e.max = e.max.max(m.value);
                e.sum += m.value;
            })
            .or_insert(Expected {
                count: 1,
                min: m.value,
                max: m.value,
                sum: m.value,
            });
    }
    (out, hash)
}

/// Equal aggregates: count, min and max exactly, the sum to 1e-9 of its size (the bridge may
/// add in another order: after a restart, a window's sum continues from the saved one).
fn same(got: &Expected, want: &Expected) -> bool {
    (got.count, got.min, got.max) == (want.count, want.min, want.max)
        && (got.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0)
}

/// `/metrics` of a bridge as name{labels} -> value.
fn scrape(port: u16) -> Option<HashMap<String, f64>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: soak\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

fn metric(m: &HashMap<String, f64>, key: &str) -> u64 {
    m.get(key).copied().unwrap_or(0.0) as u64
}

/// Counts by second, as runs of seconds at most 10 s apart: "from..to: total", the largest 8.
fn spans(counts: impl Iterator<Item = (i64, u64)>) -> String {
    let mut runs: Vec<(i64, i64, u64)> = Vec::new();
    for (s, n) in counts {
        match runs.last_mut() {
            Some((_, to, total)) if s - *to <= 10 => {
                *to = s;
                *total += n;
            }
            _ => runs.push((s, s, n)),
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.2));
    let text: Vec<String> = runs
        .iter()
        .take(8)
        .map(|(a, b, n)| format!("{a}..{b}: {n}"))
        .collect();
    if text.is_empty() {
        "none".into()
    } else {
        text.join(", ")
    }
}

/// Mosquitto's own counts of PUBLISH messages (`$SYS/broker/publish/messages/{received,sent,
/// dropped}`; dropped are those it threw away at a queue or in-flight limit), as a listener
/// started with the broker heard them. Mosquitto publishes each when it changes, at most every
/// 10 s, retained for only 60 s: a listener that came later would miss a count that stopped
/// changing, so one listens from the start and the last value of each counts.
struct MqttCountsListener {
    child: std::process::Child,
    file: PathBuf,
}

impl MqttCountsListener {
    fn start(port: u16, file: PathBuf) -> Self {
        let child = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v"])
            .args(["-t", "$SYS/broker/publish/messages/+"])
            .stdout(std::fs::File::create(&file).unwrap())
            .spawn()
            .expect("mosquitto_sub (Debian's mosquitto-clients; scripts/test.sh installs it)");
        Self { child, file }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Waits for the next round of counts (so that none is older than the last activity),
    /// then stops listening.
    fn finish(self) -> Result<MqttCounts, String> {
        let before = self.text().len();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.text().len() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let text = self.text();
        drop(self); // stops the listener
        let count = |name: &str| {
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix(&format!("$SYS/broker/publish/messages/{name} ")))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("Mosquitto published no {name} count: {text}"))
        };
        Ok(MqttCounts {
            received: count("received")?,
            sent: count("sent")?,
            dropped: count("dropped")?,
        })
    }
}

impl Drop for MqttCountsListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct MqttCounts {
    received: u64,
    sent: u64,
    dropped: u64,
}

/// How far back the resident set's samples count at a steady point (scrapes are every 2 s).
const STEADY_WINDOW: Duration = Duration::from_secs(20);

/// A process's memory and open files at a steady point.
struct Steady {
    /// Seconds since the run began, and since this process began.
    run_s: u64,
    age_s: u64,
    /// Resident set (KiB): the median of the samples of the last `STEADY_WINDOW`, so that a
    /// buffer allocated and freed within a second (a compression context per batch, which
    /// the allocator returns within its decay time) neither makes nor hides growth. Open file
    /// descriptors, from /proc.
    rss_kib: u64,
    fds: u64,
    /// The allocator's bytes held by the program and pages resident, from the bridge's
    /// `/metrics` (0 when the scrape failed): they tell live memory from pages the allocator
    /// keeps.
    heap_allocated: u64,
    heap_resident: u64,
}

impl Steady {
    fn of(life: &Life, run_start: Instant, http_port: u16) -> Steady {
        let (rss_now, fds) = rss_fds(life.pid);
        let mut samples: Vec<u64> = life
            .recent_rss
            .iter()
            .filter(|(at, _)| at.elapsed() <= STEADY_WINDOW)
            .map(|(_, kib)| *kib)
            .chain([rss_now])
            .collect();
        samples.sort_unstable();
        let rss_kib = samples[samples.len() / 2];
        let m = scrape(http_port).unwrap_or_default();
        Steady {
            run_s: run_start.elapsed().as_secs(),
            age_s: life.started.elapsed().as_secs(),
            rss_kib,
            fds,
            heap_allocated: metric(&m, "edge_bridge_heap_allocated_bytes"),
            heap_resident: metric(&m, "edge_bridge_heap_resident_bytes"),
        }
    }

    /// `(run s, age s, RSS MiB, heap allocated MiB, heap resident MiB, fds)`
    fn show(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        format!(
            "({}, {}, {:.1}, {:.1}, {:.1}, {})",
            self.run_s,
            self.age_s,
            self.rss_kib as f64 / 1024.0,
            mib(self.heap_allocated),
            mib(self.heap_resident),
            self.fds
        )
    }
}

/// Resident memory (KiB) and open file descriptors of a process.
fn rss_fds(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

/// Records delivered per stream and readings received, from an exit summary on stdout.
fn summary_counts(text: &str) -> Option<(u64, u64, u64)> {
    let number_after = |line: &str, word: &str| -> Option<u64> {
        let rest = &line[line.find(word)? + word.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let received = text
        .lines()
        .find(|l| l.starts_with("readings in:"))
        .and_then(|l| number_after(l, "readings in:"))?;
    let delivered = |stream: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{stream}:")))
            .and_then(|l| number_after(l, "delivered"))
            .unwrap_or(0)
    };
    Some((received, delivered("raw"), delivered("aggregate")))
}

/// One bridge process of the run and what was measured of it.
struct Life {
    pid: u32,
    started: Instant,
    stdout: PathBuf,
    /// Its memory and files at the steady points (before each fault, and at the end).
    steady: Vec<Steady>,
    last_scrape: HashMap<String, f64>,
    /// The largest MQTT backlogs its scrapes showed: messages whose acks wait for their
    /// record, and released acks not yet written (what a restart makes the broker redeliver).
    max_unacked: (u64, u64),
    /// How it ended: "sigterm", "sigkill" or "end".
    ended: &'static str,
    /// The run's memory.tsv, and when the run began.
    series: std::fs::File,
    run_start: Instant,
    /// Resident set samples (KiB) of the scrapes within `STEADY_WINDOW`.
    recent_rss: std::collections::VecDeque<(Instant, u64)>,
}

impl Life {
    fn scraped(&mut self, m: HashMap<String, f64>) {
        let (waiting, unsent) = &mut self.max_unacked;
        *waiting = (*waiting).max(metric(&m, "edge_bridge_mqtt_unacked_messages"));
        *unsent = (*unsent).max(metric(&m, "edge_bridge_mqtt_acks_unsent"));
        let summed = |prefix: &str| -> u64 {
            m.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| *v as u64)
                .sum()
        };
        // The slowest cluster's round trip: whether the broker slowed down, which shows as more
        // records in flight and more memory held for them.
        let round_trip_us = m
            .iter()
            .filter(|(k, _)| k.starts_with("edge_bridge_kafka_round_trip_seconds"))
            .map(|(_, v)| (v * 1e6) as u64)
            .max()
            .unwrap_or(0);
        let rss = rss_fds(self.pid).0;
        self.recent_rss.push_back((Instant::now(), rss));
        while self
            .recent_rss
            .front()
            .is_some_and(|(at, _)| at.elapsed() > STEADY_WINDOW)
        {
            self.recent_rss.pop_front();
        }
        let _ = writeln!(
            &self.series,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            self.run_start.elapsed().as_secs(),
            self.pid,
            rss,
            metric(&m, "edge_bridge_heap_allocated_bytes"),
            metric(&m, "edge_bridge_heap_resident_bytes"),
            summed("edge_bridge_producer_queue_records"),
            summed("edge_bridge_spool_records"),
            metric(&m, "edge_bridge_mqtt_unacked_messages"),
            round_trip_us,
        );
        self.last_scrape = m;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long run: scripts/soak.sh"]
async fn soak() {
    let plan = Arc::new(Plan {
        sensors: env_or("SOAK_SENSORS", 10_000),
        rate: env_or("SOAK_RATE", 4.0),
        seconds: env_or("SOAK_SECONDS", 3_600),
        start_ms: support::now_ms(),
    });
    assert_eq!(1000 % plan.period_ms(), 0, "SOAK_RATE must divide 1000 ms");
    let period = Duration::from_secs(plan.seconds / 6);
    let cut = (period / 4).min(Duration::from_secs(60));
    let report_path: Option<PathBuf> = std::env::var("SOAK_REPORT").ok().map(PathBuf::from);
    eprintln!(
        "soak: {} sensors x {} readings/s for {} s ({} readings); period {:?}, cuts of {:?}",
        plan.sensors,
        plan.rate,
        plan.seconds,
        plan.count(),
        period,
        cut
    );

    let proxy_port = free_port();
    let kafka = Tansu::start_advertising(Some(proxy_port));
    let proxy = Proxy::start(proxy_port, kafka.direct);
    // The shipped Mosquitto file, but queueing for the bridge's session without a cap: on this
    // 2-core machine everything (broker, bridge, simulator, Kafka, this test's consumer) shares
    // the CPU, and a stretch where the bridge reads slower than the sensors publish must show
    // as a backlog here, not as readings the MQTT broker threw away (which it counts: checked
    // below).
    let mosquitto = Mosquitto::start_with("max_queued_messages 0\nmax_queued_bytes 0");
    let state = tempfile::tempdir().unwrap();
    let mqtt_counts =
        MqttCountsListener::start(mosquitto.port, state.path().join("mqtt-counts.txt"));
    let log = state.path().join("bridge.log");
    let http_port = free_port();
    let args: Vec<String> = [
        "--mqtt-url",
        &format!("mqtt://127.0.0.1:{}", mosquitto.port),
        "--kafka-brokers",
        &kafka.brokers,
        "--state-dir",
        &state.path().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let http = format!("127.0.0.1:{http_port}");
    // Defaults, except an HTTP port to scrape and a spool that holds a cut and 30 s more at
    // this rate (about 200 bytes a raw record; 400 counted): the kill -9 falls in a cut, and
    // the process after it takes in Mosquitto's backlog of its downtime while the uplink is
    // still down. (Sized for one cut only, that backlog overflowed it: the spool then drops
    // the oldest raw records, as documented, and the soak counted them missing.)
    let spool_mib = (plan.count() / plan.seconds * (cut.as_secs() + 30) * 400 / (1 << 20)).max(128);
    let spool_mib = spool_mib.to_string();
    let env = [
        ("EDGE_BRIDGE_HTTP_LISTEN", http.as_str()),
        ("EDGE_BRIDGE_SPOOL_MAX_MIB", spool_mib.as_str()),
    ];
    let run_start = Instant::now();
    // Every scrape's memory and backlog figures, one line each, for reading a failure (or a
    // kept run) as a curve rather than as the steady points alone.
    let series = std::fs::File::create(state.path().join("memory.tsv")).unwrap();
    writeln!(
        &series,
        "run_s\tpid\trss_kib\theap_allocated\theap_resident\tproducer_queue\tspool_records\tmqtt_unacked\tround_trip_us"
    )
    .unwrap();
    let mut lives: Vec<Life> = Vec::new();
    let spawn = |lives: &mut Vec<Life>| {
        let stdout = state.path().join(format!("summary-{}.txt", lives.len()));
        let p = BridgeProcess::spawn(
            &args,
            &env,
            &log,
            Stdio::from(std::fs::File::create(&stdout).unwrap()),
        );
        lives.push(Life {
            pid: p.pid(),
            started: Instant::now(),
            stdout,
            steady: Vec::new(),
            last_scrape: HashMap::new(),
            max_unacked: (0, 0),
            ended: "end",
            series: series.try_clone().unwrap(),
            run_start,
            recent_rss: Default::default(),
        });
        p
    };
    let mut bridge = spawn(&mut lives);
    support::wait_for_log(&mut bridge.child, &log, "Subscribed");
    let connected = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Connected to MQTT broker")
            .count()
    };

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let follow_topics = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (plan, seen, stop, follow, brokers) = (
            plan.clone(),
            seen.clone(),
            stop_consumer.clone(),
            follow_topics.clone(),
            kafka.direct.to_string(),
        );
        std::thread::spawn(move || consume(&brokers, &plan, &seen, &stop, &follow))
    };

    // The simulator on a runtime of its own: this test's blocking waits (a bridge's exit, a
    // scrape) must not stall the sensors' connection, or they would resend.
    let sim_start = Instant::now();
    let publisher = {
        let sim = support::simulate(
            &format!("mqtt://127.0.0.1:{}", mosquitto.port),
            plan.dataset(),
            Default::default(),
            plan.count(),
            Some(f64::from(plan.sensors) * plan.rate),
            "soak-sim",
        );
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
                .block_on(sim)
        })
    };

    // The fault schedule, in offsets from the start.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        Cut,
        Restore,
        Term,
        Kill,
    }
    let mut schedule: Vec<(Duration, Fault)> = Vec::new();
    for k in 1..=5 {
        schedule.push((period * k, Fault::Cut));
        schedule.push((period * k + cut, Fault::Restore));
    }
    schedule.push((period * 3 / 2, Fault::Term));
    schedule.push((period * 5 / 2, Fault::Term));
    schedule.push((period * 3 + cut / 2, Fault::Kill));
    schedule.sort_by_key(|(t, _)| *t);

    let mut kill_event_ms = 0i64;
    let mut killed_age_ms = SAVE_INTERVAL_MS;
    let mut next_tick = Instant::now();
    for (at, fault) in schedule {
        // Scrape every 2 s until the fault is due.
        while run_start.elapsed() < at {
            next_tick += Duration::from_secs(2);
            tokio::time::sleep_until(next_tick.min(run_start + at).into()).await;
            if let Some(m) = scrape(http_port) {
                lives.last_mut().unwrap().scraped(m);
            }
        }
        let life = lives.last_mut().unwrap();
        if matches!(fault, Fault::Cut | Fault::Term) {
            let point = Steady::of(life, run_start, http_port);
            life.steady.push(point);
        }
        eprintln!("soak: {:>5} s: {fault:?}", run_start.elapsed().as_secs());
        match fault {
            Fault::Cut => proxy.cut(),
            Fault::Restore => proxy.restore(),
            Fault::Term | Fault::Kill => {
                if let Some(m) = scrape(http_port) {
                    life.scraped(m);
                }
                if fault == Fault::Term {
                    life.ended = "sigterm";
                    bridge.term();
                } else {
                    life.ended = "sigkill";
                    killed_age_ms = life.started.elapsed().as_millis() as i64;
                    // The event time being published now, from the readings received so far
                    // (the simulator may fall behind the wall clock; copies resent after the
                    // restarts add a few seconds at most).
                    let received: u64 = lives
                        .iter()
                        .map(|l| metric(&l.last_scrape, "edge_bridge_readings_received_total"))
                        .sum();
                    kill_event_ms = plan.start_ms
                        + (received as f64 / (f64::from(plan.sensors) * plan.rate) * 1000.0) as i64;
                    bridge.kill9();
                }
                let before = connected(&log);
                bridge = spawn(&mut lives);
                let deadline = Instant::now() + Duration::from_secs(30);
                while connected(&log) == before {
                    assert!(Instant::now() < deadline, "the bridge did not reconnect");
                    assert!(
                        bridge.child.try_wait().unwrap().is_none(),
                        "the bridge exited"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Until the simulator is done: scrape on.
    while !publisher.is_finished() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some(m) = scrape(http_port) {
            lives.last_mut().unwrap().scraped(m);
        }
    }
    let sim = publisher.join().unwrap().expect("the simulator publishes");
    let sim_seconds = sim_start.elapsed().as_secs_f64();
    assert_eq!(sim.readings, plan.count());
    {
        let life = lives.last_mut().unwrap();
        let point = Steady::of(life, run_start, http_port);
        life.steady.push(point);
    }

    // Drain: every reading in the raw topic, the spool empty, the last windows flushed (idle
    // timeout), nothing new for 5 s.
    follow_topics.store(true, Relaxed);
    let drain_start = Instant::now();
    let mut last = (0, 0);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A failed scrape tells nothing: not quiet.
        let Some(m) = scrape(http_port).filter(|m| {
            m.contains_key("edge_bridge_spool_records{cluster=\"main\"}")
                && m.contains_key("edge_bridge_windows_open")
        }) else {
            quiet_since = Instant::now();
            continue;
        };
        let spooled = metric(&m, "edge_bridge_spool_records{cluster=\"main\"}");
        let open = metric(&m, "edge_bridge_windows_open");
        let now = {
            let s = seen.lock().unwrap();
            (s.raw_records, s.agg_records)
        };
        if now != last || spooled > 0 || open > 0 {
            last = now;
            quiet_since = Instant::now();
        }
        lives.last_mut().unwrap().scraped(m);
        if quiet_since.elapsed() > Duration::from_secs(5) {
            break;
        }
        assert!(
            drain_start.elapsed() < Duration::from_secs(600),
            "not drained after 10 minutes: spool {spooled}, open windows {open}"
        );
    }
    let drain_seconds = drain_start.elapsed().as_secs_f64();
    let final_scrape = lives.last().unwrap().last_scrape.clone();
    let (spool_segments, spool_files) = spool_segments(&state.path().join("spool"));
    let mqtt = mqtt_counts.finish();
    bridge.term();
    stop_consumer.store(true, Relaxed);
    consumer.join().unwrap();

    // The checks.
    let (want_aggs, want_hash) = expected(&plan);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut failures: Vec<String> = Vec::new();
    let mut fail = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };

    // Raw readings: first, none thrown away before the bridge could read them.
    fail(
        mqtt.as_ref()
            .is_ok_and(|m| m.dropped == 0 && m.received == plan.count()),
        format!(
            "Mosquitto's counts (received from the sensors, sent, dropped): {mqtt:?}; published {}",
            plan.count()
        ),
    );
    fail(
        seen.raw_distinct == plan.count(),
        format!(
            "raw topic holds {} distinct readings of {} published",
            seen.raw_distinct,
            plan.count()
        ),
    );
    fail(
        seen.raw_foreign == 0,
        format!("{} raw records that were never published", seen.raw_foreign),
    );
    fail(
        seen.raw_hash == want_hash,
        "raw payloads differ from the published ones".into(),
    );

    // Aggregates. What a kill -9 can touch, in seconds of event time relative to it: windows
    // open since the state it falls back to was saved (a save interval back at most, or the
    // killed process's start, whose state was saved by a clean stop) until the restarted bridge
    // has caught up. There a window may differ in count, or be missing altogether: an
    // aggregate emitted less than spool.spill_after before the kill still sat in the producer's
    // memory (README, "Delivery guarantees"), and when all its readings came after the saved
    // state and were acknowledged, nothing is left to emit it again.
    let (from, to) = (
        -(SAVE_INTERVAL_MS.min(killed_age_ms) + 2 * WINDOW_MS) / 1000,
        30,
    );
    let near_kill = |start: i64| (from..=to).contains(&((start - kill_event_ms) / 1000));
    let mut missing = 0u64;
    let mut missing_near_kill = 0u64;
    let mut crash_mismatches: Vec<(i64, i64)> = Vec::new(); // (start, count got - want)
    let mut other_mismatches = Vec::new();
    for (key, want) in &want_aggs {
        match seen.aggs.get(key) {
            None if near_kill(key.1) => missing_near_kill += 1,
            None => missing += 1,
            Some((got, _)) if same(got, want) => {}
            Some((got, _)) => {
                if got.count != want.count {
                    crash_mismatches.push((key.1, got.count as i64 - want.count as i64));
                } else {
                    other_mismatches.push(format!("{key:?}: got {got:?}, want {want:?}"));
                }
            }
        }
    }
    let extra = seen
        .aggs
        .keys()
        .filter(|k| !want_aggs.contains_key(k))
        .count();
    fail(
        missing == 0,
        format!("{missing} windows never emitted (and {missing_near_kill} around the kill -9)"),
    );
    if missing_near_kill > 0 {
        eprintln!("soak: {missing_near_kill} windows around the kill -9 never emitted (aggregates lost with the killed producer's memory)");
    }
    fail(
        extra == 0,
        format!("{extra} windows emitted that hold no published reading"),
    );
    fail(
        other_mismatches.is_empty(),
        format!(
            "{} windows with the right count but wrong values, e.g. {:?}",
            other_mismatches.len(),
            other_mismatches.first()
        ),
    );
    // Relative to the kill -9's event time, in seconds.
    let crash_span = crash_mismatches
        .iter()
        .map(|(s, _)| (*s - kill_event_ms) / 1000)
        .fold(None, |acc: Option<(i64, i64)>, s| {
            Some(acc.map_or((s, s), |(a, b)| (a.min(s), b.max(s))))
        });
    if let Some((first, last)) = crash_span {
        fail(
            first >= from && last <= to,
            format!(
                "windows differing in count from {first} s to {last} s of the kill -9; it explains {from} s to {to} s"
            ),
        );
    }

    // Memory and file descriptors: over the run from its first period on, and per process
    // from half a period of its own on (a restarted process starts small again).
    let run_points: Vec<_> = lives
        .iter()
        .flat_map(|l| &l.steady)
        .filter(|p| p.run_s + 5 >= period.as_secs())
        .collect();
    // Growth within a few minutes is warm-up, not a leak: the bound applies from 10-minute
    // periods on (the hour's run), the figures are printed whatever the length.
    let judge_memory = period >= Duration::from_secs(600);
    if let Some(base_rss) = run_points
        .first()
        .map(|p| p.rss_kib)
        .filter(|_| judge_memory)
    {
        let max_rss = run_points.iter().map(|p| p.rss_kib).max().unwrap();
        fail(
            max_rss as f64 <= base_rss as f64 * 1.10,
            format!("RSS grew from {base_rss} KiB after the first period to {max_rss} KiB"),
        );
    }
    let mut memory_lines = Vec::new();
    for (i, life) in lives.iter().enumerate() {
        let after_warmup: Vec<_> = life
            .steady
            .iter()
            .filter(|p| p.age_s + 5 >= period.as_secs() / 2)
            .collect();
        let line = format!(
            "process {i} ({}): steady points (run s, age s, RSS MiB, heap allocated MiB, heap resident MiB, fds): {}; largest MQTT backlog scraped: {} awaiting their record, {} acks unsent",
            life.ended,
            life.steady
                .iter()
                .map(Steady::show)
                .collect::<Vec<_>>()
                .join(" "),
            life.max_unacked.0,
            life.max_unacked.1,
        );
        memory_lines.push(line);
        if let Some(base_rss) = after_warmup
            .first()
            .map(|p| p.rss_kib)
            .filter(|_| judge_memory)
        {
            let max_rss = after_warmup.iter().map(|p| p.rss_kib).max().unwrap();
            fail(
                max_rss as f64 <= base_rss as f64 * 1.10,
                format!(
                    "process {i}: RSS grew from {base_rss} KiB to {max_rss} KiB after its first period"
                ),
            );
        }
        if let (Some(lo), Some(hi)) = (
            life.steady.iter().map(|p| p.fds).min(),
            life.steady.iter().map(|p| p.fds).max(),
        ) {
            fail(
                hi - lo <= 4,
                format!("process {i}: open fds from {lo} to {hi}"),
            );
        }
    }

    // The spool.
    let spool_records = metric(&final_scrape, "edge_bridge_spool_records{cluster=\"main\"}");
    fail(
        spool_records == 0,
        format!("{spool_records} records left in the spool"),
    );
    fail(
        spool_segments == 0,
        format!("{spool_segments} segment files ({spool_files} bytes) left in the spool"),
    );
    // After each outage the bridge sends direct again while readings keep coming, within half
    // a period of the uplink's return (it once stayed on the spool, every record through the
    // disk, until the load stopped).
    let bridge_log = std::fs::read_to_string(&log).unwrap_or_default();
    let at = |line: &str| {
        chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    // Each uplink return against what ends its replay: "Spool drained", or the end of the
    // process (a SIGTERM, or the next process's start after a kill -9). A process stopped
    // before half a period is up has not had its chance: that return is not judged (shown as
    // NaN); one stopped later without draining counts as the whole time.
    #[derive(PartialEq)]
    enum Ev {
        Back,
        Drained,
        ProcessEnd,
    }
    let events: Vec<(i64, Ev)> = bridge_log
        .lines()
        .filter_map(|l| {
            let ev = if l.contains("Uplink back: replaying the spool") {
                Ev::Back
            } else if l.contains("Spool drained: sending directly again") {
                Ev::Drained
            } else if l.contains("SIGTERM received") || l.contains("HTTP endpoint:") {
                Ev::ProcessEnd
            } else {
                return None;
            };
            at(l).map(|t| (t, ev))
        })
        .collect();
    let half = period.as_secs_f64() / 2.0;
    let drain_s: Vec<f64> = events
        .iter()
        .enumerate()
        .filter(|(_, (_, ev))| *ev == Ev::Back)
        .map(|(i, (t, _))| {
            let Some((d, ev)) = events[i + 1..].iter().find(|(_, ev)| *ev != Ev::Back) else {
                return f64::INFINITY;
            };
            let s = (d - t) as f64 / 1000.0;
            if *ev == Ev::ProcessEnd && s < half {
                f64::NAN
            } else {
                s
            }
        })
        .collect();
    fail(
        drain_s.iter().all(|s| s.is_nan() || *s <= half),
        format!(
            "spool back to direct sends after each outage (s after the uplink's return; NaN: the process was stopped sooner than half a period after it): {drain_s:?}"
        ),
    );

    // Counters: delivered, over every process, against the topics.
    let (mut received, mut raw_delivered, mut agg_delivered) = (0, 0, 0);
    let mut counter_sources = Vec::new();
    for (i, life) in lives.iter().enumerate() {
        let text = std::fs::read_to_string(&life.stdout).unwrap_or_default();
        let (r, d_raw, d_agg) = match summary_counts(&text) {
            Some(c) => {
                counter_sources.push(format!("process {i}: exit summary"));
                c
            }
            None => {
                counter_sources.push(format!("process {i}: last scrape (killed)"));
                let m = &life.last_scrape;
                (
                    metric(m, "edge_bridge_readings_received_total"),
                    metric(m, "edge_bridge_records_delivered_total{stream=\"raw\"}"),
                    metric(
                        m,
                        "edge_bridge_records_delivered_total{stream=\"aggregate\"}",
                    ),
                )
            }
        };
        received += r;
        raw_delivered += d_raw;
        agg_delivered += d_agg;
    }
    // A record the broker wrote while its producer lost the connection (a cut) or its life
    // (the kill -9) is in the topic but was never reported delivered; the reading is resent,
    // so every such record is a copy. The bridge must never count one that is not there.
    let uncounted = seen.raw_records as i64 - raw_delivered as i64;
    fail(
        uncounted >= 0 && uncounted as u64 <= seen.raw_records - seen.raw_distinct,
        format!(
            "raw records delivered (counted by the bridge) {raw_delivered}, in the topic {} of which {} copies",
            seen.raw_records,
            seen.raw_records - seen.raw_distinct
        ),
    );
    let agg_copies = seen.agg_records - seen.aggs.len() as u64;
    let agg_uncounted = seen.agg_records as i64 - agg_delivered as i64;
    fail(
        agg_uncounted >= 0 && agg_uncounted as u64 <= agg_copies,
        format!(
            "aggregates delivered (counted by the bridge) {agg_delivered}, in the topic {} of which {agg_copies} copies",
            seen.agg_records
        ),
    );
    fail(
        received >= plan.count(),
        format!("readings received {received} < published {}", plan.count()),
    );

    let report = format!(
        "sensors {} x {} readings/s, {} readings published in {:.0} s ({:.0} readings/s); drain after the last: {:.0} s\n\
         raw: {} records, {} distinct ({} duplicates; by event time, s of the run: {})\n\
         aggregates: {} records, {} windows expected, {} missing ({} of them around the kill -9), {} differing copies; \
         windows differing in count after the kill -9: {} (from..to s of its event time: {:?}; count differences {:+?}..{:+?}; \
         by window start, s of the run: {})\n\
         readings received over all processes: {received} (redelivered: {}); Mosquitto: {}\n\
         delivered counted by the bridge: raw {raw_delivered}, aggregates {agg_delivered} ({})\n\
         spool at the end: {spool_records} records, {spool_segments} segment files ({spool_files} bytes); \
         direct sends again after each outage's replay, s after the uplink's return (NaN: the process stopped sooner than half a period after it): {drain_s:.0?}\n\
         {}\n",
        plan.sensors,
        plan.rate,
        plan.count(),
        sim_seconds,
        plan.count() as f64 / sim_seconds,
        drain_seconds,
        seen.raw_records,
        seen.raw_distinct,
        seen.raw_records - seen.raw_distinct,
        spans(seen.raw_copies_at.iter().map(|(s, n)| (*s, *n))),
        seen.agg_records,
        want_aggs.len(),
        missing + missing_near_kill,
        missing_near_kill,
        seen.agg_differing_copies,
        crash_mismatches.len(),
        crash_span,
        crash_mismatches.iter().map(|c| c.1).min().unwrap_or(0),
        crash_mismatches.iter().map(|c| c.1).max().unwrap_or(0),
        spans({
            let mut at = std::collections::BTreeMap::<i64, u64>::new();
            for (start, _) in &crash_mismatches {
                *at.entry((start - plan.start_ms) / 1000).or_default() += 1;
            }
            at.into_iter()
        }),
        received.saturating_sub(plan.count()),
        match &mqtt {
            Ok(m) => format!(
                "received {}, sent {} ({} more than received: resent to the bridge), dropped {}",
                m.received,
                m.sent,
                m.sent as i64 - m.received as i64,
                m.dropped
            ),
            Err(e) => e.clone(),
        },
        counter_sources.join(", "),
        memory_lines.join("\n"),
    );
    eprintln!("soak report:\n{report}");
    if let Some(p) = report_path {
        std::fs::write(p, &report).unwrap();
    }
    if failures.is_empty() && std::env::var_os("SOAK_KEEP").is_none() {
        drop(state);
    } else if failures.is_empty() {
        eprintln!("soak: log and summaries kept in {}", state.keep().display());
    } else {
        let kept = state.keep();
        panic!(
            "the soak failed:\n  - {}\nlog and summaries kept in {}",
            failures.join("\n  - "),
            kept.display()
        );
    }
}

/// Segment files in the spool's lanes, and their bytes.
fn spool_segments(spool: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for lane in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(lane.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.file_name().to_string_lossy().ends_with(".seg") {
                files += 1;
                bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}
