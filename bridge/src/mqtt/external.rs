//! An external MQTT broker (Mosquitto, EMQX, ...) through rumqttc, MQTT 3.1.1 or 5.
//!
//! - A stable client id and a persistent session (clean session off; for MQTT 5 a session
//!   expiry), so QoS 1 messages published while the bridge is away wait in the broker.
//! - Manual acks: a QoS 1 publish is acknowledged only when the bridge hands back its
//!   [`AckToken`], after the reading went on to Kafka. Acks go out in arrival order.
//! - The event loop runs in its own task and is polled all the time, so keepalives go out even
//!   while the bridge is busy. What piles up unacknowledged is bounded by the bridge itself:
//!   rumqttc talks to the broker through a [`super::relay`] that stops reading from the broker
//!   while [`super::relay::MAX_UNACKED`] messages wait for their acks.
//! - Reconnects back off exponentially with jitter, capped; the subscription is renewed
//!   whenever the broker reports that it lost the session.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ClientConfig;
use tracing::{debug, error, info, warn};
use url::Url;

use super::relay;
use super::{Inbound, MqttError};
use crate::config::{ExternalBroker, Protocol, Qos};
use crate::stats::Stats;
use crate::tasks::Tasks;

/// What acknowledging a QoS 1 or 2 publish takes: its packet id and QoS. Not the publish
/// itself: its topic would be one more allocation per message, and its payload would keep the
/// network read buffer it was cut from allocated for as long as the ack waits (thousands of
/// acks wait behind a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub pkid: u16,
    /// QoS 2: acknowledged with PUBREC; QoS 1 with PUBACK.
    pub exactly_once: bool,
}

impl AckToken {
    /// The token of a 3.1.1 publish, if its QoS needs an ack.
    fn of_v4(p: &rumqttc::Publish) -> Option<AckToken> {
        let exactly_once = match p.qos {
            rumqttc::QoS::AtMostOnce => return None,
            rumqttc::QoS::AtLeastOnce => false,
            rumqttc::QoS::ExactlyOnce => true,
        };
        Some(AckToken {
            pkid: p.pkid,
            exactly_once,
        })
    }

    /// The token of an MQTT 5 publish, if its QoS needs an ack.
    fn of_v5(p: &rumqttc::v5::mqttbytes::v5::Publish) -> Option<AckToken> {
        use rumqttc::v5::mqttbytes::QoS;
        let exactly_once = match p.qos {
            QoS::AtMostOnce => return None,
            QoS::AtLeastOnce => false,
            QoS::ExactlyOnce => true,
        };
        Some(AckToken {
            pkid: p.pkid,
            exactly_once,
        })
    }

    /// The client's acknowledgement calls take a publish; they read its QoS and packet id only.
    fn v4(self) -> rumqttc::Publish {
        let qos = match self.exactly_once {
            true => rumqttc::QoS::ExactlyOnce,
            false => rumqttc::QoS::AtLeastOnce,
        };
        let mut p = rumqttc::Publish::new(String::new(), qos, Vec::new());
        p.pkid = self.pkid;
        p
    }

    fn v5(self) -> rumqttc::v5::mqttbytes::v5::Publish {
        use rumqttc::v5::mqttbytes::QoS;
        let qos = match self.exactly_once {
            true => QoS::ExactlyOnce,
            false => QoS::AtLeastOnce,
        };
        let mut p =
            rumqttc::v5::mqttbytes::v5::Publish::new(String::new(), qos, bytes::Bytes::new(), None);
        p.pkid = self.pkid;
        p
    }
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub struct External {
    rx: mpsc::Receiver<Inbound>,
    client: Client,
    /// Acks not yet accepted by the client's request queue, oldest first. The main loop never
    /// waits for that queue: it is drained only by the event loop task, which may itself be
    /// waiting for the main loop to take a publish, and waiting both ways would deadlock.
    unsent_acks: std::collections::VecDeque<AckToken>,
}

/// Everything needed to connect.
#[derive(Clone)]
pub struct ExternalOptions {
    /// The broker as configured: URL, credentials (when `None`, those in the URL, if any),
    /// client id, QoS, protocol, keep-alive.
    pub broker: ExternalBroker,
    /// TLS for `mqtts://`, built from the broker's files: the CA to trust and an optional
    /// client certificate.
    pub tls: Option<Arc<ClientConfig>>,
    /// Topic filters, one subscription each (the routes' filters, which do not overlap).
    pub filters: Vec<String>,
    /// Where the filters the broker's session holds are recorded (see [`super::session`]);
    /// `None`: subscribe to every filter whenever the broker lost the session, and to none
    /// when it kept it.
    pub session: Option<super::session::Record>,
    /// Where the connection state and reconnections are counted.
    pub stats: Arc<Stats>,
}

// By hand: the derived one would print the password.
impl std::fmt::Debug for ExternalOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.broker;
        f.debug_struct("ExternalOptions")
            .field("url", &redacted(&b.url))
            .field("username", &b.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .field("client_id", &b.client_id)
            .field("filters", &self.filters)
            .field("protocol", &b.protocol)
            .finish_non_exhaustive()
    }
}

