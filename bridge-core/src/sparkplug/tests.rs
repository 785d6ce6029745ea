use super::*;
use sparkplug_rs::payload::Metric;

const NOW: i64 = 1_733_162_460_000;
const T: u64 = 1_733_162_400_000;

fn metric(name: Option<&str>, alias: Option<u64>, datatype: Option<u32>, value: PbValue) -> Metric {
    let mut m = Metric::new();
    m.name = name.map(str::to_owned);
    m.alias = alias;
    m.datatype = datatype;
    m.value = Some(value);
    m
}

fn payload(ts: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    let mut p = Payload::new();
    p.timestamp = ts;
    p.seq = Some(0);
    p.metrics = metrics;
    p.write_to_bytes().unwrap()
}

fn birth() -> Vec<u8> {
    payload(
        Some(T),
        vec![
            metric(Some("bdSeq"), None, Some(INT64), PbValue::LongValue(3)),
            metric(
                Some("Node Control/Rebirth"),
                None,
                Some(11),
                PbValue::BooleanValue(false),
            ),
            metric(
                Some("Temperature"),
                Some(1),
                Some(DOUBLE),
                PbValue::DoubleValue(21.5),
            ),
            metric(
                Some("Offset"),
                Some(2),
                Some(INT8),
                PbValue::IntValue((-5i32) as u32),
            ),
            metric(
                Some("Running"),
                Some(3),
                Some(11),
                PbValue::BooleanValue(true),
            ),
            metric(
                Some("Count"),
                Some(4),
                Some(UINT32),
                PbValue::IntValue(u32::MAX),
            ),
        ],
    )
}

fn measured(o: Outcome) -> (String, Vec<(String, f64, i64)>) {
    match o {
        Outcome::Measured { sensor, values, .. } => (
            sensor,
            values
                .into_iter()
                .map(|(n, v, t)| (n.to_string(), v, t))
                .collect(),
        ),
        Outcome::Control => panic!("control"),
    }
}

fn decoder() -> SparkplugDecoder {
    SparkplugDecoder::new(100, 3_600_000, 256)
}

#[test]
fn birth_values_and_data_by_alias() {
    let mut d = decoder();
    let (sensor, values) = measured(
        d.decode("spBv1.0/plant/NBIRTH/edge1", &birth(), NOW)
            .unwrap(),
    );
    assert_eq!(sensor, "plant/edge1");
    let t = T as i64;
    assert_eq!(
        values,
        [
            ("Temperature".to_owned(), 21.5, t),
            ("Offset".to_owned(), -5.0, t),
            ("Count".to_owned(), f64::from(u32::MAX), t)
        ]
    );
    // DATA without names or datatypes; one metric with its own timestamp.
    let mut late = metric(None, Some(2), None, PbValue::IntValue((-7i32) as u32));
    late.timestamp = Some(T + 500);
    let data = payload(
        Some(T + 1_000),
        vec![
            metric(None, Some(1), None, PbValue::DoubleValue(22.0)),
            late,
        ],
    );
    let (_, values) = measured(d.decode("spBv1.0/plant/NDATA/edge1", &data, NOW).unwrap());
    assert_eq!(
        values,
        [
            ("Temperature".to_owned(), 22.0, t + 1_000),
            ("Offset".to_owned(), -7.0, t + 500)
        ]
    );
}

#[test]
fn devices_have_their_own_tables_and_die_with_their_node() {
    let mut d = decoder();
    d.decode("spBv1.0/plant/NBIRTH/edge1", &birth(), NOW)
        .unwrap();
    let dbirth = payload(
        Some(T),
        vec![metric(
            Some("Pressure"),
            Some(1),
            Some(FLOAT),
            PbValue::FloatValue(1.5),
        )],
    );
    d.decode("spBv1.0/plant/DBIRTH/edge1/pump", &dbirth, NOW)
        .unwrap();
    assert_eq!(d.known(), 2);
    let ddata = payload(
        Some(T + 10),
        vec![metric(None, Some(1), None, PbValue::FloatValue(2.5))],
    );
    let (sensor, values) = measured(
        d.decode("spBv1.0/plant/DDATA/edge1/pump", &ddata, NOW)
            .unwrap(),
    );
    assert_eq!(sensor, "plant/edge1/pump");
    assert_eq!(values[0].0, "Pressure");
    // A device's DEATH forgets the device only.
    assert_eq!(
        d.decode("spBv1.0/plant/DDEATH/edge1/pump", &[], NOW),
        Ok(Outcome::Control)
    );
    assert!(matches!(
        d.decode("spBv1.0/plant/DDATA/edge1/pump", &ddata, NOW),
        Err(DecodeError::UnknownAlias(_))
    ));
    d.decode("spBv1.0/plant/DBIRTH/edge1/pump", &dbirth, NOW)
        .unwrap();
    // The node's DEATH forgets the node and its devices.
    let death = payload(
        None,
        vec![metric(
            Some("bdSeq"),
            None,
            Some(INT64),
            PbValue::LongValue(3),
        )],
    );
    assert_eq!(
        d.decode("spBv1.0/plant/NDEATH/edge1", &death, NOW),
        Ok(Outcome::Control)
    );
    assert_eq!(d.known(), 0);
    for (topic, data) in [
        ("spBv1.0/plant/DDATA/edge1/pump", &ddata),
        (
            "spBv1.0/plant/NDATA/edge1",
            &payload(
                None,
                vec![metric(None, Some(1), None, PbValue::DoubleValue(1.0))],
            ),
        ),
    ] {
        let e = d.decode(topic, data, NOW).unwrap_err();
        assert_eq!(e.reason(), "unknown_alias");
        assert!(e.to_string().contains("no BIRTH seen"), "{e}");
    }
}

