//! A mergeable latency sketch in the manner of DDSketch: logarithmic bins give every quantile
//! within 1% relative error, and two sketches merge exactly, so buckets add up to any window.

/// Relative accuracy of a quantile, kept a little under 1% so float rounding at bin edges
/// cannot push an answer past 1%.
pub const RELATIVE_ACCURACY: f64 = 0.009;

/// `gamma = (1 + a) / (1 - a)`: bin `i` holds values in `(gamma^(i-1), gamma^i]`.
const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);

/// `ln(GAMMA)`, written out because `f64::ln` is not `const` (a test checks the digits).
const LN_GAMMA: f64 = 0.018_000_486_023_620_893;

/// Latencies in nanoseconds. Values below 1 ns (zero, or negative from clock skew) are kept
/// as zeros. About 2,400 bins cover every positive `i64`, so a sketch never collapses bins
/// and merging is exact.
///
/// Most sketches live in a 10-second bucket of one edge and see a handful of calls, so bins
/// start sparse (8 bytes per used bin) and turn dense (4 bytes per bin between the smallest
/// and the largest used) once that is smaller. Equality compares contents, not layout.
#[derive(Debug, Clone, Default)]
pub struct LatencySketch {
    count: u64,
    zero_count: u64,
    bins: Bins,
    min_ns: i64,
    max_ns: i64,
}

/// Below this many used bins a sketch stays sparse.
const MIN_DENSE_BINS: usize = 16;

#[derive(Debug, Clone)]
enum Bins {
    /// `(index, count)`, sorted by index, counts above zero.
    Sparse(Vec<(i32, u32)>),
    /// `counts[i]` is the count of bin `offset + i`.
    Dense { offset: i32, counts: Vec<u32> },
}

impl Default for Bins {
    fn default() -> Self {
        Bins::Sparse(Vec::new())
    }
}

impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        (self.count, self.zero_count, self.min_ns, self.max_ns)
            == (other.count, other.zero_count, other.min_ns, other.max_ns)
            && self.bins.iter().eq(other.bins.iter())
    }
}

impl Bins {
    /// Used bins in index order.
    fn iter(&self) -> Box<dyn Iterator<Item = (i32, u32)> + '_> {
        match self {
            Bins::Sparse(entries) => Box::new(entries.iter().copied()),
            Bins::Dense { offset, counts } => Box::new(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, count)| **count > 0)
                    .map(move |(slot, count)| (offset + slot as i32, *count)),
            ),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Bins::Sparse(entries) => entries.capacity() * std::mem::size_of::<(i32, u32)>(),
            Bins::Dense { counts, .. } => counts.capacity() * std::mem::size_of::<u32>(),
        }
    }

    /// Counts saturate: a bin would need four billion calls in one window to reach it.
    fn add(&mut self, index: i32, count: u32) {
        match self {
            Bins::Sparse(entries) => {
                match entries.binary_search_by_key(&index, |(i, _)| *i) {
                    Ok(found) => entries[found].1 = entries[found].1.saturating_add(count),
                    Err(position) => entries.insert(position, (index, count)),
                }
                self.densify_if_smaller();
            }
            Bins::Dense { offset, counts } => {
                if index < *offset {
                    let grow = (*offset - index) as usize;
                    counts.splice(0..0, std::iter::repeat_n(0, grow));
                    *offset = index;
                }
                let slot = (index - *offset) as usize;
                if slot >= counts.len() {
                    counts.resize(slot + 1, 0);
                }
                counts[slot] = counts[slot].saturating_add(count);
            }
        }
    }

    /// Takes `count` away from bin `index` (a count [`Bins::add`] gave it): a sparse bin
    /// that reaches zero goes; a dense one stays as a zero, which [`Bins::iter`] skips.
    fn sub(&mut self, index: i32, count: u32) {
        match self {
            Bins::Sparse(entries) => {
                if let Ok(found) = entries.binary_search_by_key(&index, |(i, _)| *i) {
                    entries[found].1 = entries[found].1.saturating_sub(count);
                    if entries[found].1 == 0 {
                        entries.remove(found);
                    }
                }
            }
            Bins::Dense { offset, counts } => {
                if let Some(slot) = usize::try_from(index - *offset)
                    .ok()
                    .and_then(|slot| counts.get_mut(slot))
                {
                    *slot = slot.saturating_sub(count);
                }
            }
        }
    }

    fn densify_if_smaller(&mut self) {
        let Bins::Sparse(entries) = self else {
            return;
        };
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        let span = (last.0 - first.0 + 1) as usize;
        // Dense costs 4 bytes per bin of the span, sparse 8 per used bin. A small sketch
        // stays sparse: one dense sketch that later meets an outlier grows by the whole gap.
        if entries.len() < MIN_DENSE_BINS || span >= entries.len() * 2 {
            return;
        }
        let offset = first.0;
        let mut counts = vec![0; span];
        for (index, count) in entries.iter() {
            counts[(index - offset) as usize] = *count;
        }
        *self = Bins::Dense { offset, counts };
    }
}

