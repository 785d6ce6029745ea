//! The spool's on-disk record format, and the scan that tolerates damage.
//!
//! A segment file is a sequence of frames:
//!
//! ```text
//! magic u32 | seq u64 | len u32 | header crc u32 | payload crc u32 | payload (len bytes)
//! ```
//!
//! all little-endian; the header crc covers magic, seq and len, the payload crc the payload.
//! Two checksums make damage exact to count: a frame whose header is intact but whose payload is
//! not is skipped by its length; a damaged header is skipped by scanning for the next magic with
//! a valid header crc, and the sequence numbers on both sides tell how many records were lost.
//!
//! The payload is one routed record: stream u8 | [topic] | timestamp i64 | made i64 (wall-clock
//! ms when the bridge made the record, for latency) | key | headers | value, with u32 lengths
//! (u16 for header names and count). A record with a topic of its own (a route's, see
//! [`Routed::topic`]) has the stream byte's high bit set and its topic after it (u16 length);
//! frames written before routes existed have neither, and read as they always did.

use bytes::{Buf, BufMut, Bytes};
use edge_bridge_core::{OutRecord, Routed, Stream};

/// The stream byte's flag for a topic of the record's own.
const HAS_TOPIC: u8 = 0x80;

const MAGIC: u32 = 0x3153_4245; // "EBS1"
pub const HEADER_LEN: usize = 24;

/// The largest sequence number a lane can reach (2^62: 146,000 years at a million records a
/// second). A header or segment name claiming more is not the spool's: it is treated as damage
/// (or, for a file name, as a stranger's file), so that arithmetic on sequence numbers never
/// overflows.
pub const MAX_SEQ: u64 = 1 << 62;

/// Appends one frame holding `routed` to `buf`.
pub fn encode(seq: u64, routed: &Routed, made_ms: i64, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    let rec = &routed.record;
    match &routed.topic {
        None => buf.put_u8(stream_tag(routed.stream)),
        Some(topic) => {
            // Kafka topic names are at most 249 bytes (checked by the configuration).
            let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
            buf.put_u8(stream_tag(routed.stream) | HAS_TOPIC);
            buf.put_u16_le(topic.len() as u16);
            buf.put_slice(topic);
        }
    }
    buf.put_i64_le(rec.timestamp_ms);
    buf.put_i64_le(made_ms);
    buf.put_u32_le(rec.key.len() as u32);
    buf.put_slice(&rec.key);
    buf.put_u16_le(rec.headers.len().min(u16::MAX as usize) as u16);
    for (k, v) in rec.headers.iter().take(u16::MAX as usize) {
        let k = &k.as_bytes()[..k.len().min(u16::MAX as usize)];
        buf.put_u16_le(k.len() as u16);
        buf.put_slice(k);
        buf.put_u32_le(v.len() as u32);
        buf.put_slice(v);
    }
    buf.put_u32_le(rec.value.len() as u32);
    buf.put_slice(&rec.value);

    let len = (buf.len() - start - HEADER_LEN) as u32;
    let payload_crc = crc32fast::hash(&buf[start + HEADER_LEN..]);
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..12].copy_from_slice(&seq.to_le_bytes());
    header[12..16].copy_from_slice(&len.to_le_bytes());
    let header_crc = crc32fast::hash(&header[..16]);
    header[16..20].copy_from_slice(&header_crc.to_le_bytes());
    header[20..24].copy_from_slice(&payload_crc.to_le_bytes());
    buf[start..start + HEADER_LEN].copy_from_slice(&header);
}

fn stream_tag(s: Stream) -> u8 {
    match s {
        Stream::Raw => 0,
        Stream::Aggregate => 1,
        Stream::DeadLetter => 2,
        Stream::Late => 3,
    }
}

fn stream_of(tag: u8) -> Option<Stream> {
    Some(match tag {
        0 => Stream::Raw,
        1 => Stream::Aggregate,
        2 => Stream::DeadLetter,
        3 => Stream::Late,
        _ => return None,
    })
}

/// A valid frame header.
struct Header {
    seq: u64,
    len: usize,
    payload_crc: u32,
}

fn header_at(data: &[u8], pos: usize) -> Option<Header> {
    let h = data.get(pos..pos + HEADER_LEN)?;
    let word = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC || word(16) != crc32fast::hash(&h[..16]) {
        return None;
    }
    let seq = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
    if seq > MAX_SEQ {
        return None;
    }
    Some(Header {
        seq,
        len: word(12) as usize,
        payload_crc: word(20),
    })
}

/// One step of a scan over segment data.
#[derive(Debug)]
pub enum Item {
    /// A valid record: its sequence number, the offset just past it, and the record.
    Record {
        seq: u64,
        end: usize,
        routed: Routed,
        made_ms: i64,
    },
    /// `count` records that cannot be read, ending at `end`. `count` is exact when the damage
    /// is followed by a valid frame (sequence numbers tell), otherwise 1 for a torn tail.
    Damaged { count: u64, end: usize },
}