/// Publishes buffered between the event loop and the bridge: a small part of what the relay
/// lets stand unacknowledged.
const CHANNEL: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The client's request queue: room for acks, so that they reach the event loop as soon as
/// they are released (it writes one per turn). With room for 64, at most 64 went in per turn
/// of the bridge's retry (every 5 ms): about 13,000 acks/s at most, under the soak's 40,000
/// readings/s.
const REQUESTS: usize = 8_192;
/// How long a stop waits for the queued acks to be written and the connection closed.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl External {
    /// Connects in the background: the client loop runs in `tasks`.
    pub fn start(o: ExternalOptions, tasks: &Tasks) -> Result<Self, MqttError> {
        let b = &o.broker;
        // An IPv6 address without its URL brackets, as a socket address takes it.
        let host = match b.url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(MqttError::External("mqtt.url names no host".into())),
        };
        let tls = b.url.scheme() == "mqtts";
        let port = b.url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let (user, pass) = match &b.credentials {
            Some((u, p)) => (u.clone(), Some(p.clone())),
            None => (
                percent_encoding::percent_decode_str(b.url.username())
                    .decode_utf8_lossy()
                    .into_owned(),
                b.url.password().map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
            ),
        };
        let target = relay::Target {
            host,
            port,
            max_hold: b.keep_alive / 2,
            tls: match (&o.tls, tls) {
                (Some(config), true) => Some(config.clone()),
                (None, true) => {
                    return Err(MqttError::External(
                        "mqtts:// needs a TLS configuration".into(),
                    ))
                }
                _ => None,
            },
        };
        let relay = relay::start(target, tasks).map_err(|e| {
            MqttError::External(format!("cannot open the local MQTT relay socket: {e}"))
        })?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        let client = match b.protocol {
            Protocol::V311 => {
                let mut opts = rumqttc::MqttOptions::new(&b.client_id, relay.clone(), 0);
                opts.set_keep_alive(b.keep_alive)
                    .set_clean_session(false)
                    .set_manual_acks(true)
                    .set_max_packet_size(1 << 20, 1 << 20);
                if !user.is_empty() {
                    opts.set_credentials(user, pass.unwrap_or_default());
                }
                opts.set_transport(rumqttc::Transport::Unix);
                let (client, eventloop) = rumqttc::AsyncClient::new(opts, REQUESTS);
                tasks.spawn(run(V4(eventloop, client.clone()), o.clone(), tx));
                Client::V4(client)
            }
            Protocol::V5 => {
                let mut opts = rumqttc::v5::MqttOptions::new(&b.client_id, relay.clone(), 0);
                opts.set_keep_alive(b.keep_alive)
                    .set_clean_start(false)
                    // Keep the session (and queued QoS 1 messages) for a week of absence.
                    .set_session_expiry_interval(Some(7 * 24 * 3600))
                    .set_manual_acks(true);
                if !user.is_empty() {
                    opts.set_credentials(user, pass.unwrap_or_default());
                }
                opts.set_transport(rumqttc::Transport::Unix);
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, REQUESTS);
                tasks.spawn(run(V5(eventloop, client.clone()), o.clone(), tx));
                Client::V5(client)
            }
        };
        Ok(Self {
            rx,
            client,
            unsent_acks: Default::default(),
        })
    }

    /// Publishes wait in the channel from the client loop.
    pub fn backlogged(&self) -> bool {
        !self.rx.is_empty()
    }

    /// A publish already received, if there is one, without waiting.
    pub fn try_next(&mut self) -> Option<Inbound> {
        self.flush_acks();
        self.rx.try_recv().ok()
    }

    pub async fn next(&mut self) -> Result<Inbound, MqttError> {
        loop {
            self.flush_acks();
            let retry = !self.unsent_acks.is_empty();
            tokio::select! {
                m = self.rx.recv() => {
                    return m.ok_or_else(|| MqttError::External("the MQTT event loop stopped".into()));
                }
                () = tokio::time::sleep(Duration::from_millis(5)), if retry => {}
            }
        }
    }

    /// Queues an acknowledgement; acks leave in the order they were given.
    pub async fn ack(&mut self, token: AckToken) {
        self.unsent_acks.push_back(token);
        self.flush_acks();
    }

    /// Publishes `payload` on `topic` at QoS 0 without waiting; false when the client's
    /// request queue is full (the message is not sent).
    pub fn try_publish(&mut self, topic: &str, payload: Vec<u8>) -> bool {
        match &self.client {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtMostOnce, false, payload)
                .is_ok(),
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                    false,
                    payload,
                )
                .is_ok(),
        }
    }

    /// Acks released but not yet handed to the client's request queue.
    pub fn acks_unsent(&self) -> usize {
        self.unsent_acks.len()
    }

    /// Writes the queued acks, then disconnects, and waits (up to [`CLOSE_WAIT`]) for the
    /// event loop to end. The event loop writes requests in order, so the acks leave before
    /// the DISCONNECT; but it writes nothing while it waits to hand on a publish, so publishes
    /// that arrive meanwhile are taken and dropped unacknowledged: the broker delivers them
    /// again to the next session. (Before, the main loop had stopped reading at shutdown: the
    /// event loop stalled on a full channel and every ack still queued was lost, so the broker
    /// redelivered all of those messages after a restart.)
    pub async fn close(&mut self) {
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        let mut left_unacked = 0u64;
        while !self.unsent_acks.is_empty() && tokio::time::Instant::now() < deadline {
            self.flush_acks();
            left_unacked += self.drop_received();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let unsent = self.unsent_acks.len();
        // Queued behind the acks: retried while the request queue is full.
        loop {
            let queued = match &self.client {
                Client::V4(c) => c.try_disconnect().is_ok(),
                Client::V5(c) => c.try_disconnect().is_ok(),
            };
            if queued || tokio::time::Instant::now() >= deadline {
                break;
            }
            left_unacked += self.drop_received();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The event loop ends once the broker closed the connection after the DISCONNECT.
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            left_unacked += 1;
        }
        if unsent > 0 {
            warn!(unsent, "MQTT acks not written within {CLOSE_WAIT:?} at shutdown: the broker will deliver those messages again (duplicates in the raw topic)");
        }
        if left_unacked > 0 {
            info!(left_unacked, "Publishes that arrived during shutdown left unacknowledged: the broker keeps them for the next session");
        }
    }

    /// At a stop: drops the publishes waiting in the channel, unacknowledged (the broker keeps
    /// them for the next session), so that the event loop can go on writing acks; how many.
    fn drop_received(&mut self) -> u64 {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    fn flush_acks(&mut self) {
        while let Some(token) = self.unsent_acks.front() {
            let result = match &self.client {
                Client::V4(c) => c.try_ack(&token.v4()).map_err(drop),
                Client::V5(c) => c.try_ack(&token.v5()).map_err(drop),
            };
            match result {
                Ok(()) => {
                    self.unsent_acks.pop_front();
                }
                // The request queue is full: try again on the next call.
                Err(_) => return,
            }
        }
    }
}

fn qos_v4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos_v5(q: Qos) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// The next reconnect delay: doubled, capped, with up to 25 % jitter so that many gateways
/// do not reconnect to a restarted broker in lockstep.
fn next_backoff(current: Duration) -> Duration {
    let doubled = (current * 2).min(BACKOFF_MAX);
    let jitter = rand::rng().random_range(0.75..1.0);
    doubled.mul_f64(jitter).max(BACKOFF_MIN)
}

/// After a connection error: false when the bridge is gone (stop), else waits the backoff.
async fn pause_before_reconnect(
    error: String,
    backoff: &mut Duration,
    tx: &mpsc::Sender<Inbound>,
    stats: &Stats,
) -> bool {
    if tx.is_closed() {
        return false;
    }
    stats.mqtt_connected.store(0, Relaxed);
    stats.mqtt_subscribed.store(0, Relaxed);
    stats.mqtt_reconnects.fetch_add(1, Relaxed);
    match advice(&error) {
        // Retrying will not help until the operator acts; keep retrying all the same, so the
        // bridge recovers by itself once the broker or the configuration is put right.
        Some(advice) => {
            error!(error = %error, retry_in = ?backoff, "MQTT broker refused the bridge: {advice}")
        }
        None => {
            warn!(error = %error, retry_in = ?backoff, "MQTT connection failed or lost; reconnecting")
        }
    }
    tokio::time::sleep(*backoff).await;
    *backoff = next_backoff(*backoff);
    true
}

/// What the operator must change, for the connection errors that say (rumqttc's error types
/// differ between its MQTT 3.1.1 and 5 clients; their texts name the same causes).
pub(super) fn advice(error: &str) -> Option<&'static str> {
    let has = |needles: &[&str]| needles.iter().any(|n| error.contains(n));
    if has(&[
        "BadUserNamePassword",
        "NotAuthorized",
        "BadUsernamePassword",
    ]) {
        Some("wrong or missing credentials: check mqtt.username and mqtt.password (or those in mqtt.url)")
    } else if has(&["UnknownIssuer"]) {
        Some("the broker's certificate is not signed by a CA the bridge trusts: set mqtt.broker_ca to the CA that signed it")
    } else if has(&["NotValidForName"]) {
        Some("the broker's certificate does not name the host in mqtt.url: connect by the name the certificate carries")
    } else if has(&[
        "CertificateRequired",
        "HandshakeFailure",
        "BadCertificate",
        "UnknownCA",
        "CertificateUnknown",
    ]) {
        Some("the broker refused the TLS handshake: it may require a client certificate (mqtt.client_cert and mqtt.client_key) signed by a CA it trusts")
    } else if has(&["InvalidContentType", "corrupt message"]) {
        Some("the broker does not speak TLS on this port: use mqtt:// for it, or its TLS port")
    } else {
        None
    }
}

