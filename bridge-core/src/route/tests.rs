use super::*;

const NOW: i64 = 1_733_162_460_000; // 2024-12-02T18:01:00Z

fn route(topics: &[&str], measurements: MeasurementSpec) -> RouteOptions {
    RouteOptions {
        name: "r".into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        exclude: Vec::new(),
        sensor_id: SensorRule::Topic,
        format: PayloadFormat::Json,
        timestamp: String::new(),
        time_zone: Tz::UTC,
        epoch_unit: EpochUnit::Auto,
        measurements,
        no_measurement: NoMeasurement::DeadLetter,
        max_future_skew_ms: 3_600_000,
        max_sensor_id_bytes: 256,
        ask_rebirth: false,
    }
}

fn fields(list: &[(&str, &str)]) -> MeasurementSpec {
    MeasurementSpec::Fields(
        list.iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect(),
    )
}

fn values(m: &Measured<'_>) -> Vec<(String, f64)> {
    m.values.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

fn zigbee() -> RouteDecoder {
    let mut r = route(
        &["zigbee2mqtt/#"],
        fields(&[
            ("temperature", "/temperature"),
            ("humidity", "/humidity"),
            ("pressure", "/pressure"),
        ]),
    );
    r.exclude = vec![
        "zigbee2mqtt/bridge/#".into(),
        "zigbee2mqtt/+/availability".into(),
    ];
    RouteDecoder::new(r).unwrap()
}

#[test]
fn zigbee2mqtt_several_measurements_and_numeric_strings() {
    let d = zigbee();
    let topic = "zigbee2mqtt/Living Room/thermo";
    assert_eq!(d.claims(topic), Claim::Yes);
    let m = d
        .decode(
            topic,
            br#"{"battery":100,"humidity":45.2,"linkquality":120,"pressure":1013.2,"temperature":21.5,"voltage":3000}"#,
            NOW,
        )
        .unwrap();
    assert_eq!(m.sensor, "Living Room/thermo");
    assert_eq!((m.ts_ms, m.ts_from_payload), (NOW, false));
    assert_eq!(
        values(&m),
        [
            ("temperature".into(), 21.5),
            ("humidity".into(), 45.2),
            ("pressure".into(), 1013.2)
        ]
    );
    // Older versions: numbers as strings; only some measurements present.
    let m = d
        .decode(topic, br#"{"temperature":"21.50","humidity":" 45 "}"#, NOW)
        .unwrap();
    assert_eq!(
        values(&m),
        [("temperature".into(), 21.5), ("humidity".into(), 45.0)]
    );
    // A button: no measurement of this route.
    assert!(matches!(
        d.decode(
            "zigbee2mqtt/button",
            br#"{"action":"single","battery":90}"#,
            NOW
        ),
        Err(DecodeError::NoMeasurement(_))
    ));
    // Non-numeric values of a measurement's field are ignored.
    let m = d
        .decode(
            topic,
            br#"{"temperature":"ON","humidity":true,"pressure":990}"#,
            NOW,
        )
        .unwrap();
    assert_eq!(values(&m), [("pressure".into(), 990.0)]);
    assert_eq!(d.claims("zigbee2mqtt/bridge/state"), Claim::Excluded);
    assert_eq!(d.claims("zigbee2mqtt/bridge/devices"), Claim::Excluded);
    assert_eq!(d.claims("zigbee2mqtt/thermo/availability"), Claim::Excluded);
    assert_eq!(d.claims("tele/x/SENSOR"), Claim::No);
}

#[test]
fn bad_json_and_non_objects_are_dead_letters() {
    let d = zigbee();
    let t = "zigbee2mqtt/a";
    assert!(matches!(
        d.decode(t, b"", NOW),
        Err(DecodeError::NotJson(_))
    ));
    assert!(matches!(
        d.decode(t, b"{", NOW),
        Err(DecodeError::NotJson(_))
    ));
    assert!(matches!(
        d.decode(t, b"[1]", NOW),
        Err(DecodeError::NotObject(_))
    ));
    assert!(matches!(
        d.decode(t, b"21.5", NOW),
        Err(DecodeError::NotObject(_))
    ));
    assert!(matches!(
        d.decode("zigbee2mqtt/a//b", br#"{"temperature":1}"#, NOW),
        Err(DecodeError::MissingSensorId(_))
    ));
}

fn tasmota() -> RouteDecoder {
    let mut r = route(
        &["tele/+/SENSOR"],
        fields(&[
            ("temperature", "/SHT3X/Temperature"),
            ("humidity", "/SHT3X/Humidity"),
            ("probe_{key}", "/DS18B20-*/Temperature"),
        ]),
    );
    r.timestamp = "/Time".into();
    r.time_zone = "Europe/Berlin".parse().unwrap();
    RouteDecoder::new(r).unwrap()
}

#[test]
fn tasmota_nested_chips_numbered_probes_and_local_time() {
    let d = tasmota();
    let m = d
        .decode(
            "tele/kitchen/SENSOR",
            br#"{"Time":"2024-12-02T19:00:00","SHT3X":{"Temperature":21.4,"Humidity":45.2,"DewPoint":9.0},"DS18B20-1":{"Id":"0316A2794E6F","Temperature":19.8},"DS18B20-2":{"Id":"0316A279AAAA","Temperature":20.1},"TempUnit":"C"}"#,
            NOW,
        )
        .unwrap();
    assert_eq!(m.sensor, "kitchen");
    // 19:00 in Berlin in December is 18:00 UTC.
    assert_eq!((m.ts_ms, m.ts_from_payload), (1_733_162_400_000, true));
    assert_eq!(
        values(&m),
        [
            ("temperature".into(), 21.4),
            ("humidity".into(), 45.2),
            ("probe_DS18B20-1".into(), 19.8),
            ("probe_DS18B20-2".into(), 20.1)
        ]
    );
    // A timestamp that is not one is a dead letter, not the arrival time.
    assert!(matches!(
        d.decode(
            "tele/kitchen/SENSOR",
            br#"{"Time":"soon","SHT3X":{"Temperature":1}}"#,
            NOW
        ),
        Err(DecodeError::BadTimestamp(_))
    ));
    assert!(matches!(
        d.decode(
            "tele/kitchen/SENSOR",
            br#"{"Time":[1],"SHT3X":{"Temperature":1}}"#,
            NOW
        ),
        Err(DecodeError::TimestampType { .. })
    ));
    // A clock an hour and more ahead is refused like the tutorial's.
    assert!(matches!(
        d.decode(
            "tele/kitchen/SENSOR",
            br#"{"Time":"2024-12-02T21:00:01","SHT3X":{"Temperature":1}}"#,
            NOW
        ),
        Err(DecodeError::FutureTimestamp { .. })
    ));
}

#[test]
fn esphome_text_payloads_named_by_a_topic_level() {
    let mut r = route(&["+/sensor/+/state"], MeasurementSpec::TopicLevel(2));
    r.format = PayloadFormat::Text;
    r.sensor_id = SensorRule::TopicLevel(0);
    let d = RouteDecoder::new(r).unwrap();
    let m = d
        .decode("livingroom/sensor/temperature/state", b" 21.5\n", NOW)
        .unwrap();
    assert_eq!(m.sensor, "livingroom");
    assert_eq!(values(&m), [("temperature".into(), 21.5)]);
    assert_eq!((m.ts_ms, m.ts_from_payload), (NOW, false));
    for not in [&b"nan"[..], b"unavailable", b"", b"\xff\xfe", b"{\"v\":1}"] {
        assert!(
            matches!(
                d.decode("livingroom/sensor/temperature/state", not, NOW),
                Err(DecodeError::NoMeasurement(_))
            ),
            "{not:?}"
        );
    }
    assert!(d.single_measurement().is_none());
}

#[test]
fn shelly_gen2_rpc_notifications_with_fractional_epoch_seconds() {
    let mut r = route(
        &["+/events/rpc"],
        fields(&[
            ("temperature", "/params/temperature:0/tC"),
            ("humidity", "/params/humidity:0/rh"),
        ]),
    );
    r.timestamp = "/params/ts".into();
    r.no_measurement = NoMeasurement::Drop;
    let d = RouteDecoder::new(r).unwrap();
    let m = d
        .decode(
            "shellyplusht-08b61fcb7f3c/events/rpc",
            br#"{"src":"shellyplusht-08b61fcb7f3c","dst":"shellyplusht-08b61fcb7f3c/events","method":"NotifyStatus","params":{"ts":1733162400.52,"temperature:0":{"id":0,"tC":21.3,"tF":70.3}}}"#,
            NOW,
        )
        .unwrap();
    assert_eq!(m.sensor, "shellyplusht-08b61fcb7f3c");
    assert_eq!(m.ts_ms, 1_733_162_400_520);
    assert_eq!(values(&m), [("temperature".into(), 21.3)]);
    assert!(matches!(
        d.decode(
            "shellyplusht-08b61fcb7f3c/events/rpc",
            br#"{"method":"NotifyStatus","params":{"ts":1733162400.6,"devicepower:0":{"id":0,"battery":{"V":5.9,"percent":85}}}}"#,
            NOW
        ),
        Err(DecodeError::NoMeasurement(_))
    ));
}

#[test]
fn sensor_id_from_a_payload_field() {
    let mut r = route(&["plant/line1"], fields(&[("flow", "/m/flow")]));
    r.sensor_id = SensorRule::Field("/device/id".into());
    let d = RouteDecoder::new(r).unwrap();
    let m = d
        .decode(
            "plant/line1",
            br#"{"device":{"id":42},"m":{"flow":3}}"#,
            NOW,
        )
        .unwrap();
    assert_eq!(m.sensor, "42");
    assert!(matches!(
        d.decode("plant/line1", br#"{"m":{"flow":3}}"#, NOW),
        Err(DecodeError::MissingSensorId(_))
    ));
    for bad in [
        &br#"{"device":{"id":""},"m":{"flow":3}}"#[..],
        br#"{"device":{"id":1.5},"m":{"flow":3}}"#,
        br#"{"device":{"id":"a\u0000b"},"m":{"flow":3}}"#,
    ] {
        assert!(
            matches!(
                d.decode("plant/line1", bad, NOW),
                Err(DecodeError::BadSensorId(_))
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn configuration_mistakes_are_refused_with_the_fix() {
    let ok = || route(&["a/+"], fields(&[("t", "/t")]));
    let err = |r: RouteOptions| RouteDecoder::new(r).unwrap_err();
    let mut r = ok();
    r.topics.clear();
    assert!(matches!(err(r), RouteConfigError::NoTopics(_)));
    let mut r = ok();
    r.topics = vec!["a/b".into()];
    assert!(matches!(err(r), RouteConfigError::NoWildcard(..)));
    let mut r = ok();
    r.topics = vec!["a/+x".into()];
    assert!(matches!(err(r), RouteConfigError::Filter { .. }));
    assert!(matches!(
        err(route(&["a/+"], fields(&[]))),
        RouteConfigError::NoMeasurements(_)
    ));
    assert!(matches!(
        err(route(&["a/+"], fields(&[("t", "t")]))),
        RouteConfigError::Path { .. }
    ));
    assert!(matches!(
        err(route(&["a/+"], fields(&[("t", "/p-*/t")]))),
        RouteConfigError::PatternWithoutKey(..)
    ));
    assert!(matches!(
        err(route(&["a/+"], fields(&[("t_{key}", "/p/t")]))),
        RouteConfigError::KeyWithoutPattern(..)
    ));
    for name in ["", "time", "sensor", "measurement", "a\0b"] {
        assert!(matches!(
            err(route(&["a/+"], fields(&[(name, "/t")]))),
            RouteConfigError::BadName(..)
        ));
    }
    assert!(matches!(
        err(route(&["a/+"], MeasurementSpec::Named("t".into()))),
        RouteConfigError::FormatMismatch(_)
    ));
    let mut r = route(&["a/+"], MeasurementSpec::Named("t".into()));
    r.format = PayloadFormat::Text;
    r.timestamp = "/ts".into();
    assert!(matches!(err(r), RouteConfigError::TextTimestamp(_)));
    let mut r = ok();
    r.max_future_skew_ms = -1;
    assert!(matches!(err(r), RouteConfigError::NegativeSkew));
}

#[test]
fn a_pattern_name_that_collides_with_a_record_field_is_a_dead_letter() {
    let d = RouteDecoder::new(route(&["a/+"], fields(&[("{key}", "/*/v")]))).unwrap();
    assert!(matches!(
        d.decode("a/b", br#"{"sensor":{"v":1}}"#, NOW),
        Err(DecodeError::BadMeasurementName(_))
    ));
    let m = d.decode("a/b", br#"{"co2":{"v":1}}"#, NOW).unwrap();
    assert_eq!(values(&m), [("co2".into(), 1.0)]);
}

#[test]
fn series_keys_split_back() {
    assert_eq!(series_key("a/b", None), "a/b");
    let k = series_key("a/b", Some("humidity"));
    assert_eq!(split_series(&k), ("a/b", Some("humidity")));
    assert_eq!(split_series("plain"), ("plain", None));
}
