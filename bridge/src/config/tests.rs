use super::typed::parse_sensor_id;
use super::validate::check_topic_name;
use super::*;
use edge_bridge_core::decode::SensorIdSource;
use edge_bridge_core::Stream;

#[test]
fn documented_default_file_is_the_default() {
    let parsed: Config = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    assert_eq!(parsed, Config::default());
    assert!(Config::default().validate().is_ok());
}

/// Every key of the schema appears in the documented file (and, by deny_unknown_fields and the
/// test above, nothing else does), so `print-default-config` never hides a key.
#[test]
fn documented_default_file_names_every_key() {
    fn keys(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in t {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(inner) if k != "options" => {
                    keys(&format!("{path}."), inner, out)
                }
                _ => out.push(path),
            }
        }
    }
    let file: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    let schema: toml::Table = toml::Table::try_from(Config::default()).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    keys("", &file, &mut a);
    keys("", &schema, &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Each key's environment variable is documented next to it.
    for key in &b {
        // Free-form, and an array of tables that lives in the file only.
        if key == "kafka.options" || key == "routes" {
            continue;
        }
        let var = format!("EDGE_BRIDGE_{}", key.replace('.', "_").to_uppercase());
        assert!(
            DEFAULT_CONFIG_TOML.contains(&var),
            "{var} is not documented"
        );
    }
}

#[test]
fn sensor_id_forms() {
    assert_eq!(parse_sensor_id("topic"), Ok(SensorIdSource::Wildcards));
    assert_eq!(
        parse_sensor_id("topic-level:2"),
        Ok(SensorIdSource::TopicLevel(2))
    );
    assert_eq!(
        parse_sensor_id("field:device"),
        Ok(SensorIdSource::Field("device".into()))
    );
    for bad in ["", "field:", "topic-level:x", "payload"] {
        assert!(parse_sensor_id(bad)
            .unwrap_err()
            .contains("decode.sensor_id"));
    }
}

