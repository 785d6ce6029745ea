//! Where MQTT comes from, typed: the embedded broker or an external one, each with only its own
//! settings. The file keeps one flat `[mqtt]` table (the same keys, environment variables and
//! flags as ever); [`Config::broker`] reads it into a [`Broker`] and reports every problem of
//! it at once, keys set where they do not apply included.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{redact_url, Config, MqttConfig};

/// The MQTT side as the configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    Embedded(EmbeddedBroker),
    External(ExternalBroker),
}

/// The embedded broker (rumqttd): where sensors connect and what they must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBroker {
    /// Plaintext MQTT 3.1.1 listener (`mqtt.listen`), if any.
    pub listen: Option<SocketAddr>,
    /// Plaintext MQTT 5 listener (`mqtt.listen_v5`), if any.
    pub listen_v5: Option<SocketAddr>,
    /// TLS listener, MQTT 3.1.1 and 5 (`mqtt.tls_listen` and its files), if any.
    pub tls: Option<TlsListener>,
    /// Mosquitto password file (`mqtt.passwords`), if any.
    pub passwords: Option<String>,
    /// rumqttd configuration file (`mqtt.broker_config`); `None`: the built-in one.
    pub broker_config: Option<String>,
    /// The largest packet a client may send (`mqtt.max_packet_size`).
    pub max_packet_size: usize,
}

/// `mqtt.max_packet_size`'s bounds: room for a CONNECT with credentials and a will, and the
/// largest remaining length MQTT can encode.
pub const MAX_PACKET_SIZE_RANGE: std::ops::RangeInclusive<u64> = 1024..=268_435_455;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: String,
    pub key: String,
    /// CA that must have signed every client's certificate; `None`: none asked for.
    pub client_ca: Option<String>,
}

/// An external broker the bridge subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBroker {
    pub url: url::Url,
    /// `mqtt.username` and `mqtt.password`; `None`: those in the URL, if any.
    pub credentials: Option<(String, String)>,
    /// For `mqtts://` only.
    pub tls: Option<ClientTls>,
    pub client_id: String,
    pub qos: Qos,
    pub protocol: Protocol,
    pub keep_alive: Duration,
}

/// TLS towards an `mqtts://` broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// CA that signed the broker's certificate; `None`: the system's CAs.
    pub broker_ca: Option<String>,
    /// The bridge's certificate and key, for brokers that ask for one.
    pub client: Option<(String, String)>,
}

/// MQTT protocol version towards an external broker (`mqtt.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// Subscription QoS (`mqtt.qos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl Config {
    /// The MQTT side: an external broker when `mqtt.url` is set, else the embedded one. Every
    /// problem of `[mqtt]`, each naming its key.
    pub fn broker(&self) -> Result<Broker, Vec<String>> {
        let m = &self.mqtt;
        let mut errors = Vec::new();
        // Checked whichever broker is used: their defaults apply to both.
        let settings = external_settings(m, &mut errors);
        for (key, path) in [
            ("mqtt.tls_cert", &m.tls_cert),
            ("mqtt.tls_key", &m.tls_key),
            ("mqtt.tls_client_ca", &m.tls_client_ca),
            ("mqtt.passwords", &m.passwords),
            ("mqtt.broker_ca", &m.broker_ca),
            ("mqtt.client_cert", &m.client_cert),
            ("mqtt.client_key", &m.client_key),
        ] {
            // Whether their contents are usable is checked by `crate::mqtt::file_problems`,
            // which reads them the way the start does.
            if !path.is_empty() && std::fs::File::open(path).is_err() {
                errors.push(format!("{key}: {path} does not exist or is not readable"));
            }
        }
        let broker = if m.url.is_empty() {
            embedded(m, &mut errors).map(Broker::Embedded)
        } else {
            external(m, settings, &mut errors).map(Broker::External)
        };
        match broker {
            Some(b) if errors.is_empty() => Ok(b),
            _ => Err(errors),
        }
    }
}

