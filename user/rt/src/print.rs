//! The back end of [`crate::println!`]: a [`LineWriter`] on the stack that logs each line.

use crate::line::{LineWriter, LINE_MAX};
use crate::sys;
use core::fmt::{self, Write};

pub fn print_lines(args: fmt::Arguments) {
    // A failed `log` has nowhere to be reported; the line is dropped.
    let mut out = LineWriter::<LINE_MAX, _>::new(|line: &str| {
        if !crate::console::write_line(line) {
            let _ = sys::log(line);
        }
    });
    // `LineWriter::write_str` never fails; an error here could only come from a `Display`
    // impl, and whatever it wrote so far is still printed.
    let _ = out.write_fmt(args);
    out.finish();
}