/// What the client loop saw, the same for MQTT 3.1.1 and 5.
enum Polled {
    Connected {
        session_present: bool,
    },
    /// Boxed: a publish is one variant of seven, and the others are small.
    Publish(Box<Inbound>),
    Subscribed {
        codes: String,
    },
    /// The bridge's own DISCONNECT went out (at a stop).
    Disconnecting,
    Other,
    Failed(String),
}

/// One protocol version's rumqttc client and event loop, seen through [`Polled`].
trait Session: Send {
    const VERSION: &'static str;
    fn poll(&mut self) -> impl std::future::Future<Output = Polled> + Send;
    /// Queues the subscription without waiting for the request queue.
    fn try_subscribe(&self, filter: &str, qos: Qos) -> Result<(), String>;
    /// Queues an unsubscription likewise.
    fn try_unsubscribe(&self, filter: &str) -> Result<(), String>;
}

struct V4(rumqttc::EventLoop, rumqttc::AsyncClient);

impl Session for V4 {
    const VERSION: &'static str = "3.1.1";

    async fn poll(&mut self) -> Polled {
        use rumqttc::{Event, Outgoing, Packet};
        match self.0.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                session_present: ack.session_present,
            },
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let ack = AckToken::of_v4(&p);
                Polled::Publish(Box::new(Inbound {
                    topic: p.topic.into(),
                    payload: p.payload,
                    user_properties: Vec::new(),
                    ack,
                }))
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => Polled::Subscribed {
                codes: format!("{:?}", s.return_codes),
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => Polled::Disconnecting,
            Ok(_) => Polled::Other,
            Err(e) => Polled::Failed(e.to_string()),
        }
    }

    fn try_subscribe(&self, filter: &str, qos: Qos) -> Result<(), String> {
        self.1
            .try_subscribe(filter, qos_v4(qos))
            .map_err(|e| e.to_string())
    }

    fn try_unsubscribe(&self, filter: &str) -> Result<(), String> {
        self.1.try_unsubscribe(filter).map_err(|e| e.to_string())
    }
}

