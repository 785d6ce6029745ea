//! Store and forward: records that cannot go upstream now wait here, on disk, in order.
//!
//! Four lanes, replayed strictly in this order, each a queue of segment files:
//! - `rescue-aggregate`, `rescue-raw`: records the producer held when it failed (a fatal
//!   error, or shutdown before the broker confirmed them). They are older than anything in
//!   the lane of their kind, so each is replayed before it.
//! - `aggregate`: aggregates. Small and precious: never dropped while raw records can be.
//! - `raw`: raw readings, late copies and dead letters.
//!
//! Order: rescue-aggregate, aggregate, rescue-raw, raw: after an outage the aggregates go
//! first, and per sensor each stream stays in order. (This policy is in [`lanes`]; the rest
//! of this module is the storage engine that applies it.) When the size cap is reached, whole raw
//! segments are dropped, oldest first (rescue-raw before raw); aggregates only ever when no
//! raw record is left to drop, and then the new one is refused.
//!
//! A lane's records are handed out in order by [`Spool::next_batch`], and removed only by
//! [`Spool::ack`] on their delivery reports: the durable read position (the lane's `cursor`
//! file, written atomically by [`Spool::sync`]) advances over the longest delivered prefix, so a
//! restart resumes where delivery stopped instead of replaying everything. Records delivered
//! after the last `sync` are sent again after a crash: duplicates, never losses; their
//! `edge.id` header lets a consumer drop them.
//!
//! Durability: appended records reach the OS at every [`Spool::flush`] (a crash of the process
//! loses none of them) and the disk at every [`Spool::sync`] (a power cut loses at most what was
//! appended since). Damaged records (a torn tail after a power cut, flipped bits) are skipped and
//! counted, never fatal; see [`frame`] for how the count is kept exact.
//!
//! The engine stays one file (about 650 lines): appending, flushing, syncing, handing out and
//! acknowledging all keep the same per-lane invariants (what is durable, what is handed out,
//! where a restart resumes), and spread over files they would be harder to check together.
//! What is apart: the lane policy ([`lanes`]), the record format ([`frame`]), recovery at
//! open (`recover`), the filesystem seam ([`fs`]).

pub(crate) mod frame;
pub mod fs;
pub mod lanes;
mod recover;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use edge_bridge_core::Routed;

pub use self::lanes::Lane;

use self::frame::{Item, Scanner};
use self::fs::Fs;
use crate::stats::index as stream_slot;

/// Counts per output stream, indexed like [`crate::stats::index`].
pub type PerStream = [u64; 4];

#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Cap on the spool's files, all lanes together.
    pub max_bytes: u64,
}

impl SpoolOptions {
    /// Segments small enough that dropping one frees a small part of the cap, large enough
    /// that files stay few.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 32).clamp(4 * 1024, 8 * 1024 * 1024)
    }
}

/// A position in a lane: a segment (by its first sequence number), a byte offset in it, and
/// the sequence number of the record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) seq: u64,
}

impl Pos {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(28);
        v.extend_from_slice(&self.segment.to_le_bytes());
        v.extend_from_slice(&self.offset.to_le_bytes());
        v.extend_from_slice(&self.seq.to_le_bytes());
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<Pos> {
        if b.len() != 28 || crc32fast::hash(&b[..24]).to_le_bytes() != b[24..28] {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let pos = Pos {
            segment: word(0),
            offset: word(8),
            seq: word(16),
        };
        // Beyond any position the spool writes: not a cursor it wrote (treated as damaged).
        (pos.segment <= frame::MAX_SEQ && pos.seq <= frame::MAX_SEQ).then_some(pos)
    }
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    /// Bytes in the file (flushed), including any damaged ones.
    bytes: u64,
    /// Undelivered records in it by stream (for counting drops).
    records: PerStream,
    /// Damage ending at or before this offset is already counted (by the scan at open, or by
    /// an earlier read): a re-read after a rewind must not count it again.
    counted_to: u64,
}

/// A record handed out for delivery and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    seq: u64,
    start: Pos,
    /// Its stream's slot, to count it back into its segment after a rewind.
    slot: usize,
    delivered: bool,
}

