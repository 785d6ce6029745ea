//! Flow control for an external broker's QoS 1 stream: a relay between rumqttc and the broker
//! that stops reading from the broker while the bridge holds [`MAX_UNACKED`] messages it has
//! not acknowledged yet.
//!
//! Why: rumqttc's event loop writes one queued request (an ack) per turn and reads up to ten
//! packets per turn, so when its socket always has data, acks fall behind reads without bound.
//! The broker's in-flight window should stop it sending first, but Mosquitto 2.0.11 (Debian 12's)
//! lets that window grow by itself when acks come back late: a paho subscriber acking with a
//! lag of 900 messages had 1,846 unacknowledged after 8 s with `max_inflight_messages 1000`. In
//! the soak the bridge then held 3 million acks it could not write (1.3 GB), and the broker sent
//! every one of those messages again after each restart. The relay splits both directions into
//! MQTT packets and counts QoS 1 and 2 PUBLISHes going to the client and the PUBACKs (PUBRECs)
//! coming back; while [`MAX_UNACKED`] are unacknowledged it passes no further PUBLISH and leaves
//! the broker's bytes unread: rumqttc's socket has nothing to read, its turns go to the acks,
//! and the broker (or TCP) holds the rest.
//!
//! rumqttc reaches the relay over a Unix socket in Linux's abstract namespace (no file to
//! clean up), and the relay serves only this process. The relay connects to the broker, and
//! does the TLS of an `mqtts://` URL with the bridge's TLS settings, so the broker's certificate
//! is checked against the host in the URL as before.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tracing::{debug, error, warn};

use crate::tasks::Tasks;

/// Messages the bridge may hold unacknowledged: what waits for Kafka (or the spool's sync),
/// acks not yet written, and publishes not yet read. The producer's queue holds 20,000 records,
/// so a full queue's worth of acks may wait at once.
pub const MAX_UNACKED: u64 = 20_000;

/// How long connecting to the broker (TCP and TLS together) may take: less than rumqttc's own
/// wait for its CONNACK (5 s), so that the relay never connects for a client that gave up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Where the relay connects.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// For `mqtts://`.
    pub tls: Option<Arc<ClientConfig>>,
    /// The longest the relay holds the broker's bytes. Held bytes include the broker's
    /// PINGRESP: held past the keep-alive, the client would drop the connection. Acks wait
    /// that long only when records can go neither to Kafka nor to the spool (the uplink down
    /// without a spool); the relay then lets the broker's window alone pace the stream, as
    /// without it.
    pub max_hold: Duration,
}

/// Starts the relay; returns the socket name for rumqttc (`Transport::Unix`).
pub fn start(target: Target, tasks: &Tasks) -> io::Result<String> {
    // Random: two bridges with the same pid (containers sharing the host's network) must not
    // collide, and no one can take the name in advance.
    let name = format!(
        "\0edge-bridge-mqtt-relay-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let listener = UnixListener::bind(&name)?;
    tasks.spawn(accept(listener, target));
    Ok(name)
}

async fn accept(listener: UnixListener, target: Target) {
    let me = std::process::id() as i32;
    // The connection being served: a new one from rumqttc (it reconnects when it gave up on
    // the old one, which the relay may not have noticed yet) replaces it. Dropped with this
    // task, the JoinSet ends it too.
    let mut current = tokio::task::JoinSet::new();
    let mut refusals = crate::log_throttle::LogThrottle::new(Duration::from_secs(60));
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                warn!(error = %e, "MQTT relay: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Anyone on the host can reach an abstract socket: serve this process only.
        if client.peer_cred().ok().and_then(|c| c.pid()) != Some(me) {
            if let Some(held_back) = refusals.admit("", std::time::Instant::now()) {
                warn!(
                    held_back,
                    "MQTT relay: a connection from another process refused"
                );
            }
            continue;
        }
        current.abort_all();
        while current.try_join_next().is_some() {}
        current.spawn(serve(client, target.clone()));
    }
}

/// Connects to the broker and relays until either side closes. Failures are logged here with
/// what to fix (rumqttc only sees its connection closed, and reconnects with its backoff).
async fn serve(client: UnixStream, target: Target) {
    let connect = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let _ = tcp.set_nodelay(true);
        match &target.tls {
            None => Ok(Broker::Plain(tcp)),
            Some(config) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Broker::Tls(Box::new(tls)))
            }
        }
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            ))
        });
    let result = match connected {
        Ok(Broker::Plain(tcp)) => relay(client, tcp, target.max_hold).await,
        Ok(Broker::Tls(tls)) => relay(client, *tls, target.max_hold).await,
        Err(e) => {
            match super::external::advice(&format!("{e:?}")) {
                Some(advice) => error!(error = %e, "MQTT broker refused the bridge: {advice}"),
                None => {
                    warn!(error = %e, host = target.host, port = target.port, "Cannot reach the MQTT broker")
                }
            }
            return;
        }
    };
    // A TLS alert after the handshake (a client certificate the broker refuses, under TLS
    // 1.3) arrives as a read error.
    if let Err(e) = result {
        match super::external::advice(&format!("{e:?}")) {
            Some(advice) => error!(error = %e, "MQTT broker refused the bridge: {advice}"),
            None => debug!(error = %e, "MQTT relay: connection to the broker ended"),
        }
    }
}

