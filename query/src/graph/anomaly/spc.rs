//! Statistical process control over one series: a baseline (mean, σ), Shewhart limits
//! mean ± kσ, EWMA with its own limits, tabular CUSUM, and the Western Electric / Nelson
//! rules. Plain functions over numbers; the SQL functions feed them series from the graph.

/// Fewer baseline values than this give no limits: σ from two or three points says nothing.
pub const MIN_BASELINE_POINTS: usize = 5;
/// The EWMA weight of the newest point (Montgomery's usual 0.2).
pub const EWMA_LAMBDA: f64 = 0.2;
/// CUSUM slack and decision interval, in σ (Montgomery: k = 0.5, h = 5 detects a 1σ shift).
pub const CUSUM_K: f64 = 0.5;
pub const CUSUM_H: f64 = 5.0;
/// The run lengths of the rules: eight on one side of the mean, six rising or falling.
pub const SAME_SIDE_RUN: usize = 8;
pub const TREND_RUN: usize = 6;

/// The centre line and spread that the limits are built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub mean: f64,
    /// The sample standard deviation (n - 1).
    pub sigma: f64,
}

/// The mean and sample standard deviation of `values`, or `None` with fewer than
/// [`MIN_BASELINE_POINTS`] values (NaN and infinite values are skipped).
pub fn baseline(values: &[f64]) -> Option<Baseline> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < MIN_BASELINE_POINTS {
        return None;
    }
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let squares: f64 = finite.iter().map(|v| (v - mean) * (v - mean)).sum();
    Some(Baseline {
        mean,
        sigma: (squares / (n - 1.0)).sqrt(),
    })
}

/// [`baseline`] of a series that grows one value at a time, without keeping the values
/// (Welford's update: the same mean and sample σ, in constant memory per series).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunningBaseline {
    count: usize,
    mean: f64,
    /// The sum of squared distances from the running mean.
    squares: f64,
}

impl RunningBaseline {
    /// Adds `value` (NaN and infinite values are skipped, as [`baseline`] skips them).
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.squares += delta * (value - self.mean);
    }

    /// `None` with fewer than [`MIN_BASELINE_POINTS`] values, as [`baseline`].
    pub fn baseline(&self) -> Option<Baseline> {
        if self.count < MIN_BASELINE_POINTS {
            return None;
        }
        Some(Baseline {
            mean: self.mean,
            sigma: (self.squares.max(0.0) / (self.count as f64 - 1.0)).sqrt(),
        })
    }
}

/// One point of a control chart: the value and the statistics known at that point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControlPoint {
    pub value: f64,
    /// The Shewhart limits mean ± kσ (the same for every point).
    pub lower: f64,
    pub upper: f64,
    /// z_i = λ x_i + (1 - λ) z_{i-1}, starting from z_0 = mean.
    pub ewma: f64,
    /// mean ± kσ √(λ / (2 - λ) · (1 - (1 - λ)^{2i})): narrow at first, widening to the
    /// asymptotic limits.
    pub ewma_lower: f64,
    pub ewma_upper: f64,
    /// C⁺_i = max(0, x_i - (mean + Kσ) + C⁺_{i-1}); C⁻ the same below the mean.
    pub cusum_high: f64,
    pub cusum_low: f64,
    /// Hσ: a CUSUM beyond it signals.
    pub cusum_limit: f64,
}

