//! Window boundaries, lateness, idle flush and memory bounds, one behaviour per test.

use super::*;

const S: i64 = 10_000; // window size
const G: i64 = 1_000; // grace
const T0: i64 = 1_718_000_000_000; // aligned to 10 s

fn win() -> Windower {
    Windower::new(WindowOptions {
        size_ms: S,
        grace_ms: G,
        idle_timeout_ms: 5_000,
        max_sensors: 100,
        max_open_windows: 1_000,
    })
    .unwrap()
}

/// Records and returns the windows closed by this reading, as (sensor, start, count, sum).
fn rec(
    w: &mut Windower,
    sensor: &str,
    ts: i64,
    v: f64,
    now: i64,
) -> (Admission, Vec<ClosedWindow>) {
    let mut out = Vec::new();
    let a = w.record(sensor, ts, v, now, &mut out);
    (a, out)
}

fn added(start: i64) -> Admission {
    Admission::Added {
        window_start: start,
    }
}

#[test]
fn windows_are_epoch_aligned_half_open() {
    let w = win();
    assert_eq!(w.window_start(T0), T0);
    assert_eq!(w.window_start(T0 + S - 1), T0);
    // A reading exactly at `end` belongs to the next window.
    assert_eq!(w.window_start(T0 + S), T0 + S);
    assert_eq!(w.window_start(0), 0);
    assert_eq!(w.window_start(-1), -S);
}

#[test]
fn reading_at_end_opens_next_window_without_closing() {
    let mut w = win();
    assert_eq!(rec(&mut w, "a", T0, 1.0, 0).0, added(T0));
    let (a, closed) = rec(&mut w, "a", T0 + S, 2.0, 0);
    assert_eq!(a, added(T0 + S));
    assert!(
        closed.is_empty(),
        "W = end < end + grace keeps the window open"
    );
    assert_eq!(w.open_windows(), 2);
}

#[test]
fn watermark_reaching_end_plus_grace_closes_exactly() {
    let mut w = win();
    rec(&mut w, "a", T0 + 1, 4.0, 0);
    rec(&mut w, "a", T0 + 2, 6.0, 0);
    let (_, closed) = rec(&mut w, "a", T0 + S + G - 1, 0.0, 0);
    assert!(closed.is_empty(), "one ms short of end + grace");
    let (_, closed) = rec(&mut w, "a", T0 + S + G, 0.0, 0);
    assert_eq!(closed.len(), 1);
    let c = &closed[0];
    assert_eq!((&*c.sensor, c.start_ms, c.end_ms), ("a", T0, T0 + S));
    assert_eq!(c.cause, CloseCause::Watermark);
    assert_eq!(
        c.agg,
        Aggregate {
            count: 2,
            min: 4.0,
            max: 6.0,
            sum: 10.0
        }
    );
}

#[test]
fn out_of_order_within_grace_is_counted() {
    let mut w = win();
    rec(&mut w, "a", T0 + 5_000, 1.0, 0);
    rec(&mut w, "a", T0 + S + 500, 1.0, 0); // W = end + 500 < end + grace
    assert_eq!(rec(&mut w, "a", T0 + 9_999, 3.0, 0).0, added(T0));
    let (_, closed) = rec(&mut w, "a", T0 + S + G, 1.0, 0);
    assert_eq!(closed[0].agg.count, 2);
    assert_eq!(closed[0].agg.sum, 4.0);
}

#[test]
fn reading_for_closed_window_is_late_and_changes_nothing() {
    let mut w = win();
    rec(&mut w, "a", T0, 1.0, 0);
    let (_, closed) = rec(&mut w, "a", T0 + S + G, 1.0, 0);
    assert_eq!(closed.len(), 1);
    let open_before = w.open_windows();
    let (a, closed) = rec(&mut w, "a", T0 + 3, 100.0, 0);
    assert_eq!(a, Admission::Late { window_start: T0 });
    assert!(closed.is_empty());
    assert_eq!(w.open_windows(), open_before);
    // The open window is untouched by the late reading.
    let mut out = Vec::new();
    w.drain(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].agg.max, 1.0);
}

#[test]
fn late_even_when_window_was_never_opened() {
    let mut w = win();
    rec(&mut w, "a", T0 + 5 * S, 1.0, 0);
    assert_eq!(
        rec(&mut w, "a", T0, 1.0, 0).0,
        Admission::Late { window_start: T0 }
    );
}

#[test]
fn sensors_have_independent_watermarks() {
    let mut w = win();
    rec(&mut w, "a", T0, 1.0, 0);
    rec(&mut w, "b", T0 + 10 * S, 1.0, 0);
    // b's progress closes nothing of a, and a's old windows are not late.
    assert_eq!(rec(&mut w, "a", T0 + 1, 2.0, 0).0, added(T0));
    assert_eq!(w.open_windows(), 2);
}

