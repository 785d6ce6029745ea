//! The outbox shell against a fake sink and a spool in a temporary directory: what each
//! decision of the mode machine does to records, the spool and MQTT acks. (The machine's own
//! transitions, with hand-built times, are tested in `mode.rs`; the real producer in
//! `tests/mock_cluster.rs` and `tests/delivery.rs`.)
//!
//! Durations are zero where a test needs a deadline to have passed: no test relies on how
//! long a sleep lasts.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use edge_bridge_core::OutRecord;
use tokio::sync::watch;

use super::*;
use crate::cluster::Cluster;
use crate::sink::Tag;
use crate::spool::SpoolOptions;

/// What the fake sink holds: records handed over and not yet reported on.
#[derive(Default)]
struct Held {
    records: Vec<(Tag, OutRecord)>,
    /// Records it accepts before answering "queue full".
    capacity: usize,
    fatal: Option<String>,
    replaced: usize,
    sent: Vec<(Stream, Bytes)>,
}

#[derive(Clone)]
struct FakeSink {
    held: Arc<Mutex<Held>>,
    events: mpsc::Sender<Event>,
    stats: Arc<Stats>,
}

impl FakeSink {
    /// Reports every held record delivered, as the real sink does (counted; an event only
    /// where someone waits for it).
    fn deliver_all(&self) {
        let records = std::mem::take(&mut self.held.lock().unwrap().records);
        for (tag, _) in records {
            self.stats
                .stream(tag.stream)
                .delivered
                .fetch_add(1, Relaxed);
            if tag.origin != Origin::Direct {
                self.events.send(Event::Delivered(tag)).unwrap();
            }
        }
    }

    /// Reports every held record failed with `class`.
    fn fail_all(&self, class: ErrorClass) {
        let records = std::mem::take(&mut self.held.lock().unwrap().records);
        for (tag, record) in records {
            let error = format!("{class:?}");
            self.events
                .send(Event::Failed {
                    tag,
                    class,
                    error,
                    record,
                })
                .unwrap();
        }
    }

    fn sent(&self) -> Vec<(Stream, Bytes)> {
        self.held.lock().unwrap().sent.clone()
    }
}

impl Sink for FakeSink {
    fn try_send(&self, routed: &Routed, origin: Origin, made_ms: i64) -> Result<(), SendError> {
        let mut held = self.held.lock().unwrap();
        if held.records.len() >= held.capacity {
            return Err(SendError {
                class: ErrorClass::Retry,
                error: "queue full".into(),
            });
        }
        let tag = Tag {
            stream: routed.stream,
            origin,
            made_ms,
            seq: held.sent.len() as u64,
            timestamp_ms: routed.record.timestamp_ms,
            topic: routed.topic.clone(),
        };
        held.records.push((tag, routed.record.clone()));
        held.sent.push((routed.stream, routed.record.value.clone()));
        Ok(())
    }

    fn in_flight(&self) -> i32 {
        self.held.lock().unwrap().records.len() as i32
    }

    fn fatal_error(&self) -> Option<String> {
        self.held.lock().unwrap().fatal.clone()
    }

    fn topic_of(&self, _: Stream) -> &str {
        "fake"
    }

    async fn purge(&self, _timeout: Duration) -> bool {
        self.fail_all(ErrorClass::TakenBack);
        true
    }

    async fn replace(&mut self) -> Result<(), SinkError> {
        self.fail_all(ErrorClass::TakenBack);
        let mut held = self.held.lock().unwrap();
        held.fatal = None;
        held.replaced += 1;
        Ok(())
    }
}

struct Rig {
    outbox: Outbox<FakeSink>,
    sink: FakeSink,
    stats: Arc<Stats>,
    /// The probe's side of the link.
    uplink_down: watch::Receiver<bool>,
    probe_ok_ms: watch::Sender<i64>,
    _dir: tempfile::TempDir,
}

fn rig(spool: bool, timing: Timing) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel();
    let sink = FakeSink {
        held: Arc::new(Mutex::new(Held {
            capacity: 1_000,
            ..Held::default()
        })),
        events: tx,
        stats: stats.clone(),
    };
    let spool = spool.then(|| {
        let opts = SpoolOptions { max_bytes: 1 << 20 };
        Spool::open(DiskFs, dir.path(), opts).unwrap().0
    });
    let (down_tx, uplink_down) = watch::channel(false);
    let (probe_ok_ms, ok_rx) = watch::channel(0);
    let probe = ProbeLink {
        uplink_down: down_tx,
        probe_ok_ms: ok_rx,
    };
    let outbox = Outbox::new(sink.clone(), rx, spool, probe, timing, stats.clone());
    Rig {
        outbox,
        sink,
        stats,
        uplink_down,
        probe_ok_ms,
        _dir: dir,
    }
}

