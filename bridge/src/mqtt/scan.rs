//! Follows a client's MQTT byte stream packet by packet, without holding any of it, to find the
//! first packet the broker would refuse for its size.
//!
//! The gate splices every sensor connection to the embedded broker. rumqttd closes a
//! connection whose packet is over its `max_payload_size` (a check on the fixed header's
//! remaining length, of any packet type) and logs the error without the client's name; the
//! device is told nothing, and the operator sees no count. The gate sees the same fixed headers
//! pass, so it can stop the connection itself, count it, and name the device. Only fixed headers
//! are read (type byte, then one to four bytes of remaining length); bodies are skipped by
//! count, so the cost is a few operations per packet, whatever its size.

/// Why the gate ends a connection after admitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A packet whose remaining length (everything after the fixed header: a PUBLISH's topic,
    /// packet id, properties and payload) is over the limit.
    TooLarge { remaining: usize },
    /// A remaining length of more than four bytes: not MQTT (section 2.2.3 of 3.1.1 and 5).
    Malformed,
}

#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes of the current packet's body not yet seen.
    body_left: usize,
    /// Inside a fixed header: how many remaining-length bytes were read, and their value so far.
    header: Option<(u8, usize)>,
}

impl Scanner {
    /// Reads `bytes`, the next part of the stream. On a violation, returns it with the offset in
    /// `bytes` where the offending packet begins (0 when it began in an earlier part): what comes
    /// before it are whole packets, or the rest of one, that the broker may still have.
    pub fn feed(&mut self, bytes: &[u8], limit: usize) -> Result<(), (Violation, usize)> {
        let mut i = 0;
        let mut packet_start = 0;
        while i < bytes.len() {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len() - i);
                self.body_left -= take;
                i += take;
                continue;
            }
            let b = bytes[i];
            match self.header {
                // The type byte.
                None => {
                    packet_start = i;
                    self.header = Some((0, 0));
                }
                Some((read, value)) => {
                    let value = value | usize::from(b & 0x7f) << (7 * read);
                    if b & 0x80 == 0 {
                        self.header = None;
                        if value > limit {
                            return Err((Violation::TooLarge { remaining: value }, packet_start));
                        }
                        self.body_left = value;
                    } else if read == 3 {
                        return Err((Violation::Malformed, packet_start));
                    } else {
                        self.header = Some((read + 1, value));
                    }
                }
            }
            i += 1;
        }
        Ok(())
    }
}

/// The MQTT 5 DISCONNECT the gate sends before closing (3.1.1 has no DISCONNECT from the
/// server: the connection just closes): reason code *packet too large* (0x95) or *malformed
/// packet* (0x81), no properties.
pub fn disconnect_v5(v: Violation) -> [u8; 4] {
    let code = match v {
        Violation::TooLarge { .. } => 0x95,
        Violation::Malformed => 0x81,
    };
    [0xe0, 0x02, code, 0x00]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `body` bytes of type `kind`, with its remaining length encoded as MQTT does.
    fn packet(kind: u8, body: usize) -> Vec<u8> {
        let mut p = vec![kind];
        let mut n = body;
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            p.push(b);
            if n == 0 {
                break;
            }
        }
        p.extend(std::iter::repeat_n(0x55, body));
        p
    }

    fn run(stream: &[u8], cuts: &[usize], limit: usize) -> Result<(), (Violation, usize)> {
        let mut s = Scanner::default();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            s.feed(&stream[from..cut], limit)
                .map_err(|(v, at)| (v, from + at))?;
            from = cut;
        }
        Ok(())
    }

    #[test]
    fn packets_up_to_the_limit_pass_however_the_stream_is_cut() {
        // PINGREQ, a small PUBLISH, one of exactly the limit (three length bytes), a PUBACK.
        let mut stream = vec![0xc0, 0x00];
        stream.extend(packet(0x30, 40));
        stream.extend(packet(0x32, 20_000));
        stream.extend([0x40, 0x02, 0x00, 0x01]);
        for cut in 0..=stream.len() {
            assert_eq!(run(&stream, &[cut], 20_000), Ok(()), "cut at {cut}");
        }
        assert_eq!(
            run(&stream, &(1..stream.len()).collect::<Vec<_>>(), 20_000),
            Ok(())
        );
    }

    #[test]
    fn the_first_packet_over_the_limit_is_found_where_it_starts() {
        let mut stream = packet(0x30, 10);
        let start = stream.len();
        stream.extend(packet(0x30, 65_537));
        stream.extend(packet(0x30, 10));
        // Its fixed header is 4 bytes: cut inside it, the offending packet began in the first
        // part, and the second part is reported from its start.
        for cut in 0..=start + 8 {
            let at = if cut > start && cut < start + 4 {
                cut
            } else {
                start
            };
            assert_eq!(
                run(&stream, &[cut], 65_536),
                Err((Violation::TooLarge { remaining: 65_537 }, at)),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_fifth_length_byte_is_malformed() {
        let stream = [0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(
            run(&stream, &[], usize::MAX),
            Err((Violation::Malformed, 0))
        );
        // Found in the second part, the packet having begun in the first: reported at the
        // second part's start.
        assert_eq!(
            run(&stream, &[3], usize::MAX),
            Err((Violation::Malformed, 3))
        );
        // The largest legal length, 268,435,455, is read as such.
        let stream = [0x30, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(
            run(&stream, &[], 1000),
            Err((
                Violation::TooLarge {
                    remaining: 268_435_455
                },
                0
            ))
        );
    }

    #[test]
    fn the_v5_disconnect_parses_with_its_reason() {
        use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
        for (v, want) in [
            (
                Violation::TooLarge { remaining: 1 },
                DisconnectReasonCode::PacketTooLarge,
            ),
            (Violation::Malformed, DisconnectReasonCode::MalformedPacket),
        ] {
            let mut b = bytes::BytesMut::from(&disconnect_v5(v)[..]);
            match Packet::read(&mut b, None).unwrap() {
                Packet::Disconnect(d) => assert_eq!(d.reason_code, want),
                p => panic!("{p:?}"),
            }
        }
    }
}