#[test]
fn one_reading_can_close_several_windows_oldest_first() {
    let mut w = win();
    rec(&mut w, "a", T0, 1.0, 0);
    rec(&mut w, "a", T0 + S + 100, 2.0, 0);
    let (_, closed) = rec(&mut w, "a", T0 + 5 * S, 3.0, 0);
    let starts: Vec<i64> = closed.iter().map(|c| c.start_ms).collect();
    assert_eq!(starts, vec![T0, T0 + S]);
}

#[test]
fn zero_grace_closes_at_end() {
    let mut w = Windower::new(WindowOptions {
        grace_ms: 0,
        ..WindowOptions::default()
    })
    .unwrap();
    let mut out = Vec::new();
    w.record("a", T0, 1.0, 0, &mut out);
    w.record("a", T0 + S, 1.0, 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        w.record("a", T0 + S - 1, 1.0, 0, &mut out),
        Admission::Late { window_start: T0 }
    );
}

#[test]
fn idle_flush_emits_exactly_the_idle_sensors_open_windows() {
    let mut w = win();
    rec(&mut w, "quiet", T0, 1.0, 1_000);
    rec(&mut w, "quiet", T0 + S + 10, 2.0, 1_000);
    rec(&mut w, "busy", T0, 5.0, 1_000);
    rec(&mut w, "busy", T0 + 1, 5.0, 5_500);

    let mut out = Vec::new();
    w.flush_idle(5_999, &mut out);
    assert!(out.is_empty(), "4,999 ms of silence is not yet idle");
    w.flush_idle(6_000, &mut out);
    let got: Vec<(&str, i64, u64, CloseCause)> = out
        .iter()
        .map(|c| (&*c.sensor, c.start_ms, c.agg.count, c.cause))
        .collect();
    assert_eq!(
        got,
        vec![
            ("quiet", T0, 1, CloseCause::Idle),
            ("quiet", T0 + S, 1, CloseCause::Idle)
        ]
    );
    assert_eq!(w.open_windows(), 1);
    out.clear();
    w.flush_idle(6_000, &mut out);
    assert!(out.is_empty(), "a flush emits a window once");
}

#[test]
fn readings_for_idle_flushed_windows_are_late_and_new_windows_open() {
    let mut w = win();
    rec(&mut w, "a", T0, 1.0, 0);
    let mut out = Vec::new();
    w.flush_idle(10_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        rec(&mut w, "a", T0 + 2, 1.0, 10_001).0,
        Admission::Late { window_start: T0 }
    );
    assert_eq!(rec(&mut w, "a", T0 + S, 1.0, 10_002).0, added(T0 + S));
}

#[test]
fn idle_flush_depends_on_wall_clock_only() {
    let mut w = win();
    // Event time far behind the wall clock does not make a sensor idle by itself.
    rec(&mut w, "a", T0, 1.0, 1_000_000);
    let mut out = Vec::new();
    w.flush_idle(1_004_999, &mut out);
    assert!(out.is_empty());
}

#[test]
fn sensor_limit_forgets_quiet_sensors_first() {
    let mut w = Windower::new(WindowOptions {
        max_sensors: 2,
        idle_timeout_ms: 10,
        ..WindowOptions::default()
    })
    .unwrap();
    let mut out = Vec::new();
    w.record("a", T0, 1.0, 0, &mut out);
    w.record("b", T0, 1.0, 5, &mut out);
    // Both have an open window: a third sensor is refused.
    assert_eq!(
        w.record("c", T0, 1.0, 6, &mut out),
        Admission::Refused(Refusal::TooManySensors { limit: 2 })
    );
    // After an idle flush, the least recently seen sensor is forgotten to make room.
    w.flush_idle(100, &mut out);
    assert_eq!(w.record("c", T0, 1.0, 101, &mut out), added(T0));
    assert_eq!(w.forgotten_sensors(), 1);
    assert_eq!(w.sensors(), 2);
    // "b" (seen later than "a") is still known: its flushed window stays closed.
    assert_eq!(
        w.record("b", T0, 1.0, 102, &mut out),
        Admission::Late { window_start: T0 }
    );
}

#[test]
fn open_window_limit_refuses_without_losing_state() {
    let mut w = Windower::new(WindowOptions {
        max_open_windows: 2,
        ..WindowOptions::default()
    })
    .unwrap();
    let mut out = Vec::new();
    w.record("a", T0, 1.0, 0, &mut out);
    w.record("b", T0, 1.0, 0, &mut out);
    assert_eq!(
        w.record("c", T0, 1.0, 0, &mut out),
        Admission::Refused(Refusal::TooManyOpenWindows { limit: 2 })
    );
    // A reading for an open window still counts.
    assert_eq!(w.record("a", T0 + 1, 1.0, 0, &mut out), added(T0));
    // Closing windows frees room.
    w.flush_idle(WindowOptions::default().idle_timeout_ms, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(w.record("c", T0, 1.0, 0, &mut out), added(T0));
}

#[test]
fn drain_closes_everything() {
    let mut w = win();
    rec(&mut w, "a", T0, 1.0, 0);
    rec(&mut w, "b", T0, 1.0, 0);
    let mut out = Vec::new();
    w.drain(&mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|c| c.cause == CloseCause::Drain));
    assert_eq!(w.open_windows(), 0);
}

