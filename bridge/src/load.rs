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
const SECTIONS: [&str; 8] = [
    "mqtt", "decode", "window", "kafka", "raw", "spool", "http", "log",
];

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
        let unknown = std::fs::read_to_string(path)
            .map(|text| unknown_keys(&text, path))
            .unwrap_or_default();
        if !unknown.is_empty() {
            return Err(LoadError::Parse(unknown));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let from_files = secret_files(std::env::vars()).map_err(LoadError::Parse)?;
    let config: Config = figment
        .merge(env_provider())
        .merge(Serialized::defaults(from_files))
        .merge(Serialized::defaults(overrides))
        .extract()
        .map_err(|e| {
            // figment names keys with its profile in front ("default.kafak"); the bridge has
            // no profiles, and the key as written is what the operator looks for.
            let line =
                |e: figment::Error| e.to_string().replace("for key \"default.", "for key \"");
            LoadError::Parse(e.into_iter().map(line).collect())
        })?;
    check(&config).map_err(LoadError::Invalid)?;
    Ok(config)
}

/// Every problem of a configuration, each naming its key: its keys and values, then the files
/// it names, read the way the start reads them.
pub fn check(config: &Config) -> Result<(), Vec<String>> {
    let mut errors = config.validate().err().unwrap_or_default();
    errors.extend(crate::mqtt::file_problems(config));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every key of a configuration file that the bridge does not have: serde stops at the first,
/// and an operator fixing a file wants them all at once. `default-config.toml` lists every key
/// (a test holds it to `Config`); `kafka.options` and `kafka.raw_options` are free-form. A file
/// that is not TOML yields
/// nothing here: figment reports it, with the line.
fn unknown_keys(text: &str, path: &Path) -> Vec<String> {
    /// librdkafka's options, passed as they are.
    const FREE_FORM: [&str; 2] = ["kafka.options", "kafka.raw_options"];
    fn walk(prefix: &str, file: &toml::Table, known: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in file {
            let name = format!("{prefix}{key}");
            if let ("routes", toml::Value::Array(routes)) = (name.as_str(), value) {
                for (i, route) in routes.iter().enumerate() {
                    let keys = route.as_table().into_iter().flat_map(|t| t.keys());
                    out.extend(
                        keys.filter(|k| !crate::config::ROUTE_KEYS.contains(&k.as_str()))
                            .map(|k| format!("routes[{i}].{k}")),
                    );
                }
                continue;
            }
            match (known.get(key), value) {
                (None, _) => out.push(name),
                (Some(toml::Value::Table(k)), toml::Value::Table(f))
                    if !FREE_FORM.contains(&name.as_str()) =>
                {
                    walk(&format!("{name}."), f, k, out)
                }
                _ => {}
            }
        }
    }
    let (Ok(file), Ok(known)) = (
        toml::from_str::<toml::Table>(text),
        toml::from_str::<toml::Table>(crate::config::DEFAULT_CONFIG_TOML),
    ) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    walk("", &file, &known, &mut names);
    names
        .into_iter()
        .map(|n| format!("unknown key {n:?} in {}", path.display()))
        .collect()
}

/// Suffix of a variable that names a file holding the value (for secrets: Docker and
/// systemd credentials, Kubernetes secrets). No configuration key ends in `_file`.
pub const FILE_SUFFIX: &str = "_FILE";

/// `EDGE_BRIDGE_SECTION_KEY` -> `section.key`; `EDGE_BRIDGE_KEY` -> `key` (top level).
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(&ENV_NOT_KEYS)
        .filter(|key| !key.as_str().to_ascii_uppercase().ends_with(FILE_SUFFIX))
        .map(|key| key_of(key.as_str()).into())
}

/// `SECTION_KEY` (the variable name without the prefix) -> `section.key`.
fn key_of(var: &str) -> String {
    let lower = var.to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(rest) = lower
            .strip_prefix(section)
            .and_then(|r| r.strip_prefix('_'))
        {
            return format!("{section}.{rest}");
        }
    }
    lower
}

