//! Summaries of timed samples and the `BENCH` lines that carry them to the host (parsed by
//! `cargo xtask bench` and `cargo xtask compare`). Pure, so it is unit-tested on the host.

use core::fmt;

/// Median, 10th and 90th percentile, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub n: usize,
    pub median: i64,
    pub p10: i64,
    pub p90: i64,
    pub min: i64,
    pub max: i64,
}

/// The nearest-rank `p`-th percentile of sorted `samples` (non-empty): the smallest sample with
/// at least `p` % of the samples at or below it. Always a sample that was measured.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

impl Summary {
    /// Sorts `samples` in place and summarizes them; the median of an even count is the lower
    /// of the two middle values (nearest rank, like the percentiles). `None` if empty.
    pub fn of(samples: &mut [i64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Summary {
            n: samples.len(),
            median: percentile(samples, 50),
            p10: percentile(samples, 10),
            p90: percentile(samples, 90),
            min: samples[0],
            max: samples[samples.len() - 1],
        })
    }

    /// One sample (a boot milestone).
    pub fn single(value: i64) -> Summary {
        Summary { n: 1, median: value, p10: value, p90: value, min: value, max: value }
    }
}

/// One result line: `BENCH <name> n=.. median=.. p10=.. p90=.. min=.. max=.. base=..`, where
/// `base` is the median of the framing that was subtracted from every sample.
pub struct Line<'a> {
    pub name: &'a str,
    pub summary: Summary,
    pub base: i64,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "BENCH {} n={} median={} p10={} p90={} min={} max={} base={}",
            self.name, s.n, s.median, s.p10, s.p90, s.min, s.max, self.base
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_sample() {
        let mut v = [9, 1, 5];
        assert_eq!(
            Summary::of(&mut v),
            Some(Summary { n: 3, median: 5, p10: 1, p90: 9, min: 1, max: 9 })
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_lower_middle_sample() {
        let mut v = [4, 100, 3, 7];
        assert_eq!(Summary::of(&mut v).unwrap().median, 4);
    }

    #[test]
    fn percentiles_are_nearest_rank_samples() {
        // 1..=1000: p10 is the 100th sample, p90 the 900th, the median the 500th.
        let mut v: [i64; 1000] = core::array::from_fn(|i| 1000 - i as i64);
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.p10, s.median, s.p90, s.min, s.max), (100, 500, 900, 1, 1000));
        // 101 samples: ceil(10.1) = 11th and ceil(90.9) = 91st.
        let mut w: [i64; 101] = core::array::from_fn(|i| i as i64);
        let s = Summary::of(&mut w).unwrap();
        assert_eq!((s.p10, s.median, s.p90), (10, 50, 90));
        // One outlier in ten does not move p90 (it is the ninth sample).
        let mut x = [5, 5, 5, 5, 5, 5, 5, 5, 5, 99_999];
        assert_eq!(Summary::of(&mut x).unwrap().p90, 5);
    }

    #[test]
    fn one_sample_is_every_statistic() {
        assert_eq!(Summary::of(&mut [7]), Some(Summary::single(7)));
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn line_has_every_field_the_host_parses() {
        let line = Line {
            name: "syscall_null",
            summary: Summary { n: 2, median: 10, p10: 9, p90: 11, min: 9, max: -1 },
            base: 7,
        };
        assert_eq!(line.to_string(), "BENCH syscall_null n=2 median=10 p10=9 p90=11 min=9 max=-1 base=7");
    }
}
