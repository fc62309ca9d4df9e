//! Splitting formatted text into log lines in a fixed buffer: no allocation, long lines cut
//! (at a character boundary) and marked with [`TRUNCATION_MARK`].

use core::fmt;

/// Bytes of one log line, including a truncation mark.
pub const LINE_MAX: usize = 256;

/// Ends a line that did not fit.
pub const TRUNCATION_MARK: &str = "...";

/// A [`fmt::Write`] sink that hands each complete line (without its `\n`) to `emit`, and the
/// last one on [`finish`](Self::finish).
pub struct LineWriter<const N: usize, F: FnMut(&str)> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
    emit: F,
}

impl<const N: usize, F: FnMut(&str)> LineWriter<N, F> {
    pub fn new(emit: F) -> Self {
        const {
            assert!(
                N >= TRUNCATION_MARK.len(),
                "a line must hold the truncation mark"
            )
        };
        Self {
            buf: [0; N],
            len: 0,
            truncated: false,
            emit,
        }
    }

    /// Emits the line in progress, even if it is empty: `println!("")` is one empty line, and
    /// text after the last `\n` is a line of its own.
    pub fn finish(mut self) {
        self.emit_line();
    }

    fn text(&self) -> &str {
        // Only whole characters of `&str`s are ever copied in, so this cannot fail; an empty
        // line is the harmless answer if it ever did.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Appends text that contains no `\n`, keeping whole characters that fit.
    fn append(&mut self, segment: &str) {
        if self.truncated {
            return;
        }
        let room = N - self.len;
        let take = if segment.len() <= room {
            segment.len()
        } else {
            self.truncated = true;
            floor_char_boundary(segment, room)
        };
        self.buf[self.len..self.len + take].copy_from_slice(&segment.as_bytes()[..take]);
        self.len += take;
    }

    fn emit_line(&mut self) {
        if self.truncated {
            let cut = floor_char_boundary(self.text(), self.len.min(N - TRUNCATION_MARK.len()));
            let end = cut + TRUNCATION_MARK.len();
            self.buf[cut..end].copy_from_slice(TRUNCATION_MARK.as_bytes());
            self.len = end;
        }
        let Self { buf, len, emit, .. } = self;
        emit(core::str::from_utf8(&buf[..*len]).unwrap_or(""));
        self.len = 0;
        self.truncated = false;
    }
}

impl<const N: usize, F: FnMut(&str)> fmt::Write for LineWriter<N, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(newline) = rest.find('\n') {
            self.append(&rest[..newline]);
            self.emit_line();
            rest = &rest[newline + 1..];
        }
        self.append(rest);
        Ok(())
    }
}

/// The largest `i <= max` (and `<= s.len()`) at which `s` can be split.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    fn lines<const N: usize>(args: fmt::Arguments) -> Vec<String> {
        let mut out = Vec::new();
        let mut w = LineWriter::<N, _>::new(|l: &str| out.push(l.to_string()));
        w.write_fmt(args).unwrap();
        w.finish();
        out
    }

    #[test]
    fn one_line_is_one_emit() {
        assert_eq!(lines::<16>(format_args!("cpu {} up", 3)), ["cpu 3 up"]);
    }

    #[test]
    fn empty_println_is_one_empty_line() {
        assert_eq!(lines::<16>(format_args!("")), [""]);
    }

    #[test]
    fn embedded_newlines_split_into_lines() {
        assert_eq!(
            lines::<16>(format_args!("a\nbc\n{}", "d")),
            ["a", "bc", "d"]
        );
        assert_eq!(lines::<16>(format_args!("a\n")), ["a", ""]);
    }

    #[test]
    fn line_of_exactly_capacity_is_not_truncated() {
        assert_eq!(lines::<8>(format_args!("{}", "12345678")), ["12345678"]);
    }

    #[test]
    fn long_line_is_cut_and_marked() {
        assert_eq!(lines::<8>(format_args!("{}", "123456789")), ["12345..."]);
    }

    #[test]
    fn truncation_spans_many_fragments_and_ends_at_newline() {
        assert_eq!(
            lines::<8>(format_args!("{}{}{}\nok", "1234", "5678", "9abc")),
            ["12345...", "ok"]
        );
    }

    #[test]
    fn truncation_never_splits_a_character() {
        // "é" is two bytes: 4 of them leave 8 bytes exactly, one more overflows.
        assert_eq!(lines::<8>(format_args!("{}", "éééé")), ["éééé"]);
        let cut = lines::<8>(format_args!("{}", "ééééé"));
        assert_eq!(cut, ["éé..."]);
        // A 3-byte character that does not fit is left out whole...
        assert_eq!(lines::<8>(format_args!("1234567€")), ["12345..."]);
        // ...and so is one the truncation mark would overwrite in part.
        assert_eq!(lines::<8>(format_args!("1234€€")), ["1234..."]);
    }

    #[test]
    fn writer_is_reusable_after_a_truncated_line() {
        assert_eq!(
            lines::<6>(format_args!("abcdefgh\nxy\nabcdefgh")),
            ["abc...", "xy", "abc..."]
        );
    }

    #[test]
    fn floor_char_boundary_stays_in_bounds() {
        assert_eq!(floor_char_boundary("ab", 10), 2);
        assert_eq!(floor_char_boundary("é", 1), 0);
        assert_eq!(floor_char_boundary("", 0), 0);
    }
}