/// The embedded broker's MQTT 5 listener, `None` when `mqtt.listen_v5` is empty. A bare
/// `:PORT` (the default, `:1884`) is that port on `mqtt.listen`'s host (0.0.0.0 when
/// `mqtt.listen` is empty), so that `--mqtt-listen 127.0.0.1:1883` does not leave an MQTT 5
/// port open to the network.
pub fn listen_v5_addr(m: &MqttConfig) -> Result<Option<SocketAddr>, String> {
    let value = &m.listen_v5;
    if value.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "mqtt.listen_v5: {value:?} is not an address like 0.0.0.0:1884, or :1884 for that port on mqtt.listen's host (empty turns it off)"
        )
    };
    match value.strip_prefix(':') {
        Some(port) => {
            let port: u16 = port.parse().map_err(|_| bad())?;
            let host = m
                .listen
                .parse::<SocketAddr>()
                .map_or(Ipv4Addr::UNSPECIFIED.into(), |a| a.ip());
            Ok(Some(SocketAddr::new(host, port)))
        }
        None => value.parse().map(Some).map_err(|_| bad()),
    }
}

fn embedded(m: &MqttConfig, errors: &mut Vec<String>) -> Option<EmbeddedBroker> {
    errors.extend(set_where_unused(
        &[
            ("mqtt.username", &m.username),
            ("mqtt.password", &m.password),
            ("mqtt.broker_ca", &m.broker_ca),
            ("mqtt.client_cert", &m.client_cert),
            ("mqtt.client_key", &m.client_key),
        ],
        "only used towards an external broker, and mqtt.url is empty (the embedded broker's keys are tls_listen, tls_cert, tls_key, tls_client_ca and passwords)",
    ));
    let listen = match optional(&m.listen).map(str::parse::<SocketAddr>) {
        None => Some(None),
        Some(Ok(a)) => Some(Some(a)),
        Some(Err(e)) => {
            errors.push(format!(
                "mqtt.listen: {:?} is not an address like 0.0.0.0:1883 ({e})",
                m.listen
            ));
            None
        }
    };
    let listen_v5 = listen_v5_addr(m).map_err(|e| errors.push(e)).ok();
    let tls = tls_listener(m, errors);
    let max_packet_size = MAX_PACKET_SIZE_RANGE.contains(&m.max_packet_size);
    if !max_packet_size {
        errors.push(format!(
            "mqtt.max_packet_size: {} is not between {} and {} bytes",
            m.max_packet_size,
            MAX_PACKET_SIZE_RANGE.start(),
            MAX_PACKET_SIZE_RANGE.end()
        ));
    }
    if let (Some(listen), Some(v5)) = (listen, listen_v5) {
        if !m.tls_client_ca.is_empty() && m.passwords.is_empty() {
            for (key, addr) in [("mqtt.listen", listen), ("mqtt.listen_v5", v5)] {
                if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                    errors.push(format!(
                        "mqtt.tls_client_ca: sensors without a certificate could still connect on the plaintext listener {key} ({addr}); bind it to 127.0.0.1, empty it, or set mqtt.passwords"
                    ));
                }
            }
        }
    }
    Some(EmbeddedBroker {
        listen: listen?,
        listen_v5: listen_v5?,
        tls: tls?,
        passwords: optional(&m.passwords).map(str::to_owned),
        broker_config: optional(&m.broker_config).map(str::to_owned),
        max_packet_size: max_packet_size.then_some(m.max_packet_size as usize)?,
    })
}

/// The TLS listener, `Some(None)` when there is none; `None` after an error.
fn tls_listener(m: &MqttConfig, errors: &mut Vec<String>) -> Option<Option<TlsListener>> {
    if m.tls_listen.is_empty() {
        errors.extend(set_where_unused(
            &[
                ("mqtt.tls_cert", &m.tls_cert),
                ("mqtt.tls_key", &m.tls_key),
                ("mqtt.tls_client_ca", &m.tls_client_ca),
            ],
            "set mqtt.tls_listen too, or the TLS listener stays off",
        ));
        if m.listen.is_empty() {
            errors.push(
                "mqtt.listen: empty, and no mqtt.tls_listen either: sensors could not connect"
                    .into(),
            );
        }
        return Some(None);
    }
    let listen = m.tls_listen.parse::<SocketAddr>().map_err(|_| {
        errors.push(format!(
            "mqtt.tls_listen: {:?} is not an address like 0.0.0.0:8883",
            m.tls_listen
        ))
    });
    if m.tls_cert.is_empty() || m.tls_key.is_empty() {
        errors.push("mqtt.tls_cert and mqtt.tls_key: both are needed for mqtt.tls_listen".into());
        return None;
    }
    Some(Some(TlsListener {
        listen: listen.ok()?,
        cert: m.tls_cert.clone(),
        key: m.tls_key.clone(),
        client_ca: optional(&m.tls_client_ca).map(str::to_owned),
    }))
}