impl LatencySketch {
    /// Appends the sketch to `out` (`persist.rs`): counts, range, then the used bins.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        use crate::persist::{put_i64, put_u32, put_u64};
        put_u64(out, self.count);
        put_u64(out, self.zero_count);
        put_i64(out, self.min_ns);
        put_i64(out, self.max_ns);
        let used: Vec<(i32, u32)> = self.bins.iter().collect();
        put_u32(out, u32::try_from(used.len()).unwrap_or(u32::MAX));
        for (index, count) in used {
            out.extend_from_slice(&index.to_le_bytes());
            put_u32(out, count);
        }
    }

    /// The sketch `encode` wrote; the bins are added back one by one, so the sketch picks
    /// its own sparse or dense form.
    pub(crate) fn decode(input: &mut crate::persist::Reader<'_>) -> Result<Self, String> {
        let mut sketch = LatencySketch {
            count: input.u64()?,
            zero_count: input.u64()?,
            min_ns: input.i64()?,
            max_ns: input.i64()?,
            ..LatencySketch::default()
        };
        for _ in 0..input.len()? {
            let index = i32::from_le_bytes(
                input
                    .take(4)?
                    .try_into()
                    .map_err(|_| "truncated bin".to_string())?,
            );
            let count = input.u32()?;
            sketch.bins.add(index, count);
        }
        Ok(sketch)
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes held by the bins (for memory estimates).
    pub fn heap_bytes(&self) -> usize {
        self.bins.heap_bytes()
    }

    pub fn add(&mut self, value_ns: i64) {
        let value_ns = value_ns.max(0);
        if self.count == 0 {
            self.min_ns = value_ns;
            self.max_ns = value_ns;
        } else {
            self.min_ns = self.min_ns.min(value_ns);
            self.max_ns = self.max_ns.max(value_ns);
        }
        self.count += 1;
        if value_ns < 1 {
            self.zero_count += 1;
            return;
        }
        self.bins.add(bin_index(value_ns), 1);
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        self.count += other.count;
        self.zero_count += other.zero_count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (index, count) in other.bins.iter() {
            self.bins.add(index, count);
        }
    }

    /// Takes away a sketch that was merged into this one, as a window that slides takes
    /// away the bucket it leaves: counts and bins exactly. The range (fastest and slowest
    /// value) cannot be taken back: it stays as it was, a bound that may be wider than the
    /// values left, until [`LatencySketch::set_range`] narrows it.
    pub(crate) fn subtract(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        self.count = self.count.saturating_sub(other.count);
        if self.count == 0 {
            *self = LatencySketch::default();
            return;
        }
        self.zero_count = self.zero_count.saturating_sub(other.zero_count);
        for (index, count) in other.bins.iter() {
            self.bins.sub(index, count);
        }
    }

    /// The fastest and the slowest value, when there is one.
    pub(crate) fn range(&self) -> Option<(i64, i64)> {
        (self.count > 0).then_some((self.min_ns, self.max_ns))
    }

    /// Sets the fastest and slowest value (of a non-empty sketch), after a subtraction.
    pub(crate) fn set_range(&mut self, min_ns: i64, max_ns: i64) {
        if self.count > 0 {
            self.min_ns = min_ns;
            self.max_ns = max_ns;
        }
    }

    /// The value at rank `floor(q * (count - 1))` in nanoseconds, within
    /// [`RELATIVE_ACCURACY`] of the exact value; 0 for an empty sketch.
    pub fn quantile_ns(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zero_count {
            return 0.0;
        }
        let mut seen = self.zero_count;
        for (index, count) in self.bins.iter() {
            seen += u64::from(count);
            if seen > rank {
                let value = bin_value(index);
                return value.clamp(self.min_ns as f64, self.max_ns as f64);
            }
        }
        self.max_ns as f64
    }

    /// [`Self::quantile_ns`] in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile_ns(q) / 1e6
    }
}

fn bin_index(value_ns: i64) -> i32 {
    ((value_ns as f64).ln() / LN_GAMMA).ceil() as i32
}

