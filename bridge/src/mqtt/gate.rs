//! The embedded broker's front door: every sensor connection passes it.
//!
//! rumqttd alone falls short at the door in four ways, each of which leaves a device unable to
//! connect with no reason given. It performs TLS handshakes inside its accept loop with no time
//! limit (one client that opens a socket and stays silent stops every later client from
//! connecting); it answers a wrong password by closing the socket without a CONNACK, so a
//! sensor cannot tell a bad password from a network fault; it closes, without a CONNACK, every
//! client whose CONNECT has keep-alive 0, which MQTT 3.1.1 (3.1.2.10) and 5 allow and which
//! means "no keep-alive" (cheap firmware and test clients send it); and it closes a connection
//! whose packet is over its size limit without naming the device in its log.
//!
//! The gate does these jobs in front of it: every connection gets its own task, the TLS
//! handshake and the CONNECT packet each get a deadline, credentials are checked against the
//! password file, and a refused client gets the CONNACK code the MQTT specification has for it
//! (bad username or password, not authorized). An accepted connection is spliced to the
//! broker's own listener on loopback, CONNECT included, so the broker still sees and checks
//! everything as usual; a keep-alive of 0 is passed on as the longest one MQTT can express
//! (65,535 s), which the broker accepts, and the gate's TCP keep-alive notices a device that
//! vanished. On the way to the broker, the gate reads each packet's fixed header
//! ([`super::scan`]): a packet over `mqtt.max_packet_size` ends the connection here, counted
//! and logged with the device's client id (an MQTT 5 device is told why in a DISCONNECT). The
//! protocol level in CONNECT decides which broker listener (MQTT 3.1.1 or 5) it goes to, so one
//! port serves both.
//!
//! Every refusal is counted by reason (`edge_bridge_mqtt_connections_refused_total`, and
//! `edge_bridge_mqtt_disconnects_total` after admission) and logged at WARN, at most once a
//! second per reason with a count of the ones in between.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::scan::{disconnect_v5, Scanner, Violation};
use super::tls::explain_handshake_error;
use super::users::Users;
use crate::stats::{MqttDisconnect, MqttRefusal, Stats};
use crate::tasks::Tasks;

/// Time a client has for the TLS handshake and for sending CONNECT, each.
const DEADLINE: Duration = Duration::from_secs(10);
/// Largest CONNECT accepted (client id, will message, credentials).
pub(crate) const MAX_CONNECT: usize = 64 * 1024;
/// Connections in the TLS handshake or before CONNECT at once; more are closed at once.
const MAX_UNADMITTED: usize = 512;
/// What a CONNECT's keep-alive of 0 ("none") is passed to the broker as: the longest MQTT can
/// express, 18 h 12 min (rumqttd closes a connection silent for 1.5 times that).
const NO_KEEP_ALIVE: u16 = u16::MAX;
/// Each direction of a spliced connection reads through a buffer this large: sensor messages
/// are small, and a gateway serves thousands of sensors.
const SPLICE_BUFFER: usize = 2048;

/// What the gate enforces, shared by all its listeners.
pub struct Gate {
    pub users: Option<Arc<Users>>,
    /// Connections not yet admitted (in the TLS handshake or before CONNECT): bounded, so
    /// that clients that connect and stall cannot use up the process's file descriptors.
    unadmitted: Arc<Semaphore>,
    /// The broker's own listeners on loopback, by protocol.
    pub broker_v4: SocketAddr,
    pub broker_v5: SocketAddr,
    /// The largest remaining length of a packet from a client (`mqtt.max_packet_size`), the
    /// broker's own limit too.
    pub max_packet: usize,
    pub stats: Arc<Stats>,
    warned: Mutex<[(Option<Instant>, u64); MqttRefusal::ALL.len() + MqttDisconnect::ALL.len()]>,
}

