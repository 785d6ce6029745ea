//! The spool against a trivial in-memory model, and the behaviours the delivery guarantees
//! rest on, one per test.

use std::path::Path;

use bytes::Bytes;
use edge_bridge_core::{OutRecord, Routed, Stream};
use proptest::prelude::*;

use super::fs::MemFs;
use super::*;

fn rec(stream: Stream, id: u64) -> Routed {
    Routed {
        stream,
        record: OutRecord {
            key: Bytes::from(format!("{id}")),
            value: Bytes::from(format!("{{\"value\":{id},\"pad\":\"{}\"}}", "x".repeat(40))),
            timestamp_ms: 1_718_000_000_000 + id as i64,
            headers: vec![("edge.id".into(), Bytes::from(format!("{id:016x}")))],
        },
        topic: None,
    }
}

fn id_of(h: &Handed) -> u64 {
    std::str::from_utf8(&h.routed.record.key)
        .unwrap()
        .parse()
        .unwrap()
}

const DIR: &str = "/spool";

fn lane_dir(lane: Lane) -> std::path::PathBuf {
    Path::new(DIR).join(lane.as_str())
}

/// Writes segment `first` of `lane` holding raw records `(seq, id)`; returns its bytes.
fn write_segment(fs: &MemFs, lane: Lane, first: u64, frames: &[(u64, u64)]) -> u64 {
    let mut data = Vec::new();
    for (seq, id) in frames {
        frame::encode(*seq, &rec(Stream::Raw, *id), 0, &mut data);
    }
    fs.write_atomic(&segment_path(&lane_dir(lane), first), &data)
        .unwrap();
    data.len() as u64
}

fn open(fs: &MemFs, max_bytes: u64) -> (Spool<MemFs>, Recovery) {
    Spool::open(fs.clone(), Path::new(DIR), SpoolOptions { max_bytes }).unwrap()
}

/// Hands out and acknowledges everything; returns the ids in the order handed out.
fn drain(s: &mut Spool<MemFs>) -> Vec<u64> {
    s.flush().unwrap();
    let mut ids = Vec::new();
    loop {
        let mut batch = Vec::new();
        s.next_batch(100, &mut batch).unwrap();
        if batch.is_empty() {
            break;
        }
        for h in &batch {
            ids.push(id_of(h));
            assert!(s.ack(h.lane, h.seq));
        }
    }
    assert!(s.is_empty());
    ids
}

/// A spool whose raw lane holds `n` records (ids `0..n`), written to its segment.
fn raw_records(fs: &MemFs, n: u64) -> Spool<MemFs> {
    let (mut s, _) = open(fs, 64 << 20);
    for i in 0..n {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    s
}

/// Hands out everything there is to hand out, confirming nothing.
fn hand_out_all(s: &mut Spool<MemFs>) -> Vec<Handed> {
    let mut handed = Vec::new();
    loop {
        let mut more = Vec::new();
        s.next_batch(1024, &mut more).unwrap();
        if more.is_empty() {
            return handed;
        }
        handed.extend(more);
    }
}

#[test]
fn replays_lanes_in_priority_order_and_each_in_append_order() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..10 {
        let stream = if i % 3 == 0 {
            Stream::Aggregate
        } else {
            Stream::Raw
        };
        s.append(Lane::for_stream(stream), &rec(stream, i), 0)
            .unwrap();
    }
    s.append(Lane::RescueRaw, &rec(Stream::Raw, 100), 0)
        .unwrap();
    s.append(Lane::RescueAggregate, &rec(Stream::Aggregate, 200), 0)
        .unwrap();
    assert_eq!(drain(&mut s), vec![200, 0, 3, 6, 9, 100, 1, 2, 4, 5, 7, 8]);
}

