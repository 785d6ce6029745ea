//! Entry points for the coverage-guided fuzz targets in `fuzz/` (feature `fuzzing`, never in a
//! release build). Each takes bytes or plain values from the fuzzer, drives the same code the
//! bridge runs on bytes from outside, and panics when a property that code promises fails:
//! a panic here is a finding, and its input becomes a regression test beside the code it broke.
//!
//! - [`gate_connect`]: the gate's CONNECT parser, which reads what unauthenticated clients send.
//! - [`spool_scan`], [`spool_round_trip`]: the spool's frame reader, on any bytes and on damaged
//!   copies of frames the spool wrote.
//! - [`spool_recovery`]: recovery at open, on whatever a crash, a power cut or a stray file
//!   left in the spool's directory.
//! - [`config_file`]: the configuration loader, on any file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use edge_bridge_core::Routed;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, ReadBuf};

use crate::mqtt::gate::{self, Connect};
pub use crate::spool::frame::MAX_SEQ;
use crate::spool::frame::{self, Item, Scanner};
use crate::spool::fs::{Fs, MemFs};
use crate::spool::{Lane, Pos, Spool, SpoolOptions, CURSOR, SEGMENT_SUFFIX};

/// A client that sends `data` at most `chunk` bytes per read, then closes.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// The gate reads `data` as the first bytes of a connection, arriving `chunk` bytes at a time.
///
/// Properties: it never waits on a client that has sent everything; it keeps at most one
/// read past `MAX_CONNECT`; the bytes it forwards are exactly the ones received; and when it
/// admits a CONNECT, the broker listener it forwards to (rumqttd's own parser for that
/// protocol level) reads the same client id and the same credentials from those bytes, so the
/// identity the gate checked is the identity the broker serves.
pub fn gate_connect(data: &[u8], chunk: usize) {
    let chunk = chunk.clamp(1, 4096);
    let mut client = Chunked { data, chunk };
    let mut buf = BytesMut::new();
    let read = gate::read_connect(&mut client, &mut buf)
        .now_or_never()
        .expect("read_connect waited on a client that has nothing more to send");
    assert!(buf.len() <= gate::MAX_CONNECT + 8 + chunk, "read too far");
    assert_eq!(&buf[..], &data[..buf.len()], "forwarded bytes differ");
    match read {
        Err(why) => assert!(!why.is_empty()),
        Ok(connect) => {
            assert!(matches!(connect.level, 4 | 5), "level {}", connect.level);
            let broker = broker_reads(&connect, &buf);
            assert!(
                matches!(broker, BrokerRead::Same | BrokerRead::Refused),
                "{broker:?}"
            );
            for codes in [gate::BAD_CREDENTIALS, gate::NOT_AUTHORIZED] {
                refusal_parses(connect.level, &gate::connack(connect.level, codes));
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum BrokerRead {
    /// The broker reads the same client id and credentials.
    Same,
    /// The broker refuses the packet (it closes the connection: nothing is served).
    Refused,
    Differs(String),
}

fn broker_reads(gate: &Connect, forwarded: &[u8]) -> BrokerRead {
    use rumqttd::protocol::{v4::V4, v5::V5, Packet, Protocol};
    let mut bytes = BytesMut::from(forwarded);
    let read = if gate.level == 5 {
        V5.read_mut(&mut bytes, gate::MAX_CONNECT)
    } else {
        V4.read_mut(&mut bytes, gate::MAX_CONNECT)
    };
    match read {
        Ok(Packet::Connect(c, _, _, _, login)) => {
            let login = login.map(|l| (l.username, l.password));
            if c.client_id == gate.client_id && login == gate.login {
                BrokerRead::Same
            } else {
                BrokerRead::Differs(format!(
                    "gate: {:?} {:?}; broker: {:?} {:?}",
                    gate.client_id, gate.login, c.client_id, login
                ))
            }
        }
        Ok(other) => BrokerRead::Differs(format!("broker read {other:?}")),
        Err(_) => BrokerRead::Refused,
    }
}

fn refusal_parses(level: u8, connack: &[u8]) {
    let mut b = BytesMut::from(connack);
    if level == 5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let p = Packet::read(&mut b, None).expect("our MQTT 5 CONNACK parses");
        assert!(matches!(p, Packet::ConnAck(_)));
    } else {
        use rumqttc::mqttbytes::v4::Packet;
        let p = Packet::read(&mut b, 16).expect("our MQTT 3.1.1 CONNACK parses");
        assert!(matches!(p, Packet::ConnAck(_)));
    }
}

/// The spool's frame reader on any bytes, as found in a segment file.
///
/// Properties: the scan ends, covers the data exactly once, in order; every damaged stretch
/// counts at least one record; and every record it returns is exactly the frame the spool's own
/// writer makes of it (nothing is read that was not written that way).
pub fn spool_scan(data: &[u8], expected_seq: Option<u64>) {
    let mut pos = 0;
    let mut frame_bytes = Vec::new();
    let mut next_seq = expected_seq;
    for item in Scanner::new(data, 0, expected_seq) {
        match item {
            Item::Record {
                seq,
                end,
                routed,
                made_ms,
            } => {
                assert!(end > pos && end <= data.len());
                assert!(
                    next_seq.is_none_or(|n| seq >= n),
                    "record {seq} handed out after {next_seq:?} was expected"
                );
                next_seq = Some(seq + 1);
                frame_bytes.clear();
                frame::encode(seq, &routed, made_ms, &mut frame_bytes);
                assert_eq!(
                    frame_bytes,
                    data[pos..end],
                    "record {seq} re-encodes differently"
                );
                pos = end;
            }
            Item::Damaged { count, end } => {
                assert!(count >= 1);
                assert!(end >= pos && end <= data.len());
                pos = end;
            }
        }
    }
    assert_eq!(pos, data.len(), "the scan stopped before the end");
}

/// Frames the spool writes for `records` (sequence numbers from `first_seq`), read back whole,
/// then cut at `cut` bytes as a crash mid-write leaves them.
///
/// Properties: read whole, every record comes back equal, in order, nothing damaged; cut, the
/// records before the cut come back and the torn one counts as exactly one damaged record.
pub fn spool_round_trip(records: &[(Routed, i64)], first_seq: u64, cut: usize) {
    // The spool numbers records from 0, up to `MAX_SEQ` (headers claiming more are damage).
    let first_seq = (first_seq >> 2).min(MAX_SEQ - records.len() as u64);
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for (i, (routed, made)) in records.iter().enumerate() {
        frame::encode(first_seq + i as u64, routed, *made, &mut data);
        ends.push(data.len());
    }
    let read = |data: &[u8]| {
        let mut got = Vec::new();
        let mut damaged = 0;
        for item in Scanner::new(data, 0, Some(first_seq)) {
            match item {
                Item::Record {
                    seq,
                    routed,
                    made_ms,
                    ..
                } => got.push((seq, routed, made_ms)),
                Item::Damaged { count, .. } => damaged += count,
            }
        }
        (got, damaged)
    };
    let (got, damaged) = read(&data);
    assert_eq!(damaged, 0);
    assert_eq!(got.len(), records.len());
    for (i, ((seq, routed, made), (want, want_made))) in got.iter().zip(records).enumerate() {
        assert_eq!(*seq, first_seq + i as u64);
        assert_eq!(routed, want);
        assert_eq!(made, want_made);
    }
    if data.is_empty() {
        return;
    }
    let cut = cut % data.len();
    let whole = ends.iter().take_while(|e| **e <= cut).count();
    let (got, damaged) = read(&data[..cut]);
    assert_eq!(got.len(), whole, "records before a cut at {cut}");
    let torn = u64::from(!ends.contains(&cut) && cut > 0);
    assert_eq!(damaged, torn, "damaged records for a cut at {cut}");
}

/// A file a previous run (or something else) left in the spool's directory.
pub struct LeftFile {
    /// Index into the lanes, in replay order (taken modulo their number).
    pub lane: usize,
    pub name: LeftName,
    pub data: Vec<u8>,
}

pub enum LeftName {
    /// A segment whose first record has this sequence number.
    Segment(u64),
    /// The lane's read position.
    Cursor,
    /// A valid read position: segment, offset, sequence number (`data` is ignored).
    ValidCursor(u64, u64, u64),
    /// Any other name.
    Other(String),
}

/// Builds a segment's bytes the way the spool writes them, for the fuzz target's inputs.
pub fn encode_frame(seq: u64, routed: &Routed, made_ms: i64, out: &mut Vec<u8>) {
    frame::encode(seq, routed, made_ms, out);
}

/// Opens a spool from `files` (an in-memory file system), delivers the first `acked` records
/// it hands out, appends `next`, and opens it again (a restart).
///
/// Properties: opening never fails or panics on what it finds; the records it reports are
/// the records it then hands out, each once, in lane order and, within a lane, in sequence
/// order; after the restart exactly the records not acknowledged come back, and `next` (unless
/// the lane's files used up its sequence numbers, which the refusal must say);
/// damage is not counted more often than before; a drained spool holds no segment; the
/// spool's size is never more than its files hold.
pub fn spool_recovery(files: Vec<LeftFile>, next: &Routed, acked: usize) {
    let root = Path::new("/spool");
    let left = |files: &[LeftFile]| {
        let fs = MemFs::default();
        for f in files {
            let dir = root.join(Lane::ALL[f.lane % Lane::ALL.len()].as_str());
            let (name, data) = match &f.name {
                LeftName::Segment(first) => {
                    (format!("{first:020}{SEGMENT_SUFFIX}"), f.data.clone())
                }
                LeftName::Cursor => (CURSOR.to_string(), f.data.clone()),
                LeftName::ValidCursor(segment, offset, seq) => {
                    let pos = Pos {
                        segment: *segment,
                        offset: *offset,
                        seq: *seq,
                    };
                    (CURSOR.to_string(), pos.encode())
                }
                LeftName::Other(name) if name.is_empty() || name.contains(['/', '\0']) => continue,
                LeftName::Other(name) => (name.clone(), f.data.clone()),
            };
            fs.write_atomic(&dir.join(name), &data).expect("in memory");
        }
        fs
    };
    let opts = SpoolOptions { max_bytes: 1 << 40 };
    let open = |fs: &MemFs| {
        Spool::open(fs.clone(), root, opts.clone()).expect("recovery never fails in memory")
    };

    // Everything, delivered: what recovery reported, handed out once each, in order.
    let fs = left(&files);
    let (mut spool, recovery) = open(&fs);
    assert!(
        recovery.bytes <= fs.total_bytes() as u64,
        "the spool counts more bytes than its files hold"
    );
    let recovered: u64 = recovery.records.iter().sum();
    assert_eq!(spool.records(), recovered);
    let all = deliver(&mut spool, usize::MAX);
    assert_eq!(all.len() as u64, recovered, "recovered records handed out");
    assert!(spool.is_empty());
    for pair in all.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            order(a.lane) < order(b.lane) || (a.lane == b.lane && a.seq < b.seq),
            "handed out of order: {:?} {} then {:?} {}",
            a.lane,
            a.seq,
            b.lane,
            b.seq
        );
    }
    spool.sync().expect("in memory");
    let drained = spool.bytes();
    assert_eq!(drained, 0, "a drained, synced spool holds no segment");

    // The same files, the first `acked` delivered, then a restart.
    let acked = if all.is_empty() {
        0
    } else {
        acked % (all.len() + 1)
    };
    let fs = left(&files);
    let (mut spool, _) = open(&fs);
    let first = deliver(&mut spool, acked);
    assert_eq!(
        first.iter().map(|h| (h.lane, h.seq)).collect::<Vec<_>>(),
        all[..acked]
            .iter()
            .map(|h| (h.lane, h.seq))
            .collect::<Vec<_>>()
    );
    spool.sync().expect("in memory");
    let lane = Lane::for_stream(next.stream);
    let appended = spool.append(lane, next, 1).expect("in memory");
    // Nothing here can refuse a record (no size cap, no disk error) but a lane whose files
    // used up its sequence numbers, and that refusal must say so.
    assert!(
        appended.stored
            || appended
                .error
                .as_deref()
                .is_some_and(|e| e.contains("used up its sequence numbers")),
        "an append refused without the one reason possible here: {appended:?}"
    );
    spool.sync().expect("in memory");
    drop(spool);
    let (mut spool, again) = open(&fs);
    assert!(
        again.damaged <= recovery.damaged,
        "damage counted more often after a restart"
    );
    let mut rest = deliver(&mut spool, usize::MAX);
    if appended.stored {
        let at = rest
            .iter()
            .rposition(|h| h.lane == lane && &h.routed == next)
            .expect("the record appended before the restart comes back");
        rest.remove(at);
    }
    assert_eq!(
        rest.iter()
            .map(|h| (h.lane, h.seq, &h.routed))
            .collect::<Vec<_>>(),
        all[acked..]
            .iter()
            .map(|h| (h.lane, h.seq, &h.routed))
            .collect::<Vec<_>>(),
        "after the restart: exactly the records not acknowledged"
    );
}

/// A lane's place in the replay order.
fn order(lane: Lane) -> usize {
    Lane::ALL
        .iter()
        .position(|l| *l == lane)
        .expect("every lane is in ALL")
}

/// Hands out and acknowledges records until `acks` were acknowledged or none is left; returns
/// the acknowledged ones in the order handed out.
fn deliver(spool: &mut Spool<MemFs>, acks: usize) -> Vec<crate::spool::Handed> {
    let mut done = Vec::new();
    while done.len() < acks {
        let mut batch = Vec::new();
        spool.next_batch(64, &mut batch).expect("in memory");
        if batch.is_empty() {
            break;
        }
        for h in batch {
            if done.len() == acks {
                break;
            }
            assert!(spool.ack(h.lane, h.seq), "handed out twice");
            done.push(h);
        }
    }
    done
}

/// The configuration loader on `text` as the configuration file.
///
/// Properties: loading never panics and an error names its problems; a configuration it
/// accepts can be written out (as `check-config` prints it, and as TOML) and read back to
/// the same configuration.
pub fn config_file(text: &[u8]) {
    let path = scratch_file("config.toml", text);
    match crate::load::load(Some(&path), serde_json::json!({})) {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(config) => {
            let _ = config.to_redacted_toml();
            let written = toml::to_string(&config).expect("an accepted configuration serialises");
            let again = scratch_file("again.toml", written.as_bytes());
            let reread = crate::load::load(Some(&again), serde_json::json!({}))
                .unwrap_or_else(|e| panic!("written back, it does not load: {e}\n{written}"));
            assert_eq!(
                reread, config,
                "written back, it loads differently:\n{written}"
            );
        }
    }
}

fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("edge-bridge-fuzz-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("temporary directory is writable");
    f.write_all(data).expect("temporary directory is writable");
    path
}