enum Broker {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Copies both ways, counting at packet boundaries: QoS 1 and 2 PUBLISH packets from the
/// broker, and the client's PUBACK and PUBREC packets that acknowledge them. A PUBLISH is
/// passed on only while fewer than [`MAX_UNACKED`] are unacknowledged on this connection (for at
/// most `max_hold`); the broker's bytes are not read while one waits. Everything else passes at
/// once. (Acks of an earlier connection's messages, sent on this one, open the window wider,
/// by at most what that connection held.)
async fn relay<S: AsyncRead + AsyncWrite>(
    client: UnixStream,
    broker: S,
    max_hold: Duration,
) -> io::Result<()> {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_broker, mut to_broker) = tokio::io::split(broker);
    let acked = AtomicU64::new(0);
    let up = async {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 4 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_broker.shutdown().await;
            }
            let started = tokio::time::Instant::now();
            to_broker.write_all(&buf[..n]).await?;
            note_stall(
                started,
                "the MQTT broker did not read the bridge's acks and pings",
            );
            frames.extend(&buf[..n]);
            let mut acks = 0;
            while let Some(packet) = frames.next_packet() {
                acks += u64::from(is_ack(packet));
            }
            frames.compact();
            acked.fetch_add(acks, Relaxed);
        }
    };
    let down = async {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut sent = 0u64;
        // Set when a hold ran out: the broker's messages pass until the window has room again.
        let mut released = false;
        let unacked = |sent: u64| sent.saturating_sub(acked.load(Relaxed));
        loop {
            // Held again only once acks have made real room (a tenth of the bound): holds that
            // followed each other at every single ack would keep the PINGRESP back for good.
            released &= unacked(sent) >= MAX_UNACKED / 10 * 9;
            // Pass on the complete packets the window allows, in one write.
            let mut waiting = false;
            let from = frames.start;
            while let Some(len) = frames.peek_len() {
                let counted = is_counted_publish(&frames.buf[frames.start..]);
                if counted && !released && unacked(sent) >= MAX_UNACKED {
                    waiting = true;
                    break;
                }
                sent += u64::from(counted);
                frames.start += len;
            }
            if frames.start > from {
                let started = tokio::time::Instant::now();
                to_client.write_all(&frames.buf[from..frames.start]).await?;
                note_stall(
                    started,
                    "the bridge's MQTT client did not read the broker's messages",
                );
            }
            frames.compact();
            if waiting {
                let held = tokio::time::Instant::now();
                while unacked(sent) >= MAX_UNACKED && held.elapsed() < max_hold {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if unacked(sent) >= MAX_UNACKED {
                    warn!(unacked = unacked(sent), "MQTT acks have waited {max_hold:?} for records that can be neither delivered nor spooled: passing the broker's messages on anyway, to keep the connection alive (the broker's own in-flight window paces them until acks catch up)");
                    released = true;
                }
                continue;
            }
            let n = from_broker.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            frames.extend(&buf[..n]);
        }
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// A write that waited this long is logged: rumqttc gives up on a connection whose writes wait
/// 5 s, and the broker then sends every unacknowledged message again.
const STALL: Duration = Duration::from_secs(1);

/// Logs a write through the relay that took [`STALL`] or more (at most one line per stall, so at
/// most one a second), to tell which side stopped reading before a reconnect.
fn note_stall(started: tokio::time::Instant, what: &str) {
    let waited = started.elapsed();
    if waited >= STALL {
        warn!(
            ?waited,
            "MQTT relay: {what} for a while; a wait of 5 s makes the client reconnect"
        );
    }
}

/// Bytes split into MQTT packets (fixed header: type and flags, then the remaining length in
/// one to four bytes); the same for MQTT 3.1.1 and 5.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
    /// Where the first packet not yet taken starts.
    start: usize,
}

impl Frames {
    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The length of the complete packet at `start`, if it has all arrived.
    fn peek_len(&self) -> Option<usize> {
        let rest = &self.buf[self.start..];
        let mut remaining = 0usize;
        for i in 1..=4 {
            let b = *rest.get(i)?;
            remaining |= usize::from(b & 0x7f) << (7 * (i - 1));
            if b & 0x80 == 0 {
                let len = 1 + i + remaining;
                return (rest.len() >= len).then_some(len);
            }
        }
        // A fifth length byte is a protocol error; the broker's side ends up closing. Pass
        // the bytes on as they are rather than hold them forever.
        Some(rest.len())
    }

    /// Takes the complete packet at `start`.
    fn next_packet(&mut self) -> Option<&[u8]> {
        let len = self.peek_len()?;
        let packet = &self.buf[self.start..self.start + len];
        self.start += len;
        Some(packet)
    }

    /// Forgets the packets taken.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// A PUBLISH the client must acknowledge (QoS 1 or 2).
fn is_counted_publish(packet: &[u8]) -> bool {
    packet[0] >> 4 == 3 && (packet[0] >> 1) & 0b11 != 0
}

/// The client's acknowledgement of a PUBLISH: PUBACK (QoS 1) or PUBREC (QoS 2).
fn is_ack(packet: &[u8]) -> bool {
    matches!(packet[0] >> 4, 4 | 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, body: usize) -> Vec<u8> {
        let mut p = vec![0x30 | (qos << 1), body as u8];
        p.extend(std::iter::repeat_n(7, body));
        p
    }

    #[test]
    fn frames_split_at_packet_boundaries_whatever_the_reads() {
        let mut bytes = publish(1, 20);
        bytes.extend(publish(0, 3));
        bytes.extend([0xd0, 0x00]); // PINGRESP
        let mut long = vec![0x32, 0x80 | 0x2c, 0x01]; // remaining length 172
        long.extend(std::iter::repeat_n(1, 172));
        bytes.extend(&long);
        for cut in 1..bytes.len() {
            let mut f = Frames::default();
            let mut lens = Vec::new();
            for chunk in [&bytes[..cut], &bytes[cut..]] {
                f.extend(chunk);
                while let Some(p) = f.next_packet() {
                    lens.push(p.len());
                }
                f.compact();
            }
            assert_eq!(lens, vec![22, 5, 2, 175], "cut at {cut}");
        }
    }

    #[test]
    fn only_qos_1_and_2_publishes_and_their_acks_count() {
        assert!(is_counted_publish(&publish(1, 4)));
        assert!(is_counted_publish(&publish(2, 4)));
        assert!(!is_counted_publish(&publish(0, 4)));
        assert!(!is_counted_publish(&[0xd0, 0x00]));
        assert!(is_ack(&[0x40, 0x02, 0, 1]));
        assert!(is_ack(&[0x50, 0x02, 0, 1]));
        assert!(!is_ack(&[0xc0, 0x00]));
    }
}