/// The control chart of `values` against `base` with limits at `k` σ. The EWMA and CUSUM run
/// from the first value (include the baseline in `values` so they start settled).
pub fn control(values: &[f64], base: Baseline, k: f64) -> Vec<ControlPoint> {
    let Baseline { mean, sigma } = base;
    let mut ewma = mean;
    let (mut high, mut low) = (0.0_f64, 0.0_f64);
    let lambda = EWMA_LAMBDA;
    values
        .iter()
        .enumerate()
        .map(|(i, &value)| {
            ewma = lambda * value + (1.0 - lambda) * ewma;
            let steps = 2.0 * (i as f64 + 1.0);
            let width =
                k * sigma * (lambda / (2.0 - lambda) * (1.0 - (1.0 - lambda).powf(steps))).sqrt();
            high = (value - (mean + CUSUM_K * sigma) + high).max(0.0);
            low = ((mean - CUSUM_K * sigma) - value + low).max(0.0);
            ControlPoint {
                value,
                lower: mean - k * sigma,
                upper: mean + k * sigma,
                ewma,
                ewma_lower: mean - width,
                ewma_upper: mean + width,
                cusum_high: high,
                cusum_low: low,
                cusum_limit: CUSUM_H * sigma,
            }
        })
        .collect()
}

/// The tests a point can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Western Electric 1: one point beyond kσ.
    BeyondLimits,
    /// Western Electric 2: two of three points in a row beyond 2k/3 σ (2σ for k = 3), on
    /// the same side; flagged at the second of them.
    TwoOfThreeNearLimits,
    /// Western Electric 4 / Nelson 2: eight points in a row strictly on one side of the mean.
    EightOnOneSide,
    /// Nelson 3: six points in a row each strictly above (or each below) the one before.
    SixTrending,
    /// The EWMA beyond its limits.
    EwmaBeyondLimits,
    /// The upper or lower CUSUM beyond Hσ.
    CusumHigh,
    CusumLow,
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::BeyondLimits => "beyond_limits",
            Rule::TwoOfThreeNearLimits => "two_of_three_near_limits",
            Rule::EightOnOneSide => "eight_on_one_side",
            Rule::SixTrending => "six_trending",
            Rule::EwmaBeyondLimits => "ewma_beyond_limits",
            Rule::CusumHigh => "cusum_high",
            Rule::CusumLow => "cusum_low",
        }
    }
}

/// A point that failed a rule: what was tested against which limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Violation {
    /// The index in the series given to [`violations`].
    pub index: usize,
    pub rule: Rule,
    /// The point's value; for EWMA and CUSUM rules the statistic instead.
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Every rule every point of `values` fails, against `base` with limits at `k` σ, in index
/// order. A run is flagged at the point that completes it and at each point that extends it.
pub fn violations(values: &[f64], base: Baseline, k: f64) -> Vec<Violation> {
    let Baseline { mean, sigma } = base;
    let zone = 2.0 * k / 3.0;
    let side = |v: f64, width: f64| -> i8 {
        if v > mean + width * sigma {
            1
        } else if v < mean - width * sigma {
            -1
        } else {
            0
        }
    };
    let chart = control(values, base, k);
    let mut found = Vec::new();
    let mut flag = |index: usize, rule: Rule, value: f64, lower: f64, upper: f64| {
        found.push(Violation {
            index,
            rule,
            value,
            lower,
            upper,
        })
    };
    for (i, point) in chart.iter().enumerate() {
        let value = point.value;
        if side(value, k) != 0 {
            flag(i, Rule::BeyondLimits, value, point.lower, point.upper);
        }
        let here = side(value, zone);
        if here != 0 && i >= 1 {
            let earlier = values[i.saturating_sub(2)..i]
                .iter()
                .filter(|&&v| side(v, zone) == here)
                .count();
            if earlier >= 1 {
                let (lower, upper) = (mean - zone * sigma, mean + zone * sigma);
                flag(i, Rule::TwoOfThreeNearLimits, value, lower, upper);
            }
        }
        if i + 1 >= SAME_SIDE_RUN {
            let run = &values[i + 1 - SAME_SIDE_RUN..=i];
            if run.iter().all(|&v| v > mean) || run.iter().all(|&v| v < mean) {
                flag(i, Rule::EightOnOneSide, value, mean, mean);
            }
        }
        if i + 1 >= TREND_RUN {
            let run = &values[i + 1 - TREND_RUN..=i];
            let rising = run.windows(2).all(|w| w[1] > w[0]);
            let falling = run.windows(2).all(|w| w[1] < w[0]);
            if rising || falling {
                flag(i, Rule::SixTrending, value, point.lower, point.upper);
            }
        }
        if point.ewma > point.ewma_upper || point.ewma < point.ewma_lower {
            let (lower, upper) = (point.ewma_lower, point.ewma_upper);
            flag(i, Rule::EwmaBeyondLimits, point.ewma, lower, upper);
        }
        if point.cusum_high > point.cusum_limit {
            flag(i, Rule::CusumHigh, point.cusum_high, 0.0, point.cusum_limit);
        }
        if point.cusum_low > point.cusum_limit {
            flag(i, Rule::CusumLow, point.cusum_low, 0.0, point.cusum_limit);
        }
    }
    found
}