struct LaneState<A> {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Open writer on the last segment; `None` until the first append after open (a new
    /// segment is started then, so nothing is ever appended after damaged bytes).
    writer: Option<A>,
    /// Encoded frames not yet written to the writer's file.
    pending: Vec<u8>,
    pending_records: PerStream,
    /// Written to the OS since the last fsync.
    unsynced: bool,
    /// Segments sealed after a failed write, whose earlier records still need an fsync.
    needs_sync: Vec<u64>,
    next_seq: u64,
    read: Pos,
    in_flight: VecDeque<InFlight>,
    /// Segment data being read: (segment, file offset of data[0], data).
    cache: Option<(u64, u64, Vec<u8>)>,
    /// Records not yet handed out.
    unread: u64,
    /// The durable read position as last written.
    persisted: Option<Pos>,
}

/// What opening a spool found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Undelivered records by stream.
    pub records: PerStream,
    /// Damaged records skipped.
    pub damaged: u64,
    pub bytes: u64,
}

/// What became of an append.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The record itself is in the spool (until the next flush reports otherwise).
    pub stored: bool,
    /// Records given up to make room or because there was none, by stream (this one
    /// included when it was not stored).
    pub dropped: PerStream,
    /// Why the record was not stored, when the disk refused it.
    pub error: Option<String>,
}

/// A failed flush: the records in the lost batch, by stream.
#[derive(Debug)]
pub struct FlushError {
    pub lost: PerStream,
    pub error: io::Error,
}

/// A spooled record handed out for delivery.
#[derive(Debug, Clone)]
pub struct Handed {
    pub lane: Lane,
    pub seq: u64,
    pub routed: Routed,
    /// Wall-clock ms when the bridge made the record.
    pub made_ms: i64,
}

pub struct Spool<F: Fs> {
    fs: F,
    opts: SpoolOptions,
    lanes: Vec<LaneState<F::Appender>>,
    bytes: u64,
    damaged: u64,
}

/// Entries of a lane's `in_flight` kept allocated once it is empty.
const IN_FLIGHT_KEPT: usize = 4096;

/// Bytes of a lane's encoded frames buffer kept allocated after a flush: 40,000 records/s
/// between flushes 10 ms apart take about 70 KB.
const PENDING_KEPT: usize = 256 * 1024;

pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
pub(crate) const CURSOR: &str = "cursor";