impl Gate {
    pub fn new(
        users: Option<Arc<Users>>,
        broker_v4: SocketAddr,
        broker_v5: SocketAddr,
        max_packet: usize,
        stats: Arc<Stats>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            users,
            broker_v4,
            broker_v5,
            max_packet,
            stats,
            unadmitted: Arc::new(Semaphore::new(MAX_UNADMITTED)),
            warned: Mutex::new(Default::default()),
        })
    }

    /// Serves `listener` in `tasks` until they stop; with `tls`, every client must handshake
    /// first.
    pub fn spawn(
        self: &Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        tasks: &Tasks,
    ) {
        let gate = self.clone();
        let acceptor = tls.map(TlsAcceptor::from);
        let connections = tasks.clone();
        tasks.spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors, usually: pause instead of spinning.
                        warn!(error = %e, "Cannot accept an MQTT connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = gate.unadmitted.clone().try_acquire_owned() else {
                    gate.refuse(
                        MqttRefusal::NoConnect,
                        peer,
                        "",
                        "too many connections waiting to be admitted; closed",
                    );
                    continue;
                };
                let gate = gate.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move { gate.serve(stream, peer, acceptor, permit).await });
            }
        });
    }

    async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        permit: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        // A sensor that vanishes (power cut, cable pulled) is noticed by the broker's keepalive
        // on the far side of the splice; this notices it on the gate's side too.
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        let Some(acceptor) = tls else {
            return self.admit(stream, peer, permit).await;
        };
        // A plaintext MQTT client opens with CONNECT (0x10); a TLS client with a handshake
        // record (0x16). Answer the former in MQTT, so it learns why instead of seeing a reset.
        let mut first = [0u8; 1];
        match tokio::time::timeout(DEADLINE, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == 0x10 => {
                let mut stream = stream;
                let mut buf = BytesMut::new();
                let read = tokio::time::timeout(DEADLINE, read_connect(&mut stream, &mut buf));
                if let Ok(Ok(connect)) = read.await {
                    // Counted before the client is told, so that the metric already shows a
                    // refusal its client has seen.
                    self.refuse(
                        MqttRefusal::PlaintextOnTls,
                        peer,
                        &connect.client_id,
                        "plaintext MQTT on the TLS port; the client must use TLS (mqtts://) or the plaintext port",
                    );
                    let _ = stream
                        .write_all(&connack(connect.level, NOT_AUTHORIZED))
                        .await;
                    return;
                }
                return self.refuse(
                    MqttRefusal::PlaintextOnTls,
                    peer,
                    "",
                    "plaintext on the TLS port",
                );
            }
            // Closed without a byte: a port probe (a health check, a scanner), not a client.
            Ok(Ok(0)) => return debug!(%peer, "Connection closed before any data"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return debug!(%peer, error = %e, "Connection failed before any data"),
            Err(_) => return self.refuse(MqttRefusal::NoConnect, peer, "", "nothing sent in time"),
        }
        match tokio::time::timeout(DEADLINE, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.admit(tls, peer, permit).await,
            Ok(Err(e)) => {
                let why = format!("TLS handshake failed: {}", explain_handshake_error(&e));
                self.refuse(MqttRefusal::Handshake, peer, "", &why)
            }
            Err(_) => self.refuse(MqttRefusal::Handshake, peer, "", "no TLS handshake in time"),
        }
    }

    /// Reads CONNECT, checks the credentials, and splices the connection to the broker.
    async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut client: S,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let mut buf = BytesMut::with_capacity(256);
        let connect =
            match tokio::time::timeout(DEADLINE, read_connect(&mut client, &mut buf)).await {
                Ok(Ok(c)) => c,
                Ok(Err(why)) if buf.is_empty() => {
                    return debug!(%peer, why, "Connection closed before any data")
                }
                Ok(Err(why)) => return self.refuse(MqttRefusal::NoConnect, peer, "", &why),
                Err(_) => {
                    return self.refuse(
                        MqttRefusal::NoConnect,
                        peer,
                        "",
                        "no CONNECT packet in time",
                    )
                }
            };
        if let Some(users) = &self.users {
            let refusal = match &connect.login {
                None => Some((NOT_AUTHORIZED, "no username given; the broker requires one")),
                Some((user, password)) => {
                    // PBKDF2 off the runtime's threads: a password file made with many
                    // iterations and a burst of reconnects must not stall intake.
                    let (users, user, password) = (users.clone(), user.clone(), password.clone());
                    let ok = tokio::task::spawn_blocking(move || {
                        users.verify(&user, password.as_bytes())
                    })
                    .await
                    .unwrap_or(false);
                    (!ok).then_some((
                        BAD_CREDENTIALS,
                        "wrong username or password (see mqtt.passwords)",
                    ))
                }
            };
            if let Some((code, why)) = refusal {
                // Counted before the client is told (see above).
                let user = connect.login.as_ref().map_or("", |(u, _)| u.as_str());
                let who = format!("{} (user {user:?})", connect.client_id);
                self.refuse(MqttRefusal::Credentials, peer, &who, why);
                let _ = client.write_all(&connack(connect.level, code)).await;
                let _ = client.shutdown().await;
                return;
            }
        }
        let broker = if connect.level == 5 {
            self.broker_v5
        } else {
            self.broker_v4
        };
        // The gate opens only once the broker accepts on these (see `embedded::GateOpening`).
        let upstream = match TcpStream::connect(broker).await {
            Ok(s) => s,
            Err(e) => {
                warn!(%peer, %broker, error = %e, "Cannot reach the embedded broker's own listener; MQTT client dropped");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        if connect.keep_alive == 0 {
            set_keep_alive(&mut buf, NO_KEEP_ALIVE);
            debug!(%peer, client_id = connect.client_id, "Keep-alive 0 (none) passed to the broker as {NO_KEEP_ALIVE} s");
        }
        debug!(%peer, client_id = connect.client_id, "MQTT client admitted");
        drop(permit);
        if let Some(violation) = self.splice(client, upstream, &buf, connect.level).await {
            let (reason, why) = match violation {
                Violation::TooLarge { remaining } => (
                    MqttDisconnect::PacketTooLarge,
                    format!(
                        "sent a packet of {remaining} bytes (after its fixed header), over mqtt.max_packet_size ({}); raise it, or have the device send less per message",
                        self.max_packet
                    ),
                ),
                Violation::Malformed => (
                    MqttDisconnect::MalformedPacket,
                    "sent a packet whose length is not MQTT".to_owned(),
                ),
            };
            self.disconnected(reason, peer, &connect.client_id, &why);
        }
    }

    /// Copies both ways until either side closes (errors are ordinary disconnects), `first`
    /// (CONNECT, and whatever came with it) first. Returns the client's violation, if that is
    /// what ended it; an MQTT 5 client has been told.
    async fn splice<S: AsyncRead + AsyncWrite>(
        &self,
        client: S,
        upstream: TcpStream,
        first: &[u8],
        level: u8,
    ) -> Option<Violation> {
        let (mut from_client, mut to_client) = tokio::io::split(client);
        let (mut from_broker, mut to_broker) = upstream.into_split();
        let mut scanner = Scanner::default();
        let violation = {
            let up = async {
                let mut buf = vec![0u8; SPLICE_BUFFER];
                let mut bytes = first;
                loop {
                    let checked = scanner.feed(bytes, self.max_packet);
                    let whole = checked.map_or_else(|(_, at)| at, |()| bytes.len());
                    to_broker.write_all(&bytes[..whole]).await.ok()?;
                    if let Err((violation, _)) = checked {
                        return Some(violation);
                    }
                    let n = from_client.read(&mut buf).await.ok()?;
                    if n == 0 {
                        let _ = to_broker.shutdown().await;
                        return None;
                    }
                    bytes = &buf[..n];
                }
            };
            let down = async {
                let mut buf = vec![0u8; SPLICE_BUFFER];
                loop {
                    match from_broker.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                v = up => v,
                () = down => None,
            }
        };
        if let (Some(v), 5) = (violation, level) {
            let _ = to_client.write_all(&disconnect_v5(v)).await;
        }
        let _ = to_client.shutdown().await;
        violation
    }

    fn refuse(&self, reason: MqttRefusal, peer: SocketAddr, client: &str, why: &str) {
        self.stats.mqtt_refused[reason as usize].fetch_add(1, Relaxed);
        debug!(%peer, client, reason = reason.as_str(), why, "MQTT connection refused");
        if let Some(skipped) = self.throttle(reason as usize) {
            warn!(%peer, client, reason = reason.as_str(), similar_since_last = skipped, "MQTT connection refused: {why}");
        }
    }

    fn disconnected(&self, reason: MqttDisconnect, peer: SocketAddr, client: &str, why: &str) {
        self.stats.mqtt_disconnects[reason as usize].fetch_add(1, Relaxed);
        debug!(%peer, client, reason = reason.as_str(), why, "MQTT client disconnected");
        if let Some(skipped) = self.throttle(MqttRefusal::ALL.len() + reason as usize) {
            warn!(%peer, client, reason = reason.as_str(), similar_since_last = skipped, "MQTT client disconnected: {why}");
        }
    }

    /// Whether a WARN line of this kind is written now (at most one a second), with the number
    /// held back since the last.
    fn throttle(&self, kind: usize) -> Option<u64> {
        let now = Instant::now();
        let mut warned = self
            .warned
            .lock()
            .expect("never poisoned: no panics inside");
        let (last, skipped) = &mut warned[kind];
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            *skipped += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(skipped))
    }
}