#[test]
fn raw_waits_until_every_aggregate_is_delivered() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    s.append(Lane::Aggregate, &rec(Stream::Aggregate, 1), 0)
        .unwrap();
    s.append(Lane::Raw, &rec(Stream::Raw, 2), 0).unwrap();
    s.flush().unwrap();
    let mut batch = Vec::new();
    s.next_batch(10, &mut batch).unwrap();
    assert_eq!(batch.iter().map(id_of).collect::<Vec<_>>(), vec![1]);
    // Not yet delivered: still nothing from the raw lane.
    s.next_batch(10, &mut batch).unwrap();
    assert_eq!(batch.len(), 1);
    s.ack(Lane::Aggregate, batch[0].seq);
    s.next_batch(10, &mut batch).unwrap();
    assert_eq!(batch.iter().map(id_of).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn moving_lanes_to_another_spool_keeps_their_order_and_loses_nothing() {
    let (fs, other) = (MemFs::default(), MemFs::default());
    let (mut from, _) = open(&fs, 1 << 20);
    for id in 0..2_500 {
        let stream = if id % 10 == 0 {
            Stream::Aggregate
        } else {
            Stream::Raw
        };
        from.append(Lane::for_stream(stream), &rec(stream, id), 0)
            .unwrap();
    }
    from.append(Lane::RescueRaw, &rec(Stream::Raw, 9_999), 0)
        .unwrap();
    let (mut to, _) = open(&other, 1 << 20);
    let (moved, damaged) = from
        .move_to(&mut to, &[Lane::RescueRaw, Lane::Raw])
        .unwrap();
    assert_eq!((moved, damaged), (2_251, 0));
    // The aggregates stay; the raw records are in the other spool, rescue lane first.
    let mut want: Vec<u64> = vec![9_999];
    want.extend((0..2_500).filter(|id| id % 10 != 0));
    assert_eq!(drain(&mut to), want);
    // Reopened, the source holds its aggregates and no longer what it gave away (its read
    // positions are durable).
    drop(from);
    let (mut again, _) = open(&fs, 1 << 20);
    assert_eq!(
        drain(&mut again),
        (0..2_500).step_by(10).collect::<Vec<_>>()
    );
}

#[test]
fn restart_resumes_after_what_was_delivered() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..50 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    let mut batch = Vec::new();
    s.next_batch(20, &mut batch).unwrap();
    for h in &batch[..15] {
        s.ack(h.lane, h.seq);
    }
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(&fs, 1 << 20);
    assert_eq!(rec.records[stats_index(Stream::Raw)], 35);
    assert_eq!(rec.damaged, 0);
    assert_eq!(drain(&mut s), (15..50).collect::<Vec<_>>());
    s.sync().unwrap();
    drop(s);
    let (mut s, rec) = open(&fs, 1 << 20);
    assert_eq!(rec.records, [0; 4]);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn an_unacknowledged_record_blocks_the_cursor_but_not_delivery() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..5 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    let mut batch = Vec::new();
    s.next_batch(5, &mut batch).unwrap();
    // Delivered out of order (several partitions): all but #1.
    for h in batch.iter().filter(|h| id_of(h) != 1) {
        s.ack(h.lane, h.seq);
    }
    s.sync().unwrap();
    drop(s);
    // #1 was not confirmed, so a restart sends it again, and those after it (duplicates).
    let (mut s, _) = open(&fs, 1 << 20);
    assert_eq!(drain(&mut s), vec![1, 2, 3, 4]);
}

#[test]
fn rewind_hands_out_the_undelivered_again() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..4 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    let mut batch = Vec::new();
    s.next_batch(4, &mut batch).unwrap();
    s.ack(Lane::Raw, batch[0].seq);
    s.rewind();
    assert_eq!(s.records(), 3);
    assert_eq!(drain(&mut s), vec![1, 2, 3]);
}

#[test]
fn full_spool_drops_oldest_raw_first_and_keeps_aggregates() {
    let fs = MemFs::default();
    let cap = 64 * 1024;
    let (mut s, _) = open(&fs, cap);
    let mut dropped = [0u64; 4];
    let mut stored_raw = 0;
    let mut stored_agg = 0;
    for i in 0..5_000u64 {
        let stream = if i % 50 == 0 {
            Stream::Aggregate
        } else {
            Stream::Raw
        };
        let a = s
            .append(Lane::for_stream(stream), &rec(stream, i), 0)
            .unwrap();
        assert!(a.stored, "record {i} refused");
        if stream == Stream::Raw {
            stored_raw += 1;
        } else {
            stored_agg += 1;
        }
        for (d, n) in dropped.iter_mut().zip(a.dropped) {
            *d += n;
        }
        s.flush().unwrap();
        assert!(s.bytes() <= cap, "{} bytes over the cap", s.bytes());
    }
    let raw = stats_index(Stream::Raw);
    let agg = stats_index(Stream::Aggregate);
    assert!(dropped[raw] > 3_000, "dropped {dropped:?}");
    assert_eq!(dropped[agg], 0);
    let ids = drain(&mut s);
    let aggs: Vec<u64> = ids.iter().copied().filter(|i| i % 50 == 0).collect();
    assert_eq!(aggs, (0..5_000).step_by(50).collect::<Vec<_>>());
    let raws: Vec<u64> = ids.iter().copied().filter(|i| i % 50 != 0).collect();
    // The counts match, and what is kept is the newest raw data (oldest dropped first).
    assert_eq!(raws.len() as u64 + dropped[raw], stored_raw);
    assert_eq!(aggs.len() as u64, stored_agg);
    assert!(raws.windows(2).all(|w| w[0] < w[1]));
    assert!(*raws.last().unwrap() >= 4_990);
}