/// Deadlines far away: nothing happens by time.
const PATIENT: Timing = Timing {
    spill_after: Duration::from_secs(3600),
    queue_full_wait: Duration::from_secs(3600),
    fsync_every: Duration::ZERO,
    drain_wait: Duration::ZERO,
    drain_wait_max: Duration::ZERO,
};

fn record(stream: Stream, i: u64) -> Routed {
    Routed {
        stream,
        record: OutRecord {
            key: Bytes::from_static(b"sensor-1"),
            value: Bytes::from(i.to_string()),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            headers: Vec::new(),
        },
        topic: None,
    }
}

fn ack(i: u16) -> AckToken {
    AckToken {
        pkid: i,
        exactly_once: false,
    }
}

fn pkids(outbox: &mut Outbox<FakeSink>) -> Vec<u16> {
    std::iter::from_fn(|| outbox.pop_ack())
        .map(|t| t.pkid)
        .collect()
}

#[tokio::test]
async fn direct_records_release_their_acks_in_order_once_delivered() {
    let mut r = rig(true, PATIENT);
    for i in 1..=3u16 {
        r.outbox
            .submit(record(Stream::Raw, i.into()), Some(ack(i)), 0)
            .await
            .unwrap();
    }
    assert_eq!(
        pkids(&mut r.outbox),
        Vec::<u16>::new(),
        "enqueued is not delivered"
    );
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), vec![1, 2, 3]);
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
    assert_eq!(r.stats.snapshot().raw.spooled, 0);
}

#[tokio::test]
async fn a_stalled_uplink_takes_records_back_into_the_spool_and_replays_them_on_return() {
    let mut r = rig(
        true,
        Timing {
            spill_after: Duration::ZERO,
            ..PATIENT
        },
    );
    for i in 0..4 {
        r.outbox
            .submit(record(Stream::Raw, i), None, 0)
            .await
            .unwrap();
    }
    r.outbox
        .submit(record(Stream::Aggregate, 99), None, 0)
        .await
        .unwrap();
    // No report at all: down. Everything in the producer comes back into the spool.
    r.outbox.pump(false).await.unwrap();
    assert!(matches!(r.outbox.machine.mode(), mode::Mode::Down { .. }));
    assert!(*r.uplink_down.borrow(), "the probe is told");
    assert_eq!(r.stats.cluster(Cluster::Main).uplink_down.load(Relaxed), 1);
    assert_eq!(r.sink.held.lock().unwrap().replaced, 1);
    assert_eq!(r.sink.in_flight(), 0);
    assert_eq!(r.stats.snapshot().raw.spooled, 4);
    // New records wait in the spool; nothing is replayed while down.
    r.outbox
        .submit(record(Stream::Raw, 4), None, 0)
        .await
        .unwrap();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.sink.in_flight(), 0);
    assert_eq!(r.sink.sent().len(), 5);

    // A probe that started after the outage: back, and the spool goes out, aggregates first.
    r.probe_ok_ms.send_replace(wall_ms() + 1);
    r.outbox.pump(false).await.unwrap();
    assert!(!*r.uplink_down.borrow());
    // A lane is replayed once the lanes before it are delivered: the aggregate, then the
    // records taken back, then the one spooled while down.
    assert_eq!(r.sink.sent()[5..], [(Stream::Aggregate, Bytes::from("99"))]);
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    let raw: Vec<Bytes> = r.sink.sent()[6..].iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        raw,
        ["0", "1", "2", "3", "4"].map(Bytes::from),
        "order kept"
    );
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
    assert_eq!(
        r.stats.cluster(Cluster::Main).spool_records.load(Relaxed),
        0
    );
}

#[tokio::test]
async fn a_full_queue_spools_after_its_wait_and_acks_follow_the_fsync() {
    let mut r = rig(
        true,
        Timing {
            queue_full_wait: Duration::ZERO,
            ..PATIENT
        },
    );
    r.sink.held.lock().unwrap().capacity = 1;
    r.outbox
        .submit(record(Stream::Raw, 0), Some(ack(1)), 0)
        .await
        .unwrap();
    r.outbox
        .submit(record(Stream::Raw, 1), Some(ack(2)), 0)
        .await
        .unwrap();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Spooling);
    assert_eq!(r.stats.snapshot().raw.spooled, 1);
    // Spooled and synced, the second is safe; its ack still waits for the first.
    r.outbox.pump(true).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), Vec::<u16>::new());
    r.sink.deliver_all();
    r.outbox.pump(true).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), vec![1, 2]);
}

