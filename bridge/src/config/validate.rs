//! Checking a configuration: every key at once, each problem naming its key, so that an
//! operator sees every problem in one run. (The files it names are read by their users:
//! [`crate::mqtt::file_problems`].)

use std::net::SocketAddr;
use std::time::Duration;

use edge_bridge_core::window::Windower;

use super::{Config, KafkaConfig};

impl Config {
    /// Checks every key; returns all problems, each naming its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if let Err(e) = self.broker() {
            errors.extend(e);
        }
        let window_ok = match self.window_options() {
            Ok(opts) => match Windower::new(opts) {
                Ok(_) => true,
                Err(e) => {
                    errors.push(format!("window: {e}"));
                    false
                }
            },
            Err(e) => {
                errors.push(e);
                false
            }
        };
        // The routes build their windows from `[window]`: with a bad one, check the routes
        // against the default windows, so that each problem is reported once.
        let routes = if window_ok {
            self.router()
        } else {
            let mut probe = self.clone();
            probe.window = super::WindowConfig::default();
            probe.router()
        };
        if let Err(e) = routes {
            errors.extend(e);
        }
        if self.window.measurement.is_empty() {
            errors.push("window.measurement: must not be empty".into());
        }
        errors.extend(self.kafka_problems());
        if let Err(e) = self.raw_policy() {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn kafka_problems(&self) -> Vec<String> {
        let k = &self.kafka;
        let mut errors = Vec::new();
        if k.brokers.split(',').all(|b| b.trim().is_empty()) {
            errors.push("kafka.brokers: name at least one host:port".into());
        }
        let mut topics = vec![
            ("kafka.raw_topic", &k.raw_topic),
            ("kafka.agg_topic", &k.agg_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ];
        if !k.late_topic.is_empty() {
            topics.push(("kafka.late_topic", &k.late_topic));
        }
        for (i, (key, name)) in topics.iter().enumerate() {
            if let Err(why) = check_topic_name(name) {
                errors.push(format!("{key}: {name:?} {why}"));
            }
            if let Some((other, _)) = topics[..i].iter().find(|(_, n)| n == name) {
                errors.push(format!("{key}: {name:?} is already used by {other}"));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            for (key, name) in [
                ("raw_topic", &r.raw_topic),
                ("agg_topic", &r.agg_topic),
                ("dead_letter_topic", &r.dead_letter_topic),
                ("late_topic", &r.late_topic),
            ] {
                if name.is_empty() {
                    continue;
                }
                if let Err(why) = check_topic_name(name) {
                    errors.push(format!("routes[{i}] ({:?}).{key}: {name:?} {why}", r.name));
                }
                // A stream's records in another stream's topic would break its consumers.
                let global_other = topics.iter().find(|(k, n)| *n == name && !k.ends_with(key));
                if let Some((other, _)) = global_other {
                    errors.push(format!(
                        "routes[{i}] ({:?}).{key}: {name:?} is {other}, another stream's topic",
                        r.name
                    ));
                }
            }
        }
        if k.topic_partitions < 1 {
            errors.push("kafka.topic_partitions: must be at least 1".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
            errors.push(format!(
                "kafka.compression: {:?} is not one of none, gzip, snappy, lz4, zstd",
                k.compression
            ));
        }
        let level = k.raw_compression_level;
        let top = match k.compression.as_str() {
            "gzip" => 9,
            "snappy" => 0,
            _ => 12,
        };
        if !(-1..=top).contains(&level) {
            errors.push(format!(
                "kafka.raw_compression_level: {level} is out of range for {}: -1 (the codec's default) to {top}",
                k.compression
            ));
        }
        if let Err(e) = self.raw_linger() {
            errors.push(e);
        }
        errors.extend(self.kafka_security_problems());
        if self.spool.enabled && self.spool.max_mib < 1 {
            errors.push("spool.max_mib: must be at least 1".into());
        }
        if self.spool.spill_after < Duration::from_millis(100) {
            errors.push("spool.spill_after: must be at least 100ms".into());
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            errors.push(format!(
                "http.listen: {:?} is not an address like 127.0.0.1:9464 (empty turns it off)",
                self.http.listen
            ));
        }
        if !["human", "json"].contains(&self.log.format.as_str()) {
            errors.push(format!(
                "log.format: {:?} is not human or json",
                self.log.format
            ));
        }
        errors
    }

    fn kafka_security_problems(&self) -> Vec<String> {
        let mut errors = security_problems(&self.kafka, "");
        if let Some(raw) = self.kafka.raw_cluster() {
            if raw.brokers.split(',').all(|b| b.trim().is_empty()) {
                errors.push("kafka.raw_brokers: name at least one host:port, or leave it empty to send every stream to kafka.brokers".into());
            }
            errors.extend(security_problems(&raw, "raw_"));
            // [kafka.options] goes to both clusters' producers: security there would take the
            // main cluster's credentials to the site's broker.
            for key in self.kafka.options.keys() {
                let k = key.to_ascii_lowercase();
                if k == "security.protocol" || k.starts_with("sasl.") || k.starts_with("ssl.") {
                    errors.push(format!(
                        "kafka.options.{key:?}: with kafka.raw_brokers, [kafka.options] goes to both clusters; set each cluster's security with kafka.security_protocol, kafka.sasl_* and kafka.ssl_* (the main cluster) and kafka.raw_* (the raw cluster) instead"
                    ));
                }
            }
            let same = |a: &str, b: &str| {
                let set = |s: &str| {
                    let mut v: Vec<String> = s
                        .split(',')
                        .map(|b| b.trim().to_ascii_lowercase())
                        .collect();
                    v.sort();
                    v
                };
                set(a) == set(b)
            };
            if same(&self.kafka.brokers, &self.kafka.raw_brokers) {
                errors.push(format!(
                    "kafka.raw_brokers: {:?} is kafka.brokers; leave it empty to send every stream to one cluster",
                    self.kafka.raw_brokers
                ));
            }
        }
        errors
    }
}

/// The security settings of one cluster: `k`'s, named `kafka.{prefix}security_protocol` and so
/// on (the second cluster's keys start with `raw_`).
fn security_problems(k: &KafkaConfig, prefix: &str) -> Vec<String> {
    let key = |name: &str| format!("kafka.{prefix}{name}");
    let mut errors = Vec::new();
    let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
    if !protocols.contains(&k.security_protocol.to_ascii_lowercase().as_str()) {
        errors.push(format!(
            "{}: {:?} is not one of {}",
            key("security_protocol"),
            k.security_protocol,
            protocols.join(", ")
        ));
    }
    if k.security_protocol.to_ascii_lowercase().starts_with("sasl") {
        let mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
        if !mechanisms.contains(&k.sasl_mechanism.as_str()) {
            errors.push(format!(
                "{}: {:?} is not one of {}",
                key("sasl_mechanism"),
                k.sasl_mechanism,
                mechanisms.join(", ")
            ));
        }
        if k.sasl_username.is_empty() || k.sasl_password.is_empty() {
            let var = format!(
                "EDGE_BRIDGE_KAFKA_{}SASL_PASSWORD",
                prefix.to_ascii_uppercase()
            );
            errors.push(format!(
                "{} and {}: both are needed with {} = {:?} (the password can come from {var} or a file named by {var}_FILE)",
                key("sasl_username"),
                key("sasl_password"),
                key("security_protocol"),
                k.security_protocol
            ));
        }
    }
    for (name, path) in [
        ("ssl_ca_location", &k.ssl_ca_location),
        ("ssl_certificate_location", &k.ssl_certificate_location),
        ("ssl_key_location", &k.ssl_key_location),
    ] {
        if !path.is_empty() && std::fs::File::open(path).is_err() {
            errors.push(format!(
                "{}: {path} does not exist or is not readable",
                key(name)
            ));
        }
    }
    if k.ssl_certificate_location.is_empty() != k.ssl_key_location.is_empty() {
        errors.push(format!(
            "{} and {}: give both (mutual TLS) or neither",
            key("ssl_certificate_location"),
            key("ssl_key_location")
        ));
    }
    errors
}

/// Kafka's topic name rule: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub(super) fn check_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > 249 {
        return Err("is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("is not a valid topic name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}
