//! The rate limit on kernel log lines a user program causes (its `log` calls, its faults the
//! kernel reports): a token bucket per process, with a count of what it dropped. Pure,
//! host-tested; `sched::user_log_allowed` applies it.
//!
//! A process may print [`BURST`] lines at once, then one per [`REFILL_TICKS`] timer ticks.
//! The burst is generous on purpose: the test programs and the servers print a few dozen
//! lines in a row through the kernel log, and a boot test reads them.

/// Lines a process may print back to back.
pub const BURST: u32 = 64;
/// Timer ticks per line earned back (at 100 Hz: ten lines a second).
pub const REFILL_TICKS: u64 = 10;

/// What [`LineBudget::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Print the line; `dropped` lines were dropped since the last one printed (say so first).
    Yes { dropped: u64 },
    No,
}

#[derive(Debug)]
pub struct LineBudget {
    tokens: u32,
    /// The tick up to which tokens have been credited.
    credited: u64,
    /// Lines dropped since the last one admitted.
    dropped: u64,
    /// Lines dropped over the process's life.
    dropped_total: u64,
}

impl Default for LineBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBudget {
    /// A full bucket.
    pub const fn new() -> Self {
        Self { tokens: BURST, credited: 0, dropped: 0, dropped_total: 0 }
    }

    /// One line at timer tick `now` (monotonic).
    pub fn admit(&mut self, now: u64) -> Admit {
        let earned = now.saturating_sub(self.credited) / REFILL_TICKS;
        if self.tokens as u64 + earned >= BURST as u64 {
            // Full: time spent full earns nothing.
            self.tokens = BURST;
            self.credited = now;
        } else {
            self.tokens += earned as u32;
            self.credited += earned * REFILL_TICKS;
        }
        if self.tokens == 0 {
            self.dropped += 1;
            self.dropped_total += 1;
            return Admit::No;
        }
        self.tokens -= 1;
        Admit::Yes { dropped: core::mem::take(&mut self.dropped) }
    }

    /// Lines dropped and not yet reported; resets the count.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_dropped_and_counted() {
        let mut b = LineBudget::new();
        for _ in 0..BURST {
            assert_eq!(b.admit(1000), Admit::Yes { dropped: 0 });
        }
        for _ in 0..500 {
            assert_eq!(b.admit(1000), Admit::No);
        }
        assert_eq!(b.dropped_total(), 500);
        // One refill period later the next line passes and carries the count.
        assert_eq!(b.admit(1000 + REFILL_TICKS), Admit::Yes { dropped: 500 });
        assert_eq!(b.admit(1000 + REFILL_TICKS), Admit::No);
        assert_eq!(b.take_dropped(), 1);
        assert_eq!(b.take_dropped(), 0);
    }

    #[test]
    fn a_flood_gets_one_line_per_refill_period() {
        let mut b = LineBudget::new();
        let mut passed = 0;
        // 100 lines per tick for 1000 ticks.
        for now in 0..1000 {
            for _ in 0..100 {
                passed += matches!(b.admit(now), Admit::Yes { .. }) as u64;
            }
        }
        let want = BURST as u64 + 1000 / REFILL_TICKS;
        assert!(passed <= want && passed + 1 >= want, "{passed} lines passed, expected about {want}");
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let mut b = LineBudget::new();
        for _ in 0..BURST {
            b.admit(0);
        }
        let later = 1_000_000;
        let passed = (0..10 * BURST).filter(|_| matches!(b.admit(later), Admit::Yes { .. })).count();
        assert_eq!(passed, BURST as usize);
    }

    #[test]
    fn a_clock_that_seems_to_go_back_refills_nothing() {
        let mut b = LineBudget::new();
        for _ in 0..BURST {
            b.admit(500);
        }
        assert_eq!(b.admit(400), Admit::No);
    }
}
