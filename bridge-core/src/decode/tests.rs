//! One test per accepted input form and per rejection reason.

use super::*;

const T: i64 = 1_718_000_000_000; // 2024-06-10T06:13:20Z
const NOW: i64 = T + 5_000;
const TOPIC: &str = "sensors/s1/temperature";

fn dec() -> Decoder {
    Decoder::new(DecodeOptions::default()).unwrap()
}

fn with(f: impl FnOnce(&mut DecodeOptions)) -> Decoder {
    let mut o = DecodeOptions::default();
    f(&mut o);
    Decoder::new(o).unwrap()
}

fn ok(d: &Decoder, topic: &str, payload: &str) -> (String, i64, f64, bool) {
    let r = d
        .decode(topic, payload.as_bytes(), NOW)
        .unwrap_or_else(|e| panic!("{payload}: {e}"));
    (r.sensor.into_owned(), r.ts_ms, r.value, r.ts_from_payload)
}

fn reason(d: &Decoder, topic: &str, payload: &[u8]) -> &'static str {
    match d.decode(topic, payload, NOW) {
        Ok(r) => panic!("{:?} decoded to {r:?}", String::from_utf8_lossy(payload)),
        Err(e) => {
            // Every rejection explains itself.
            assert!(!e.to_string().is_empty());
            e.reason()
        }
    }
}