#[test]
fn broker_embedded_or_external_each_with_its_own_settings() {
    let mut c = Config::default();
    let Ok(Broker::Embedded(e)) = c.broker() else {
        panic!("{:?}", c.broker())
    };
    assert_eq!(e.listen, Some("0.0.0.0:1883".parse().unwrap()));
    assert_eq!(e.listen_v5, Some("0.0.0.0:1884".parse().unwrap()));
    assert_eq!((e.tls, e.passwords, e.broker_config), (None, None, None));
    c.mqtt.url = "mqtts://broker.local:8883".into();
    c.mqtt.protocol = "5".into();
    c.mqtt.qos = 2;
    c.mqtt.username = "edge".into();
    c.mqtt.password = "pw".into();
    let Ok(Broker::External(x)) = c.broker() else {
        panic!("{:?}", c.broker())
    };
    assert_eq!(x.url.port(), Some(8883));
    assert_eq!((x.protocol, x.qos), (Protocol::V5, Qos::ExactlyOnce));
    assert_eq!(x.credentials, Some(("edge".into(), "pw".into())));
    assert_eq!(
        x.tls,
        Some(ClientTls {
            broker_ca: None,
            client: None
        })
    );
    c.mqtt.url = "mqtt://broker.local".into();
    assert!(matches!(c.broker(), Ok(Broker::External(x)) if x.tls.is_none()));
    // Schemes are case-insensitive, as the URL parser (and so the client) reads them.
    c.mqtt.url = "MQTTS://broker.local".into();
    assert!(matches!(c.broker(), Ok(Broker::External(x)) if x.tls.is_some()));
    let first_error = |c: &Config| c.broker().unwrap_err().join("\n");
    c.mqtt.url = "http://x".into();
    assert!(first_error(&c).contains("scheme"));
    c.mqtt.url = "not a url".into();
    assert!(first_error(&c).contains("mqtt.url"));
    c.mqtt.url = String::new();
    c.mqtt.username.clear();
    c.mqtt.password.clear();
    c.mqtt.listen = "localhost".into();
    assert!(first_error(&c).contains("mqtt.listen"));
    // Value checks of the external broker's keys apply to both, as their defaults do.
    c.mqtt.listen = "0.0.0.0:1883".into();
    c.mqtt.protocol = "4".into();
    c.mqtt.qos = 3;
    let e = first_error(&c);
    assert!(
        e.contains(r#"mqtt.protocol: "4" is not "3.1.1" or "5""#),
        "{e}"
    );
    assert!(e.contains("mqtt.qos: 3 is not 0, 1 or 2"), "{e}");
}

#[test]
fn durations_must_be_whole_milliseconds() {
    let mut c = Config::default();
    c.window.grace = Duration::from_micros(1500);
    assert!(c.window_options().unwrap_err().contains("window.grace"));
    c.window.grace = Duration::from_millis(1500);
    assert_eq!(c.window_options().unwrap().grace_ms, 1500);
}

#[test]
fn topic_names_follow_kafka_rules() {
    assert!(check_topic_name("raw-temperature.v1_x").is_ok());
    assert!(check_topic_name("").is_err());
    assert!(check_topic_name("..").is_err());
    assert!(check_topic_name("a b").is_err());
    assert!(check_topic_name(&"a".repeat(250)).is_err());
}

#[test]
fn redaction_hides_secrets_only() {
    let mut c = Config::default();
    c.mqtt.url = "mqtt://user:hunter2@broker:1883".into();
    c.kafka
        .options
        .insert("sasl.password".into(), "s3cret-pw".into());
    c.kafka
        .options
        .insert("ssl.key.password".into(), "k3y-pw".into());
    c.kafka.options.insert("linger.ms".into(), "50".into());
    c.kafka
        .raw_options
        .insert("sasl.password".into(), "r4w-pw".into());
    let text = c.to_redacted_toml();
    for secret in ["hunter2", "s3cret-pw", "k3y-pw", "r4w-pw"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("mqtt://user:REDACTED@broker:1883"), "{text}");
    assert!(text.contains("linger.ms"));
    assert!(text.contains("\"50\""));
    // The printed configuration parses back.
    let back: Config = toml::from_str(&text).unwrap();
    assert_eq!(back.kafka.options.len(), 3);
}

#[test]
fn a_second_cluster_has_its_own_security_and_secrets() {
    let c: Config = toml::from_str(
        "[kafka]\nbrokers = \"cloud:9092\"\nsecurity_protocol = \"sasl_ssl\"\nsasl_username = \"gw\"\nsasl_password = \"cl0ud-pw\"\nraw_brokers = \"site:9092\"\n",
    )
    .unwrap();
    assert_eq!(c.validate(), Ok(()));
    let raw = c.kafka.raw_cluster().expect("a second cluster");
    assert_eq!(raw.brokers, "site:9092");
    // Nothing of the main cluster's security goes to the site's broker.
    assert_eq!(raw.security_protocol, "plaintext");
    assert!(raw.sasl_username.is_empty() && raw.sasl_password.is_empty());
    assert_eq!(
        raw.raw_brokers, "",
        "the second cluster has no second cluster"
    );
    assert_eq!(raw.raw_topic, c.kafka.raw_topic);
    assert!(Config::default().kafka.raw_cluster().is_none());

    // Its problems are named with its own keys and variables.
    let mut c = c;
    c.kafka.raw_security_protocol = "sasl_plaintext".into();
    c.kafka.raw_sasl_mechanism = "GSSAPI".into();
    c.kafka.raw_ssl_ca_location = "/no/such/ca.pem".into();
    let problems = c.validate().unwrap_err().join("\n");
    assert!(
        problems.contains("kafka.raw_sasl_mechanism: \"GSSAPI\" is not one of"),
        "{problems}"
    );
    assert!(problems.contains("kafka.raw_sasl_username and kafka.raw_sasl_password: both are needed with kafka.raw_security_protocol"), "{problems}");
    assert!(
        problems.contains("EDGE_BRIDGE_KAFKA_RAW_SASL_PASSWORD_FILE"),
        "{problems}"
    );
    assert!(
        problems.contains("kafka.raw_ssl_ca_location: /no/such/ca.pem does not exist"),
        "{problems}"
    );
    assert!(
        !problems.contains("kafka.sasl"),
        "the main cluster is fine: {problems}"
    );

    // Security in [kafka.options] would reach both clusters.
    let mut leaky = c.clone();
    leaky
        .kafka
        .options
        .insert("sasl.password".into(), "x".into());
    leaky.kafka.options.insert("linger.ms".into(), "5".into());
    let problems = leaky.validate().unwrap_err().join("\n");
    assert!(
        problems.contains("kafka.options.\"sasl.password\": with kafka.raw_brokers"),
        "{problems}"
    );
    assert!(!problems.contains("linger.ms"), "{problems}");
    let mut blank = Config::default();
    blank.kafka.raw_brokers = " , ".into();
    let problems = blank.validate().unwrap_err().join("\n");
    assert!(
        problems.contains("kafka.raw_brokers: name at least one host:port"),
        "{problems}"
    );

    // The same brokers twice is one cluster.
    let mut same = Config::default();
    same.kafka.brokers = "a:9092, b:9092".into();
    same.kafka.raw_brokers = "B:9092,a:9092".into();
    let problems = same.validate().unwrap_err().join("\n");
    assert!(
        problems.contains("kafka.raw_brokers: \"B:9092,a:9092\" is kafka.brokers"),
        "{problems}"
    );

    // Its secrets are redacted like the others.
    c.kafka.raw_sasl_password = "s1te-pw".into();
    c.kafka.raw_ssl_key_password = "s1te-key".into();
    let text = c.to_redacted_toml();
    for secret in ["cl0ud-pw", "s1te-pw", "s1te-key"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}

#[test]
fn numeric_option_values_are_accepted() {
    let c: Config =
        toml::from_str("[kafka.options]\n\"linger.ms\" = 50\n\"enable.idempotence\" = true\n")
            .unwrap();
    assert_eq!(c.kafka.options["linger.ms"], "50");
    assert_eq!(c.kafka.options["enable.idempotence"], "true");
}

#[test]
fn lean_record_settings_are_read_and_checked() {
    let c: Config = toml::from_str(
        "[kafka]\nrecord_id = \"header\"\nraw_topic_header = \"always\"\nraw_linger = \"1s\"\nraw_compression_level = 9\n",
    )
    .unwrap();
    let e = c.encode_options();
    assert!(e.id_header);
    assert_eq!(e.topic_header, edge_bridge_core::TopicHeader::Always);
    assert_eq!(c.raw_linger(), Ok(std::time::Duration::from_secs(1)));
    assert_eq!(c.validate(), Ok(()));
    assert!(toml::from_str::<Config>("[kafka]\nrecord_id = \"sometimes\"\n").is_err());
    let mut c = Config::default();
    c.kafka.raw_compression_level = 13;
    let problems = |c: &Config| c.validate().unwrap_err().join("\n");
    assert!(problems(&c).contains("kafka.raw_compression_level"));
    c.kafka.compression = "gzip".into();
    c.kafka.raw_compression_level = 10;
    assert!(problems(&c).contains("-1 (the codec's default) to 9"));
    c.kafka.raw_compression_level = -1;
    c.kafka.raw_linger = "901s".into();
    assert!(problems(&c).contains("kafka.raw_linger: at most 900s"));
    c.kafka.raw_linger = "3s".into();
    assert!(problems(&c).contains("more than half of spool.spill_after (5s)"));
    c.spool.spill_after = std::time::Duration::from_secs(10);
    assert_eq!(c.raw_linger(), Ok(std::time::Duration::from_secs(3)));
    c.spool.spill_after = std::time::Duration::from_secs(5);
    c.kafka.raw_linger = "soon".into();
    assert!(problems(&c).contains("is not auto or a duration"));
    // auto: long batches where nothing waits on them, short where MQTT acks do.
    c.kafka.raw_linger = "auto".into();
    assert_eq!(c.raw_linger(), Ok(std::time::Duration::from_millis(500)));
    c.spool.spill_after = std::time::Duration::from_millis(1_000);
    assert_eq!(c.raw_linger(), Ok(std::time::Duration::from_millis(250)));
    c.mqtt.url = "mqtt://broker:1883".into();
    assert_eq!(c.raw_linger(), Ok(std::time::Duration::from_millis(20)));
}

#[test]
fn redact_url_without_password_is_unchanged() {
    assert_eq!(redact_url("mqtt://broker:1883"), "mqtt://broker:1883");
    assert_eq!(redact_url("%%user:pw@host"), "REDACTED@host");
}

#[test]
fn mqtt_security_keys_belong_to_their_side() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.pem");
    // A certificate and its key in one PEM file: each reader takes the part it needs.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&file, cert.cert.pem() + &cert.key_pair.serialize_pem()).unwrap();
    let f = file.display().to_string();

    // Embedded broker: TLS needs both files; external-only keys are refused.
    let mut c = Config::default();
    c.mqtt.tls_listen = "0.0.0.0:8883".into();
    c.mqtt.tls_cert = f.clone();
    let e = c.validate().unwrap_err().join("\n");
    assert!(e.contains("mqtt.tls_cert and mqtt.tls_key: both"), "{e}");
    c.mqtt.tls_key = f.clone();
    c.mqtt.username = "u".into();
    let e = c.validate().unwrap_err().join("\n");
    assert!(
        e.contains("mqtt.username: only used towards an external broker"),
        "{e}"
    );
    c.mqtt.username.clear();
    c.mqtt.listen.clear();
    assert_eq!(c.validate(), Ok(()), "TLS only, plaintext off");
    assert!(matches!(c.broker(), Ok(Broker::Embedded(e)) if e.listen.is_none()));
    c.mqtt.tls_listen.clear();
    let e = c.validate().unwrap_err().join("\n");
    assert!(e.contains("set mqtt.tls_listen too"), "{e}");
    assert!(e.contains("sensors could not connect"), "{e}");

    // External broker: embedded-only keys and TLS files without mqtts:// are refused.
    let mut c = Config::default();
    c.mqtt.url = "mqtt://broker:1883".into();
    c.mqtt.passwords = f.clone();
    c.mqtt.broker_ca = f.clone();
    c.mqtt.client_cert = f.clone();
    c.mqtt.password = "p".into();
    let e = c.validate().unwrap_err().join("\n");
    assert!(
        e.contains("mqtt.passwords: only used by the embedded broker"),
        "{e}"
    );
    assert!(
        e.contains("mqtt.broker_ca, mqtt.client_cert: TLS settings, but mqtt.url is not mqtts://"),
        "{e}"
    );
    assert!(e.contains("give both or neither"), "{e}");
    assert!(e.contains("mqtt.password: set mqtt.username too"), "{e}");
    c.mqtt.url = "mqtts://broker:8883".into();
    c.mqtt.passwords.clear();
    c.mqtt.client_key = f.clone();
    c.mqtt.username = "u".into();
    assert_eq!(c.validate(), Ok(()));
    c.mqtt.client_key = dir.path().join("missing").display().to_string();
    let e = c.validate().unwrap_err().join("\n");
    assert!(
        e.contains("mqtt.client_key:") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn mqtt_password_is_redacted() {
    let mut c = Config::default();
    c.mqtt.url = "mqtts://broker:8883".into();
    c.mqtt.username = "gw".into();
    c.mqtt.password = "s3cret-mqtt".into();
    let shown = c.to_redacted_toml();
    assert!(!shown.contains("s3cret-mqtt"), "{shown}");
    assert!(shown.contains(REDACTED), "{shown}");
}

#[test]
fn mqtt_security_files_are_read_as_the_start_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "sensor:plaintext-password\n").unwrap();
    let junk = junk.display().to_string();
    let mut c = Config::default();
    c.mqtt.passwords = junk.clone();
    let e = crate::load::check(&c).unwrap_err().join("\n");
    assert!(
        e.contains("mqtt.passwords:") && e.contains("not hashed"),
        "{e}"
    );

    c.mqtt.passwords.clear();
    c.mqtt.tls_listen = "0.0.0.0:8883".into();
    c.mqtt.tls_cert = junk.clone();
    c.mqtt.tls_key = junk.clone();
    let e = crate::load::check(&c).unwrap_err().join("\n");
    assert!(
        e.contains("mqtt.tls_cert:") && e.contains("no PEM certificate"),
        "{e}"
    );
}

#[test]
fn client_certificates_cannot_be_bypassed_on_a_public_plaintext_port() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.pem");
    std::fs::write(&f, "x").unwrap();
    let mut c = Config::default();
    c.mqtt.tls_listen = "0.0.0.0:8883".into();
    c.mqtt.tls_client_ca = f.display().to_string();
    let e = c.validate().unwrap_err().join("\n");
    assert!(
        e.contains("sensors without a certificate could still connect on the plaintext listener mqtt.listen (0.0.0.0:1883)"),
        "{e}"
    );
    assert!(e.contains("mqtt.listen_v5 (0.0.0.0:1884)"), "{e}");
    c.mqtt.listen = "127.0.0.1:1883".into();
    c.mqtt.listen_v5.clear();
    let e = c.validate().unwrap_err().join("\n");
    assert!(!e.contains("without a certificate"), "{e}");
}

