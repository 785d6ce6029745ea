//! The embedded MQTT broker (rumqttd), read through an in-process link.
//!
//! The broker runs on its own threads; the bridge subscribes through a local link, so readings
//! cross no socket between broker and bridge. Sensors reach the broker through the
//! [`super::gate`] and one loopback hop. When the link falls behind,
//! rumqttd holds messages in its commit log and sends `Unschedule`; the link then asks for more
//! with `wake()`.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rumqttd::local::{LinkRx, LinkTx};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytestring::ByteString;
use futures_util::FutureExt;
use rumqttd::{Broker, Notification, ServerSettings};
use tokio_rustls::rustls::ServerConfig;
use tracing::{error, info, warn};

use crate::stats::Stats;
use crate::tasks::Tasks;

use super::gate::Gate;
use super::priority::BROKER_NICE_INCREMENT;
use super::users::Users;
use super::{Inbound, MqttError};

/// The documented default broker configuration, compiled in.
pub const DEFAULT_BROKER_CONFIG: &str = include_str!("../../../broker-config/rumqttd.toml");

/// Where sensors connect. Each of these is served by the [`super::gate`], which forwards
/// admitted clients to the broker's own loopback listeners, and takes MQTT 3.1.1 and 5 alike.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// Plaintext (`mqtt.listen`); `None` turns it off.
    pub v4: Option<SocketAddr>,
    /// Plaintext too (`mqtt.listen_v5`, kept for the clients configured with it); `None` turns
    /// it off.
    pub v5: Option<SocketAddr>,
    /// TLS; needs [`Security::tls`].
    pub tls: Option<SocketAddr>,
    /// The largest packet a client may send, as the remaining length after its fixed header
    /// (`mqtt.max_packet_size`): enforced by the gate and by the broker.
    pub max_packet: usize,
}

/// What sensors must present.
#[derive(Default)]
pub struct Security {
    /// The TLS listener's server configuration (certificate, and client CA for mutual TLS).
    pub tls: Option<Arc<ServerConfig>>,
    /// Username/password authentication on every listener.
    pub users: Option<Arc<Users>>,
}

pub struct Embedded {
    /// Keeps the link registered with the router; publishes the bridge's own messages.
    tx: LinkTx,
    rx: LinkRx,
    pending: VecDeque<Inbound>,
    /// Commit-log offset of the last publish forwarded to the link. rumqttd keeps a bounded
    /// log per filter; when the bridge falls further behind than the log holds, the oldest
    /// publishes are deleted and the link's cursor jumps. The gap is counted, never silent.
    last_offset: Option<u64>,
    stats: Arc<Stats>,
    drop_warn: Option<std::time::Instant>,
    /// The router paused this link (`Unschedule`) and has not yet been asked to resume. Kept
    /// as a flag rather than awaited where the notification is read: the main loop's select!
    /// drops `next` at any await, and a wake lost that way left the link paused for good (no
    /// reading forwarded again, found under flood).
    wake_owed: bool,
}

/// The listeners rumqttd binds itself, each with the setting that names it (for errors): what
/// the readiness wait probes.
type OwnListeners = Vec<(SocketAddr, &'static str)>;

/// How long rumqttd may take to open its listeners once started.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

fn in_use(key: &str, addr: SocketAddr, e: std::io::Error) -> MqttError {
    MqttError::Embedded(format!(
        "cannot listen on {addr} ({key}): {e}; is another MQTT broker running? Change {key} (empty turns that listener off), or use mqtt.url to read from that broker instead"
    ))
}

/// Binds the listener configured by `key`, for the gate to serve; the error names that key.
fn bind(key: &str, addr: SocketAddr) -> Result<std::net::TcpListener, MqttError> {
    std::net::TcpListener::bind(addr).map_err(|e| in_use(key, addr, e))
}

/// Where to connect to reach a listener bound to `addr`: its own address, or loopback for a
/// wildcard one. For `[::]`, IPv6 loopback and then IPv4's: a dual-stack listener takes both,
/// and a container without IPv6 networking has no `::1`.
fn reachable(addr: SocketAddr) -> Vec<SocketAddr> {
    let port = addr.port();
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => vec![(Ipv4Addr::LOCALHOST, port).into()],
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            (Ipv6Addr::LOCALHOST, port).into(),
            (Ipv4Addr::LOCALHOST, port).into(),
        ],
        _ => vec![addr],
    }
}