/// `mqtt.qos`, `mqtt.protocol`, `mqtt.keep_alive` and `mqtt.client_id`.
fn external_settings(
    m: &MqttConfig,
    errors: &mut Vec<String>,
) -> Option<(Qos, Protocol, Duration, String)> {
    let qos = match m.qos {
        0 => Some(Qos::AtMostOnce),
        1 => Some(Qos::AtLeastOnce),
        2 => Some(Qos::ExactlyOnce),
        n => {
            errors.push(format!("mqtt.qos: {n} is not 0, 1 or 2"));
            None
        }
    };
    let protocol = match m.protocol.as_str() {
        "3.1.1" => Some(Protocol::V311),
        "5" => Some(Protocol::V5),
        other => {
            errors.push(format!(
                "mqtt.protocol: {other:?} is not \"3.1.1\" or \"5\""
            ));
            None
        }
    };
    let keep_alive = (m.keep_alive >= Duration::from_secs(5)).then_some(m.keep_alive);
    if keep_alive.is_none() {
        errors.push("mqtt.keep_alive: must be at least 5s".into());
    }
    let client_id = optional(&m.client_id).map(str::to_owned);
    if client_id.is_none() {
        errors.push("mqtt.client_id: must not be empty".into());
    }
    Some((qos?, protocol?, keep_alive?, client_id?))
}

fn external(
    m: &MqttConfig,
    settings: Option<(Qos, Protocol, Duration, String)>,
    errors: &mut Vec<String>,
) -> Option<ExternalBroker> {
    errors.extend(set_where_unused(
        &[
            ("mqtt.tls_listen", &m.tls_listen),
            ("mqtt.tls_cert", &m.tls_cert),
            ("mqtt.tls_key", &m.tls_key),
            ("mqtt.tls_client_ca", &m.tls_client_ca),
            ("mqtt.passwords", &m.passwords),
        ],
        "only used by the embedded broker, and mqtt.url names an external one (towards it: username, password, broker_ca, client_cert, client_key)",
    ));
    if m.max_packet_size != MqttConfig::default().max_packet_size {
        errors.push("mqtt.max_packet_size: only used by the embedded broker, and mqtt.url names an external one (its own configuration sets its limits)".into());
    }
    let url = broker_url(&m.url).map_err(|e| errors.push(e)).ok();
    // Unused towards an external broker, but its default applies: a bad value is still one.
    if let Err(e) = listen_v5_addr(m) {
        errors.push(e);
    }
    // As the URL parser reads it: the scheme is case-insensitive.
    let mqtts = m.url.to_ascii_lowercase().starts_with("mqtts://");
    if !mqtts {
        errors.extend(set_where_unused(
            &[
                ("mqtt.broker_ca", &m.broker_ca),
                ("mqtt.client_cert", &m.client_cert),
                ("mqtt.client_key", &m.client_key),
            ],
            "TLS settings, but mqtt.url is not mqtts://",
        ));
    }
    if m.client_cert.is_empty() != m.client_key.is_empty() {
        errors.push("mqtt.client_cert and mqtt.client_key: give both or neither".into());
    }
    if !m.password.is_empty() && m.username.is_empty() {
        errors.push("mqtt.password: set mqtt.username too".into());
    }
    let (qos, protocol, keep_alive, client_id) = settings?;
    Some(ExternalBroker {
        url: url?,
        credentials: optional(&m.username).map(|u| (u.to_owned(), m.password.clone())),
        tls: mqtts.then(|| ClientTls {
            broker_ca: optional(&m.broker_ca).map(str::to_owned),
            client: optional(&m.client_cert)
                .zip(optional(&m.client_key))
                .map(|(c, k)| (c.to_owned(), k.to_owned())),
        }),
        client_id,
        qos,
        protocol,
        keep_alive,
    })
}

fn broker_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw)
        .map_err(|e| format!("mqtt.url: {} is not a URL ({e})", redact_url(raw)))?;
    if !["mqtt", "mqtts"].contains(&url.scheme()) {
        return Err(format!(
            "mqtt.url: scheme {:?} is not mqtt or mqtts",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("mqtt.url: names no host".into());
    }
    Ok(url)
}

/// An empty setting means "not given".
fn optional(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// The keys among `keys` that are set, as one problem saying `why` they do not apply.
pub(super) fn set_where_unused(keys: &[(&str, &String)], why: &str) -> Option<String> {
    let set: Vec<&str> = keys
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    (!set.is_empty()).then(|| format!("{}: {why}", set.join(", ")))
}