struct V5(rumqttc::v5::EventLoop, rumqttc::v5::AsyncClient);

impl Session for V5 {
    const VERSION: &'static str = "5";

    async fn poll(&mut self) -> Polled {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::Event;
        match self.0.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => Polled::Connected {
                session_present: ack.session_present,
            },
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Ok(topic) = ByteString::try_from(p.topic.clone()) else {
                    // Acknowledged all the same: unacknowledged, the broker would send it again
                    // at every reconnect, and it would hold a place in the relay's window.
                    let acked = p.qos == rumqttc::v5::mqttbytes::QoS::AtMostOnce
                        || self.1.try_ack(&p).is_ok();
                    warn!(acked, "Publish with a topic that is not UTF-8 ignored");
                    return Polled::Other;
                };
                let ack = AckToken::of_v5(&p);
                let user_properties = p
                    .properties
                    .as_ref()
                    .map(|pp| pp.user_properties.clone())
                    .unwrap_or_default();
                Polled::Publish(Box::new(Inbound {
                    topic,
                    payload: p.payload,
                    user_properties,
                    ack,
                }))
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => Polled::Subscribed {
                codes: format!("{:?}", s.return_codes),
            },
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Polled::Disconnecting,
            Ok(_) => Polled::Other,
            Err(e) => Polled::Failed(e.to_string()),
        }
    }

    fn try_subscribe(&self, filter: &str, qos: Qos) -> Result<(), String> {
        self.1
            .try_subscribe(filter, qos_v5(qos))
            .map_err(|e| e.to_string())
    }

    fn try_unsubscribe(&self, filter: &str) -> Result<(), String> {
        self.1.try_unsubscribe(filter).map_err(|e| e.to_string())
    }
}