#[test]
fn a_spool_of_only_aggregates_refuses_the_next_one_and_says_so() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 8 * 1024);
    let mut refused = 0;
    for i in 0..1_000 {
        let a = s
            .append(Lane::Aggregate, &rec(Stream::Aggregate, i), 0)
            .unwrap();
        if !a.stored {
            refused += 1;
            assert_eq!(a.dropped[stats_index(Stream::Aggregate)], 1);
        }
    }
    assert!(refused > 0);
    assert_eq!(s.records() + refused, 1_000);
}

#[test]
fn power_cut_tears_the_tail_and_exactly_that_record_is_skipped() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..10 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.sync().unwrap();
    for i in 10..20 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    drop(s);
    // The disk wrote a part of the unsynced data: two and a half records.
    let frame = frame_len(&rec(Stream::Raw, 10));
    fs.power_cut(frame * 5 / 2);
    fs.debug_lens();
    let (mut s, r) = open(&fs, 1 << 20);
    assert_eq!(r.damaged, 1);
    assert_eq!(drain(&mut s), (0..12).collect::<Vec<_>>());
    assert_eq!(s.damaged(), 1);
}

/// A route's own topic travels with its records through the spool and a restart.
#[test]
fn records_keep_their_route_topic_across_a_restart() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    let with_topic = |i: u64| Routed {
        topic: (i % 2 == 0).then(|| format!("raw-route-{}", i % 3).into()),
        ..rec(Stream::Raw, i)
    };
    for i in 0..6 {
        s.append(Lane::Raw, &with_topic(i), 0).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let (mut s, _) = open(&fs, 1 << 20);
    let mut batch = Vec::new();
    s.next_batch(100, &mut batch).unwrap();
    let back: Vec<Routed> = batch.into_iter().map(|h| h.routed).collect();
    assert_eq!(back, (0..6).map(with_topic).collect::<Vec<_>>());
}

#[test]
fn flipped_bits_skip_exactly_the_damaged_records() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..10 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let frame = frame_len(&rec(Stream::Raw, 0));
    // A byte in the last record's payload and one in the header of the third from last.
    assert!(fs.corrupt_from_end(".seg", 3));
    assert!(fs.corrupt_from_end(".seg", 2 * frame + frame - 6));
    let (mut s, r) = open(&fs, 1 << 20);
    assert_eq!(r.damaged, 2);
    assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 4, 5, 6, 8]);
}

#[test]
fn failed_write_reports_the_lost_records_and_the_spool_carries_on() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    s.append(Lane::Raw, &rec(Stream::Raw, 0), 0).unwrap();
    s.flush().unwrap();
    fs.fail_writes(true);
    s.append(Lane::Raw, &rec(Stream::Raw, 1), 0).unwrap();
    s.append(Lane::Raw, &rec(Stream::Raw, 2), 0).unwrap();
    let e = s.flush().unwrap_err();
    assert_eq!(e.lost[stats_index(Stream::Raw)], 2);
    fs.fail_writes(false);
    s.append(Lane::Raw, &rec(Stream::Raw, 3), 0).unwrap();
    assert_eq!(drain(&mut s), vec![0, 3]);
}

fn frame_len(r: &Routed) -> usize {
    let mut buf = Vec::new();
    frame::encode(0, r, 0, &mut buf);
    buf.len()
}

fn stats_index(s: Stream) -> usize {
    crate::stats::index(s)
}

// ---- the model test ----

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Flush,
    Sync,
    Batch(usize),
    Ack(usize),
    Rewind,
    /// The process dies: what was not flushed is gone.
    Crash,
    /// The machine loses power: what was not synced is gone, but for a torn prefix.
    PowerCut(usize),
    FailWrites(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u8..4).prop_map(Op::Append),
        5 => Just(Op::Flush),
        5 => Just(Op::Sync),
        10 => (1usize..20).prop_map(Op::Batch),
        15 => (0usize..64).prop_map(Op::Ack),
        2 => Just(Op::Rewind),
        2 => Just(Op::Crash),
        2 => (0usize..300).prop_map(Op::PowerCut),
        1 => any::<bool>().prop_map(Op::FailWrites),
    ]
}

