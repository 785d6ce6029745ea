//! The per-window summary: count, min, max, sum (mean is derived, never stored).
//!
//! Keeping `sum` and `count` rather than a running mean makes aggregates mergeable: partial
//! aggregates of the same window from several bridges combine exactly, in any grouping.

/// Count/min/max/sum over the readings of one window. Never empty: built from a first value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aggregate {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

impl Aggregate {
    /// The aggregate of a single reading.
    pub fn of(value: f64) -> Self {
        Self {
            count: 1,
            min: value,
            max: value,
            sum: value,
        }
    }

    /// Adds one reading.
    pub fn add(&mut self, value: f64) {
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
    }

    /// Combines two partial aggregates of the same window.
    pub fn merge(&self, other: &Aggregate) -> Aggregate {
        Aggregate {
            count: self.count + other.count,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            sum: self.sum + other.sum,
        }
    }

    /// `sum / count`, clamped into `[min, max]`: floating-point rounding of a long sum can put
    /// the quotient a hair outside, which a consumer checking `min <= mean <= max` would reject.
    pub fn mean(&self) -> f64 {
        (self.sum / self.count as f64).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn add_tracks_all_fields() {
        let mut a = Aggregate::of(3.0);
        a.add(-1.0);
        a.add(4.0);
        assert_eq!(
            a,
            Aggregate {
                count: 3,
                min: -1.0,
                max: 4.0,
                sum: 6.0
            }
        );
        assert_eq!(a.mean(), 2.0);
    }

    #[test]
    fn mean_stays_within_bounds() {
        // 0.1 added ten times sums to 0.9999999999999999; the mean of equal values is the value.
        let mut a = Aggregate::of(0.1);
        for _ in 0..9 {
            a.add(0.1);
        }
        assert!(a.mean() >= a.min && a.mean() <= a.max);
    }

    fn agg() -> impl Strategy<Value = Aggregate> {
        prop::collection::vec(-1000i32..1000, 1..20).prop_map(|vs| {
            let mut a = Aggregate::of(vs[0] as f64);
            vs[1..].iter().for_each(|v| a.add(*v as f64));
            a
        })
    }

    proptest! {
        // Integer-valued readings keep sums exact, so merge must be associative and
        // commutative to the bit, and equal to adding the readings one by one.
        #[test]
        fn merge_is_associative_and_commutative(a in agg(), b in agg(), c in agg()) {
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&b), b.merge(&a));
        }

        #[test]
        fn merge_equals_adding_one_by_one(xs in prop::collection::vec(-1e6f64..1e6, 2..40), cut in 1usize..39) {
            let cut = cut.min(xs.len() - 1);
            let build = |vs: &[f64]| {
                let mut a = Aggregate::of(vs[0]);
                vs[1..].iter().for_each(|v| a.add(*v));
                a
            };
            let whole = build(&xs);
            let merged = build(&xs[..cut]).merge(&build(&xs[cut..]));
            prop_assert_eq!(whole.count, merged.count);
            prop_assert_eq!(whole.min, merged.min);
            prop_assert_eq!(whole.max, merged.max);
            prop_assert!((whole.sum - merged.sum).abs() <= 1e-6 * (1.0 + whole.sum.abs()));
        }
    }
}
