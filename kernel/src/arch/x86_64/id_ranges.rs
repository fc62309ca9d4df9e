//! APIC IDs for a log line: `0-63`, `0-3,8-11`, so that 300 CPUs make one short line.

use core::fmt;

/// Shows the IDs in order as runs of consecutive numbers (`0-3,5,7-9`).
pub struct IdRanges<'a>(pub &'a [u32]);

impl fmt::Display for IdRanges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = ids.next() {
            let mut end = start;
            while ids.peek() == Some(&end.wrapping_add(1)) && end != u32::MAX {
                end = ids.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match end == start {
                true => write!(f, "{start}")?,
                false => write!(f, "{start}-{end}")?,
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn consecutive_ids_collapse_into_runs() {
        assert_eq!(IdRanges(&[0, 1, 2, 3, 5, 7, 8, 9]).to_string(), "0-3,5,7-9");
        let many: std::vec::Vec<u32> = (0..300).collect();
        assert_eq!(IdRanges(&many).to_string(), "0-299");
    }

    #[test]
    fn unordered_and_empty_lists_stay_readable() {
        assert_eq!(IdRanges(&[4, 3, 2]).to_string(), "4,3,2");
        assert_eq!(IdRanges(&[]).to_string(), "none");
        assert_eq!(IdRanges(&[u32::MAX - 1, u32::MAX]).to_string(), "4294967294-4294967295");
    }
}