/// One lane of the model: a plain queue of ids with a few markers.
#[derive(Debug, Default, Clone)]
struct ModelLane {
    /// Records after the persisted read position, in append order.
    log: Vec<u64>,
    /// How many of `log` reached the OS, and the disk.
    flushed: usize,
    synced: usize,
    /// Next to hand out, as an index in `log`.
    read: usize,
    /// Per handed-out record: the spool's sequence number and whether it was delivered.
    handed: Vec<(u64, bool)>,
}

impl ModelLane {
    /// The prefix delivered in order: what a sync persists as read.
    fn committed(&self) -> usize {
        self.handed.iter().take_while(|(_, d)| *d).count()
    }

    fn forget_front(&mut self, n: usize) {
        self.log.drain(..n);
        self.handed.drain(..n);
        self.read -= n;
        self.flushed = self.flushed.saturating_sub(n);
        self.synced = self.synced.saturating_sub(n);
    }
}

fn lane_of(i: usize) -> Lane {
    Lane::ALL[i]
}

/// Undelivered records the spool holds in lane `li` (waiting or handed out).
fn lane_records(s: &Spool<MemFs>, li: usize) -> usize {
    let st = &s.lanes[li];
    st.unread as usize + st.in_flight.len()
}

/// After an operation failed part-way, the model adopts the spool's own count of what the lane
/// still holds (the failing batches are lost, reported as such), checking it only shrank.
fn adopt_counts(s: &Spool<MemFs>, m: &mut [ModelLane]) -> Result<(), TestCaseError> {
    for (li, ml) in m.iter_mut().enumerate() {
        let len = ml.committed() + lane_records(s, li);
        prop_assert!(len <= ml.log.len() && len >= ml.flushed.min(ml.log.len()));
        ml.log.truncate(len);
        ml.flushed = len;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the sequence of appends, deliveries, restarts and faults: records come out in
    /// order per lane and lanes in priority order; a crash loses nothing flushed, a power cut
    /// nothing synced; what was delivered before a sync never comes back; damage is counted.
    #[test]
    fn behaves_like_a_queue_through_crashes_and_faults(ops in prop::collection::vec(op(), 1..150)) {
        let fs = MemFs::default();
        let (mut s, _) = open(&fs, u64::MAX / 2);
        let mut m: Vec<ModelLane> = vec![ModelLane::default(); 4];
        let mut next_id = 0u64;
        let mut failing = false;
        for op in ops {
            match op {
                Op::Append(l) => {
                    let lane = lane_of(l as usize);
                    let stream = if matches!(lane, Lane::Aggregate | Lane::RescueAggregate) { Stream::Aggregate } else { Stream::Raw };
                    let a = s.append(lane, &rec(stream, next_id), 0).unwrap();
                    if a.stored {
                        m[l as usize].log.push(next_id);
                    } else {
                        // Opening a new segment failed: this record is dropped and said so,
                        // nothing else changed.
                        prop_assert!(failing && a.error.is_some());
                        prop_assert_eq!(a.dropped.iter().sum::<u64>(), 1);
                    }
                    next_id += 1;
                }
                Op::Flush | Op::Sync => {
                    let result = if matches!(op, Op::Flush) { s.flush().map_err(|e| e.error) } else { s.sync() };
                    match result {
                        Ok(()) => {
                            for ml in &mut m {
                                ml.flushed = ml.log.len();
                                if matches!(op, Op::Sync) {
                                    ml.synced = ml.log.len();
                                    let c = ml.committed();
                                    ml.forget_front(c);
                                }
                            }
                        }
                        Err(_) => {
                            prop_assert!(failing);
                            adopt_counts(&s, &mut m)?;
                        }
                    }
                    for (li, ml) in m.iter().enumerate() {
                        prop_assert_eq!(ml.committed() + lane_records(&s, li), ml.log.len(), "lane {}", li);
                    }
                }
                Op::Batch(n) => {
                    let mut batch = Vec::new();
                    s.next_batch(n, &mut batch).unwrap();
                    prop_assert!(batch.len() <= n);
                    let mut lanes_seen = batch.iter().map(|h| h.lane.index()).collect::<Vec<_>>();
                    lanes_seen.dedup();
                    prop_assert!(lanes_seen.len() <= 1, "one lane per batch: {:?}", lanes_seen);
                    for h in &batch {
                        let li = h.lane.index();
                        // Lanes before it hold nothing undelivered.
                        for (lj, mj) in m.iter().enumerate().take(li) {
                            prop_assert!(mj.read == mj.log.len() && mj.handed.iter().all(|x| x.1), "lane {} served before lane {} was empty", li, lj);
                        }
                        let ml = &mut m[li];
                        prop_assert!(ml.read < ml.flushed, "handed out an unflushed record");
                        prop_assert_eq!(ml.log[ml.read], id_of(h));
                        ml.handed.push((h.seq, false));
                        ml.read += 1;
                    }
                }
                Op::Ack(k) => {
                    let open: Vec<(usize, usize)> = m.iter().enumerate()
                        .flat_map(|(li, ml)| ml.handed.iter().enumerate().filter(|(_, h)| !h.1).map(move |(i, _)| (li, i)))
                        .collect();
                    if !open.is_empty() {
                        let (li, i) = open[k % open.len()];
                        prop_assert!(s.ack(lane_of(li), m[li].handed[i].0));
                        m[li].handed[i].1 = true;
                    }
                }
                Op::Rewind => {
                    s.rewind();
                    for ml in &mut m {
                        if let Some(f) = ml.handed.iter().position(|h| !h.1) {
                            let c = ml.committed();
                            debug_assert_eq!(c, f);
                            ml.read = f;
                            ml.handed.truncate(f);
                        }
                    }
                }
                Op::Crash | Op::PowerCut(_) => {
                    drop(s);
                    if let Op::PowerCut(keep) = op {
                        fs.power_cut(keep);
                    }
                    fs.fail_writes(false);
                    failing = false;
                    let (s2, r) = open(&fs, u64::MAX / 2);
                    s = s2;
                    for (li, ml) in m.iter_mut().enumerate() {
                        // What a sync persisted as delivered is gone; the rest is back, less
                        // what the crash or power cut took.
                        let persisted_delivered = 0;
                        let _ = persisted_delivered;
                        let survived = lane_records(&s, li);
                        let lo = if matches!(op, Op::Crash) { ml.flushed } else { ml.synced };
                        prop_assert!(survived >= lo && survived <= ml.flushed,
                            "lane {} kept {} records, expected {}..={}", li, survived, lo, ml.flushed);
                        ml.log.truncate(survived);
                        ml.handed.clear();
                        ml.read = 0;
                        ml.flushed = survived;
                        ml.synced = ml.synced.min(survived);
                    }
                    if matches!(op, Op::Crash) {
                        prop_assert_eq!(r.damaged, 0);
                    }
                }
                Op::FailWrites(f) => {
                    fs.fail_writes(f);
                    failing = f;
                }
            }
        }
        // In the end, everything left comes out exactly as the model says, in lane order.
        fs.fail_writes(false);
        s.flush().unwrap();
        s.rewind();
        let mut expected = Vec::new();
        for ml in &mut m {
            let c = ml.committed();
            expected.extend_from_slice(&ml.log[c..]);
        }
        prop_assert_eq!(drain(&mut s), expected);
    }
}

#[test]
fn damage_found_while_running_is_counted_once_across_rewinds() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..5 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    let frame = frame_len(&rec(Stream::Raw, 0));
    // A payload byte of record 2 (of 0..5) flips on disk.
    assert!(fs.corrupt_from_end(".seg", 2 * frame + frame / 2));
    let mut batch = Vec::new();
    assert_eq!(s.next_batch(10, &mut batch).unwrap(), 1);
    assert_eq!(
        batch.iter().map(id_of).collect::<Vec<_>>(),
        vec![0, 1, 3, 4]
    );
    s.rewind();
    assert_eq!(s.records(), 4);
    assert_eq!(drain(&mut s), vec![0, 1, 3, 4]);
    assert_eq!(s.damaged(), 1);
}