#[test]
fn mqtt5_listener_follows_the_plaintext_listener_s_host_unless_given_an_address() {
    let mut c = Config::default();
    // (mqtt.listen, mqtt.listen_v5, the MQTT 5 address), applied in turn.
    for (listen, listen_v5, want) in [
        (None, None, Some("0.0.0.0:1884")),
        (Some("127.0.0.1:21883"), None, Some("127.0.0.1:1884")),
        (Some(""), None, Some("0.0.0.0:1884")),
        (None, Some("192.0.2.7:1890"), Some("192.0.2.7:1890")),
        (None, Some(""), None),
    ] {
        if let Some(l) = listen {
            c.mqtt.listen = l.into();
        }
        if let Some(l) = listen_v5 {
            c.mqtt.listen_v5 = l.into();
        }
        let want = want.map(|a| a.parse().unwrap());
        assert_eq!(
            listen_v5_addr(&c.mqtt),
            Ok(want),
            "{listen:?} {listen_v5:?}"
        );
    }
    for bad in [":", ":port", ":70000", "1884", "localhost:1884"] {
        c.mqtt.listen_v5 = bad.into();
        let e = listen_v5_addr(&c.mqtt).unwrap_err();
        assert!(
            e.starts_with("mqtt.listen_v5:") && e.contains(":1884 for that port"),
            "{e}"
        );
        assert!(c.validate().unwrap_err().contains(&e));
    }
}