/// The client loop, for either protocol version: polls all the time (keepalives go out while
/// the bridge is busy), subscribes again whenever the broker lost the session, hands publishes
/// on, and reconnects with backoff.
async fn run<S: Session>(mut session: S, o: ExternalOptions, tx: mpsc::Sender<Inbound>) {
    let mut backoff = BACKOFF_MIN;
    // Requests still to queue after a connect (`true`: subscribe), and the subscriptions
    // queued whose acknowledgement is still to come.
    let mut todo: std::collections::VecDeque<(bool, String)> = Default::default();
    let mut unacked = 0usize;
    // Set once the bridge's own DISCONNECT (at a stop) has gone out: the broker closing the
    // connection then is the expected end, not a failure to reconnect from.
    let mut closing = false;
    loop {
        // Never await the client's request queue here: only this task drains it.
        while let Some((subscribe, filter)) = todo.front() {
            let queued = if *subscribe {
                session.try_subscribe(filter, o.broker.qos)
            } else {
                session.try_unsubscribe(filter)
            };
            match queued {
                Ok(()) => {
                    unacked += usize::from(*subscribe);
                    todo.pop_front();
                    if todo.is_empty() && unacked == 0 {
                        // Unsubscriptions only: the session now holds what the routes want.
                        subscribed(&o);
                    }
                }
                Err(e) => {
                    debug!(error = %e, "Subscribe request queued behind acks; retrying");
                    break;
                }
            }
        }
        match session.poll().await {
            Polled::Connected { session_present } => {
                backoff = BACKOFF_MIN;
                info!(url = %redacted(&o.broker.url), session_present, "Connected to MQTT broker ({})", S::VERSION);
                o.stats.mqtt_connected.store(1, Relaxed);
                // The broker lost (or never had) the session: subscribe to everything. It kept
                // it: only to what the routes gained since the session's record.
                let recorded = o.session.as_ref().map(|r| r.load());
                let plan = match recorded {
                    Some(recorded) => {
                        super::session::plan(session_present, recorded.as_deref(), &o.filters)
                    }
                    None if session_present => super::session::Plan::default(),
                    None => super::session::plan(false, None, &o.filters),
                };
                if !plan.unsubscribe.is_empty() || (session_present && !plan.subscribe.is_empty()) {
                    info!(subscribe = plan.subscribe.join(", "), unsubscribe = plan.unsubscribe.join(", "), "The broker kept the session, with other filters than the routes': changing them");
                }
                todo = plan.subscribe.into_iter().map(|f| (true, f)).collect();
                todo.extend(plan.unsubscribe.into_iter().map(|f| (false, f)));
                unacked = 0;
                if todo.is_empty() {
                    subscribed(&o);
                } else {
                    o.stats.mqtt_subscribed.store(0, Relaxed);
                }
            }
            Polled::Publish(inbound) => {
                if tx.send(*inbound).await.is_err() {
                    return;
                }
            }
            Polled::Subscribed { codes } => {
                unacked = unacked.saturating_sub(1);
                info!(filters = o.filters.join(", "), codes = %codes, "Subscribed");
                if unacked == 0 && todo.is_empty() {
                    subscribed(&o);
                }
            }
            Polled::Disconnecting => closing = true,
            Polled::Other => {}
            Polled::Failed(e) if closing => {
                debug!(error = %e, "MQTT connection closed after the bridge's disconnect");
                return;
            }
            Polled::Failed(e) => {
                if !pause_before_reconnect(e, &mut backoff, &tx, &o.stats).await {
                    return;
                }
            }
        }
    }
}

