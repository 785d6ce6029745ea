//! MQTT intake: the embedded broker (default) or an external one, behind one interface that
//! yields [`Inbound`] publishes.

pub mod embedded;
pub mod external;
pub mod gate;
pub mod priority;
pub mod tls;
pub mod users;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use bytestring::ByteString;

use crate::config::{optional, Config, MqttSource as SourceConfig};
use crate::stats::Stats;
use crate::tasks::Tasks;
use embedded::{Embedded, Listeners, Security};
use external::{External, ExternalOptions, Protocol};

/// One publish received on the subscription.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// UTF-8, sharing the buffer the publish was read into.
    pub topic: ByteString,
    pub payload: Bytes,
    /// MQTT 5 user properties, in order; empty for MQTT 3.1.1.
    pub user_properties: Vec<(String, String)>,
    /// Set for external QoS 1 publishes: hand back to [`MqttSource::ack`] once the reading is
    /// safely handed on, so the broker redelivers it if the bridge dies before.
    pub ack: Option<external::AckToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("embedded MQTT broker: {0}")]
    Embedded(String),
    #[error("MQTT broker configuration {path}: {error}")]
    BrokerConfig { path: String, error: String },
    #[error("external MQTT broker: {0}")]
    External(String),
}

/// Where publishes come from.
pub enum MqttSource {
    Embedded(embedded::Embedded),
    External(external::External),
}

impl MqttSource {
    /// The next publish. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next(&mut self) -> Result<Inbound, MqttError> {
        match self {
            MqttSource::Embedded(e) => e.next().await,
            MqttSource::External(e) => e.next().await,
        }
    }

    /// A publish that can be had without waiting, if any: lets the main loop take a run of
    /// publishes per turn instead of polling its timers between each two.
    pub fn try_next(&mut self) -> Option<Inbound> {
        match self {
            MqttSource::Embedded(e) => e.try_next(),
            MqttSource::External(e) => e.try_next(),
        }
    }

    /// At shutdown: sends the acks still queued, and leaves an external broker cleanly (the
    /// persistent session keeps what arrives meanwhile).
    pub async fn close(&mut self) {
        if let MqttSource::External(e) = self {
            e.close().await;
        }
    }

    /// Acknowledges an external QoS 1 publish.
    pub async fn ack(&mut self, token: external::AckToken) {
        if let MqttSource::External(e) = self {
            e.ack(token).await;
        }
    }
}

fn optional_addr(key: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .with_context(|| format!("{key}: {value:?} is not an address like 0.0.0.0:1883"))
}

/// Reads the password file and the TLS files the way the start does, so that check-config (the
/// systemd unit's ExecStartPre) refuses a bad file instead of the start failing over and over.
/// Files that cannot be opened are left to [`Config::validate`], which names them.
pub fn file_problems(config: &Config) -> Vec<String> {
    let m = &config.mqtt;
    let paths = [
        &m.tls_cert,
        &m.tls_key,
        &m.tls_client_ca,
        &m.passwords,
        &m.broker_ca,
        &m.client_cert,
        &m.client_key,
    ];
    if paths
        .iter()
        .any(|p| !p.is_empty() && std::fs::File::open(p).is_err())
    {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if m.url.is_empty() {
        if !m.passwords.is_empty() {
            if let Err(e) = users::Users::load(Path::new(&m.passwords)) {
                errors.push(format!("mqtt.passwords: {e}"));
            }
        }
        if !m.tls_listen.is_empty() && !m.tls_cert.is_empty() && !m.tls_key.is_empty() {
            let ca = optional(&m.tls_client_ca);
            if let Err(e) = tls::server_config(&m.tls_cert, &m.tls_key, ca) {
                errors.push(e);
            }
        }
    } else if m.url.starts_with("mqtts://") && m.client_cert.is_empty() == m.client_key.is_empty() {
        let client = optional(&m.client_cert).zip(optional(&m.client_key));
        if let Err(e) = tls::client_config(optional(&m.broker_ca), client) {
            errors.push(e);
        }
    }
    errors
}

/// Starts the MQTT side the configuration asks for: certificates and password files are read
/// here, so a bad one stops the start with an error naming its key. With the embedded broker,
/// returns once it accepts connections.
pub async fn start(
    config: &Config,
    stats: &Arc<Stats>,
    tasks: &Tasks,
) -> anyhow::Result<MqttSource> {
    let m = &config.mqtt;
    Ok(match config.mqtt_source().map_err(anyhow::Error::msg)? {
        SourceConfig::Embedded(v4) => {
            let listeners = Listeners {
                v4,
                v5: config.listen_v5_addr().map_err(anyhow::Error::msg)?,
                tls: optional_addr("mqtt.tls_listen", &m.tls_listen)?,
            };
            let security = Security {
                tls: match listeners.tls {
                    Some(_) => Some(
                        tls::server_config(&m.tls_cert, &m.tls_key, optional(&m.tls_client_ca))
                            .map_err(anyhow::Error::msg)?,
                    ),
                    None => None,
                },
                users: match optional(&m.passwords) {
                    Some(path) => Some(
                        users::Users::load(Path::new(path))
                            .map(Arc::new)
                            .map_err(|e| anyhow::anyhow!("mqtt.passwords: {e}"))?,
                    ),
                    None => None,
                },
            };
            let file = optional(&m.broker_config).map(Path::new);
            MqttSource::Embedded(
                Embedded::start(file, &listeners, security, &m.topic, stats.clone(), tasks).await?,
            )
        }
        SourceConfig::External(url) => {
            let tls = if url.scheme() == "mqtts" {
                let client = optional(&m.client_cert).zip(optional(&m.client_key));
                Some(
                    tls::client_config(optional(&m.broker_ca), client)
                        .map_err(anyhow::Error::msg)?,
                )
            } else {
                None
            };
            MqttSource::External(External::start(
                ExternalOptions {
                    url,
                    credentials: optional(&m.username).map(|u| (u.to_owned(), m.password.clone())),
                    tls,
                    client_id: m.client_id.clone(),
                    filter: m.topic.clone(),
                    qos: m.qos,
                    protocol: if m.protocol == "5" {
                        Protocol::V5
                    } else {
                        Protocol::V311
                    },
                    keep_alive: m.keep_alive,
                    stats: stats.clone(),
                },
                tasks,
            )?)
        }
    })
}
