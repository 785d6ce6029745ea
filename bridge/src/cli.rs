//! The command line: `edge-bridge [run]`, `check-config [FILE]`, `print-default-config`.
//!
//! Flags are the last layer over environment, file and defaults (see [`crate::load`]); each one
//! is also a configuration key, so anything set on the command line can live in the file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::config::DEFAULT_CONFIG_TOML;
use crate::load::{load, LoadError};
use crate::Config;

/// Exit status for a configuration the bridge refuses (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "edge-bridge",
    version,
    about = "MQTT-to-Redpanda edge bridge: per-sensor window aggregates computed on the gateway.",
    after_help = "Configuration: flags > EDGE_BRIDGE_* environment > --config file > defaults.\n\
                  `edge-bridge print-default-config` shows every key with its documentation."
)]
pub struct Cli {
    /// Configuration file (TOML)
    #[arg(
        long,
        short = 'c',
        env = "EDGE_BRIDGE_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub flags: Flags,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bridge (the default)
    Run,
    /// Validate a configuration and print the effective result, secrets redacted
    CheckConfig {
        /// The file to check; defaults to --config
        file: Option<PathBuf>,
    },
    /// Print the documented default configuration
    PrintDefaultConfig,
}

/// Flags that override configuration keys. Each names its key in the help.
#[derive(Debug, Default, Args)]
pub struct Flags {
    /// Embedded MQTT broker address [mqtt.listen]
    #[arg(long, global = true, value_name = "ADDR")]
    pub mqtt_listen: Option<String>,
    /// Second embedded MQTT listener (MQTT 3.1.1 and 5, for devices set up for MQTT 5 there): ADDR, :PORT on --mqtt-listen's host, or "" for none [mqtt.listen_v5]
    #[arg(long, global = true, value_name = "ADDR")]
    pub mqtt_listen_v5: Option<String>,
    /// External MQTT broker instead of the embedded one, mqtt://host:port [mqtt.url]
    #[arg(long, global = true, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Subscription topic filter [mqtt.topic]
    #[arg(long, global = true, value_name = "FILTER")]
    pub mqtt_topic: Option<String>,
    /// Kafka bootstrap servers, host:port[,host:port] [kafka.brokers]
    #[arg(long, global = true, value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// Raw readings topic [kafka.raw_topic]
    #[arg(long, global = true, value_name = "TOPIC")]
    pub raw_topic: Option<String>,
    /// Aggregates topic [kafka.agg_topic]
    #[arg(long, global = true, value_name = "TOPIC")]
    pub agg_topic: Option<String>,
    /// Window size, e.g. 10s [window.size]
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// Grace after window end, e.g. 1s [window.grace]
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: Option<Duration>,
    /// Close a silent sensor's windows after this wall-clock time [window.idle_timeout]
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// HTTP endpoint for /metrics, /healthz, /readyz, /status; "" turns it off [http.listen]
    #[arg(long, global = true, value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// Directory for state that survives restarts [state_dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter, e.g. info or edge_bridge=debug [log.level]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: human or json [log.format]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl Flags {
    /// The flags that were given, as a nested map of configuration keys.
    pub fn overrides(&self) -> Value {
        let mut root = Map::new();
        let dur = |d: &Duration| json!(humantime::format_duration(*d).to_string());
        let mut set = |key: &str, v: Value| {
            let (section, field) = match key.split_once('.') {
                Some((s, f)) => (Some(s), f),
                None => (None, key),
            };
            let table = match section {
                Some(s) => root
                    .entry(s)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("sections are objects"),
                None => &mut root,
            };
            table.insert(field.to_owned(), v);
        };
        let strings = [
            ("mqtt.listen", &self.mqtt_listen),
            ("mqtt.listen_v5", &self.mqtt_listen_v5),
            ("mqtt.url", &self.mqtt_url),
            ("mqtt.topic", &self.mqtt_topic),
            ("kafka.brokers", &self.kafka_brokers),
            ("kafka.raw_topic", &self.raw_topic),
            ("kafka.agg_topic", &self.agg_topic),
            ("http.listen", &self.http_listen),
            ("log.level", &self.log_level),
            ("log.format", &self.log_format),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                set(key, json!(v));
            }
        }
        let durations = [
            ("window.size", &self.window),
            ("window.grace", &self.grace),
            ("window.idle_timeout", &self.idle_timeout),
        ];
        for (key, value) in durations {
            if let Some(d) = value {
                set(key, dur(d));
            }
        }
        if let Some(dir) = &self.state_dir {
            set("state_dir", json!(dir));
        }
        Value::Object(root)
    }
}

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => {
            let file = file.or(cli.config);
            match load(file.as_deref(), cli.flags.overrides()) {
                Ok(config) => {
                    eprintln!(
                        "Configuration is valid. Effective configuration (secrets redacted):"
                    );
                    print!("{}", config.to_redacted_toml());
                    // As TOML comments, so the output stays a configuration file.
                    println!("\n# Effective routes, in the order a publish tries them:");
                    for line in config.routes_summary() {
                        println!("#   {line}");
                    }
                    if let Ok(router) = config.router() {
                        println!("# Subscribed to: {}", router.subscriptions().join(", "));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Run => match load(cli.config.as_deref(), cli.flags.overrides()) {
            Ok(config) => crate::run::main(config),
            Err(e) => config_error(&e),
        },
    }
}

fn config_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    eprintln!("hint: `edge-bridge print-default-config` documents every key.");
    ExitCode::from(EXIT_CONFIG)
}

/// For tests: the configuration a command line would run with.
pub fn config_from_args<I, T>(args: I) -> Result<Config, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    load(cli.config.as_deref(), cli.flags.overrides()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    // figment's Jail closures must return figment's own (large) error type.
    #![allow(clippy::result_large_err)]

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_every_named_key() {
        figment::Jail::expect_with(|_| {
            let c = config_from_args([
                "edge-bridge",
                "--mqtt-listen",
                "127.0.0.1:1884",
                "--mqtt-listen-v5",
                "",
                "--mqtt-topic",
                "plant/+/t",
                "--kafka-brokers",
                "k1:9092,k2:9092",
                "--raw-topic",
                "r",
                "--agg-topic",
                "a",
                "--window",
                "1m",
                "--grace",
                "500ms",
                "--idle-timeout",
                "2m 30s",
                "--state-dir",
                "/tmp/s",
                "--log-format",
                "json",
            ])
            .unwrap();
            assert_eq!(c.mqtt.listen, "127.0.0.1:1884");
            assert_eq!(c.mqtt.listen_v5, "");
            assert_eq!(c.mqtt.topic, "plant/+/t");
            assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
            assert_eq!(
                (c.kafka.raw_topic.as_str(), c.kafka.agg_topic.as_str()),
                ("r", "a")
            );
            assert_eq!(c.window.size, Duration::from_secs(60));
            assert_eq!(c.window.grace, Duration::from_millis(500));
            assert_eq!(c.window.idle_timeout, Duration::from_secs(150));
            assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
            assert_eq!(c.log.format, "json");
            Ok(())
        });
    }

    #[test]
    fn flags_work_after_a_subcommand() {
        let cli = Cli::try_parse_from([
            "edge-bridge",
            "check-config",
            "x.toml",
            "--mqtt-url",
            "mqtt://b:1883",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::CheckConfig { file: Some(_) })
        ));
        assert_eq!(cli.flags.mqtt_url.as_deref(), Some("mqtt://b:1883"));
    }

    #[test]
    fn bad_duration_flag_is_refused_by_clap() {
        let e = Cli::try_parse_from(["edge-bridge", "--window", "ten"]).unwrap_err();
        assert!(e.to_string().contains("--window"));
    }
}