/// The point of bin `index` whose relative distance to both bin edges is the same.
fn bin_value(index: i32) -> f64 {
    2.0 * (index as f64 * LN_GAMMA).exp() / (GAMMA + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_quantile(sorted: &[i64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
        sorted[rank] as f64
    }

    fn sketch_of(values: &[i64]) -> LatencySketch {
        let mut sketch = LatencySketch::new();
        for value in values {
            sketch.add(*value);
        }
        sketch
    }

    fn check_quantiles(values: &[i64]) {
        let sketch = sketch_of(values);
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&sorted, q);
            let estimate = sketch.quantile_ns(q);
            if exact == 0.0 {
                assert_eq!(estimate, 0.0, "q={q}");
                continue;
            }
            let error = (estimate - exact).abs() / exact;
            assert!(
                error <= 0.01,
                "q={q}: exact {exact}, estimate {estimate}, error {error}"
            );
        }
    }

    #[test]
    fn the_written_out_logarithm_matches_gamma() {
        assert!((GAMMA.ln() - LN_GAMMA).abs() < 1e-15);
    }

    #[test]
    fn every_positive_i64_fits_in_a_few_thousand_bins() {
        assert_eq!(bin_index(1), 0);
        let last = bin_index(i64::MAX);
        assert!(last > 2_000 && last < 2_500, "{last}");
    }

    #[test]
    fn quantiles_of_fixed_shapes_are_within_one_percent() {
        check_quantiles(&[5_000_000]);
        check_quantiles(&[0, 0, 1, 2, 3]);
        check_quantiles(&(1..=1_000).map(|i| i * 1_000).collect::<Vec<_>>());
        check_quantiles(&[1, i64::MAX / 2, i64::MAX]);
        // Exact bin edges: powers of gamma rounded to integers.
        check_quantiles(
            &(0..400)
                .map(|i| GAMMA.powi(i) as i64 + 1)
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn few_calls_stay_sparse_and_many_turn_dense() {
        let few = sketch_of(&[1_000_000, 100_000_000]);
        assert!(matches!(&few.bins, Bins::Sparse(entries) if entries.len() == 2));
        let many = sketch_of(&(1..=10_000).map(|i| i * 10_000).collect::<Vec<_>>());
        let bins = (bin_index(100_000_000) - bin_index(10_000) + 1) as usize;
        assert!(
            many.heap_bytes() <= bins * 4 * 2,
            "{} for {bins} bins",
            many.heap_bytes()
        );
        assert!(matches!(many.bins, Bins::Dense { .. }));
    }

    #[test]
    fn empty_sketch_answers_zero() {
        let sketch = LatencySketch::new();
        assert_eq!(sketch.quantile_ns(0.5), 0.0);
        assert!(sketch.is_empty());
    }

    #[test]
    fn negative_values_count_as_zero() {
        let sketch = sketch_of(&[-5, -1, 10]);
        assert_eq!(sketch.count(), 3);
        assert_eq!(sketch.quantile_ns(0.5), 0.0);
        assert!((sketch.quantile_ns(1.0) - 10.0).abs() <= 0.1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn quantiles_of_random_data_are_within_one_percent(
            values in prop::collection::vec(
                prop_oneof![0i64..1_000, 1_000i64..10_000_000, 10_000_000i64..100_000_000_000],
                1..400,
            )
        ) {
            check_quantiles(&values);
        }

        #[test]
        fn merge_equals_the_sketch_of_the_union(
            left in prop::collection::vec(-10i64..1_000_000_000, 0..200),
            right in prop::collection::vec(-10i64..1_000_000_000, 0..200),
        ) {
            let mut merged = sketch_of(&left);
            merged.merge(&sketch_of(&right));
            let union: Vec<i64> = left.iter().chain(&right).copied().collect();
            prop_assert_eq!(merged, sketch_of(&union));
        }

        #[test]
        fn subtracting_a_merged_sketch_gives_back_the_counts_and_bins(
            left in prop::collection::vec(-10i64..1_000_000_000, 0..200),
            right in prop::collection::vec(-10i64..1_000_000_000, 0..200),
        ) {
            let mut merged = sketch_of(&left);
            merged.merge(&sketch_of(&right));
            merged.subtract(&sketch_of(&right));
            let expected = sketch_of(&left);
            // The range is the one thing a subtraction cannot know: it is set back by hand.
            // Equality holds whatever the layout (the merged sketch may have turned dense).
            if let Some((min, max)) = expected.range() {
                merged.set_range(min, max);
            }
            prop_assert_eq!(merged, expected);
        }
    }
}