/// The unknown-key check's list of route keys is every key of [`RouteConfig`], and the
/// documented default file shows each one.
#[test]
fn route_keys_are_every_key_of_a_route() {
    let full = RouteConfig {
        name: "n".into(),
        topics: vec!["a/+".into()],
        exclude: Vec::new(),
        sensor_id: "topic".into(),
        format: "json".into(),
        timestamp: String::new(),
        time_zone: "UTC".into(),
        epoch_unit: Default::default(),
        measurements: BTreeMap::new(),
        measurement: String::new(),
        no_measurement: "drop".into(),
        raw_topic: "r".into(),
        agg_topic: String::new(),
        dead_letter_topic: String::new(),
        late_topic: String::new(),
        window_size: Some(std::time::Duration::from_secs(1)),
        window_grace: Some(std::time::Duration::from_secs(1)),
        ask_rebirth: false,
    };
    let table = toml::Table::try_from(&full).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut want = ROUTE_KEYS.to_vec();
    keys.sort();
    want.sort();
    assert_eq!(keys, want);
    for key in ROUTE_KEYS {
        assert!(
            DEFAULT_CONFIG_TOML.contains(&format!("\n# {key} = ")),
            "routes key {key} is not documented"
        );
    }
}

const ROUTES_EXAMPLE: &str = r#"
[[routes]]
name = "zigbee2mqtt"
topics = ["zigbee2mqtt/#"]
exclude = ["zigbee2mqtt/bridge/#", "zigbee2mqtt/+/availability"]
measurements = { temperature = "/temperature", humidity = "/humidity" }
no_measurement = "drop"