/// `EDGE_BRIDGE_X_FILE=/path`: the value of `X` is the content of the file (one trailing
/// newline removed). Setting both `X` and `X_FILE` is an error, so it is never a guess which won.
fn secret_files(
    vars: impl Iterator<Item = (String, String)>,
) -> Result<serde_json::Value, Vec<String>> {
    let vars: Vec<(String, String)> = vars.collect();
    let mut root = serde_json::Map::new();
    let mut errors = Vec::new();
    for (name, path) in &vars {
        let Some(var) = name
            .strip_prefix(ENV_PREFIX)
            .and_then(|v| v.strip_suffix(FILE_SUFFIX))
        else {
            continue;
        };
        let plain = format!("{ENV_PREFIX}{var}");
        if vars.iter().any(|(n, _)| *n == plain) {
            errors.push(format!("{name} and {plain} are both set: keep one"));
            continue;
        }
        let value = match std::fs::read_to_string(path) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{name}: cannot read {path}: {e}"));
                continue;
            }
        };
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(&value)
            .to_owned();
        let key = key_of(var);
        let table = match key.split_once('.') {
            Some((section, field)) => root
                .entry(section)
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .map(|t| (t, field.to_owned())),
            None => Some((&mut root, key.clone())),
        };
        if let Some((table, field)) = table {
            table.insert(field, serde_json::Value::String(value));
        }
    }
    if errors.is_empty() {
        Ok(serde_json::Value::Object(root))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn file_variables_carry_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let vars = vec![(
            "EDGE_BRIDGE_KAFKA_SASL_PASSWORD_FILE".to_owned(),
            f.display().to_string(),
        )];
        let v = secret_files(vars.into_iter()).unwrap();
        assert_eq!(v["kafka"]["sasl_password"], "s3cret");
    }

    #[test]
    fn a_value_and_its_file_together_are_refused_and_unreadable_files_named() {
        let vars = vec![
            ("EDGE_BRIDGE_KAFKA_SASL_PASSWORD".to_owned(), "x".to_owned()),
            (
                "EDGE_BRIDGE_KAFKA_SASL_PASSWORD_FILE".to_owned(),
                "/nonexistent".to_owned(),
            ),
            (
                "EDGE_BRIDGE_MQTT_URL_FILE".to_owned(),
                "/nonexistent/url".to_owned(),
            ),
        ];
        let e = secret_files(vars.into_iter()).unwrap_err();
        assert!(e[0].contains("both set"), "{e:?}");
        assert!(e[1].contains("cannot read /nonexistent/url"), "{e:?}");
    }

    #[test]
    fn no_key_ends_in_file() {
        let toml = toml::to_string(&Config::default()).unwrap();
        for line in toml.lines() {
            let key = line.split('=').next().unwrap().trim();
            assert!(
                !key.ends_with("_file"),
                "{key} would be read as a _FILE variable"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    // figment's Jail closures must return figment's own (large) error type.
    #![allow(clippy::result_large_err)]

    use figment::Jail;
    use serde_json::json;

    use super::*;

    #[test]
    fn every_table_of_the_configuration_takes_environment_variables() {
        let defaults: toml::Table = toml::from_str(crate::config::DEFAULT_CONFIG_TOML).unwrap();
        for (name, value) in &defaults {
            if value.is_table() {
                assert!(
                    SECTIONS.contains(&name.as_str()),
                    "[{name}] is missing from SECTIONS: its EDGE_BRIDGE_ variables are refused"
                );
            }
        }
        assert_eq!(key_of("RAW_DEADBAND_ABSOLUTE"), "raw.deadband_absolute");
    }

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
            assert!(e.contains("unknown key \"window.sise\" in a.toml"), "{e}");

            jail.create_file("b.toml", "colour = 1\n")?;
            assert!(err(load(Some(Path::new("b.toml")), json!({}))).contains("colour"));

            // Every unknown key at once, nested ones with their table; kafka.options is free.
            jail.create_file(
                "all.toml",
                "colour = 1\n[window]\nsizee = \"1s\"\nsize = \"5s\"\n[kafak]\nx = 1\n\
                 [kafka.options]\n\"linger.ms\" = \"5\"\n[kafka.raw_options]\n\"debug\" = \"msg\"\n\
                 [kafka]\nbrokerz = \"x\"\n",
            )?;
            let e = err(load(Some(Path::new("all.toml")), json!({})));
            for key in [
                "\"colour\"",
                "\"window.sizee\"",
                "\"kafak\"",
                "\"kafka.brokerz\"",
            ] {
                assert!(
                    e.contains(&format!("unknown key {key} in all.toml")),
                    "{key}: {e}"
                );
            }
            assert!(
                !e.contains("linger") && !e.contains("debug") && !e.contains("window.size\""),
                "{e}"
            );
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
