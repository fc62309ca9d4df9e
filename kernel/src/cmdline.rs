//! The kernel command line: `key=value` words separated by spaces.
//!
//! Known keys: `test=NAME` (run a scenario, then shut down with its verdict) and
//! `entry=auto|fred|ist` (event-entry backend). Unknown words are kept so a later stage can
//! complain about them by name.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryChoice {
    Auto,
    Fred,
    Ist,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    BadEntry(&'a str),
    Duplicate(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmdline<'a> {
    pub test: Option<&'a str>,
    pub entry: EntryChoice,
}

impl<'a> Cmdline<'a> {
    /// Parses `text`; `unknown` is called with every word this parser does not know.
    pub fn parse(text: &'a str, mut unknown: impl FnMut(&'a str)) -> Result<Self, CmdlineError<'a>> {
        let mut test = None;
        let mut entry = None;
        for word in text.split_ascii_whitespace() {
            match word.split_once('=') {
                Some(("test", name)) if !name.is_empty() => {
                    if test.replace(name).is_some() {
                        return Err(CmdlineError::Duplicate("test"));
                    }
                }
                Some(("entry", value)) => {
                    let choice = match value {
                        "auto" => EntryChoice::Auto,
                        "fred" => EntryChoice::Fred,
                        "ist" => EntryChoice::Ist,
                        other => return Err(CmdlineError::BadEntry(other)),
                    };
                    if entry.replace(choice).is_some() {
                        return Err(CmdlineError::Duplicate("entry"));
                    }
                }
                _ => unknown(word),
            }
        }
        Ok(Self { test, entry: entry.unwrap_or(EntryChoice::Auto) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_line_means_auto_and_no_test() {
        let c = Cmdline::parse("", |_| panic!()).unwrap();
        assert_eq!(c, Cmdline { test: None, entry: EntryChoice::Auto });
    }

    #[test]
    fn test_and_entry_are_read_among_other_words() {
        let mut unknown = Vec::new();
        let c = Cmdline::parse("  quiet test=ipi entry=ist  foo=bar", |w| unknown.push(w)).unwrap();
        assert_eq!(c.test, Some("ipi"));
        assert_eq!(c.entry, EntryChoice::Ist);
        assert_eq!(unknown, ["quiet", "foo=bar"]);
    }

    #[test]
    fn unknown_backend_is_an_error_not_a_silent_default() {
        assert_eq!(Cmdline::parse("entry=frde", |_| {}), Err(CmdlineError::BadEntry("frde")));
    }

    #[test]
    fn repeated_key_is_an_error() {
        assert_eq!(Cmdline::parse("test=a test=b", |_| {}), Err(CmdlineError::Duplicate("test")));
    }
}