#[test]
fn a_dropped_segment_awaiting_sync_does_not_block_later_syncs() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 16 * 1024);
    s.append(Lane::Raw, &rec(Stream::Raw, 0), 0).unwrap();
    s.flush().unwrap();
    // A failed write seals the segment with its first record still unsynced.
    fs.fail_writes(true);
    s.append(Lane::Raw, &rec(Stream::Raw, 1), 0).unwrap();
    assert!(s.flush().is_err());
    fs.fail_writes(false);
    // Fill the cap so that the sealed segment is dropped before any sync.
    let mut dropped = 0;
    for i in 2..400 {
        let a = s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
        dropped += a.dropped.iter().sum::<u64>();
        s.flush().unwrap();
    }
    assert!(dropped > 0);
    s.sync()
        .expect("sync succeeds after the segment it owed a sync was dropped");
}

/// Found by the `spool_recovery` fuzz target: a segment named with the largest u64 overflowed
/// the next sequence number at open. Names, frame headers and cursors beyond any sequence
/// number the spool writes are not the spool's: ignored, damage, and a damaged cursor.
#[test]
fn impossible_sequence_numbers_are_not_the_spools() {
    let fs = MemFs::default();
    let mut frame_at_max = Vec::new();
    frame::encode(u64::MAX, &rec(Stream::Raw, 1), 0, &mut frame_at_max);
    fs.write_atomic(
        &lane_dir(Lane::Raw).join(format!("{}{SEGMENT_SUFFIX}", u64::MAX)),
        &frame_at_max,
    )
    .unwrap();
    fs.write_atomic(
        &lane_dir(Lane::RescueRaw).join(format!("{:020}{SEGMENT_SUFFIX}", 0)),
        &frame_at_max,
    )
    .unwrap();
    let cursor = Pos {
        segment: u64::MAX,
        offset: 0,
        seq: u64::MAX,
    };
    fs.write_atomic(&lane_dir(Lane::Aggregate).join(CURSOR), &cursor.encode())
        .unwrap();

    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(recovery.records, [0; 4]);
    assert_eq!(
        recovery.damaged, 1,
        "the frame claiming seq 2^64-1 is damage"
    );
    for (i, lane) in [Lane::Raw, Lane::RescueRaw, Lane::Aggregate]
        .into_iter()
        .enumerate()
    {
        let stream = if lane == Lane::Aggregate {
            Stream::Aggregate
        } else {
            Stream::Raw
        };
        s.append(lane, &rec(stream, 10 + i as u64), 0).unwrap();
    }
    assert_eq!(
        drain(&mut s),
        vec![12, 11, 10],
        "in replay order, numbered from 0"
    );
}