/// Walks frames in `data` from `pos`. `expected_seq`, when known, is the sequence number the
/// first frame should carry, so that damage right at `pos` is counted exactly as well.
pub struct Scanner<'a> {
    data: &'a [u8],
    pos: usize,
    expected: Option<u64>,
}

impl<'a> Scanner<'a> {
    pub fn new(data: &'a [u8], pos: usize, expected_seq: Option<u64>) -> Self {
        Self {
            data,
            pos,
            expected: expected_seq,
        }
    }

    /// The sequence number the next frame should carry, as far as the scan knows: after a
    /// damaged stretch, a reader that starts a new scan here starts it with this.
    pub fn expected(&self) -> Option<u64> {
        self.expected
    }

    /// Lost records between the last good frame and one carrying `seq`.
    fn gap_before(&self, seq: u64) -> u64 {
        self.expected.map_or(0, |e| seq.saturating_sub(e))
    }
}

impl Iterator for Scanner<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let Some(h) = header_at(self.data, self.pos) else {
            // Damaged header: find the next intact one.
            let next = (self.pos + 1..self.data.len().saturating_sub(HEADER_LEN - 1))
                .find(|&p| header_at(self.data, p).is_some());
            return Some(match next {
                Some(p) => {
                    let h = header_at(self.data, p).expect("found above");
                    let count = self.gap_before(h.seq).max(1);
                    self.pos = p;
                    // Never backwards: an older frame found here is out of order (below).
                    self.expected = Some(self.expected.map_or(h.seq, |e| e.max(h.seq)));
                    Item::Damaged { count, end: p }
                }
                None => {
                    self.pos = self.data.len();
                    Item::Damaged {
                        count: 1,
                        end: self.pos,
                    }
                }
            });
        };
        // Records lost before an intact frame (a whole damaged frame in between whose header
        // happened to be skipped as part of an earlier damaged region).
        let gap = self.gap_before(h.seq);
        if gap > 0 {
            self.expected = Some(h.seq);
            return Some(Item::Damaged {
                count: gap,
                end: self.pos,
            });
        }
        let body = self.pos + HEADER_LEN;
        let end = body + h.len;
        if end > self.data.len() {
            // Torn write: the frame was cut short.
            self.pos = self.data.len();
            return Some(Item::Damaged {
                count: 1,
                end: self.pos,
            });
        }
        self.pos = end;
        if self.expected.is_some_and(|e| h.seq < e) {
            // An intact frame from before the records already read: the spool never writes
            // one (its sequence numbers only grow), so it is not part of this lane's order.
            // Skipped as damage, so that a sequence number is never handed out twice.
            return Some(Item::Damaged { count: 1, end });
        }
        self.expected = Some(h.seq + 1);
        let payload = &self.data[body..end];
        if crc32fast::hash(payload) != h.payload_crc {
            return Some(Item::Damaged { count: 1, end });
        }
        Some(match decode_payload(payload) {
            Some((routed, made_ms)) => Item::Record {
                seq: h.seq,
                end,
                routed,
                made_ms,
            },
            None => Item::Damaged { count: 1, end },
        })
    }
}