#[test]
fn tutorial_shape_iso_without_fraction() {
    let d = dec();
    assert_eq!(
        ok(&d, TOPIC, r#"{"ts": "2024-06-10T06:13:20", "value": 42}"#),
        ("s1".into(), T, 42.0, true)
    );
}

#[test]
fn iso_with_fraction_and_offsets() {
    let d = dec();
    let p = |ts: &str| ok(&d, TOPIC, &format!(r#"{{"ts":"{ts}","value":1}}"#)).1;
    assert_eq!(p("2024-06-10T06:13:20.123456"), T + 123);
    assert_eq!(p("2024-06-10T06:13:20Z"), T);
    assert_eq!(p("2024-06-10T08:13:20.5+02:00"), T + 500);
    assert_eq!(p("2024-06-10 06:13:20"), T);
}

#[test]
fn epoch_seconds_and_millis() {
    let d = dec();
    assert_eq!(ok(&d, TOPIC, r#"{"ts":1718000000,"value":1}"#).1, T);
    assert_eq!(
        ok(&d, TOPIC, r#"{"ts":1718000000.25,"value":1}"#).1,
        T + 250
    );
    assert_eq!(
        ok(&d, TOPIC, r#"{"ts":1718000000123,"value":1}"#).1,
        T + 123
    );
    let ms = with(|o| o.epoch_unit = EpochUnit::Millis);
    assert_eq!(ok(&ms, TOPIC, r#"{"ts":5000,"value":1}"#).1, 5000);
}

#[test]
fn missing_or_null_ts_means_arrival_time() {
    let d = dec();
    assert_eq!(
        ok(&d, TOPIC, r#"{"value":1}"#),
        ("s1".into(), NOW, 1.0, false)
    );
    assert_eq!(ok(&d, TOPIC, r#"{"ts":null,"value":1}"#).1, NOW);
}

#[test]
fn double_encoded_json_string() {
    let d = dec();
    // json.dumps(json.dumps({...})), as the tutorial's producer did.
    let p = r#""{\"ts\": \"2024-06-10T06:13:20\", \"value\": 7}""#;
    assert_eq!(ok(&d, TOPIC, p), ("s1".into(), T, 7.0, true));
}

#[test]
fn integer_and_float_values() {
    let d = dec();
    assert_eq!(ok(&d, TOPIC, r#"{"value":-3}"#).2, -3.0);
    assert_eq!(ok(&d, TOPIC, r#"{"value":21.625}"#).2, 21.625);
    assert_eq!(ok(&d, TOPIC, r#"{"value":1e3}"#).2, 1000.0);
    assert_eq!(
        ok(&d, TOPIC, r#"{"value":18446744073709551615}"#).2,
        1.8446744073709552e19
    );
}

#[test]
fn unknown_fields_are_ignored_and_last_duplicate_wins() {
    let d = dec();
    let p = r#"{"unit":"C","value":1,"meta":{"a":[1,2]},"value":2}"#;
    assert_eq!(ok(&d, TOPIC, p).2, 2.0);
}

#[test]
fn sensor_id_from_topic_level_and_payload_field() {
    let lvl = with(|o| {
        o.topic_filter = "plant/#".into();
        o.sensor_id = SensorIdSource::TopicLevel(2);
    });
    assert_eq!(ok(&lvl, "plant/a/boiler/t", r#"{"value":1}"#).0, "boiler");

    let field = with(|o| o.sensor_id = SensorIdSource::Field("id".into()));
    assert_eq!(ok(&field, TOPIC, r#"{"id":"dev-9","value":1}"#).0, "dev-9");
    assert_eq!(ok(&field, TOPIC, r#"{"id":17,"value":1}"#).0, "17");
    assert_eq!(ok(&field, TOPIC, r#"{"id":"a\"b","value":1}"#).0, "a\"b");

    let two = with(|o| o.topic_filter = "site/+/+/temperature".into());
    assert_eq!(ok(&two, "site/n/7/temperature", r#"{"value":1}"#).0, "n/7");
}

#[test]
fn sensor_id_borrows_when_it_can() {
    let d = dec();
    let r = d.decode(TOPIC, br#"{"value":1}"#, NOW).unwrap();
    assert!(matches!(r.sensor, Cow::Borrowed(_)));
}

#[test]
fn custom_field_names() {
    let d = with(|o| {
        o.ts_field = "time".into();
        o.value_field = "temp".into();
    });
    assert_eq!(
        ok(&d, TOPIC, r#"{"time":1718000000,"temp":3.5,"value":"x"}"#),
        ("s1".into(), T, 3.5, true)
    );
}

#[test]
fn rejects_each_reason() {
    let d = dec();
    let r = |p: &str| reason(&d, TOPIC, p.as_bytes());
    assert_eq!(reason(&d, "other/s1/temperature", b"{}"), "topic_mismatch");
    assert_eq!(r(""), "not_json");
    assert_eq!(r("{\"value\":"), "not_json");
    assert_eq!(r("{\"value\":1} trailing"), "not_json");
    assert_eq!(reason(&d, TOPIC, b"\xff\xfe"), "not_json");
    assert_eq!(r("[1,2]"), "not_object");
    assert_eq!(r("42"), "not_object");
    assert_eq!(r("true"), "not_object");
    assert_eq!(r("null"), "not_object");
    assert_eq!(r("\"hello\""), "not_object");
    assert_eq!(r(r#""\"{\\\"value\\\":1}\"""#), "not_object");
    assert_eq!(r(r#""{\"value\": }""#), "not_json");
    assert_eq!(r("{}"), "missing_value");
    assert_eq!(r(r#"{"ts":"2024-06-10T06:13:20"}"#), "missing_value");
    assert_eq!(r(r#"{"value":"21.5"}"#), "value_not_number");
    assert_eq!(r(r#"{"value":null}"#), "value_not_number");
    assert_eq!(r(r#"{"value":true}"#), "value_not_number");
    assert_eq!(r(r#"{"value":{"c":1}}"#), "value_not_number");
    assert_eq!(r(r#"{"value":[1]}"#), "value_not_number");
    assert_eq!(r(r#"{"value":NaN}"#), "value_not_finite");
    assert_eq!(r(r#"{"value":Infinity}"#), "value_not_finite");
    assert_eq!(r(r#"{"value":1e400}"#), "value_not_finite");
    assert_eq!(r(r#"{"ts":"noon","value":1}"#), "bad_timestamp");
    assert_eq!(r(r#"{"ts":true,"value":1}"#), "bad_timestamp");
    assert_eq!(r(r#"{"ts":{"s":1},"value":1}"#), "bad_timestamp");
    assert_eq!(r(r#"{"ts":-1,"value":1}"#), "bad_timestamp");
    assert_eq!(
        r(r#"{"ts":"1960-01-01T00:00:00","value":1}"#),
        "bad_timestamp"
    );
    assert_eq!(
        r(r#"{"ts":"2124-06-10T06:13:20","value":1}"#),
        "future_timestamp"
    );
    assert_eq!(
        reason(&d, "sensors//temperature", b"{\"value\":1}"),
        "missing_sensor_id"
    );
}

#[test]
fn rejection_messages_name_the_problem() {
    let d = dec();
    let e = |p: &str| d.decode(TOPIC, p.as_bytes(), NOW).unwrap_err().to_string();
    assert_eq!(e("{}"), "payload has no `value` field");
    assert_eq!(
        e(r#"{"value":"21.5"}"#),
        "field `value` is a string, not a number"
    );
    assert!(e("[1]").contains("an array"), "{}", e("[1]"));
    assert!(e(r#"{"ts":"noon","value":1}"#).contains("\"noon\""));
    assert!(e(r#"{"ts":1718003700,"value":1}"#).contains("3695000 ms ahead"));
    assert_eq!(e(""), "payload is not valid JSON: the payload is empty");
}

#[test]
fn future_skew_limit_is_inclusive() {
    let d = with(|o| o.max_future_skew_ms = 1_000);
    assert!(d
        .decode(TOPIC, br#"{"ts":1718000006,"value":1}"#, NOW)
        .is_ok());
    let e = d
        .decode(TOPIC, br#"{"ts":1718000006001,"value":1}"#, NOW)
        .unwrap_err();
    assert_eq!(e.reason(), "future_timestamp");
}

#[test]
fn sensor_field_rejections() {
    let d = with(|o| o.sensor_id = SensorIdSource::Field("id".into()));
    let r = |p: &str| reason(&d, TOPIC, p.as_bytes());
    assert_eq!(r(r#"{"value":1}"#), "missing_sensor_id");
    assert_eq!(r(r#"{"id":"","value":1}"#), "missing_sensor_id");
    assert_eq!(r(r#"{"id":1.5,"value":1}"#), "bad_sensor_id");
    assert_eq!(r(r#"{"id":null,"value":1}"#), "bad_sensor_id");
    assert_eq!(r(r#"{"id":["a"],"value":1}"#), "bad_sensor_id");
    let long = format!(r#"{{"id":"{}","value":1}}"#, "x".repeat(257));
    assert_eq!(r(&long), "bad_sensor_id");

    let lvl = with(|o| {
        o.topic_filter = "sensors/#".into();
        o.sensor_id = SensorIdSource::TopicLevel(3);
    });
    assert_eq!(
        reason(&lvl, "sensors/a", b"{\"value\":1}"),
        "missing_sensor_id"
    );
}

#[test]
fn every_reason_is_listed() {
    let d = dec();
    let e = d.decode(TOPIC, b"[]", NOW).unwrap_err();
    assert!(DecodeError::REASONS.contains(&e.reason()));
}

#[test]
fn bad_options_are_refused() {
    let bad = |f: fn(&mut DecodeOptions)| {
        let mut o = DecodeOptions::default();
        f(&mut o);
        Decoder::new(o).unwrap_err()
    };
    assert!(matches!(
        bad(|o| o.topic_filter = "sensors/#".into()),
        DecodeConfigError::NoWildcard(_)
    ));
    assert!(matches!(
        bad(|o| o.topic_filter = "a/b+".into()),
        DecodeConfigError::Filter(_)
    ));
    assert_eq!(bad(|o| o.ts_field.clear()), DecodeConfigError::EmptyField);
    assert_eq!(
        bad(|o| o.value_field = "ts".into()),
        DecodeConfigError::SameField("ts".into())
    );
    assert_eq!(
        bad(|o| o.sensor_id = SensorIdSource::Field("value".into())),
        DecodeConfigError::SameField("value".into())
    );
    assert_eq!(
        bad(|o| o.max_future_skew_ms = -1),
        DecodeConfigError::NegativeSkew
    );
}