/// Found by the `spool_recovery` fuzz target: a file named "7872.seg" (not the spool's
/// zero-padded name) was taken for segment 7872, then looked up under its padded name, and
/// opening the spool failed. Only names the spool writes are its segments.
#[test]
fn files_not_named_as_the_spool_names_segments_are_left_alone() {
    let fs = MemFs::default();
    let dir = lane_dir(Lane::RescueRaw);
    let mut frame_bytes = Vec::new();
    frame::encode(7872, &rec(Stream::Raw, 1), 0, &mut frame_bytes);
    for name in ["7872.seg", "+7872.seg", "0007872.seg"] {
        fs.write_atomic(&dir.join(name), &frame_bytes).unwrap();
    }
    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(recovery.records, [0; 4]);
    s.append(Lane::RescueRaw, &rec(Stream::Raw, 2), 0).unwrap();
    assert_eq!(drain(&mut s), vec![2]);
    s.sync().unwrap();
    let (_, again) = open(&fs, 1 << 20);
    assert_eq!(
        again.records, [0; 4],
        "the stranger files are still not segments"
    );
}

/// Found by the `spool_recovery` fuzz target: intact frames whose sequence numbers go back
/// (a later segment overlapping an earlier one, or a frame older than the one before it) were
/// handed out under a sequence number already in flight, and acknowledgements went astray. The
/// spool never writes such frames; found anyway, they are damage, counted the same at open and
/// while reading.
#[test]
fn frames_out_of_sequence_order_are_damage_not_records() {
    let fs = MemFs::default();
    let dir = lane_dir(Lane::Raw);
    let segment = |first: u64, seqs: &[u64]| {
        let mut data = Vec::new();
        for &q in seqs {
            frame::encode(q, &rec(Stream::Raw, 100 * first + q), 0, &mut data);
        }
        fs.write_atomic(&segment_path(&dir, first), &data).unwrap();
    };
    segment(0, &[0, 1, 2, 1, 3]);
    segment(2, &[2, 3, 4, 5]);
    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(
        recovery.damaged, 3,
        "seq 1 again in segment 0, 2 and 3 in segment 2"
    );
    assert_eq!(recovery.records[stats_index(Stream::Raw)], 6);
    assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 204, 205]);
    assert_eq!(s.damaged(), 3, "counted once, at open");
}

