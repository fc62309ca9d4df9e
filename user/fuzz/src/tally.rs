//! Counting what the calls returned, and the summary lines a worker prints at the end (the
//! host, `cargo xtask fuzz`, adds them up over the workers):
//!
//! ```text
//! FUZZ cpu=0 seed=7 calls=250000 direct=230000 jobs=20000 excluded=1900 skipped=0 anomalies=0
//! FUZZ cpu=0 results ok=51234 NoSuchCall=150000 ... other=0 ended=1500 parked=12
//! FUZZNR cpu=0 0:1953/120/AI 1:1980/1980/ ... 128:7700/0/N
//! ```
//!
//! `FUZZNR` entries are `number:calls/ok/kinds`, `kinds` one letter per other outcome seen (in
//! [`OUTCOME_LETTERS`] order); number 128 stands for every number above 127.

use crate::calls::BUCKETS;
use core::fmt::Write;

/// Ok, the nine `abi::Error`s (by code), a negative RAX that is no error code, a job whose
/// thread ended inside the call (THREAD_EXIT, or killed), a job still blocked at the end.
pub const OUTCOMES: usize = 13;
pub const OK: usize = 0;
pub const OTHER: usize = 10;
pub const ENDED: usize = 11;
pub const PARKED: usize = 12;
pub const OUTCOME_NAMES: [&str; OUTCOMES] = [
    "ok",
    "NoSuchCall",
    "InvalidArgument",
    "BadAddress",
    "NoMemory",
    "NotFound",
    "BadHandle",
    "NoRights",
    "PeerDied",
    "NoCaller",
    "other",
    "ended",
    "parked",
];
/// `FUZZNR` letters of the outcomes after Ok.
pub const OUTCOME_LETTERS: &[u8; OUTCOMES - 1] = b"NIAMFHRPCXEW";

/// The outcome index of a system call's RAX.
pub fn outcome(rax: u64) -> usize {
    let v = rax as i64;
    if v >= 0 {
        OK
    } else if (-9..=-1).contains(&v) {
        (-v) as usize
    } else {
        OTHER
    }
}

#[derive(Clone, Debug)]
pub struct Tally {
    pub per_number: [[u32; OUTCOMES]; BUCKETS],
    pub direct: u64,
    pub jobs: u64,
    /// Draws of a number the fuzzer does not run (PROCESS_EXIT), redrawn.
    pub excluded: u64,
    /// Jobs not started: every job slot taken, or too many that only the exit ends.
    pub skipped: u64,
    pub anomalies: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { per_number: [[0; OUTCOMES]; BUCKETS], direct: 0, jobs: 0, excluded: 0, skipped: 0, anomalies: 0 }
    }
}

/// A line being formatted, on the stack.
pub struct Line {
    buf: [u8; 240],
    len: usize,
}

impl Line {
    pub fn new() -> Self {
        Line { buf: [0; 240], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
    fn room(&self) -> usize {
        self.buf.len() - self.len
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        if s.len() > self.room() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl Tally {
    pub fn count(&mut self, bucket: usize, outcome: usize) {
        self.per_number[bucket][outcome] += 1;
    }

    pub fn calls(&self) -> u64 {
        self.per_number.iter().flatten().map(|&c| c as u64).sum()
    }

    pub fn by_outcome(&self) -> [u64; OUTCOMES] {
        let mut out = [0u64; OUTCOMES];
        for row in &self.per_number {
            for (o, &c) in row.iter().enumerate() {
                out[o] += c as u64;
            }
        }
        out
    }

    /// The summary, one line at a time.
    pub fn summary(&self, cpu: u64, seed: u64, mut emit: impl FnMut(&str)) {
        let mut line = Line::new();
        let _ = write!(
            line,
            "FUZZ cpu={cpu} seed={seed} calls={} direct={} jobs={} excluded={} skipped={} anomalies={}",
            self.calls(),
            self.direct,
            self.jobs,
            self.excluded,
            self.skipped,
            self.anomalies
        );
        emit(line.as_str());
        let mut line = Line::new();
        let _ = write!(line, "FUZZ cpu={cpu} results");
        for (o, n) in self.by_outcome().iter().enumerate() {
            let _ = write!(line, " {}={n}", OUTCOME_NAMES[o]);
        }
        emit(line.as_str());
        let start = |cpu| {
            let mut l = Line::new();
            let _ = write!(l, "FUZZNR cpu={cpu}");
            l
        };
        let mut line = start(cpu);
        for (n, row) in self.per_number.iter().enumerate() {
            let calls: u32 = row.iter().sum();
            if calls == 0 {
                continue;
            }
            let mut entry = Line::new();
            let _ = write!(entry, " {n}:{calls}/{}/", row[OK]);
            for (i, &letter) in OUTCOME_LETTERS.iter().enumerate() {
                if row[i + 1] > 0 {
                    let _ = entry.write_char(letter as char);
                }
            }
            if line.write_str(entry.as_str()).is_err() {
                emit(line.as_str());
                line = start(cpu);
                let _ = line.write_str(entry.as_str());
            }
        }
        emit(line.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rax_decodes_to_ok_each_error_and_other() {
        assert_eq!(outcome(0), OK);
        assert_eq!(outcome(0x7fff_ffff_ffff_ffff), OK);
        for e in abi::Error::ALL {
            assert_eq!(OUTCOME_NAMES[outcome(e.to_raw())], format!("{e:?}"));
        }
        assert_eq!(outcome((-10i64) as u64), OTHER);
        assert_eq!(outcome(u64::MAX - 100), OTHER);
    }

    #[test]
    fn summary_lines_stay_short_and_list_every_number_once() {
        let mut t = Tally::default();
        for n in 0..BUCKETS {
            for o in 0..OUTCOMES {
                for _ in 0..(n * 7 + o) % 5 + 1 {
                    t.count(n, o);
                }
            }
        }
        t.count(128, 1);
        let mut lines = Vec::new();
        t.summary(3, 99, |l| lines.push(l.to_string()));
        assert!(lines.iter().all(|l| l.len() <= 240), "{lines:?}");
        assert!(lines[0].starts_with("FUZZ cpu=3 seed=99 calls="));
        assert!(lines[1].contains(" BadAddress=") && lines[1].contains(" parked="));
        let entries: Vec<&str> = lines[2..].iter().flat_map(|l| l.split_whitespace().skip(2)).collect();
        assert_eq!(entries.len(), BUCKETS);
        assert!(entries[128].starts_with("128:"));
        let calls: u64 = entries.iter().map(|e| e.split([':', '/']).nth(1).unwrap().parse::<u64>().unwrap()).sum();
        assert_eq!(calls, t.calls());
        assert!(entries[0].ends_with("/NIAMFHRPCXEW"));
    }
}
