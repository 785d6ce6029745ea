//! Process lifecycle for `edge-bridge run`: logging, the async runtime, signals, exit status.

use std::process::ExitCode;
use std::sync::Arc;

use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use crate::stats::Stats;
use crate::Config;

/// Installs the log subscriber from `[log]`.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::prelude::*;

    let filter = EnvFilter::try_new(&config.log.level).unwrap_or_else(|e| {
        eprintln!(
            "warning: log.level {:?} is not a valid filter ({e}); using info",
            config.log.level
        );
        EnvFilter::new("info")
    });
    let mut fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Colours only on a terminal: the journal and log files would keep the escape codes. (On a
    // terminal the library's default stands, which honours NO_COLOR.)
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        fmt = fmt.with_ansi(false);
    }
    let fmt = if config.log.format == "json" {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    // One filter, both conditions: as two nested filters, a span one of them let through was
    // still created and entered at every poll (rumqttd's per-connection spans: several per
    // cent of the CPU under load), and the subscriber's maximum level was "unknown", so every
    // TRACE and DEBUG callsite was evaluated. Combined, rumqttd's spans are never created, and
    // the maximum level is the configured one (the `log` bridge is set to it too).
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter.and(BrokerNoise)))
        .try_init();
}

/// Keeps two kinds of the embedded broker's (rumqttd 0.20) tracing out of the log.
///
/// - Its spans: it opens an ERROR-level span per publish with the topic as a Debug field, and
///   recording it cost the broker's router a fifth of its CPU under load. Its events still pass.
///   (Letting its per-connection span through, to name the client in the broker's lines, cost
///   about 0.7 CPU-s per million readings under a flood, 7.4 -> 8.1 on average over three
///   floods each: it is entered at every poll.)
/// - "no-connection id N is already gone", logged at ERROR for each stale notice about a client
///   that has just disconnected (dozens after a sensor's burst). It reports no loss: the
///   benchmark's runs that print it deliver every reading. Left in, an operator would read an
///   ERROR for every sensor that disconnects.
/// - "Error while handling MQTT connect packet" when the connection closed before any byte of
///   a CONNECT (rumqttd reports a reset as `ConnectionReset`, a clean close as "connection
///   closed by peer"): a TCP port check, such as a load balancer's, a script's or the bridge's
///   own readiness probe at start, not a sensor. Other connect errors (a TLS client on the
///   plaintext port, a malformed CONNECT) still pass.
/// - "router-drop" with `Recv(Disconnected)`: the connection's task noticing that the router has
///   already removed a client that disconnected, an ordinary disconnect.
struct BrokerNoise;

impl<S> tracing_subscriber::layer::Filter<S> for BrokerNoise {
    /// Decided once per callsite where possible: rumqttd's spans never, its ERROR events case
    /// by case ([`Self::event_enabled`]), everything else always.
    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        use tracing::subscriber::Interest;
        let broker = meta.target().starts_with("rumqttd");
        if broker && meta.is_span() {
            Interest::never()
        } else if broker && *meta.level() == tracing::Level::ERROR {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    /// No bound of its own on the level: the level filter it is combined with sets it.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !(meta.is_span() && meta.target().starts_with("rumqttd"))
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        // Every line this filter drops is an ERROR: others pass without their fields read.
        if *meta.level() != tracing::Level::ERROR {
            return true;
        }
        let target = meta.target();
        if target != "rumqttd::router::routing" && target != "rumqttd::server::broker" {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let stale_notice = fields.message.ends_with("is already gone");
        let port_check = fields.message == "Error while handling MQTT connect packet"
            && (fields.error.contains("ConnectionReset")
                || fields.error.contains("connection closed by peer"));
        let disconnected = fields.message == "router-drop" && fields.error == "Recv(Disconnected)";
        !(stale_notice || port_check || disconnected)
    }
}

/// An event's `message` and `error` fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let into = match field.name() {
            "message" => &mut self.message,
            "error" => &mut self.error,
            _ => return,
        };
        let _ = write!(into, "{value:?}");
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

pub fn main(config: Config) -> ExitCode {
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let stats = Arc::new(Stats::default());
    let result = runtime.block_on(crate::bridge::run(config, stats.clone(), shutdown_signal()));
    // The bridge has stopped its tasks; a broker probe blocked in librdkafka (up to 5 s) is
    // not waited for: the process is ending.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let summary = stats.snapshot();
    // The summary goes to stdout: it is the run's result, not a log line.
    println!("{summary}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::prelude::*;

    use super::BrokerNoise;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_subscriber_s_maximum_level_is_the_configured_one() {
        use tracing::level_filters::LevelFilter;
        use tracing::Subscriber;
        use tracing_subscriber::filter::FilterExt;
        use tracing_subscriber::EnvFilter;
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        let level = EnvFilter::new("info,rumqttd=warn");
        // As init_logging combines them: TRACE and DEBUG callsites, and `log` records below
        // INFO, are skipped before any filter runs.
        let subscriber =
            tracing_subscriber::registry().with(fmt.with_filter(level.and(BrokerNoise)));
        assert_eq!(subscriber.max_level_hint(), Some(LevelFilter::INFO));
        // rumqttd's spans are not created: a span handle for one is disabled.
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!(target: "rumqttd::server::broker", "remote_link");
            assert!(span.is_disabled());
            let ours = tracing::error_span!(target: "edge_bridge::bridge", "ours");
            assert!(!ours.is_disabled());
        });
    }

    #[test]
    fn broker_noise_is_dropped_and_the_broker_s_other_errors_are_kept() {
        let out = Captured::default();
        let writer = out.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(BrokerNoise);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::error_span!(target: "rumqttd::router::routing", "incoming_payload");
            let _entered = span.enter();
            tracing::error!(target: "rumqttd::router::routing", "no-connection id {} is already gone", 7);
            tracing::error!(target: "rumqttd::router::routing", "no space for new connection");
            tracing::error!(target: "edge_bridge::bridge", "ours is already gone");
            let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
            tracing::error!(target: "rumqttd::server::broker", error = ?reset, "Error while handling MQTT connect packet");
            let closed = std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed by peer",
            );
            tracing::error!(target: "rumqttd::server::broker", error = ?closed, "Error while handling MQTT connect packet");
            let tls = std::io::Error::new(std::io::ErrorKind::InvalidData, "tls on plaintext");
            tracing::error!(target: "rumqttd::server::broker", error = ?tls, "Error while handling MQTT connect packet");
            #[derive(Debug)]
            enum LinkError {
                Recv(Disconnected),
                Send(Disconnected),
            }
            #[derive(Debug)]
            struct Disconnected;
            let link = tracing::error_span!(target: "rumqttd::server::broker", "remote_link", client_id = "sensor-9");
            let _link = link.enter();
            tracing::error!(target: "rumqttd::server::broker", error = ?LinkError::Recv(Disconnected), "router-drop");
            tracing::error!(target: "rumqttd::server::broker", error = ?LinkError::Send(Disconnected), "router-drop");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("id 7"), "{text}");
        assert!(text.contains("no space for new connection"), "{text}");
        assert!(text.contains("ours is already gone"), "{text}");
        assert!(!text.contains("incoming_payload"), "{text}");
        assert!(!text.contains("ConnectionReset"), "{text}");
        assert!(!text.contains("closed by peer"), "{text}");
        assert!(text.contains("InvalidData"), "{text}");
        assert!(!text.contains("Recv(Disconnected)"), "{text}");
        assert!(!text.contains("sensor-9"), "no broker span: {text}");
        assert!(text.contains("Send(Disconnected)"), "{text}");
    }
}