/// The session holds every filter of the routes: say so, and record it for the next start.
fn subscribed(o: &ExternalOptions) {
    o.stats.mqtt_subscribed.store(1, Relaxed);
    if let Some(r) = &o.session {
        if let Err(e) = r.save(&o.filters) {
            warn!(error = %e, "Cannot record the MQTT subscriptions in state_dir; after a restart with other routes, the broker's kept session may keep the old ones");
        }
    }
}

fn redacted(u: &Url) -> String {
    crate::config::redact_url(u.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_token_keeps_the_packet_id_and_qos_only() {
        use rumqttc::v5::mqttbytes::{v5::Publish as Publish5, QoS as QoS5};
        use rumqttc::QoS;
        let mut p = rumqttc::Publish::new("sensors/1/temperature", QoS::AtMostOnce, "21.5");
        p.pkid = 0;
        assert_eq!(AckToken::of_v4(&p), None, "QoS 0 takes no ack");
        for (qos, exactly_once) in [(QoS::AtLeastOnce, false), (QoS::ExactlyOnce, true)] {
            let mut p = rumqttc::Publish::new("sensors/1/temperature", qos, "21.5");
            p.pkid = 4242;
            let token = AckToken::of_v4(&p).unwrap();
            assert_eq!(
                token,
                AckToken {
                    pkid: 4242,
                    exactly_once
                }
            );
            // What the client's ack call reads of the publish it is given.
            let back = token.v4();
            assert_eq!((back.pkid, back.qos), (4242, qos));
            assert!(back.topic.is_empty() && back.payload.is_empty());
        }
        let p = Publish5::new("t", QoS5::AtMostOnce, "x", None);
        assert_eq!(AckToken::of_v5(&p), None);
        for (qos, exactly_once) in [(QoS5::AtLeastOnce, false), (QoS5::ExactlyOnce, true)] {
            let mut p = Publish5::new("sensors/1/temperature", qos, "21.5", None);
            p.pkid = 7;
            let token = AckToken::of_v5(&p).unwrap();
            assert_eq!(token.exactly_once, exactly_once);
            let back = token.v5();
            assert_eq!((back.pkid, back.qos), (7, qos));
            assert!(back.topic.is_empty() && back.payload.is_empty());
        }
    }

    #[test]
    fn advice_names_the_key_to_change() {
        let refused = rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::BadUserNamePassword,
        );
        assert!(advice(&refused.to_string())
            .unwrap()
            .contains("mqtt.password"));
        let v5 = rumqttc::v5::ConnectionError::ConnectionRefused(
            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword,
        );
        assert!(advice(&v5.to_string()).unwrap().contains("mqtt.password"));
        let unknown_ca = std::io::Error::other(tokio_rustls::rustls::Error::InvalidCertificate(
            tokio_rustls::rustls::CertificateError::UnknownIssuer,
        ));
        assert!(advice(&unknown_ca.to_string())
            .unwrap()
            .contains("mqtt.broker_ca"));
        assert_eq!(advice("connection refused (os error 111)"), None);
    }

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        let mut b = BACKOFF_MIN;
        for _ in 0..20 {
            let n = next_backoff(b);
            assert!(n >= BACKOFF_MIN && n <= BACKOFF_MAX);
            assert!(n <= b * 2);
            b = n;
        }
        assert!(b >= BACKOFF_MAX / 2);
    }
}