#[test]
fn a_rebirth_replaces_the_aliases() {
    let mut d = decoder();
    d.decode("spBv1.0/g/NBIRTH/n", &birth(), NOW).unwrap();
    let rebirth = payload(
        Some(T),
        vec![metric(
            Some("Humidity"),
            Some(1),
            Some(DOUBLE),
            PbValue::DoubleValue(40.0),
        )],
    );
    d.decode("spBv1.0/g/NBIRTH/n", &rebirth, NOW).unwrap();
    let data = payload(
        None,
        vec![metric(None, Some(1), None, PbValue::DoubleValue(41.0))],
    );
    let (_, values) = measured(d.decode("spBv1.0/g/NDATA/n", &data, NOW).unwrap());
    assert_eq!(values[0].0, "Humidity");
    assert_eq!(values[0].2, NOW, "no timestamp anywhere: the arrival time");
    let alias4 = payload(
        None,
        vec![metric(None, Some(4), None, PbValue::IntValue(1))],
    );
    assert!(d.decode("spBv1.0/g/NDATA/n", &alias4, NOW).is_err());
}

#[test]
fn by_name_without_a_birth_and_non_numeric_metrics() {
    let mut d = decoder();
    let data = payload(
        Some(T),
        vec![
            metric(Some("Level"), None, None, PbValue::IntValue((-3i32) as u32)),
            metric(
                Some("Label"),
                None,
                Some(12),
                PbValue::StringValue("x".into()),
            ),
            metric(Some("Flag"), None, None, PbValue::BooleanValue(true)),
        ],
    );
    let (_, values) = measured(d.decode("spBv1.0/g/NDATA/n2", &data, NOW).unwrap());
    assert_eq!(values, [("Level".to_owned(), -3.0, T as i64)]);
    let mut null = metric(Some("Level"), None, Some(INT32), PbValue::IntValue(1));
    null.is_null = Some(true);
    let only_text = payload(
        Some(T),
        vec![
            null,
            metric(
                Some("Label"),
                None,
                Some(12),
                PbValue::StringValue("x".into()),
            ),
        ],
    );
    assert_eq!(
        d.decode("spBv1.0/g/NDATA/n2", &only_text, NOW),
        Ok(Outcome::Control)
    );
}

#[test]
fn commands_state_and_bad_input() {
    let mut d = decoder();
    assert_eq!(
        d.decode("spBv1.0/g/NCMD/n", b"\x01", NOW),
        Ok(Outcome::Control)
    );
    assert_eq!(
        d.decode("spBv1.0/g/DCMD/n/d", b"", NOW),
        Ok(Outcome::Control)
    );
    assert_eq!(
        d.decode("spBv1.0/STATE/scada", b"{\"online\":true}", NOW),
        Ok(Outcome::Control)
    );
    assert_eq!(
        d.decode("STATE/scada", b"ONLINE", NOW),
        Ok(Outcome::Control)
    );
    for topic in [
        "spBv1.0/g/NDATA",
        "spBv1.0/g/DDATA/n",
        "spBv1.0/g/NDATA/n/d",
        "spBv1.0/g/XDATA/n",
        "other/g/NDATA/n",
        "spBv1.0//NDATA/n",
    ] {
        assert_eq!(
            d.decode(topic, &birth(), NOW).unwrap_err().reason(),
            "topic_mismatch",
            "{topic}"
        );
    }
    for bad in [
        &b"\xff\xff\xff"[..],
        b"not protobuf at all",
        b"\x12\x05\x0a\x03",
    ] {
        assert_eq!(
            d.decode("spBv1.0/g/NDATA/n", bad, NOW)
                .unwrap_err()
                .reason(),
            "not_protobuf"
        );
    }
    let ahead = payload(
        Some((NOW + 3_600_001) as u64),
        vec![metric(
            Some("x"),
            None,
            Some(DOUBLE),
            PbValue::DoubleValue(1.0),
        )],
    );
    assert_eq!(
        d.decode("spBv1.0/g/NDATA/n", &ahead, NOW)
            .unwrap_err()
            .reason(),
        "future_timestamp"
    );
}