/// A value's distance from the mean of earlier values in their standard deviations: the
/// seasonal z-score. `None` with fewer than two earlier values or no spread among them.
pub fn zscore(value: f64, earlier: &[f64]) -> Option<(f64, f64, f64)> {
    if earlier.len() < 2 {
        return None;
    }
    let n = earlier.len() as f64;
    let mean = earlier.iter().sum::<f64>() / n;
    let sigma = (earlier.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt();
    if sigma == 0.0 || !sigma.is_finite() {
        return None;
    }
    Some((mean, sigma, (value - mean) / sigma))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean 10 and σ 1: limits 7..13 (3σ), zone 8..12 (2σ).
    const BASE: Baseline = Baseline {
        mean: 10.0,
        sigma: 1.0,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// The indices at which `rule` fires on `values` against `BASE` with k = 3.
    fn check(name: &str, values: &[f64], rule: Rule, expected: &[usize]) {
        let fired: Vec<usize> = violations(values, BASE, 3.0)
            .into_iter()
            .filter(|v| v.rule == rule)
            .map(|v| v.index)
            .collect();
        assert_eq!(fired, expected, "{name}: {} on {values:?}", rule.as_str());
    }

    #[test]
    fn baseline_is_the_mean_and_sample_sigma() {
        // [9, 9, 10, 11, 11]: mean 50/5 = 10; squares 1+1+0+1+1 = 4; σ = √(4/4) = 1.
        assert_eq!(baseline(&[9.0, 9.0, 10.0, 11.0, 11.0]), Some(BASE));
        // [2, 4, 4, 4, 5, 5, 7, 9]: mean 5; squares 9+1+1+1+0+0+4+16 = 32; σ = √(32/7).
        let b = baseline(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert!(close(b.mean, 5.0) && close(b.sigma, 2.138_089_935), "{b:?}");
        // Four values are too few; NaN does not count.
        assert_eq!(baseline(&[1.0, 2.0, 3.0, 4.0, f64::NAN]), None);
    }

    #[test]
    fn one_point_beyond_the_limits() {
        use Rule::BeyondLimits as R;
        // 13 is on the limit, not beyond it; 13.5 and 6.9 are beyond.
        check("beyond", &[10.0, 13.0, 13.5, 6.9, 10.0], R, &[2, 3]);
        check("inside", &[12.9, 7.1, 10.0, 12.99], R, &[]);
        // k scales the limits: at k = 4 (6..14) 13.5 is inside.
        let at_four: Vec<_> = violations(&[13.5, 6.9], BASE, 4.0)
            .into_iter()
            .filter(|v| v.rule == R)
            .collect();
        assert!(at_four.is_empty(), "{at_four:?}");
        let fired = violations(&[13.5], BASE, 3.0);
        assert_eq!((fired[0].lower, fired[0].upper), (7.0, 13.0));
    }

    #[test]
    fn two_of_three_beyond_two_sigma_on_one_side() {
        use Rule::TwoOfThreeNearLimits as R;
        // 12.5, 10, 12.5: the second 12.5 completes two of three above 12.
        check("fires", &[10.0, 12.5, 10.0, 12.5, 10.0], R, &[3]);
        // Two in a row fire at the second; a third extends it.
        check("in a row", &[12.5, 12.5, 12.5], R, &[1, 2]);
        check("below", &[7.5, 10.0, 7.9], R, &[2]);
        // Three apart: never two within three points.
        check("too far apart", &[10.0, 12.5, 10.0, 10.0, 12.5], R, &[]);
        // Opposite sides do not count together.
        check("opposite sides", &[12.5, 7.5, 10.0, 12.5, 7.5], R, &[]);
        // 12 is on the zone's edge, not beyond it.
        check("on the edge", &[12.0, 12.0, 12.5], R, &[]);
    }

    #[test]
    fn eight_in_a_row_on_one_side() {
        use Rule::EightOnOneSide as R;
        check("eight above", &[10.5; 8], R, &[7]);
        check("nine above", &[10.5; 9], R, &[7, 8]);
        check("eight below", &[9.9; 8], R, &[7]);
        check("seven", &[10.5; 7], R, &[]);
        // A point on the mean breaks the run.
        let broken = [10.5, 10.5, 10.5, 10.5, 10.5, 10.5, 10.5, 10.0, 10.5];
        check("broken by the mean", &broken, R, &[]);
        let mixed = [10.5, 10.5, 10.5, 10.5, 9.5, 10.5, 10.5, 10.5, 10.5];
        check("broken by the other side", &mixed, R, &[]);
    }

    #[test]
    fn six_in_a_row_rising_or_falling() {
        use Rule::SixTrending as R;
        check("rising", &[10.0, 10.1, 10.2, 10.3, 10.4, 10.5], R, &[5]);
        check(
            "falling",
            &[10.5, 10.4, 10.3, 10.2, 10.1, 10.0, 9.9],
            R,
            &[5, 6],
        );
        check("five", &[10.0, 10.1, 10.2, 10.3, 10.4], R, &[]);
        // A flat step breaks the run: 10.2, 10.2.
        let flat = [10.0, 10.1, 10.2, 10.2, 10.3, 10.4, 10.5];
        check("flat step", &flat, R, &[]);
        let zigzag = [10.0, 10.1, 10.2, 10.1, 10.3, 10.4, 10.5];
        check("a dip", &zigzag, R, &[]);
    }

    #[test]
    fn ewma_by_hand() {
        // λ = 0.2, z0 = 10. z1 = 0.2·10 + 0.8·10 = 10; z2 = 10; z3 = 0.2·15 + 0.8·10 = 11.
        // Width at i: 3·√(0.2/1.8 · (1 - 0.8^(2i))):
        //   i = 1: √(0.1111 · 0.36) = √0.04 = 0.2, times 3 = 0.6
        //   i = 2: √(0.1111 · (1 - 0.4096)) = √0.0656 = 0.256125, times 3 = 0.768375
        //   i = 3: √(0.1111 · (1 - 0.262144)) = √0.081984 = 0.286329, times 3 = 0.858985
        let chart = control(&[10.0, 10.0, 15.0], BASE, 3.0);
        let ewma: Vec<f64> = chart.iter().map(|p| p.ewma).collect();
        let upper: Vec<f64> = chart.iter().map(|p| p.ewma_upper).collect();
        for (got, want) in ewma.iter().zip([10.0, 10.0, 11.0]) {
            assert!(close(*got, want), "{ewma:?}");
        }
        for (got, want) in upper.iter().zip([10.6, 10.768_375, 10.858_985]) {
            assert!((got - want).abs() < 1e-5, "{upper:?}");
        }
        assert!((chart[2].ewma_lower - (10.0 - 0.858_985)).abs() < 1e-5);
        check("ewma", &[10.0, 10.0, 15.0], Rule::EwmaBeyondLimits, &[2]);
        // z for 10.5, 10.5, 10.5 is 10.1, 10.18, 10.244: inside 10.6, 10.768, 10.859.
        check(
            "ewma quiet",
            &[10.5, 10.5, 10.5],
            Rule::EwmaBeyondLimits,
            &[],
        );
    }

    #[test]
    fn cusum_by_hand() {
        // K = 0.5, H = 5. For 12s: C⁺ grows by 12 - 10.5 = 1.5: 1.5, 3, 4.5, 6 > 5 at index 3.
        let chart = control(&[12.0, 12.0, 12.0, 12.0], BASE, 3.0);
        let high: Vec<f64> = chart.iter().map(|p| p.cusum_high).collect();
        assert_eq!(high, [1.5, 3.0, 4.5, 6.0]);
        assert!(
            chart
                .iter()
                .all(|p| p.cusum_low == 0.0 && p.cusum_limit == 5.0)
        );
        check("high", &[12.0, 12.0, 12.0, 12.0], Rule::CusumHigh, &[3]);
        check("low", &[8.0, 8.0, 8.0, 8.0], Rule::CusumLow, &[3]);
        // 11, 9 alternate: C⁺ = 0.5, 0 (0.5 + 9 - 10.5 < 0), 0.5, ...: never beyond.
        let alternating = [11.0, 9.0, 11.0, 9.0, 11.0, 9.0, 11.0, 9.0];
        check("alternating", &alternating, Rule::CusumHigh, &[]);
        check("alternating", &alternating, Rule::CusumLow, &[]);
        // Within K of the mean nothing accumulates.
        check("within slack", &[10.5; 20], Rule::CusumHigh, &[]);
    }

    #[test]
    fn a_flat_baseline_flags_any_change() {
        // σ = 0 (a steady count, no errors ever): every limit is the mean itself.
        let flat = Baseline {
            mean: 0.0,
            sigma: 0.0,
        };
        let rules: Vec<Rule> = violations(&[0.0, 0.0, 0.25], flat, 3.0)
            .into_iter()
            .filter(|v| v.index == 2)
            .map(|v| v.rule)
            .collect();
        assert!(rules.contains(&Rule::BeyondLimits), "{rules:?}");
        assert!(violations(&[0.0; 10], flat, 3.0).is_empty());
    }

    #[test]
    fn the_maths_import_nothing() {
        // Pure functions of numbers: no graph, Arrow, SQL or clock to mock in these tests.
        let source = include_str!("spc.rs");
        let imports: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("use ") || l.starts_with("    use "))
            .filter(|l| !l.contains("super::*"))
            .collect();
        assert!(imports.is_empty(), "{imports:?}");
    }

    #[test]
    fn a_running_baseline_is_the_baseline_of_its_values() {
        let values = [1.05, 1.12, f64::NAN, 1.09, 1.15, 1.1, 1.08, 1.11];
        let mut running = RunningBaseline::default();
        for (i, value) in values.iter().enumerate() {
            running.push(*value);
            let expected = baseline(&values[..=i]);
            match (running.baseline(), expected) {
                (Some(got), Some(want)) => {
                    assert!(close(got.mean, want.mean) && close(got.sigma, want.sigma));
                }
                (got, want) => assert_eq!(got, want, "after {} values", i + 1),
            }
        }
        assert!(running.baseline().is_some());
    }

    #[test]
    fn zscore_against_earlier_days() {
        // Earlier 8, 10, 12: mean 10, squares 4+0+4 = 8, σ = √(8/2) = 2; 16 is (16-10)/2 = 3.
        assert_eq!(zscore(16.0, &[8.0, 10.0, 12.0]), Some((10.0, 2.0, 3.0)));
        assert_eq!(zscore(16.0, &[8.0]), None);
        assert_eq!(zscore(16.0, &[5.0, 5.0]), None);
    }
}
