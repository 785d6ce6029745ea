//! MQTT intake: the embedded broker (default) or an external one, behind one interface that
//! yields [`Inbound`] publishes.

pub mod embedded;
pub mod external;
pub mod gate;
pub mod priority;
pub mod relay;
pub mod scan;
pub mod session;
pub mod tls;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::config::{Broker, ClientTls, Config, TlsListener};
use crate::stats::Stats;
use crate::tasks::Tasks;
use embedded::{Embedded, Listeners, Security};
use external::{External, ExternalOptions};

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

    /// Publishes wait to be read: the intake is behind. (False does not promise that none
    /// arrives the next moment; true means the bridge is not caught up.)
    pub fn backlogged(&self) -> bool {
        match self {
            MqttSource::Embedded(e) => e.backlogged(),
            MqttSource::External(e) => e.backlogged(),
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

    /// Publishes the bridge's own message (a Sparkplug B rebirth request) at QoS 0, without
    /// waiting; false if it could not be queued.
    pub fn try_publish(&mut self, topic: &str, payload: Vec<u8>) -> bool {
        match self {
            MqttSource::Embedded(e) => e.try_publish(topic, payload),
            MqttSource::External(e) => e.try_publish(topic, payload),
        }
    }

    /// At shutdown: sends the acks still queued, and leaves an external broker cleanly (the
    /// persistent session keeps what arrives meanwhile).
    pub async fn close(&mut self) {
        if let MqttSource::External(e) = self {
            e.close().await;
        }
    }

    /// Acks released but not yet written to the external broker.
    pub fn acks_unsent(&self) -> usize {
        match self {
            MqttSource::External(e) => e.acks_unsent(),
            MqttSource::Embedded(_) => 0,
        }
    }

    /// Acknowledges an external QoS 1 publish.
    pub async fn ack(&mut self, token: external::AckToken) {
        if let MqttSource::External(e) = self {
            e.ack(token).await;
        }
    }
}

/// The embedded broker's TLS listener's server configuration, from its files.
fn tls_server(tls: &TlsListener) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())
}

/// The TLS client configuration towards an `mqtts://` broker, from its files.
fn tls_client(tls: &ClientTls) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, String> {
    let client = tls.client.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
    tls::client_config(tls.broker_ca.as_deref(), client)
}

/// Reads the password file and the TLS files the way the start does, so that check-config (the
/// systemd unit's ExecStartPre) refuses a bad file instead of the start failing over and over.
/// A configuration with other problems is left to [`Config::validate`], which names them.
pub fn file_problems(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    match config.broker() {
        Ok(Broker::Embedded(e)) => {
            if let Some(path) = &e.passwords {
                if let Err(why) = users::Users::load(Path::new(path)) {
                    errors.push(format!("mqtt.passwords: {why}"));
                }
            }
            if let Some(Err(why)) = e.tls.as_ref().map(tls_server) {
                errors.push(why);
            }
        }
        Ok(Broker::External(x)) => {
            if let Some(Err(why)) = x.tls.as_ref().map(tls_client) {
                errors.push(why);
            }
        }
        Err(_) => {}
    }
    errors
}

/// Starts the MQTT side the configuration asks for: certificates and password files are read
/// here, so a bad one stops the start with an error naming its key. With the embedded broker,
/// returns once it accepts connections. `filters` are the routes' topic filters.
pub async fn start(
    config: &Config,
    filters: &[String],
    stats: &Arc<Stats>,
    tasks: &Tasks,
) -> anyhow::Result<MqttSource> {
    let broker = config
        .broker()
        .map_err(|errors| anyhow::anyhow!(errors.join("; ")))?;
    Ok(match broker {
        Broker::Embedded(e) => {
            let listeners = Listeners {
                v4: e.listen,
                v5: e.listen_v5,
                tls: e.tls.as_ref().map(|t| t.listen),
                max_packet: e.max_packet_size,
            };
            let security = Security {
                tls: e
                    .tls
                    .as_ref()
                    .map(tls_server)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                users: e
                    .passwords
                    .as_deref()
                    .map(|path| users::Users::load(Path::new(path)).map(Arc::new))
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("mqtt.passwords: {e}"))?,
            };
            let file = e.broker_config.as_deref().map(Path::new);
            MqttSource::Embedded(
                Embedded::start(file, &listeners, security, filters, stats.clone(), tasks).await?,
            )
        }
        Broker::External(x) => {
            let tls = x
                .tls
                .as_ref()
                .map(tls_client)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            MqttSource::External(External::start(
                ExternalOptions {
                    session: Some(session::Record::new(
                        &config.state_dir,
                        &x.client_id,
                        &crate::config::redact_url(x.url.as_str()),
                    )),
                    broker: x,
                    tls,
                    filters: filters.to_vec(),
                    stats: stats.clone(),
                },
                tasks,
            )?)
        }
    })
}
