//! The embedded MQTT broker (rumqttd), read through an in-process link.
//!
//! The broker runs on its own threads; the bridge subscribes through a local link, so readings
//! never cross a socket twice. When the link falls behind, rumqttd holds messages in its commit
//! log and sends `Unschedule`; the link then asks for more with `wake()`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;

use rumqttd::local::{LinkRx, LinkTx};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rumqttd::{Broker, Notification};
use tracing::{error, info, warn};

use crate::stats::Stats;

use super::{Inbound, MqttError};

/// The documented default broker configuration, compiled in.
pub const DEFAULT_BROKER_CONFIG: &str = include_str!("../../../broker-config/rumqttd.toml");

/// Listener addresses that replace the ones in the broker configuration.
#[derive(Debug, Clone)]
pub struct Listeners {
    /// MQTT 3.1.1.
    pub v4: SocketAddr,
    /// MQTT 5; `None` turns the v5 listener off.
    pub v5: Option<SocketAddr>,
}

pub struct Embedded {
    // Kept so the link stays registered with the router.
    _tx: LinkTx,
    rx: LinkRx,
    pending: VecDeque<Inbound>,
    /// Commit-log offset of the last publish forwarded to the link. rumqttd keeps a bounded
    /// log per filter; when the bridge falls further behind than the log holds, the oldest
    /// publishes are deleted and the link's cursor jumps. The gap is counted, never silent.
    last_offset: Option<u64>,
    stats: Arc<Stats>,
    drop_warn: Option<std::time::Instant>,
}

impl Embedded {
    /// Starts the broker and subscribes the bridge's link to `filter`.
    pub fn start(
        config_file: Option<&Path>,
        listeners: &Listeners,
        filter: &str,
        stats: Arc<Stats>,
    ) -> Result<Self, MqttError> {
        let mut config = load_config(config_file)?;
        let v4 = config
            .v4
            .get_or_insert_with(Default::default)
            .values_mut()
            .next()
            .ok_or_else(|| {
                MqttError::Embedded("the broker configuration has no [v4.*] server".into())
            })?;
        v4.listen = listeners.v4;
        match listeners.v5 {
            Some(addr) => {
                if let Some(v5) = config.v5.as_mut().and_then(|m| m.values_mut().next()) {
                    v5.listen = addr;
                }
            }
            None => config.v5 = None,
        }
        // The console and exporter would open ports the operator did not ask for.
        config.console = None;
        config.prometheus = None;

        // Bind-check first: rumqttd logs a failed bind on its own thread and carries on.
        for addr in std::iter::once(listeners.v4).chain(listeners.v5) {
            std::net::TcpListener::bind(addr).map_err(|e| {
                MqttError::Embedded(format!(
                    "cannot listen on {addr}: {e}; is another MQTT broker running? Set mqtt.listen, or use mqtt.url to read from that broker instead"
                ))
            })?;
        }

        let mut broker = Broker::new(config);
        let (mut tx, rx) = broker
            .link("edge-bridge")
            .map_err(|e| MqttError::Embedded(format!("cannot link to the broker: {e}")))?;
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "Embedded MQTT broker stopped");
                }
            })
            .map_err(|e| MqttError::Embedded(e.to_string()))?;
        tx.subscribe(filter)
            .map_err(|e| MqttError::Embedded(format!("cannot subscribe to {filter}: {e}")))?;
        info!(v4 = %listeners.v4, v5 = ?listeners.v5, filter, "Embedded MQTT broker listening");
        // The in-process link is connected and subscribed for as long as the process runs.
        stats.mqtt_connected.store(1, Relaxed);
        stats.mqtt_subscribed.store(1, Relaxed);
        Ok(Self {
            _tx: tx,
            rx,
            pending: VecDeque::new(),
            last_offset: None,
            stats,
            drop_warn: None,
        })
    }

    pub async fn next(&mut self) -> Result<Inbound, MqttError> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Ok(m);
            }
            let notification = self
                .rx
                .next()
                .await
                .map_err(|e| MqttError::Embedded(format!("link to the broker broke: {e}")))?;
            match notification {
                Some(Notification::Forward(f)) => {
                    if let Some((_, offset)) = f.cursor {
                        self.note_offset(offset);
                    }
                    let topic = match String::from_utf8(f.publish.topic.to_vec()) {
                        Ok(t) => t,
                        Err(e) => {
                            warn!(error = %e, "Publish with a topic that is not UTF-8 ignored");
                            continue;
                        }
                    };
                    let user_properties =
                        f.properties.map(|p| p.user_properties).unwrap_or_default();
                    self.pending.push_back(Inbound {
                        topic,
                        payload: f.publish.payload,
                        user_properties,
                        ack: None,
                    });
                }
                // The router paused this link because its buffer filled; ask for more.
                Some(Notification::Unschedule) => self
                    .rx
                    .wake()
                    .await
                    .map_err(|e| MqttError::Embedded(e.to_string()))?,
                Some(_) | None => {}
            }
        }
    }
}

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
                "The embedded broker dropped readings the bridge could not take in time; raise router.max_segment_size in the broker configuration or reduce the inflow"
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