/// Found by the `routes` fuzz target: a metric named like a field of the aggregate record
/// would have written that key twice.
#[test]
fn metric_names_that_cannot_name_a_measurement_are_dead_letters() {
    let mut d = decoder();
    for name in ["measurement", "time", "sensor", "", "a\0b"] {
        let data = payload(
            Some(T),
            vec![metric(
                Some(name),
                None,
                Some(DOUBLE),
                PbValue::DoubleValue(1.0),
            )],
        );
        let e = d.decode("spBv1.0/g/NDATA/n", &data, NOW).unwrap_err();
        assert_eq!(e.reason(), "bad_measurement_name", "{name:?}");
    }
}

#[test]
fn the_table_limit_is_explained() {
    let mut d = SparkplugDecoder::new(1, 3_600_000, 256);
    d.decode("spBv1.0/g/NBIRTH/a", &birth(), NOW).unwrap();
    d.decode("spBv1.0/g/NBIRTH/b", &birth(), NOW).unwrap();
    let data = payload(
        None,
        vec![metric(None, Some(1), None, PbValue::DoubleValue(1.0))],
    );
    assert!(d.decode("spBv1.0/g/NDATA/a", &data, NOW).is_ok());
    let e = d.decode("spBv1.0/g/NDATA/b", &data, NOW).unwrap_err();
    assert!(e.to_string().contains("window.max_sensors"), "{e}");
}

proptest::proptest! {
    /// Whatever the bytes, a dead letter or a result, never a panic.
    #[test]
    fn any_bytes_are_an_outcome_or_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let mut d = decoder();
        d.decode("spBv1.0/g/NBIRTH/n", &bytes, NOW).ok();
        let _ = d.decode("spBv1.0/g/NDATA/n", &bytes, NOW);
    }
}

#[test]
fn rebirth_requests_only_when_asked_for_and_at_most_every_30_s_per_node() {
    let data = payload(
        Some(T),
        vec![metric(None, Some(1), None, PbValue::DoubleValue(22.0))],
    );
    // Off by default: a bridge that only listens writes nothing to the plant.
    let mut quiet = decoder();
    assert!(quiet.decode("spBv1.0/g/DDATA/n/d", &data, NOW).is_err());
    assert!(quiet.take_commands().is_empty());

    let mut d = decoder().asking_rebirth();
    let e = d.decode("spBv1.0/g/DDATA/n/d", &data, NOW).unwrap_err();
    assert!(e.to_string().contains("asked for a rebirth"), "{e}");
    // The node's own DATA and another device's within 30 s: no second request.
    let _ = d.decode("spBv1.0/g/NDATA/n", &data, NOW + 1_000);
    let _ = d.decode("spBv1.0/g/DDATA/n/other", &data, NOW + 29_999);
    let _ = d.decode("spBv1.0/g/DDATA/m/d", &data, NOW + 2_000);
    let asked = d.take_commands();
    let topics: Vec<&str> = asked.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["spBv1.0/g/NCMD/n", "spBv1.0/g/NCMD/m"]);
    assert!(d.take_commands().is_empty(), "taken once");
    let _ = d.decode("spBv1.0/g/DDATA/n/d", &data, NOW + 30_000);
    assert_eq!(d.take_commands().len(), 1, "asked again after 30 s");

    // The request, as a node reads it.
    let p = Payload::parse_from_bytes(&asked[0].1).unwrap();
    assert_eq!(p.metrics.len(), 1);
    let m = &p.metrics[0];
    assert_eq!(m.name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(m.datatype, Some(BOOLEAN));
    assert_eq!(m.value, Some(PbValue::BooleanValue(true)));
    assert_eq!(p.timestamp, Some(NOW as u64));

    // Once born, the node's DATA are read, and nothing is asked.
    d.decode("spBv1.0/g/NBIRTH/n", &birth(), NOW + 31_000)
        .unwrap();
    let node_data = payload(
        Some(T),
        vec![metric(None, Some(1), None, PbValue::DoubleValue(22.0))],
    );
    d.decode("spBv1.0/g/NDATA/n", &node_data, NOW + 31_001)
        .unwrap();
    assert!(d.take_commands().is_empty());
}