/// Found by the soak: a drained lane kept its last segment file (and its bytes in the spool's
/// size) while the bridge ran on. Once everything is delivered and synced, no segment is left.
#[test]
fn a_drained_spool_is_back_to_its_empty_size() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    let empty = fs.total_bytes();
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            Stream::Aggregate
        } else {
            Stream::Raw
        };
        s.append(Lane::for_stream(stream), &rec(stream, i), 0)
            .unwrap();
    }
    s.sync().unwrap();
    assert_eq!(drain(&mut s).len(), 10);
    s.sync().unwrap();
    assert_eq!(s.bytes(), 0, "the spool's own count of its size");
    let cursors = 4 * 28;
    assert_eq!(
        fs.total_bytes(),
        empty + cursors,
        "only the lanes' read positions are left"
    );
    // And it carries on: a new record, delivered after a restart.
    s.append(Lane::Raw, &rec(Stream::Raw, 10), 0).unwrap();
    s.sync().unwrap();
    drop(s);
    let (mut s, r) = open(&fs, 1 << 20);
    assert_eq!(r.records[stats_index(Stream::Raw)], 1);
    assert_eq!(drain(&mut s), vec![10]);
}

/// From review: after a damaged stretch, an intact frame older than the records already read
/// must not turn the scan back (it would hand a sequence number out twice).
#[test]
fn an_old_frame_after_damage_does_not_turn_the_scan_back() {
    let fs = MemFs::default();
    let dir = lane_dir(Lane::Raw);
    let mut data = Vec::new();
    for q in 0..4 {
        frame::encode(q, &rec(Stream::Raw, q), 0, &mut data);
    }
    data.extend_from_slice(&[0xee; 40]);
    frame::encode(1, &rec(Stream::Raw, 1), 0, &mut data);
    frame::encode(4, &rec(Stream::Raw, 4), 0, &mut data);
    fs.write_atomic(&segment_path(&dir, 0), &data).unwrap();
    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(recovery.records[stats_index(Stream::Raw)], 5);
    assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 4]);
}

/// From review: a file at the very limit of sequence numbers leaves the lane nothing to
/// number new records with; they are refused with a message, not written unreadable.
#[test]
fn a_lane_at_the_sequence_limit_refuses_new_records_with_a_message() {
    let fs = MemFs::default();
    let dir = lane_dir(Lane::Raw);
    let mut data = Vec::new();
    frame::encode(frame::MAX_SEQ, &rec(Stream::Raw, 7), 0, &mut data);
    fs.write_atomic(&segment_path(&dir, frame::MAX_SEQ), &data)
        .unwrap();
    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(recovery.records[stats_index(Stream::Raw)], 1);
    let refused = s.append(Lane::Raw, &rec(Stream::Raw, 8), 0).unwrap();
    assert!(!refused.stored);
    assert!(refused.error.unwrap().contains("move that directory away"));
    assert_eq!(drain(&mut s), vec![7]);
}

/// Found by the `spool_recovery` fuzz target: a lane whose last segment held nothing readable
/// (a torn write, cut to nothing at open) kept the segment before it, delivered, on disk and
/// in the spool's size: no read passes an empty segment while nothing follows it.
#[test]
fn a_drained_lane_ending_in_an_empty_segment_is_back_to_its_empty_size() {
    let fs = MemFs::default();
    let dir = lane_dir(Lane::Raw);
    write_segment(&fs, Lane::Raw, 0, &[(0, 0)]);
    fs.write_atomic(&segment_path(&dir, 5), &[0, 0, 255, 109])
        .unwrap();
    let (mut s, recovery) = open(&fs, 1 << 20);
    assert_eq!(
        (recovery.records[stats_index(Stream::Raw)], recovery.damaged),
        (1, 1)
    );
    assert_eq!(drain(&mut s), vec![0]);
    s.sync().unwrap();
    assert_eq!(s.bytes(), 0);
    assert!(fs
        .list(&dir)
        .unwrap()
        .iter()
        .all(|n| !n.ends_with(SEGMENT_SUFFIX)));
    s.append(Lane::Raw, &rec(Stream::Raw, 1), 0).unwrap();
    assert_eq!(drain(&mut s), vec![1]);
}

