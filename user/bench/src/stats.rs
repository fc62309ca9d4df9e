//! Summaries of timed samples and the `BENCH` lines that carry them to the host (parsed by
//! `cargo xtask compare`). Pure, so it is unit-tested on the host.

use core::fmt;

/// Median, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub n: usize,
    pub median: i64,
    pub min: i64,
    pub max: i64,
}

impl Summary {
    /// Sorts `samples` in place and summarizes them; the median of an even count is the lower
    /// of the two middle values (a sample that was measured, never an average). `None` if empty.
    pub fn of(samples: &mut [i64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        Some(Summary {
            n: samples.len(),
            median: samples[(samples.len() - 1) / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        })
    }
}

/// One result line: `BENCH <name> n=.. median=.. min=.. max=.. base=..`, where `base` is the
/// median of the framing that was subtracted from every sample.
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
            "BENCH {} n={} median={} min={} max={} base={}",
            self.name, s.n, s.median, s.min, s.max, self.base
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
            Some(Summary {
                n: 3,
                median: 5,
                min: 1,
                max: 9
            })
        );
    }

    #[test]
    fn median_of_an_even_count_is_the_lower_middle_sample() {
        let mut v = [4, 100, 3, 7];
        assert_eq!(Summary::of(&mut v).unwrap().median, 4);
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn line_has_every_field_the_host_parses() {
        let line = Line {
            name: "syscall_null",
            summary: Summary {
                n: 2,
                median: 10,
                min: 9,
                max: -1,
            },
            base: 7,
        };
        assert_eq!(
            line.to_string(),
            "BENCH syscall_null n=2 median=10 min=9 max=-1 base=7"
        );
    }
}