#[tokio::test]
async fn an_undelivered_record_is_rescued_and_nothing_overtakes_it() {
    let mut r = rig(true, PATIENT);
    r.outbox
        .submit(record(Stream::Raw, 0), Some(ack(1)), 0)
        .await
        .unwrap();
    r.sink.fail_all(ErrorClass::Retry);
    r.outbox
        .submit(record(Stream::Raw, 1), None, 0)
        .await
        .unwrap();
    // The failure is seen at the next pump: the record goes to the rescue lane, and the one
    // queued behind it, which would overtake it, is taken back too.
    r.outbox.pump(false).await.unwrap();
    assert!(matches!(r.outbox.machine.mode(), mode::Mode::Down { .. }));
    assert_eq!(r.sink.in_flight(), 0);
    assert_eq!(r.stats.snapshot().raw.spooled, 2);
    assert_eq!(r.stats.snapshot().raw.failed, 0);
    // Back: replayed in their original order.
    r.probe_ok_ms.send_replace(wall_ms() + 1);
    r.outbox.pump(false).await.unwrap();
    let replayed: Vec<Bytes> = r.sink.sent()[2..].iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(replayed, ["0", "1"].map(Bytes::from));
}

#[tokio::test]
async fn a_permanent_failure_is_counted_and_releases_its_ack() {
    let mut r = rig(true, PATIENT);
    r.outbox
        .submit(record(Stream::Raw, 0), Some(ack(7)), 0)
        .await
        .unwrap();
    r.sink.fail_all(ErrorClass::Permanent);
    r.outbox.pump(false).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), vec![7], "later acks are not held up");
    let s = r.stats.snapshot();
    assert_eq!((s.raw.failed, s.raw.spooled), (1, 0));
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
}

#[tokio::test]
async fn a_fatal_producer_is_replaced_and_its_records_rescued() {
    let mut r = rig(true, PATIENT);
    r.outbox
        .submit(record(Stream::Raw, 0), None, 0)
        .await
        .unwrap();
    r.sink.held.lock().unwrap().fatal = Some("out of order sequence".into());
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.sink.held.lock().unwrap().replaced, 1);
    assert_eq!(r.stats.snapshot().raw.spooled, 1);
    // Replayed from the rescue lane to the fresh producer in that same pump (written out
    // before the replay reads it), and only once.
    assert_eq!(r.sink.in_flight(), 1);
    assert_eq!(r.sink.sent().len(), 2);
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.sink.sent().len(), 2);
}

#[tokio::test]
async fn shutdown_moves_unconfirmed_records_to_the_spool() {
    let mut r = rig(true, PATIENT);
    r.outbox
        .submit(record(Stream::Aggregate, 0), None, 0)
        .await
        .unwrap();
    let lost = r.outbox.shutdown(Duration::ZERO).await.unwrap();
    assert_eq!(lost, 0);
    assert_eq!(r.stats.snapshot().aggregate.spooled, 1);
    assert_eq!(
        r.stats.cluster(Cluster::Main).spool_records.load(Relaxed),
        1
    );
}

#[tokio::test]
async fn without_a_spool_records_wait_in_the_producer_and_failures_are_lost() {
    let mut r = rig(
        false,
        Timing {
            spill_after: Duration::ZERO,
            queue_full_wait: Duration::ZERO,
            ..PATIENT
        },
    );
    r.outbox
        .submit(record(Stream::Raw, 0), Some(ack(3)), 0)
        .await
        .unwrap();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct, "never down");
    assert_eq!(r.sink.in_flight(), 1);
    r.sink.fail_all(ErrorClass::Retry);
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.stats.snapshot().raw.failed, 1);
    assert_eq!(pkids(&mut r.outbox), vec![3]);
    let lost = r.outbox.shutdown(Duration::ZERO).await.unwrap();
    assert_eq!(lost, 0);
}

/// A rig whose first raw record went direct and whose second was spooled (the queue was full
/// for it; it has room again), with drain waits from `drain_wait` up to `drain_wait_max`.
async fn spooling_after_a_full_queue(drain_wait: Duration, drain_wait_max: Duration) -> Rig {
    let mut r = rig(
        true,
        Timing {
            queue_full_wait: Duration::ZERO,
            drain_wait,
            drain_wait_max,
            ..PATIENT
        },
    );
    r.sink.held.lock().unwrap().capacity = 1;
    for i in 0..2u16 {
        r.outbox
            .submit(record(Stream::Raw, i.into()), Some(ack(i)), 0)
            .await
            .unwrap();
    }
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Spooling);
    r.sink.held.lock().unwrap().capacity = 1_000;
    r
}