/// What the gate needs from CONNECT.
#[derive(Debug)]
pub(crate) struct Connect {
    /// 4 for MQTT 3.1.1, 5 for MQTT 5. (MQTT 3.1, level 3, fails to parse and is refused as
    /// `no_connect`: neither the gate's parser nor the broker speaks it.)
    pub(crate) level: u8,
    pub(crate) client_id: String,
    /// Seconds; 0 means none.
    pub(crate) keep_alive: u16,
    pub(crate) login: Option<(String, String)>,
}

/// CONNACK return codes (MQTT 3.1.1) and the MQTT 5 reason codes that mean the same.
pub(crate) const BAD_CREDENTIALS: (u8, u8) = (4, 0x86);
pub(crate) const NOT_AUTHORIZED: (u8, u8) = (5, 0x87);

/// A CONNACK refusing the connection, in the client's protocol version.
pub(crate) fn connack(level: u8, (v4, v5): (u8, u8)) -> Vec<u8> {
    if level == 5 {
        // flags, reason code, empty properties
        vec![0x20, 0x03, 0x00, v5, 0x00]
    } else {
        vec![0x20, 0x02, 0x00, v4]
    }
}

/// Reads until `buf` holds one whole first packet and parses it as CONNECT. `buf` keeps the
/// bytes as they came, to be forwarded unchanged.
pub(crate) async fn read_connect<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut BytesMut,
) -> Result<Connect, String> {
    use rumqttc::mqttbytes::Error as MqttError;
    loop {
        match rumqttc::mqttbytes::check(buf.iter(), MAX_CONNECT) {
            Ok(_) => break,
            Err(MqttError::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("not an MQTT CONNECT packet ({e})")),
        }
        if buf.len() > MAX_CONNECT + 8 {
            return Err("CONNECT packet too large".into());
        }
        if s.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the client closed the connection before sending CONNECT".into());
        }
    }
    let level = protocol_level(buf).ok_or("the first packet is not CONNECT")?;
    let mut copy = buf.clone();
    if level == 5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        match Packet::read(&mut copy, Some(MAX_CONNECT as u32)) {
            Ok(Packet::Connect(c, _, login)) => Ok(Connect {
                level,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                login: login.map(|l| (l.username, l.password)),
            }),
            Ok(_) => Err("the first packet is not CONNECT".into()),
            Err(e) => Err(format!("malformed CONNECT ({e})")),
        }
    } else {
        use rumqttc::mqttbytes::v4::Packet;
        match Packet::read(&mut copy, MAX_CONNECT) {
            Ok(Packet::Connect(c)) => Ok(Connect {
                level,
                client_id: c.client_id,
                keep_alive: c.keep_alive,
                login: c.login.map(|l| (l.username, l.password)),
            }),
            Ok(_) => Err("the first packet is not CONNECT".into()),
            Err(e) => Err(format!("malformed CONNECT ({e})")),
        }
    }
}