#[test]
fn bad_options_are_refused() {
    let bad = |f: fn(&mut WindowOptions)| {
        let mut o = WindowOptions::default();
        f(&mut o);
        Windower::new(o).unwrap_err()
    };
    assert_eq!(bad(|o| o.size_ms = 0), WindowConfigError::Size);
    assert_eq!(bad(|o| o.grace_ms = -1), WindowConfigError::Grace);
    assert_eq!(bad(|o| o.idle_timeout_ms = 0), WindowConfigError::Idle);
    assert_eq!(bad(|o| o.max_sensors = 0), WindowConfigError::Limits);
}

#[test]
fn snapshot_restore_continues_the_same_windows() {
    let mut a = win();
    rec(&mut a, "s", T0 + 1_000, 1.0, 0);
    rec(&mut a, "s", T0 + 2_000, 3.0, 0);
    rec(&mut a, "t", T0 + 12_000, 5.0, 0);
    let snap = a.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let mut b = win();
    let mut out = Vec::new();
    b.restore(serde_json::from_str(&json).unwrap(), 0, &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(b.open_windows(), 2);
    // The reading that closes the window does so with both pre-restart readings counted.
    let (_, closed) = rec(&mut b, "s", T0 + 11_000, 9.0, 0);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].agg.count, 2);
    assert_eq!(closed[0].agg.sum, 4.0);
}

#[test]
fn restore_keeps_emitted_windows_late() {
    let mut a = win();
    rec(&mut a, "s", T0 + 1_000, 1.0, 0);
    let (_, closed) = rec(&mut a, "s", T0 + 11_000, 2.0, 0);
    assert_eq!(closed.len(), 1);
    let mut b = win();
    b.restore(a.snapshot(), 0, &mut Vec::new()).unwrap();
    let (adm, _) = rec(&mut b, "s", T0 + 500, 7.0, 0);
    assert_eq!(adm, Admission::Late { window_start: T0 });
}

#[test]
fn restore_counts_idleness_from_the_restart() {
    let idle = 5_000; // as in win()
    let mut a = win();
    // Last seen at wall-clock 0; the bridge comes back long after the idle timeout.
    rec(&mut a, "s", T0 + 1_000, 1.0, 0);
    let restart = 10 * idle;
    let mut b = win();
    let mut out = Vec::new();
    b.restore(a.snapshot(), restart, &mut out).unwrap();
    b.flush_idle(restart + idle - 1, &mut out);
    assert!(out.is_empty(), "closed as idle by the downtime: {out:?}");
    // A reading that waited in the broker meanwhile still counts in its window.
    let (adm, _) = rec(&mut b, "s", T0 + 2_000, 3.0, restart + 1);
    assert_eq!(adm, Admission::Added { window_start: T0 });
    b.flush_idle(restart + 1 + idle, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].agg.count, 2);
    assert_eq!(out[0].cause, CloseCause::Idle);
}

#[test]
fn restore_refuses_another_window_size() {
    let a = win();
    let mut b = Windower::new(WindowOptions {
        size_ms: 5_000,
        ..WindowOptions::default()
    })
    .unwrap();
    let err = b.restore(a.snapshot(), 0, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RestoreError::SizeChanged { .. }), "{err}");
}

#[test]
fn restore_refuses_unaligned_windows() {
    let mut snap = win().snapshot();
    snap.sensors.push(SensorSnapshot {
        sensor: "s".into(),
        watermark: T0,
        flushed_end: i64::MIN,
        last_seen_ms: 0,
        windows: vec![(T0 + 3, Aggregate::of(1.0))],
    });
    let err = win().restore(snap, 0, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, RestoreError::Invalid(_)), "{err}");
}

#[test]
fn restore_closes_what_a_smaller_grace_already_closes() {
    let mut a = Windower::new(WindowOptions {
        size_ms: S,
        grace_ms: 5_000,
        ..WindowOptions::default()
    })
    .unwrap();
    a.record("s", T0 + 1_000, 1.0, 0, &mut Vec::new());
    a.record("s", T0 + 12_000, 2.0, 0, &mut Vec::new());
    assert_eq!(a.open_windows(), 2);
    let mut b = win();
    let mut out = Vec::new();
    b.restore(a.snapshot(), 0, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start_ms, T0);
    assert_eq!(b.open_windows(), 1);
}
