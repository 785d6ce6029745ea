//! MQTT intake: the embedded broker (default) or an external one, behind one interface that
//! yields [`Inbound`] publishes.

pub mod embedded;
pub mod external;

use bytes::Bytes;

/// One publish received on the subscription.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
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
