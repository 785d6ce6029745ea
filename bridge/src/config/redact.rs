//! What of a configuration may be shown: secrets replaced by [`REDACTED`], in the printed
//! configuration and in URLs.

use super::Config;

/// Stands in for a secret in anything printed.
pub const REDACTED: &str = "REDACTED";

impl Config {
    /// A copy safe to print: passwords in URLs and secret-looking librdkafka options hidden.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        c.mqtt.url = redact_url(&c.mqtt.url);
        for secret in [
            &mut c.kafka.sasl_password,
            &mut c.kafka.ssl_key_password,
            &mut c.kafka.raw_sasl_password,
            &mut c.kafka.raw_ssl_key_password,
            &mut c.mqtt.password,
        ] {
            if !secret.is_empty() {
                *secret = REDACTED.into();
            }
        }
        let options = c.kafka.options.iter_mut();
        for (key, value) in options.chain(c.kafka.raw_options.iter_mut()) {
            if is_secret_option(key) {
                *value = REDACTED.into();
            }
        }
        c
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted()).expect("the configuration is plain data")
    }
}

/// librdkafka options that carry secrets.
pub(super) fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "sasl.oauthbearer.config",
        "ssl.key.pem",
        "ssl_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A URL with its password (if any) replaced.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(REDACTED));
            u.to_string()
        }
        Ok(_) => raw.to_owned(),
        // Unparseable: it might still hold `user:pass@`; hide everything before the '@'.
        Err(_) => match raw.rfind('@') {
            Some(at) => format!("{REDACTED}{}", &raw[at..]),
            None => raw.to_owned(),
        },
    }
}