/// [`spooling_after_a_full_queue`] with the spooled record now handed out of the spool,
/// awaiting its report: the end of a replay.
async fn replay_awaiting_its_last_report(drain_wait: Duration) -> Rig {
    let mut r = spooling_after_a_full_queue(drain_wait, Duration::from_millis(3)).await;
    r.sink.deliver_all();
    // Flushed and handed out at the next pump.
    r.outbox.pump(false).await.unwrap();
    assert_eq!(r.sink.sent().len(), 2, "the spooled record is handed out");
    assert_eq!(r.sink.in_flight(), 1);
    r
}

#[tokio::test]
async fn after_a_replay_new_records_wait_for_its_last_reports_and_go_direct() {
    let mut r = replay_awaiting_its_last_report(Duration::from_secs(30)).await;
    // The report arrives while the next record waits (as librdkafka's would, within its
    // linger): without the wait, this record and every later one would go through the spool
    // for as long as readings keep coming.
    let sink = r.sink.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        sink.deliver_all();
    });
    r.outbox
        .submit(record(Stream::Raw, 2), Some(ack(2)), 0)
        .await
        .unwrap();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
    assert_eq!(
        r.stats.snapshot().raw.spooled,
        1,
        "only the one spooled before"
    );
    let values: Vec<Bytes> = r.sink.sent().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["0", "1", "2"].map(Bytes::from), "order kept");
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), vec![0, 1, 2]);
}

#[tokio::test]
async fn a_drain_wait_that_runs_out_spools_the_record_and_is_not_retried_at_once() {
    let mut r = replay_awaiting_its_last_report(Duration::from_millis(1)).await;
    r.outbox
        .submit(record(Stream::Raw, 2), Some(ack(2)), 0)
        .await
        .unwrap();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Spooling);
    assert_eq!(r.stats.snapshot().raw.spooled, 2);
    assert!(
        !r.outbox.only_in_flight_left(),
        "no second wait before DRAIN_RETRY"
    );
    assert_eq!(
        r.outbox.drain_wait,
        Duration::from_millis(2),
        "the next wait is twice as long (a slower uplink)"
    );
    // Once everything is confirmed the spool is empty and records go direct again.
    for _ in 0..3 {
        r.sink.deliver_all();
        r.outbox.pump(false).await.unwrap();
    }
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
    assert_eq!(
        (r.outbox.drain_wait, r.outbox.drain_retry_at),
        (Duration::from_millis(1), None),
        "a drained spool starts the next outage's waits afresh"
    );
    let values: Vec<Bytes> = r.sink.sent().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["0", "1", "2"].map(Bytes::from), "order kept");
    assert_eq!(pkids(&mut r.outbox), vec![0, 1, 2]);
}

#[tokio::test]
async fn drain_waits_that_run_out_grow_to_the_maximum() {
    let mut r = replay_awaiting_its_last_report(Duration::from_millis(1)).await;
    for (i, expected) in [(2u16, 2), (3, 3), (4, 3)] {
        // The spooled record handed out in turn, none confirmed; and the retry due.
        r.outbox.pump(false).await.unwrap();
        assert!(r.outbox.spool.as_ref().unwrap().in_flight() > 0);
        r.outbox.drain_retry_at = None;
        assert!(r.outbox.only_in_flight_left());
        r.outbox
            .submit(record(Stream::Raw, i.into()), Some(ack(i)), 0)
            .await
            .unwrap();
        assert_eq!(r.outbox.drain_wait, Duration::from_millis(expected));
    }
}

#[tokio::test]
async fn under_a_steady_inflow_the_spool_drains_and_records_go_direct_again() {
    // A queue full at record 1: it is spooled; the uplink keeps up from then on.
    let wait = Duration::from_secs(5);
    let mut r = spooling_after_a_full_queue(wait, wait).await;
    // Delivery reports come in the background, as librdkafka's do.
    let sink = r.sink.clone();
    let reports = tokio::spawn(async move {
        loop {
            sink.deliver_all();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    // Readings at any real rate: one arrives between every two pumps.
    for i in 2..12u16 {
        r.outbox.pump(false).await.unwrap();
        r.outbox
            .submit(record(Stream::Raw, i.into()), Some(ack(i)), 0)
            .await
            .unwrap();
    }
    reports.abort();
    assert_eq!(r.outbox.machine.mode(), mode::Mode::Direct);
    assert_eq!(
        r.stats.snapshot().raw.spooled,
        1,
        "the record after the first pump waited for the spool to drain and went direct"
    );
    let values: Vec<Bytes> = r.sink.sent().into_iter().map(|(_, v)| v).collect();
    let expected: Vec<Bytes> = (0..12).map(|i: u64| Bytes::from(i.to_string())).collect();
    assert_eq!(values, expected, "order kept");
    r.sink.deliver_all();
    r.outbox.pump(false).await.unwrap();
    assert_eq!(pkids(&mut r.outbox), (0..12).collect::<Vec<u16>>());
}