/// The protocol level byte of a whole CONNECT packet.
fn protocol_level(frame: &[u8]) -> Option<u8> {
    frame.get(level_at(frame)?).copied()
}

/// Where a CONNECT packet's protocol level is: after the fixed header (type byte and a 1 to 4
/// byte remaining length) comes the protocol name, length-prefixed, then the level; the
/// connect flags and the keep-alive (2 bytes) follow it.
fn level_at(frame: &[u8]) -> Option<usize> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = u16::from_be_bytes([*frame.get(i + 1)?, *frame.get(i + 2)?]) as usize;
    Some(i + 3 + name_len)
}

/// Sets the keep-alive of the CONNECT packet at the start of `frame`, which [`read_connect`]
/// has parsed: the same packet length, so nothing else moves.
fn set_keep_alive(frame: &mut [u8], seconds: u16) {
    if let Some(at) = level_at(frame).map(|l| l + 2) {
        if let Some(field) = frame.get_mut(at..at + 2) {
            field.copy_from_slice(&seconds.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_connect(login: Option<(&str, &str)>) -> BytesMut {
        let mut c = rumqttc::mqttbytes::v4::Connect::new("sensor-1");
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        let mut buf = BytesMut::new();
        c.write(&mut buf).unwrap();
        buf
    }

    fn v5_connect(client_id: &str, keep_alive: u16) -> BytesMut {
        use rumqttc::v5::mqttbytes::v5::{Connect, Login};
        let c = Connect {
            keep_alive,
            client_id: client_id.into(),
            clean_start: true,
            properties: None,
        };
        let mut buf = BytesMut::new();
        c.write(&None, &Some(Login::new("u", "p")), &mut buf)
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn reads_connect_of_both_versions_in_pieces() {
        let bytes = v4_connect(Some(("user", "pw")));
        let (mut tx, mut rx) = tokio::io::duplex(8);
        let send = bytes.clone();
        tokio::spawn(async move {
            for chunk in send.chunks(3) {
                tx.write_all(chunk).await.unwrap();
            }
        });
        let mut buf = BytesMut::new();
        let c = read_connect(&mut rx, &mut buf).await.unwrap();
        assert_eq!((c.level, c.client_id.as_str()), (4, "sensor-1"));
        assert_eq!(c.login, Some(("user".into(), "pw".into())));
        assert_eq!(buf, bytes, "the bytes to forward are kept as they came");

        let bytes = v5_connect("sensor-5", 30);
        let mut buf = BytesMut::new();
        let c = read_connect(&mut &bytes[..], &mut buf).await.unwrap();
        assert_eq!((c.level, c.client_id.as_str()), (5, "sensor-5"));
        assert_eq!(c.login, Some(("u".into(), "p".into())));
    }

    #[tokio::test]
    async fn a_keep_alive_of_zero_is_rewritten_in_place_for_both_versions() {
        let mut v4 = rumqttc::mqttbytes::v4::Connect::new("no-keepalive");
        v4.keep_alive = 0;
        v4.set_login("user", "pw");
        let mut frame = BytesMut::new();
        v4.write(&mut frame).unwrap();
        for mut frame in [frame, v5_connect("no-keepalive-5", 0)] {
            let mut buf = BytesMut::new();
            let before = read_connect(&mut &frame[..], &mut buf).await.unwrap();
            assert_eq!(before.keep_alive, 0);
            let len = frame.len();
            set_keep_alive(&mut frame, NO_KEEP_ALIVE);
            assert_eq!(frame.len(), len);
            let mut buf = BytesMut::new();
            let after = read_connect(&mut &frame[..], &mut buf).await.unwrap();
            assert_eq!(after.keep_alive, NO_KEEP_ALIVE);
            assert_eq!(
                (after.client_id, after.login, after.level),
                (before.client_id, before.login, before.level),
                "nothing else changed"
            );
        }
    }

    #[tokio::test]
    async fn refuses_what_is_not_connect() {
        let mut buf = BytesMut::new();
        let tls_hello = [0x16u8, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
        assert!(read_connect(&mut &tls_hello[..], &mut buf).await.is_err());
        let mut buf = BytesMut::new();
        let e = read_connect(&mut &[0x10u8, 0x20][..], &mut buf)
            .await
            .unwrap_err();
        assert!(e.contains("closed"), "{e}");
        let mut buf = BytesMut::new();
        // PINGREQ
        assert!(read_connect(&mut &[0xc0u8, 0x00][..], &mut buf)
            .await
            .is_err());
    }

    #[test]
    fn connack_refusals_parse_as_such() {
        use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
        let mut b = BytesMut::from(&connack(4, BAD_CREDENTIALS)[..]);
        match Packet::read(&mut b, 16).unwrap() {
            Packet::ConnAck(a) => assert_eq!(a.code, ConnectReturnCode::BadUserNamePassword),
            p => panic!("{p:?}"),
        }
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Rc5, Packet as P5};
        let mut b = BytesMut::from(&connack(5, NOT_AUTHORIZED)[..]);
        match P5::read(&mut b, None).unwrap() {
            P5::ConnAck(a) => assert_eq!(a.code, Rc5::NotAuthorized),
            p => panic!("{p:?}"),
        }
    }
}
