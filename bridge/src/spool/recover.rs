//! Recovery at open: what a previous run (or a power cut) left in a lane's directory, scanned
//! into the lane's state: segments, the durable read position, damaged records counted.

use std::io;
use std::path::PathBuf;

use super::frame::{Item, Scanner};
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
        .filter_map(|n| n.strip_suffix(SEGMENT_SUFFIX)?.parse().ok())
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
    let mut segments = VecDeque::new();
    let mut unread = 0;
    let mut next_seq = read.seq;
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
            first
        };
        // End of the last intact record, and whether damage runs to the end of the file.
        let mut good_end = 0;
        let mut torn_tail = false;
        for item in Scanner::new(&data, 0, Some(expected)) {
            match item {
                Item::Record {
                    seq, routed, end, ..
                } => {
                    seg.records[stream_slot(routed.stream)] += 1;
                    next_seq = next_seq.max(seq + 1);
                    good_end = end;
                    torn_tail = false;
                }
                Item::Damaged { count, end } => {
                    recovery.damaged += count;
                    torn_tail = end == data.len();
                }
            }
        }
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
