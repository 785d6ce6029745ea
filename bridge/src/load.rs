//! Layers the configuration sources: defaults < file < `EDGE_BRIDGE_*` environment < flags.
//!
//! figment does the merging and, more to the point for an operator, says where a bad value came
//! from ("for key window.size in /etc/edge-bridge.toml", "... in environment variable(s)").

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use crate::config::Config;

/// Prefix of every environment variable the bridge reads.
pub const ENV_PREFIX: &str = "EDGE_BRIDGE_";

/// Variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: [&str; 1] = ["CONFIG"];

/// Top-level tables: `EDGE_BRIDGE_KAFKA_RAW_TOPIC` means `kafka.raw_topic`.
const SECTIONS: [&str; 7] = ["mqtt", "decode", "window", "kafka", "spool", "http", "log"];

/// Why the configuration could not be loaded or is invalid. Each line names a key or a file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("configuration file {0} does not exist or is not readable")]
    Missing(String),
    #[error("the configuration cannot be read:\n{}", join(.0))]
    Parse(Vec<String>),
    #[error("the configuration has {} problem(s):\n{}", .0.len(), join(.0))]
    Invalid(Vec<String>),
}

fn join(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads and validates the configuration. `overrides` holds the flags that were given, as a
/// nested map of keys (`{"kafka": {"brokers": "..."}}`).
pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> Result<Config, LoadError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if std::fs::File::open(path).is_err() {
            return Err(LoadError::Missing(path.display().to_string()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let config: Config = figment
        .merge(env_provider())
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| LoadError::Parse(e.into_iter().map(|e| e.to_string()).collect()))?;
    config.validate().map_err(LoadError::Invalid)?;
    Ok(config)
}

/// `EDGE_BRIDGE_SECTION_KEY` -> `section.key`; `EDGE_BRIDGE_KEY` -> `key` (top level).
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).ignore(&ENV_NOT_KEYS).map(|key| {
        let lower = key.as_str().to_ascii_lowercase();
        for section in SECTIONS {
            if let Some(rest) = lower
                .strip_prefix(section)
                .and_then(|r| r.strip_prefix('_'))
            {
                return format!("{section}.{rest}").into();
            }
        }
        lower.into()
    })
}

#[cfg(test)]
mod tests {
    // figment's Jail closures must return figment's own (large) error type.
    #![allow(clippy::result_large_err)]

    use figment::Jail;
    use serde_json::json;

    use super::*;

    fn err(r: Result<Config, LoadError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn precedence_is_flags_env_file_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "bridge.toml",
                r#"
                state_dir = "/from/file"
                [window]
                size = "20s"
                grace = "2s"
                idle_timeout = "1m"
                [kafka]
                brokers = "file:9092"
                "#,
            )?;
            jail.set_env("EDGE_BRIDGE_WINDOW_GRACE", "3s");
            jail.set_env("EDGE_BRIDGE_WINDOW_IDLE_TIMEOUT", "2m");
            jail.set_env("EDGE_BRIDGE_KAFKA_BROKERS", "env:9092");
            let c = load(
                Some(Path::new("bridge.toml")),
                json!({"window": {"idle_timeout": "3m"}}),
            )
            .unwrap();
            assert_eq!(c.state_dir, Path::new("/from/file"));
            assert_eq!(c.window.size.as_secs(), 20, "file over default");
            assert_eq!(c.window.grace.as_secs(), 3, "env over file");
            assert_eq!(c.window.idle_timeout.as_secs(), 180, "flag over env");
            assert_eq!(c.kafka.brokers, "env:9092");
            assert_eq!(c.mqtt.topic, "sensors/+/temperature", "default");
            Ok(())
        });
    }

    #[test]
    fn top_level_and_numeric_env_values() {
        Jail::expect_with(|jail| {
            jail.set_env("EDGE_BRIDGE_STATE_DIR", "/tmp/state");
            jail.set_env("EDGE_BRIDGE_MQTT_QOS", "0");
            jail.set_env("EDGE_BRIDGE_MQTT_CLIENT_ID", "1234");
            jail.set_env("EDGE_BRIDGE_KAFKA_CREATE_TOPICS", "false");
            jail.set_env("EDGE_BRIDGE_CONFIG", "ignored-here.toml");
            let c = load(None, json!({})).unwrap();
            assert_eq!(c.state_dir, Path::new("/tmp/state"));
            assert_eq!(c.mqtt.qos, 0);
            assert_eq!(c.mqtt.client_id, "1234");
            assert!(!c.kafka.create_topics);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[window]\nsise = \"10s\"\n")?;
            let e = err(load(Some(Path::new("a.toml")), json!({})));
            assert!(e.contains("sise"), "{e}");
            assert!(e.contains("a.toml"), "{e}");

            jail.create_file("b.toml", "colour = 1\n")?;
            assert!(err(load(Some(Path::new("b.toml")), json!({}))).contains("colour"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("EDGE_BRIDGE_KAFKA_BROKER", "x:1");
            let e = err(load(None, json!({})));
            assert!(e.contains("broker"), "{e}");
            assert!(e.contains("environment"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_key_and_source() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[window]\nsize = \"ten seconds\"\n")?;
            let e = err(load(Some(Path::new("c.toml")), json!({})));
            assert!(e.contains("window.size") && e.contains("c.toml"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = err(load(Some(Path::new("/nonexistent/bridge.toml")), json!({})));
        assert!(e.contains("/nonexistent/bridge.toml"), "{e}");
    }

    #[test]
    fn validation_lists_every_problem() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "d.toml",
                r#"
                [mqtt]
                topic = "sensors/#"
                qos = 3
                [window]
                size = "0s"
                [kafka]
                raw_topic = "same"
                agg_topic = "same"
                compression = "brotli"
                "#,
            )?;
            let e = err(load(Some(Path::new("d.toml")), json!({})));
            for needle in [
                "5 problem",
                "mqtt.qos",
                "has none",
                "window size",
                "kafka.agg_topic: \"same\" is already used by kafka.raw_topic",
                "kafka.compression",
            ] {
                assert!(e.contains(needle), "{needle:?} not in {e}");
            }
            Ok(())
        });
    }
}