[[routes]]
name = "esphome"
topics = ["esphome/+/sensor/+/state"]
sensor_id = "topic-level:1"
format = "text"
measurement = "topic-level:3"
window_size = "1m"
"#;

#[test]
fn routes_from_a_file() {
    let c: Config = toml::from_str(ROUTES_EXAMPLE).unwrap();
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.routes[1].window_size,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(c.routes[1].time_zone, "UTC");
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    let router = c.router().unwrap();
    assert_eq!(
        router.topic_filters(),
        ["zigbee2mqtt/#", "esphome/+/sensor/+/state"]
    );
    let esphome = router.routes().nth(1).unwrap().1;
    assert_eq!(esphome.windower().options().size_ms, 60_000);
}

#[test]
fn routes_name_their_own_topics() {
    let mut c: Config = toml::from_str(ROUTES_EXAMPLE).unwrap();
    c.routes[0].raw_topic = "raw-zigbee".into();
    c.routes[0].late_topic = "late-zigbee".into();
    c.routes[1].raw_topic = "raw-zigbee".into();
    assert!(c.validate().is_ok(), "{:?}", c.validate());
    assert_eq!(
        c.route_topic_names(&Stream::ALL),
        ["raw-zigbee", "late-zigbee"]
    );
    assert!(c.route_topic_names(&[Stream::Aggregate]).is_empty());
    assert_eq!(c.route_topic_names(&[Stream::Late]), ["late-zigbee"]);
    let router = c.router().unwrap();
    let zigbee = router.routes().next().unwrap().1.topics();
    assert_eq!(zigbee.raw.as_deref(), Some("raw-zigbee"));
    assert_eq!(zigbee.aggregate, None);

    c.routes[1].agg_topic = "raw-temperature".into();
    c.routes[1].dead_letter_topic = "bad name".into();
    let errors = c.validate().unwrap_err();
    let has = |s: &str| errors.iter().any(|e| e.contains(s));
    assert!(
        has(r#"routes[1] ("esphome").agg_topic: "raw-temperature" is kafka.raw_topic"#),
        "{errors:?}"
    );
    assert!(
        has(r#"routes[1] ("esphome").dead_letter_topic: "bad name" may only contain"#),
        "{errors:?}"
    );
}

#[test]
fn route_mistakes_are_each_named() {
    let mut c: Config = toml::from_str(ROUTES_EXAMPLE).unwrap();
    c.mqtt.topic = "plant/+/t".into();
    c.routes[0].time_zone = "Mars/Olympus".into();
    c.routes[0].format = "xml".into();
    c.routes[1].sensor_id = "payload".into();
    c.routes[1].no_measurement = "ignore".into();
    let errors = c.validate().unwrap_err();
    let has = |s: &str| errors.iter().any(|e| e.contains(s));
    assert!(
        has("mqtt.topic: applies to the tutorial's single route only"),
        "{errors:?}"
    );
    assert!(
        has(r#"routes[0] ("zigbee2mqtt").time_zone: "Mars/Olympus""#),
        "{errors:?}"
    );
    assert!(
        has(r#"routes[0] ("zigbee2mqtt").format: "xml""#),
        "{errors:?}"
    );
    assert!(
        has(r#"routes[1] ("esphome").sensor_id: "payload""#),
        "{errors:?}"
    );
    assert!(
        has(r#"routes[1] ("esphome").no_measurement: "ignore""#),
        "{errors:?}"
    );

    // ESPHome's default prefix is the node's name: that overlaps zigbee2mqtt/#, which is
    // allowed (the first route takes a topic both match), and subscribed to once.
    let mut c: Config = toml::from_str(ROUTES_EXAMPLE).unwrap();
    c.routes[1].topics = vec!["+/sensor/+/state".into()];
    c.routes[1].sensor_id = "topic-level:0".into();
    c.routes[1].measurement = "topic-level:2".into();
    assert_eq!(c.router().unwrap().subscriptions(), ["+/#"]);

    let mut c: Config = toml::from_str(ROUTES_EXAMPLE).unwrap();
    c.routes[0].measurements.clear();
    c.routes[1].measurement.clear();
    let errors = c.validate().unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("has no measurements")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("needs the measurement's name")),
        "{errors:?}"
    );
}

#[test]
fn the_deferred_raw_policy_needs_the_spool_and_a_well_formed_window() {
    let mut c = Config::default();
    assert_eq!(c.raw_deferral(), Ok(None));
    c.raw.send_window = "22:00-06:00".into();
    let e = c.raw_deferral().unwrap_err();
    assert!(e.contains("only for raw.policy = \"deferred\""), "{e}");
    c.raw.policy = "deferred".into();
    assert!(matches!(c.raw_deferral(), Ok(Some(Some(_)))));
    assert_eq!(c.raw_policy(), Ok(edge_bridge_core::RawPolicy::All));
    c.raw.send_window = String::new();
    assert_eq!(c.raw_deferral(), Ok(Some(None)));
    c.raw.send_window = "22-06".into();
    let e = c.raw_deferral().unwrap_err();
    assert!(e.starts_with("raw.send_window:"), "{e}");
    c.raw.send_window = "22:00-06:00".into();
    c.raw.time_zone = "Mars/Olympus".into();
    let e = c.raw_deferral().unwrap_err();
    assert!(e.starts_with("raw.time_zone:"), "{e}");
    c.raw.time_zone = "Europe/Berlin".into();
    c.spool.enabled = false;
    let e = c.validate().unwrap_err().join("; ");
    assert!(e.contains("spool.enabled must be true"), "{e}");
}