fn decode_payload(mut p: &[u8]) -> Option<(Routed, i64)> {
    fn take(p: &mut &[u8], n: usize) -> Option<Bytes> {
        if p.remaining() < n {
            return None;
        }
        let b = Bytes::copy_from_slice(&p[..n]);
        p.advance(n);
        Some(b)
    }
    if p.remaining() < 1 {
        return None;
    }
    let tag = p.get_u8();
    let stream = stream_of(tag & !HAS_TOPIC)?;
    let topic = if tag & HAS_TOPIC != 0 {
        if p.remaining() < 2 {
            return None;
        }
        let n = p.get_u16_le() as usize;
        let name = std::str::from_utf8(&take(&mut p, n)?).ok()?.to_owned();
        Some(edge_bridge_core::TopicName::from(name))
    } else {
        None
    };
    if p.remaining() < 8 + 8 + 4 {
        return None;
    }
    let timestamp_ms = p.get_i64_le();
    let made_ms = p.get_i64_le();
    let key_len = p.get_u32_le() as usize;
    let key = take(&mut p, key_len)?;
    if p.remaining() < 2 {
        return None;
    }
    let n = p.get_u16_le() as usize;
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        if p.remaining() < 2 {
            return None;
        }
        let kl = p.get_u16_le() as usize;
        let k = String::from_utf8(take(&mut p, kl)?.to_vec()).ok()?;
        if p.remaining() < 4 {
            return None;
        }
        let vl = p.get_u32_le() as usize;
        headers.push((k.into(), take(&mut p, vl)?));
    }
    if p.remaining() < 4 {
        return None;
    }
    let vl = p.get_u32_le() as usize;
    let value = take(&mut p, vl)?;
    if p.has_remaining() {
        return None;
    }
    Some((
        Routed {
            stream,
            record: OutRecord {
                key,
                value,
                timestamp_ms,
                headers,
            },
            topic,
        },
        made_ms,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(i: u64) -> Routed {
        Routed {
            stream: if i % 3 == 0 {
                Stream::Aggregate
            } else {
                Stream::Raw
            },
            record: OutRecord {
                key: Bytes::from(format!("sensor-{i}")),
                value: Bytes::from(format!("{{\"value\":{i}}}")),
                timestamp_ms: 1_718_000_000_000 + i as i64,
                headers: vec![("mqtt.topic".into(), Bytes::from("sensors/x/temperature"))],
            },
            // Every other record with a route's topic: both kinds of frame side by side.
            topic: (i % 2 == 1).then(|| format!("raw-route-{i}").into()),
        }
    }

    /// A frame written before routes existed (no topic flag) reads as it always did: the
    /// bytes of the older encoder, spelled out, must decode to the record with no topic.
    #[test]
    fn frames_from_before_routes_read_without_a_topic() {
        let mut p = Vec::new();
        p.put_u8(0); // raw
        p.put_i64_le(1_718_000_000_000);
        p.put_i64_le(7);
        p.put_u32_le(2);
        p.put_slice(b"s1");
        p.put_u16_le(1);
        p.put_u16_le(10);
        p.put_slice(b"mqtt.topic");
        p.put_u32_le(3);
        p.put_slice(b"a/b");
        p.put_u32_le(4);
        p.put_slice(b"21.5");
        let (routed, made) = decode_payload(&p).unwrap();
        assert_eq!(made, 7);
        assert_eq!(routed.topic, None);
        assert_eq!(routed.stream, Stream::Raw);
        assert_eq!(&routed.record.value[..], b"21.5");
        // The same record with a topic of its own round-trips with it.
        let with = Routed {
            topic: Some("raw-zigbee".into()),
            ..routed
        };
        let mut buf = Vec::new();
        encode(1, &with, 7, &mut buf);
        let Some(Item::Record { routed: back, .. }) = Scanner::new(&buf, 0, None).next() else {
            panic!("one record");
        };
        assert_eq!(back, with);
    }

    fn segment(seqs: std::ops::Range<u64>) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for s in seqs {
            starts.push(buf.len());
            encode(s, &routed(s), 7, &mut buf);
        }
        (buf, starts)
    }

    fn scan(data: &[u8]) -> (Vec<u64>, u64) {
        let mut seqs = Vec::new();
        let mut damaged = 0;
        for item in Scanner::new(data, 0, Some(0)) {
            match item {
                Item::Record {
                    seq,
                    routed: r,
                    made_ms,
                    ..
                } => {
                    assert_eq!(r, routed(seq));
                    assert_eq!(made_ms, 7);
                    seqs.push(seq);
                }
                Item::Damaged { count, .. } => damaged += count,
            }
        }
        (seqs, damaged)
    }

    #[test]
    fn round_trips_every_field() {
        let (data, _) = segment(0..10);
        assert_eq!(scan(&data), ((0..10).collect(), 0));
    }

    #[test]
    fn torn_tail_is_one_damaged_record() {
        let (data, starts) = segment(0..10);
        for cut in [starts[9] + 1, starts[9] + HEADER_LEN, data.len() - 1] {
            assert_eq!(scan(&data[..cut]), ((0..9).collect(), 1), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_payload_skips_exactly_that_record() {
        let (mut data, starts) = segment(0..10);
        data[starts[4] + HEADER_LEN + 3] ^= 0xff;
        data[starts[7] + HEADER_LEN + 1] ^= 0x01;
        let (seqs, damaged) = scan(&data);
        assert_eq!(damaged, 2);
        assert_eq!(seqs, vec![0, 1, 2, 3, 5, 6, 8, 9]);
    }

    #[test]
    fn corrupt_headers_are_counted_by_sequence_numbers() {
        let (mut data, starts) = segment(0..10);
        // Three consecutive headers destroyed: the scan resynchronises on frame 6.
        for s in &starts[3..6] {
            data[*s + 5] ^= 0x55;
        }
        let (seqs, damaged) = scan(&data);
        assert_eq!(damaged, 3);
        assert_eq!(seqs, vec![0, 1, 2, 6, 7, 8, 9]);
    }

    #[test]
    fn garbage_tail_counts_valid_headers_and_the_rest() {
        let (mut data, starts) = segment(0..10);
        // Overwrite the last two payloads but not their headers.
        for s in &starts[8..10] {
            data[*s + HEADER_LEN] ^= 0xaa;
        }
        assert_eq!(scan(&data), ((0..8).collect(), 2));
    }

    #[test]
    fn damage_at_the_start_is_counted_from_the_expected_sequence() {
        let (mut data, starts) = segment(5..10);
        data[starts[0] + 1] ^= 0x10;
        let items: Vec<Item> = Scanner::new(&data, 0, Some(5)).collect();
        assert!(matches!(items[0], Item::Damaged { count: 1, .. }));
        assert_eq!(items.len(), 5);
    }
}