/// Found by the `spool_recovery` fuzz target: a read position (cursor) pointing past the end
/// of its segment was trusted, and the bytes it claimed to skip counted in the spool's size;
/// the next append then dropped another lane's records "to make room" in a spool far from full.
#[test]
fn a_read_position_beyond_its_segment_is_not_trusted() {
    let fs = MemFs::default();
    let files = write_segment(&fs, Lane::Raw, 10, &[(10, 1), (11, 2)])
        + write_segment(&fs, Lane::RescueRaw, 0, &[(0, 3)]);
    let beyond = Pos {
        segment: 10,
        offset: 1 << 50,
        seq: 12,
    };
    fs.write_atomic(&lane_dir(Lane::Raw).join(CURSOR), &beyond.encode())
        .unwrap();

    let (mut s, recovery) = open(&fs, 4 * files);
    assert_eq!(
        (recovery.records[stats_index(Stream::Raw)], recovery.bytes),
        (3, files),
        "the raw segment is read from its start and counted at its size"
    );
    let appended = s.append(Lane::Raw, &rec(Stream::Raw, 4), 0).unwrap();
    assert!(appended.stored);
    assert_eq!(appended.dropped, [0; 4]);
    assert_eq!(drain(&mut s), vec![3, 1, 2, 4]);
}

#[test]
fn a_lane_read_to_its_end_keeps_no_segment_data() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 1 << 20);
    for i in 0..50 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    s.flush().unwrap();
    let mut batch = Vec::new();
    s.next_batch(20, &mut batch).unwrap();
    assert!(
        s.lanes[Lane::Raw.index()].cache.is_some(),
        "mid-segment, the data read is kept for the next batch"
    );
    batch.clear();
    s.next_batch(100, &mut batch).unwrap();
    assert_eq!(batch.len(), 30);
    assert!(s.lanes.iter().all(|l| l.cache.is_none()));
    // Appended later, read again from the file.
    s.append(Lane::Raw, &rec(Stream::Raw, 50), 0).unwrap();
    s.flush().unwrap();
    batch.clear();
    s.next_batch(100, &mut batch).unwrap();
    assert_eq!(batch.iter().map(id_of).collect::<Vec<_>>(), vec![50]);
}

#[test]
fn a_lane_confirmed_to_its_end_lets_go_of_its_in_flight_capacity() {
    let n = 3 * IN_FLIGHT_KEPT as u64;
    let mut s = raw_records(&MemFs::default(), n);
    let batch = hand_out_all(&mut s);
    assert_eq!(batch.len() as u64, n);
    // Confirmed last-first: every other record waits behind the first one.
    for h in batch.iter().skip(1) {
        assert!(s.ack(h.lane, h.seq));
    }
    assert_eq!(s.in_flight() as u64, n);
    assert!(s.ack(batch[0].lane, batch[0].seq));
    assert!(s.is_empty());
    let lane = &s.lanes[Lane::Raw.index()];
    assert_eq!(
        (lane.in_flight.capacity(), lane.pending.capacity()),
        (0, 0),
        "an empty lane holds no buffer"
    );
}

#[test]
fn a_lane_with_records_still_unread_keeps_a_modest_in_flight_list() {
    let n = 3 * IN_FLIGHT_KEPT as u64;
    let mut s = raw_records(&MemFs::default(), n);
    let mut batch = Vec::new();
    s.next_batch(2 * IN_FLIGHT_KEPT, &mut batch).unwrap();
    assert_eq!(batch.len(), 2 * IN_FLIGHT_KEPT);
    for h in &batch {
        assert!(s.ack(h.lane, h.seq));
    }
    assert_eq!(s.records(), n - batch.len() as u64);
    let cap = s.lanes[Lane::Raw.index()].in_flight.capacity();
    assert!(cap > 0 && cap <= IN_FLIGHT_KEPT, "{cap}");
}

#[test]
fn a_burst_of_appends_leaves_no_large_write_buffer() {
    let fs = MemFs::default();
    let (mut s, _) = open(&fs, 256 << 20);
    // What librdkafka held when the uplink went down, spooled at once.
    for i in 0..20_000 {
        s.append(Lane::Raw, &rec(Stream::Raw, i), 0).unwrap();
    }
    assert!(s.lanes[Lane::Raw.index()].pending.capacity() > PENDING_KEPT);
    s.flush().unwrap();
    assert!(s.lanes[Lane::Raw.index()].pending.capacity() <= PENDING_KEPT);
    assert_eq!(s.records(), 20_000);
}

#[test]
fn a_rewind_lets_go_of_the_in_flight_capacity_and_hands_everything_out_again() {
    let n = 3 * IN_FLIGHT_KEPT as u64;
    let mut s = raw_records(&MemFs::default(), n);
    assert_eq!(hand_out_all(&mut s).len() as u64, n);
    // The uplink goes down during the replay: nothing confirmed.
    s.rewind();
    assert!(s.lanes[Lane::Raw.index()].in_flight.capacity() <= IN_FLIGHT_KEPT);
    assert_eq!(
        hand_out_all(&mut s).iter().map(id_of).collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
}
