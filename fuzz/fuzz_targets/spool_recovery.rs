//! Spool recovery at open (`spool/recover.rs` and the reads after it) on what a crash, a power
//! cut or a stray file can leave in the spool's directory: segments of frames the spool wrote,
//! torn or overwritten at any byte, read positions valid or not, other files. See
//! `edge_bridge::fuzzing::spool_recovery` for the properties.
#![no_main]

use arbitrary::Arbitrary;
use edge_bridge::fuzzing::{encode_frame, LeftFile, LeftName};
use edge_bridge_fuzz::Record;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Name {
    Segment(u64),
    Cursor,
    ValidCursor(u64, u64, u64),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Content {
    /// Frames the spool wrote (sequence numbers from `first`), then `damage` applied.
    Frames {
        first: u64,
        records: Vec<Record>,
        damage: Vec<Damage>,
    },
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Damage {
    /// Cut the file to this length (modulo its length): a torn write.
    Truncate(usize),
    /// XOR a byte: a flipped bit or a bad sector.
    Flip(usize, u8),
    /// Append bytes: a partial write of garbage.
    Append(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct File {
    lane: u8,
    name: Name,
    content: Content,
}

#[derive(Debug, Arbitrary)]
struct Input {
    files: Vec<File>,
    next: Record,
    /// How many of the recovered records are delivered before the restart.
    acked: usize,
}

fn bytes(content: Content) -> Vec<u8> {
    match content {
        Content::Bytes(b) => b,
        Content::Frames {
            first,
            records,
            damage,
        } => {
            // Within the spool's sequence numbers (up to 2^62); names and cursors go beyond.
            let first = first >> 2;
            let mut data = Vec::new();
            for (i, r) in records.into_iter().enumerate() {
                let (routed, made) = r.routed_made();
                encode_frame(first + i as u64, &routed, made, &mut data);
            }
            for d in damage {
                match d {
                    Damage::Truncate(n) if !data.is_empty() => data.truncate(n % data.len()),
                    Damage::Flip(i, x) if !data.is_empty() => {
                        let i = i % data.len();
                        data[i] ^= x;
                    }
                    Damage::Append(b) => data.extend_from_slice(&b),
                    _ => {}
                }
            }
            data
        }
    }
}

fuzz_target!(|input: Input| {
    let files = input
        .files
        .into_iter()
        .map(|f| LeftFile {
            lane: usize::from(f.lane),
            name: match f.name {
                Name::Segment(n) => LeftName::Segment(n),
                Name::Cursor => LeftName::Cursor,
                Name::ValidCursor(a, b, c) => LeftName::ValidCursor(a, b, c),
                Name::Other(s) => LeftName::Other(s),
            },
            data: bytes(f.content),
        })
        .collect();
    let (next, _) = input.next.routed_made();
    edge_bridge::fuzzing::spool_recovery(files, &next, input.acked);
});
