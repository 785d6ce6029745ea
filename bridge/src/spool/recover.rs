//! Recovery at open: what a previous run (or a power cut) left in a lane's directory, scanned
//! into the lane's state: segments, the durable read position, damaged records counted.

use std::io;
use std::path::{Path, PathBuf};

use super::frame::{Item, Scanner, MAX_SEQ};
use super::fs::Fs;
use super::*;

pub(super) fn open_lane<F: Fs>(
    fs: &F,
    dir: PathBuf,
    recovery: &mut Recovery,
) -> io::Result<LaneState<F::Appender>> {
    let mut firsts: Vec<u64> = fs
        .list(&dir)?
        .iter()
        .filter_map(|n| segment_of(n))
        .collect();
    firsts.sort_unstable();
    let cursor = match fs.read_from(&dir.join(CURSOR), 0) {
        Ok(b) => match Pos::decode(&b) {
            Some(p) => Some(p),
            None => {
                tracing::warn!(
                    lane = %dir.display(),
                    "Spool read position is damaged; resending the lane from its oldest record (duplicates possible)"
                );
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // Segments wholly before the cursor were delivered; a crash may have left them behind.
    if let Some(c) = cursor {
        for first in firsts.iter().filter(|f| **f < c.segment) {
            fs.remove(&segment_path(&dir, *first))?;
        }
        firsts.retain(|f| *f >= c.segment);
    }
    let mut read = match (cursor, firsts.first()) {
        (Some(c), Some(&f)) if f == c.segment => c,
        (_, Some(&f)) => Pos {
            segment: f,
            offset: 0,
            seq: f,
        },
        (Some(c), None) => c,
        (None, None) => Pos {
            segment: 0,
            offset: 0,
            seq: 0,
        },
    };
    // A read position beyond its segment's end was not written by this spool (it only ever
    // points at a frame's end); trusting it would skip nothing real and count bytes that are
    // not there. Read that segment from its start instead.
    if firsts.first() == Some(&read.segment)
        && read.offset > fs.len(&segment_path(&dir, read.segment))?
    {
        tracing::warn!(
            lane = %dir.display(),
            "Spool read position lies beyond the end of its segment; resending the segment from its start (duplicates possible)"
        );
        read = Pos {
            segment: read.segment,
            offset: 0,
            seq: read.segment,
        };
    }
    let mut segments = VecDeque::new();
    let mut unread = 0;
    let mut next_seq = read.seq;
    // The sequence number the reader will expect at the next segment: it carries over from
    // segment to segment (see `start_reading`), and the scan here must count as it will.
    let mut carry = read.seq;
    for first in firsts {
        let from = if first == read.segment {
            read.offset
        } else {
            0
        };
        let data = fs.read_from(&segment_path(&dir, first), from)?;
        let mut seg = Segment {
            first_seq: first,
            bytes: from + data.len() as u64,
            records: [0; 4],
            counted_to: u64::MAX,
        };
        let expected = if first == read.segment {
            read.seq
        } else {
            first.max(carry)
        };
        // End of the last intact record, and whether damage runs to the end of the file.
        let mut good_end = 0;
        let mut torn_tail = false;
        // The sequence number expected after the last intact record: what a reader expects at
        // the end of the file once a torn tail is cut off.
        let mut expected_at_good_end = expected;
        let mut scanner = Scanner::new(&data, 0, Some(expected));
        for item in scanner.by_ref() {
            match item {
                Item::Record {
                    seq, routed, end, ..
                } => {
                    seg.records[stream_slot(routed.stream)] += 1;
                    next_seq = next_seq.max(seq + 1);
                    good_end = end;
                    expected_at_good_end = seq + 1;
                    torn_tail = false;
                }
                Item::Damaged { count, end } => {
                    recovery.damaged += count;
                    torn_tail = end == data.len();
                }
            }
        }
        carry = if torn_tail {
            expected_at_good_end
        } else {
            scanner.expected().unwrap_or(expected)
        };
        if torn_tail {
            // Cut a torn tail off (as a write-ahead log does after a crash), so that the
            // next start neither finds nor counts it again.
            fs.truncate(&segment_path(&dir, first), from + good_end as u64)?;
            seg.bytes = from + good_end as u64;
        }
        // What the previous run wrote may not have reached the disk yet (it crashed between
        // syncs): make it durable now, before new records are appended after it.
        fs.sync_path(&segment_path(&dir, first))?;
        next_seq = next_seq.max(first + 1);
        for (r, n) in recovery.records.iter_mut().zip(seg.records) {
            *r += n;
        }
        unread += seg.records.iter().sum::<u64>();
        recovery.bytes += seg.bytes;
        segments.push_back(seg);
    }
    if segments.is_empty() {
        read = Pos {
            segment: next_seq,
            offset: 0,
            seq: next_seq,
        };
    }
    Ok(LaneState {
        dir,
        segments,
        writer: None,
        pending: Vec::new(),
        pending_records: [0; 4],
        unsynced: false,
        needs_sync: Vec::new(),
        next_seq,
        read,
        in_flight: VecDeque::new(),
        cache: None,
        unread,
        persisted: cursor,
    })
}

/// The first sequence number of a segment file named `name`, if the spool wrote that name.
/// Other names are not its segments and are left alone: "7872.seg" (not the spool's
/// zero-padded form, so not found under its own name later), or a number beyond any sequence
/// number the spool writes.
fn segment_of(name: &str) -> Option<u64> {
    let first: u64 = name.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()?;
    let canonical = segment_path(Path::new(""), first);
    (first <= MAX_SEQ && canonical.as_os_str() == name).then_some(first)
}