/// Waits until rumqttd accepts TCP connections on every one of `listeners`, so that the bridge
/// reports itself started (and a sensor's first connection succeeds) only once the broker is
/// there. Fails if the broker's thread ended (rumqttd logged why) or after [`LISTEN_DEADLINE`].
async fn wait_accepting(
    listeners: &[(SocketAddr, &str)],
    broker: &std::thread::JoinHandle<()>,
) -> Result<(), MqttError> {
    let deadline = tokio::time::Instant::now() + LISTEN_DEADLINE;
    for &(addr, key) in listeners {
        let targets = reachable(addr);
        loop {
            let attempt =
                tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&targets[..]));
            match attempt.await {
                Ok(Ok(_probe)) => break,
                Ok(Err(_)) if broker.is_finished() => {
                    return Err(MqttError::Embedded(format!(
                        "stopped while opening {addr} ({key}); its ERROR line above says why"
                    )))
                }
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    // rumqttd gives no signal when its listener is up: poll, briefly.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Err(e)) => {
                    return Err(MqttError::Embedded(format!(
                        "no connection accepted on {addr} ({key}) within {LISTEN_DEADLINE:?} of the start: {e}"
                    )))
                }
                Err(_) => {
                    return Err(MqttError::Embedded(format!(
                        "no connection accepted on {addr} ({key}) within {LISTEN_DEADLINE:?} of the start"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Two loopback ports free right now, for the listeners only the gate connects to. Both probe
/// sockets are held until both ports are known, so the two differ; rumqttd binds them a moment
/// later on its own thread.
fn loopback_ports() -> Result<(SocketAddr, SocketAddr), MqttError> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| MqttError::Embedded(format!("cannot bind a loopback port: {e}")))
    };
    let (a, b) = (bind()?, bind()?);
    let addr = |l: &std::net::TcpListener| {
        l.local_addr()
            .map_err(|e| MqttError::Embedded(e.to_string()))
    };
    Ok((addr(&a)?, addr(&b)?))
}

impl Embedded {
    /// Starts the broker, subscribes the bridge's link to `filters`, and returns once the broker
    /// accepts connections on every listener. The gate, for TLS or passwords, runs on the
    /// caller's tokio runtime.
    pub async fn start(
        config_file: Option<&Path>,
        listeners: &Listeners,
        security: Security,
        filters: &[String],
        stats: Arc<Stats>,
        tasks: &Tasks,
    ) -> Result<Self, MqttError> {
        let mut config = load_config(config_file)?;
        if listeners.tls.is_some() && security.tls.is_none() {
            return Err(MqttError::Embedded(
                "a TLS listener needs a certificate (mqtt.tls_cert, mqtt.tls_key)".into(),
            ));
        }
        // What rumqttd itself binds, for the readiness wait; and the gate in front of it.
        let (rumqttd_listeners, gate) = behind_gate(&mut config, listeners, security, &stats)?;
        let broker = Broker::new(config);
        let (mut tx, rx) = broker
            .link("edge-bridge")
            .map_err(|e| MqttError::Embedded(format!("cannot link to the broker: {e}")))?;
        let broker_thread = spawn_broker(broker)?;
        for filter in filters {
            tx.subscribe(filter.as_str())
                .map_err(|e| MqttError::Embedded(format!("cannot subscribe to {filter}: {e}")))?;
        }
        wait_accepting(&rumqttd_listeners, &broker_thread).await?;
        gate.open(tasks);
        info!(v4 = ?listeners.v4, v5 = ?listeners.v5, tls = ?listeners.tls, filters = filters.join(", "), "Embedded MQTT broker listening");
        // The in-process link is connected and subscribed for as long as the process runs.
        stats.mqtt_connected.store(1, Relaxed);
        stats.mqtt_subscribed.store(1, Relaxed);
        Ok(Self {
            tx,
            rx,
            pending: VecDeque::new(),
            last_offset: None,
            stats,
            drop_warn: None,
            wake_owed: false,
        })
    }

    pub async fn next(&mut self) -> Result<Inbound, MqttError> {
        loop {
            // Resume the router before working through what it sent: it then refills the
            // link's buffer while the bridge is busy with the batch in hand.
            if self.wake_owed {
                self.rx
                    .wake()
                    .await
                    .map_err(|e| MqttError::Embedded(e.to_string()))?;
                self.wake_owed = false;
            }
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            let first = self.rx.next().await;
            self.take(first)?;
            // Read ahead whatever the router has already handed over. Its pause
            // (`Unschedule`) comes last in a full batch; seen only when the bridge reached the
            // end of that batch, it left the router idle while the bridge worked, and the two
            // took turns instead of overlapping. Dropping the link's `next` when it is not
            // ready loses nothing: it takes a batch only in the poll that returns it.
            while self.pending.len() < READ_AHEAD {
                match self.rx.next().now_or_never() {
                    Some(n) => self.take(n)?,
                    None => break,
                }
            }
        }
    }

    /// Publishes `payload` on `topic` at QoS 0 without waiting; false when the link's queue is
    /// full or the router is gone (the message is not sent).
    pub fn try_publish(&mut self, topic: &str, payload: Vec<u8>) -> bool {
        self.tx.try_publish(topic.to_owned(), payload).is_ok()
    }

    /// Publishes wait: read ahead, or held by the router, which paused the link because its
    /// buffer filled (resumed by the next [`Self::next`]).
    pub fn backlogged(&self) -> bool {
        self.wake_owed || !self.pending.is_empty()
    }

    /// A publish already read ahead, if there is one, without waiting. None while the router
    /// waits to be resumed: [`Self::next`] does that first.
    pub fn try_next(&mut self) -> Option<Inbound> {
        if self.wake_owed {
            return None;
        }
        self.pending.pop_front()
    }

    /// Queues a forwarded publish, or notes a pause.
    fn take(
        &mut self,
        notification: Result<Option<Notification>, rumqttd::local::LinkError>,
    ) -> Result<(), MqttError> {
        let notification = notification
            .map_err(|e| MqttError::Embedded(format!("link to the broker broke: {e}")))?;
        match notification {
            Some(Notification::Forward(f)) => {
                if let Some((_, offset)) = f.cursor {
                    self.note_offset(offset);
                }
                let topic = match ByteString::try_from(f.publish.topic) {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(error = %e, "Publish with a topic that is not UTF-8 ignored");
                        return Ok(());
                    }
                };
                let user_properties = f.properties.map(|p| p.user_properties).unwrap_or_default();
                self.pending.push_back(Inbound {
                    topic,
                    payload: f.publish.payload,
                    user_properties,
                    ack: None,
                });
            }
            // The router paused this link because its buffer filled; ask for more.
            Some(Notification::Unschedule) => self.wake_owed = true,
            Some(_) | None => {}
        }
        Ok(())
    }
}

/// The broker configuration's first `[v4.*]` and `[v5.*]` servers, taken out of it to be
/// placed; the console and exporter go too: they would open ports the operator did not ask
/// for.
fn take_servers(
    config: &mut rumqttd::Config,
) -> Result<(ServerSettings, Option<ServerSettings>), MqttError> {
    let v4 = config
        .v4
        .take()
        .and_then(|m| m.into_values().next())
        .ok_or_else(|| {
            MqttError::Embedded("the broker configuration has no [v4.*] server".into())
        })?;
    let v5 = config.v5.take().and_then(|m| m.into_values().next());
    config.console = None;
    config.prometheus = None;
    Ok((v4, v5))
}

/// The gate, its public listeners bound but not yet accepting: it opens once rumqttd accepts
/// on its loopback listeners, so that a sensor admitted by the gate always has a broker to be
/// forwarded to. (Sensors connecting meanwhile wait in the listeners' backlog.)
struct GateOpening {
    gate: Arc<Gate>,
    listeners: Vec<(tokio::net::TcpListener, Option<Arc<ServerConfig>>)>,
}

impl GateOpening {
    fn open(self, tasks: &Tasks) {
        for (listener, tls) in self.listeners {
            self.gate.spawn(listener, tls, tasks);
        }
    }
}

/// The gate binds the public listeners and faces the sensors; rumqttd listens on loopback only.
/// Returns rumqttd's listeners, and the gate to open once they accept. The public listeners
/// listen from here on: a sensor that connects before the gate opens waits in their backlog
/// and is served, never refused.
fn behind_gate(
    config: &mut rumqttd::Config,
    listeners: &Listeners,
    security: Security,
    stats: &Arc<Stats>,
) -> Result<(OwnListeners, GateOpening), MqttError> {
    let (mut v4, v5) = take_servers(config)?;
    if listeners.v4.is_none() && listeners.v5.is_none() && listeners.tls.is_none() {
        return Err(MqttError::Embedded(
            "no listener: set mqtt.listen or mqtt.tls_listen".into(),
        ));
    }
    let public: Vec<(SocketAddr, bool, &str)> = [
        (listeners.v4, false, "mqtt.listen"),
        (listeners.v5, false, "mqtt.listen_v5"),
        (listeners.tls, true, "mqtt.tls_listen"),
    ]
    .into_iter()
    .filter_map(|(a, tls, key)| a.map(|a| (a, tls, key)))
    .collect();
    let bound = public
        .iter()
        .map(|(a, _, key)| bind(key, *a))
        .collect::<Result<Vec<_>, _>>()?;
    let (inner_v4, inner_v5) = loopback_ports()?;
    let mut inner5 = v5.unwrap_or_else(|| v4.clone());
    v4.listen = inner_v4;
    inner5.listen = inner_v5;
    for server in [&mut v4, &mut inner5] {
        server.connections.max_payload_size = listeners.max_packet;
    }
    if let Some(users) = &security.users {
        // The loopback listeners check passwords too: local processes reach them without
        // passing the gate.
        for server in [&mut v4, &mut inner5] {
            let users = users.clone();
            server.set_auth_handler(move |_client, user: String, pass: String| {
                std::future::ready(users.verify(&user, pass.as_bytes()))
            });
        }
        for (addr, tls, key) in &public {
            if !tls && !addr.ip().is_loopback() {
                warn!(%addr, "Passwords cross the network in clear on this plaintext listener; use mqtt.tls_listen and bind {key} to 127.0.0.1, or leave it empty");
            }
        }
    }
    config.v4 = Some([("gate-v4".to_owned(), v4)].into());
    config.v5 = Some([("gate-v5".to_owned(), inner5)].into());
    let gate = Gate::new(
        security.users,
        inner_v4,
        inner_v5,
        listeners.max_packet,
        stats.clone(),
    );
    let listening = bound
        .into_iter()
        .zip(&public)
        .map(|(listener, (addr, tls, _))| {
            listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
                .map(|l| (l, tls.then(|| security.tls.clone()).flatten()))
                .map_err(|e| MqttError::Embedded(format!("listener {addr}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if security.tls.is_some() || gate.users.is_some() {
        info!(plaintext_v4 = ?listeners.v4, plaintext_v5 = ?listeners.v5, tls = ?listeners.tls, passwords = gate.users.as_ref().map_or(0, |u| u.len()), "Embedded MQTT broker secured");
    }
    let inner = vec![
        (inner_v4, "the gate's loopback MQTT 3.1.1 listener"),
        (inner_v5, "the gate's loopback MQTT 5 listener"),
    ];
    Ok((
        inner,
        GateOpening {
            gate,
            listeners: listening,
        },
    ))
}

/// Runs the broker on a thread of its own (rumqttd's `start` blocks).
fn spawn_broker(mut broker: Broker) -> Result<std::thread::JoinHandle<()>, MqttError> {
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // rumqttd spawns its network threads from this one: they inherit the lower
            // priority, so under a CPU-bound flood the sensors are slowed before the pipeline
            // is starved (see `priority`). Its router thread already runs.
            if let Err(e) = super::priority::lower_this_thread(BROKER_NICE_INCREMENT) {
                warn!(error = %e, "Cannot lower the embedded broker's network threads' CPU priority; under a flood they compete with the pipeline");
            }
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "Embedded MQTT broker stopped");
            }
        })
        .map_err(|e| MqttError::Embedded(e.to_string()))
}

/// Publishes read ahead from the link at most: about five of the router's batches.
const READ_AHEAD: usize = 1024;

impl Embedded {
    fn note_offset(&mut self, offset: u64) {
        let expected = self.last_offset.map_or(offset, |o| o + 1);
        self.last_offset = Some(offset);
        if offset <= expected {
            return;
        }
        let lost = offset - expected;
        self.stats.broker_dropped.fetch_add(lost, Relaxed);
        let now = std::time::Instant::now();
        if self
            .drop_warn
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10))
        {
            self.drop_warn = Some(now);
            error!(
                lost,
                total = self.stats.broker_dropped.load(Relaxed),
                "The embedded broker dropped readings the bridge could not take in time; raise router.max_segment_count in the broker configuration (mqtt.broker_config; about 4 MiB of memory per MiB of log) or reduce the inflow"
            );
        }
    }
}

fn load_config(file: Option<&Path>) -> Result<rumqttd::Config, MqttError> {
    let (name, text) = match file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| MqttError::BrokerConfig {
                path: p.display().to_string(),
                error: e.to_string(),
            })?,
        ),
        None => ("(built in)".to_owned(), DEFAULT_BROKER_CONFIG.to_owned()),
    };
    toml::from_str(&text).map_err(|e| MqttError::BrokerConfig {
        path: name,
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_broker_config_parses() {
        let c = load_config(None).unwrap();
        assert!(c.v4.is_some() && c.v5.is_some());
        assert!(c.console.is_none() && c.prometheus.is_none());
    }
}