impl<F: Fs> Spool<F> {
    /// Opens (or creates) the spool under `dir`, scanning what a previous run left.
    pub fn open(fs: F, dir: &Path, opts: SpoolOptions) -> io::Result<(Self, Recovery)> {
        let mut recovery = Recovery::default();
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            let lane_dir = dir.join(lane.as_str());
            fs.create_dir_all(&lane_dir)?;
            let state = recover::open_lane(&fs, lane_dir, &mut recovery)?;
            lanes.push(state);
        }
        let spool = Self {
            fs,
            opts,
            lanes,
            bytes: recovery.bytes,
            damaged: recovery.damaged,
        };
        Ok((spool, recovery))
    }

    /// Adds a record to `lane`, making room by dropping raw records when the cap is reached.
    pub fn append(&mut self, lane: Lane, routed: &Routed, made_ms: i64) -> io::Result<Appended> {
        let mut out = Appended::default();
        let mut frame = Vec::with_capacity(64 + routed.record.value.len());
        let seq = self.lanes[lane.index()].next_seq;
        if seq > frame::MAX_SEQ {
            // Only a directory holding files the spool did not write (a frame or name at the
            // very limit) gets here: the frame would not be read back.
            out.dropped[stream_slot(routed.stream)] += 1;
            out.error = Some(format!(
                "the spool lane {} has used up its sequence numbers (files in it were not written by this bridge): stop the bridge and move that directory away",
                self.lanes[lane.index()].dir.display()
            ));
            return Ok(out);
        }
        frame::encode(seq, routed, made_ms, &mut frame);
        let need = frame.len() as u64;
        while self.bytes + need > self.opts.max_bytes {
            if !self.drop_oldest_raw(&mut out.dropped) {
                // Nothing left to drop: the record itself is the one given up.
                out.dropped[stream_slot(routed.stream)] += 1;
                return Ok(out);
            }
        }
        let st = &mut self.lanes[lane.index()];
        if st.writer.is_none() {
            // A new segment. If the disk refuses it, the record is dropped and said so (with
            // whatever was dropped above to make room, so no count is lost).
            let path = segment_path(&st.dir, seq);
            match self.fs.append(&path) {
                Ok(w) => st.writer = Some(w),
                Err(e) => {
                    out.dropped[stream_slot(routed.stream)] += 1;
                    out.error = Some(format!("cannot create {}: {e}", path.display()));
                    return Ok(out);
                }
            }
            st.segments.push_back(Segment {
                first_seq: seq,
                bytes: 0,
                records: [0; 4],
                counted_to: 0,
            });
        }
        st.pending.extend_from_slice(&frame);
        st.pending_records[stream_slot(routed.stream)] += 1;
        st.next_seq += 1;
        st.unread += 1;
        self.bytes += need;
        out.stored = true;
        Ok(out)
    }

    /// Drops the oldest raw segment (rescue-raw lane first) that holds no record being
    /// delivered. False when there is none.
    fn drop_oldest_raw(&mut self, dropped: &mut PerStream) -> bool {
        for lane in lanes::DROP_ORDER {
            let st = &mut self.lanes[lane.index()];
            let writing = st
                .writer
                .as_ref()
                .and(st.segments.back().map(|s| s.first_seq));
            let reading = st.read.segment;
            let idle = st.in_flight.is_empty();
            let droppable = |s: &Segment| {
                Some(s.first_seq) != writing
                    && (s.first_seq > reading || (s.first_seq == reading && idle))
            };
            let Some(i) = st.segments.iter().position(droppable) else {
                continue;
            };
            let seg = st.segments.remove(i).expect("index found above");
            st.needs_sync.retain(|f| *f != seg.first_seq);
            let _ = self.fs.remove(&segment_path(&st.dir, seg.first_seq));
            for (d, n) in dropped.iter_mut().zip(seg.records) {
                *d += n;
            }
            st.unread = st.unread.saturating_sub(seg.records.iter().sum());
            self.bytes = self.bytes.saturating_sub(seg.bytes);
            if seg.first_seq == reading {
                // Reading continues at the next segment (there is one: the dropped one was
                // not being written).
                let next = st.segments.get(i).map_or(st.next_seq, |s| s.first_seq);
                start_reading(st, next);
            }
            return true;
        }
        // Only segments being written are left: seal them so they can go next time.
        let mut sealed = false;
        for lane in lanes::DROP_ORDER {
            let st = &mut self.lanes[lane.index()];
            let has_records = st
                .segments
                .back()
                .is_some_and(|s| s.records.iter().sum::<u64>() > 0 || !st.pending.is_empty());
            if st.writer.is_some() && has_records {
                match flush_lane(&self.fs, st, 0) {
                    Ok(()) => sealed |= st.writer.is_none(),
                    Err(e) => {
                        // The batch is lost: count it, as `flush` would.
                        self.bytes = self.bytes.saturating_sub(e.bytes);
                        for (d, n) in dropped.iter_mut().zip(e.lost) {
                            *d += n;
                        }
                    }
                }
            }
        }
        sealed && self.drop_oldest_raw(dropped)
    }

    /// Writes appended records to the OS: after this, a crash of the process loses none.
    pub fn flush(&mut self) -> Result<(), FlushError> {
        let segment_bytes = self.opts.segment_bytes();
        let mut failed: Option<FlushError> = None;
        for st in &mut self.lanes {
            if let Err(e) = flush_lane(&self.fs, st, segment_bytes) {
                self.bytes = self.bytes.saturating_sub(e.bytes);
                match failed.as_mut() {
                    Some(f) => f.lost.iter_mut().zip(e.lost).for_each(|(a, b)| *a += b),
                    None => {
                        failed = Some(FlushError {
                            lost: e.lost,
                            error: e.error,
                        })
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Flushes, makes appended records durable, and persists the read positions (deleting
    /// segments wholly delivered). After this, a power cut loses nothing appended before.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush().map_err(|e| e.error)?;
        for st in &mut self.lanes {
            while let Some(first) = st.needs_sync.last() {
                match self.fs.sync_path(&segment_path(&st.dir, *first)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                st.needs_sync.pop();
            }
            if st.unsynced {
                if let Some(w) = st.writer.as_mut() {
                    self.fs.sync(w)?;
                }
                st.unsynced = false;
            }
            persist_read(&self.fs, st, &mut self.bytes)?;
            // A lane with nothing left to deliver gives its last segments up too (the one
            // being written, and any holding only damaged records, which no read would pass
            // while nothing follows them): the writer is closed (everything in it is durable,
            // and the next append starts a new segment anyway) and the read position moves to
            // where the next record will be, so that a drained spool is back to its empty size.
            let drained = st.unread == 0 && st.in_flight.is_empty() && st.pending.is_empty();
            if drained && !st.segments.is_empty() {
                st.writer = None;
                let next = st.next_seq;
                start_reading(st, next);
                persist_read(&self.fs, st, &mut self.bytes)?;
            }
        }
        Ok(())
    }

    /// Hands out up to `max` records for delivery, in replay order: a lane is served only once
    /// every lane before it is empty and delivered. Only flushed records are handed out. Returns damaged records skipped on the way.
    pub fn next_batch(&mut self, max: usize, out: &mut Vec<Handed>) -> io::Result<u64> {
        self.next_batch_from(&Lane::ALL, max, out)
    }

    /// [`Spool::next_batch`] from `lanes` only (in replay order, a prefix of [`Lane::ALL`]):
    /// the deferred raw policy holds the raw lanes back outside its window.
    pub fn next_batch_from(
        &mut self,
        lanes: &[Lane],
        max: usize,
        out: &mut Vec<Handed>,
    ) -> io::Result<u64> {
        let mut damaged = 0;
        for &lane in lanes {
            let st = &mut self.lanes[lane.index()];
            if st.unread > 0 {
                damaged += read_lane(&self.fs, lane, st, max, out)?;
            }
            if out.len() >= max || st.unread > 0 || !st.in_flight.is_empty() {
                break;
            }
        }
        self.damaged += damaged;
        Ok(damaged)
    }

    /// Records that the handed-out record `seq` of `lane` was delivered. Returns false for a
    /// record no longer tracked (delivered twice, or dropped meanwhile).
    pub fn ack(&mut self, lane: Lane, seq: u64) -> bool {
        let st = &mut self.lanes[lane.index()];
        let Ok(i) = st.in_flight.binary_search_by_key(&seq, |f| f.seq) else {
            return false;
        };
        if st.in_flight[i].delivered {
            return false;
        }
        st.in_flight[i].delivered = true;
        while st.in_flight.front().is_some_and(|f| f.delivered) {
            st.in_flight.pop_front();
        }
        // Records confirmed behind an unconfirmed one stay here until it is: a replay grows
        // this to many thousands of entries (48 bytes each). Let go of that once all are
        // confirmed; and of every buffer once the lane is empty (nothing unread either, so
        // nothing is pending a write): the bridge sends directly again, and a spool that
        // holds nothing should hold no memory until the next outage.
        if st.in_flight.is_empty() {
            if st.unread == 0 {
                st.in_flight.shrink_to(0);
                st.pending.shrink_to(0);
            } else {
                st.in_flight.shrink_to(IN_FLIGHT_KEPT);
            }
        }
        true
    }

    /// Forgets everything handed out and not yet delivered, so that it is handed out again:
    /// after a failed delivery, or when the producer that held the records is replaced.
    pub fn rewind(&mut self) {
        for st in &mut self.lanes {
            let Some(first) = st.in_flight.front() else {
                continue;
            };
            st.read = first.start;
            // Delivered records after the first undelivered one are sent again: duplicates.
            st.unread += st.in_flight.len() as u64;
            for f in st.in_flight.drain(..) {
                if let Some(seg) = st
                    .segments
                    .iter_mut()
                    .rev()
                    .find(|s| s.first_seq <= f.start.segment)
                {
                    seg.records[f.slot] += 1;
                }
            }
            // An outage that began during a replay: the list's capacity is not needed until
            // the next replay.
            st.in_flight.shrink_to(IN_FLIGHT_KEPT);
            st.cache = None;
        }
    }

    /// Moves every record of `lanes` into the same lanes of `to`, in order: each batch is made
    /// durable there before it is taken out of here, so a crash in between duplicates records
    /// and loses none. For a change of `kafka.raw_brokers`: the records wait in the spool of
    /// the cluster that now takes their stream. Call it before anything is handed out. Returns
    /// the records moved, and damaged ones skipped.
    pub fn move_to<G: Fs>(&mut self, to: &mut Spool<G>, lanes: &[Lane]) -> io::Result<(u64, u64)> {
        self.flush().map_err(|e| e.error)?;
        let (mut moved, mut damaged) = (0, 0);
        loop {
            let mut batch = Vec::new();
            damaged += self.next_batch_from(lanes, 1024, &mut batch)?;
            if batch.is_empty() {
                break;
            }
            for h in &batch {
                let appended = to.append(h.lane, &h.routed, h.made_ms)?;
                if let Some(e) = appended.error {
                    return Err(io::Error::other(e));
                }
            }
            to.sync()?;
            for h in &batch {
                self.ack(h.lane, h.seq);
            }
            moved += batch.len() as u64;
        }
        self.sync()?;
        Ok((moved, damaged))
    }

    /// Nothing waits in any lane and nothing handed out awaits its delivery report.
    pub fn is_empty(&self) -> bool {
        self.lanes
            .iter()
            .all(|st| st.unread == 0 && st.in_flight.is_empty())
    }

    /// Nothing waits in `lanes` and nothing handed out of them awaits its delivery report.
    pub fn is_empty_in(&self, lanes: &[Lane]) -> bool {
        lanes.iter().all(|l| {
            let st = &self.lanes[l.index()];
            st.unread == 0 && st.in_flight.is_empty()
        })
    }

    /// Records in the spool not yet delivered (waiting or handed out).
    pub fn records(&self) -> u64 {
        self.lanes
            .iter()
            .map(|st| st.unread + st.in_flight.len() as u64)
            .sum()
    }

    pub fn in_flight(&self) -> usize {
        self.lanes.iter().map(|st| st.in_flight.len()).sum()
    }

    /// The cap on the spool's files, all lanes together.
    pub fn capacity(&self) -> u64 {
        self.opts.max_bytes
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Damaged records skipped since open, including those found by the scan at open.
    pub fn damaged(&self) -> u64 {
        self.damaged
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Where the durable cursor may point: before the first undelivered handed-out record, or at
/// the read position when everything handed out was delivered.
fn committed<A>(st: &LaneState<A>) -> Pos {
    st.in_flight.front().map_or(st.read, |f| f.start)
}

struct LaneFlushError {
    lost: PerStream,
    bytes: u64,
    error: io::Error,
}

/// Writes a lane's pending frames; seals the segment once it reaches `segment_bytes` (the
/// next append starts a new one).
fn flush_lane<F: Fs>(
    fs: &F,
    st: &mut LaneState<F::Appender>,
    segment_bytes: u64,
) -> Result<(), LaneFlushError> {
    if st.pending.is_empty() {
        return seal_if_full(fs, st, segment_bytes);
    }
    let n = st.pending.len() as u64;
    let lost = std::mem::take(&mut st.pending_records);
    let result = match st.writer.as_mut() {
        Some(w) => w.write_all(&st.pending).and_then(|()| w.flush()),
        None => Err(io::Error::other("no open segment")),
    };
    st.pending.clear();
    // An outage's start writes all that librdkafka held at once (20,000 records, 3 MB):
    // give that back, keep what steady spooling needs between two flushes.
    st.pending.shrink_to(PENDING_KEPT);
    match result {
        Ok(()) => {
            let seg = st.segments.back_mut().expect("a writer implies a segment");
            seg.bytes += n;
            for (r, l) in seg.records.iter_mut().zip(lost) {
                *r += l;
            }
            st.unsynced = true;
            seal_if_full(fs, st, segment_bytes)
        }
        Err(error) => {
            // Part of the batch may be in the file: cut it back to what is accounted for, and
            // seal the segment (the next append starts a new one).
            st.writer = None;
            if let Some(seg) = st.segments.back_mut() {
                let _ = fs.truncate(&segment_path(&st.dir, seg.first_seq), seg.bytes);
                if st.unsynced {
                    st.needs_sync.push(seg.first_seq);
                }
            }
            st.unsynced = false;
            st.unread = st.unread.saturating_sub(lost.iter().sum());
            Err(LaneFlushError {
                lost,
                bytes: n,
                error,
            })
        }
    }
}

fn seal_if_full<F: Fs>(
    fs: &F,
    st: &mut LaneState<F::Appender>,
    segment_bytes: u64,
) -> Result<(), LaneFlushError> {
    let full = st.segments.back().is_some_and(|s| s.bytes >= segment_bytes);
    if !full {
        return Ok(());
    }
    if let Some(mut w) = st.writer.take() {
        // A sealed segment is synced once; later syncs need not revisit it, unless this one
        // fails.
        if st.unsynced {
            st.unsynced = false;
            if let Err(error) = fs.sync(&mut w) {
                if let Some(seg) = st.segments.back() {
                    st.needs_sync.push(seg.first_seq);
                }
                return Err(LaneFlushError {
                    lost: [0; 4],
                    bytes: 0,
                    error,
                });
            }
        }
    }
    Ok(())
}

/// Writes the lane's durable read position if it moved, then deletes the segments wholly
/// before it (delivered), counting their bytes out of `bytes`.
fn persist_read<F: Fs>(fs: &F, st: &mut LaneState<F::Appender>, bytes: &mut u64) -> io::Result<()> {
    let committed = committed(st);
    if st.persisted == Some(committed) {
        return Ok(());
    }
    fs.write_atomic(&st.dir.join(CURSOR), &committed.encode())?;
    st.persisted = Some(committed);
    while st
        .segments
        .front()
        .is_some_and(|s| s.first_seq < committed.segment)
    {
        let seg = st.segments.pop_front().expect("checked above");
        *bytes = bytes.saturating_sub(seg.bytes);
        fs.remove(&segment_path(&st.dir, seg.first_seq))?;
    }
    Ok(())
}

/// Moves the read position to the start of segment `first_seq`. The sequence numbers read so
/// far carry over (a frame below them in a later segment is not in the lane's order): the
/// same rule as recovery's, so that both count the same records and damage.
fn start_reading<A>(st: &mut LaneState<A>, first_seq: u64) {
    st.read = Pos {
        segment: first_seq,
        offset: 0,
        seq: first_seq.max(st.read.seq),
    };
    st.cache = None;
}

fn read_lane<F: Fs>(
    fs: &F,
    lane: Lane,
    st: &mut LaneState<F::Appender>,
    max: usize,
    out: &mut Vec<Handed>,
) -> io::Result<u64> {
    let mut damaged = 0;
    while out.len() < max && st.unread > 0 {
        let Some(si) = st
            .segments
            .iter()
            .position(|s| s.first_seq == st.read.segment)
        else {
            // The read segment is gone (dropped): continue at the next one.
            match st.segments.iter().find(|s| s.first_seq > st.read.segment) {
                Some(next) => {
                    let first = next.first_seq;
                    start_reading(st, first);
                    continue;
                }
                None => break,
            }
        };
        let seg = &st.segments[si];
        let cached_to = st
            .cache
            .as_ref()
            .filter(|(s, base, _)| *s == seg.first_seq && *base <= st.read.offset)
            .map(|(_, base, data)| base + data.len() as u64);
        if cached_to.is_none_or(|end| end <= st.read.offset) {
            if st.read.offset >= seg.bytes {
                // Everything in this segment was read: move on if it is sealed.
                match st.segments.get(si + 1) {
                    Some(next) => {
                        let first = next.first_seq;
                        start_reading(st, first);
                        continue;
                    }
                    None => break,
                }
            }
            let mut data = fs.read_from(&segment_path(&st.dir, seg.first_seq), st.read.offset)?;
            // Only what was written successfully counts (a failed write may have left more).
            data.truncate(seg.bytes.saturating_sub(st.read.offset) as usize);
            st.cache = Some((seg.first_seq, st.read.offset, data));
        }
        let (_, base, data) = st.cache.as_ref().expect("loaded above");
        let base = *base;
        let from = (st.read.offset - base) as usize;
        let counted_to = seg.counted_to;
        let seg_first = seg.first_seq;
        let mut progressed = false;
        let mut scanner = Scanner::new(data, from, Some(st.read.seq));
        while let Some(item) = scanner.next() {
            progressed = true;
            match item {
                Item::Record {
                    seq,
                    end,
                    routed,
                    made_ms,
                } => {
                    let start = st.read;
                    st.read = Pos {
                        segment: seg_first,
                        offset: base + end as u64,
                        seq: seq + 1,
                    };
                    st.unread = st.unread.saturating_sub(1);
                    let slot = stream_slot(routed.stream);
                    let seg = &mut st.segments[si];
                    seg.records[slot] = seg.records[slot].saturating_sub(1);
                    st.in_flight.push_back(InFlight {
                        seq,
                        start,
                        slot,
                        delivered: false,
                    });
                    out.push(Handed {
                        lane,
                        seq,
                        routed,
                        made_ms,
                    });
                    if out.len() >= max {
                        break;
                    }
                }
                Item::Damaged { count, end } => {
                    st.read.offset = base + end as u64;
                    st.read.seq = scanner.expected().expect("the reader always knows");
                    if st.read.offset > counted_to {
                        damaged += count;
                        st.unread = st.unread.saturating_sub(count);
                        st.segments[si].counted_to = st.read.offset;
                    }
                }
            }
        }
        if !progressed {
            break;
        }
    }
    // Everything handed out: let go of the segment's data (up to a segment, 8 MiB), which
    // would otherwise stay allocated until the next outage's replay (the soak saw RSS step up
    // by that much after each one).
    if st.unread == 0 {
        st.cache = None;
    }
    Ok(damaged)
}
