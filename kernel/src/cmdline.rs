//! The kernel command line: `key=value` words separated by spaces.
//!
//! Known keys: `test=NAME` (run a scenario, then shut down with its verdict) and
//! `entry=auto|fred|ist` (event-entry backend). Words `NAME_key=value` belong to scenario NAME
//! (`fuzz_seed=7` with `test=fuzz`): the kernel passes them on to init, which runs the
//! scenario's user side. Unknown words are kept so a later stage can complain about them by
//! name.

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
    text: &'a str,
}

impl<'a> Cmdline<'a> {
    /// The same command line with no scenario (a production kernel runs none).
    pub fn without_test(self) -> Self {
        Self { test: None, ..self }
    }

    /// Parses `text`; `unknown` is called with every word this parser does not know.
    pub fn parse(text: &'a str, mut unknown: impl FnMut(&'a str)) -> Result<Self, CmdlineError<'a>> {
        let mut test = None;
        let mut entry = None;
        let scenario = text.split_ascii_whitespace().filter_map(|w| w.strip_prefix("test=")).next_back();
        for word in text.split_ascii_whitespace() {
            if scenario.is_some_and(|s| is_scenario_word(word, s)) {
                continue;
            }
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
        Ok(Self { test, entry: entry.unwrap_or(EntryChoice::Auto), text })
    }

    /// The words for the running scenario's user side (`NAME_key=value`), in order.
    pub fn scenario_words(&self) -> impl Iterator<Item = &'a str> + '_ {
        let text = self.text;
        text.split_ascii_whitespace().filter(move |w| self.test.is_some_and(|s| is_scenario_word(w, s)))
    }

    /// The value of the scenario word `NAME_key=`, if given.
    pub fn scenario_value(&self, key: &str) -> Option<&'a str> {
        let name = self.test?;
        self.scenario_words().find_map(|w| w.strip_prefix(name)?.strip_prefix('_')?.strip_prefix(key)?.strip_prefix('='))
    }
}

fn is_scenario_word(word: &str, scenario: &str) -> bool {
    word.strip_prefix(scenario).and_then(|rest| rest.strip_prefix('_')).is_some_and(|rest| rest.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_line_means_auto_and_no_test() {
        let c = Cmdline::parse("", |_| panic!()).unwrap();
        assert_eq!((c.test, c.entry), (None, EntryChoice::Auto));
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
    fn scenario_words_go_to_the_scenario_and_are_not_unknown() {
        let mut unknown = Vec::new();
        let c = Cmdline::parse("fuzz_seed=7 test=fuzz quiet fuzz_count=100 fuzzy=1 ipi_seed=3", |w| unknown.push(w)).unwrap();
        assert_eq!(c.scenario_words().collect::<Vec<_>>(), ["fuzz_seed=7", "fuzz_count=100"]);
        assert_eq!((c.scenario_value("seed"), c.scenario_value("count"), c.scenario_value("x")), (Some("7"), Some("100"), None));
        assert_eq!(unknown, ["quiet", "fuzzy=1", "ipi_seed=3"]);
    }

    #[test]
    fn scenario_words_without_a_scenario_are_unknown() {
        let mut unknown = Vec::new();
        let c = Cmdline::parse("fuzz_seed=7", |w| unknown.push(w)).unwrap();
        assert_eq!(c.scenario_words().count(), 0);
        assert_eq!(unknown, ["fuzz_seed=7"]);
    }

    #[test]
    fn repeated_key_is_an_error() {
        assert_eq!(Cmdline::parse("test=a test=b", |_| {}), Err(CmdlineError::Duplicate("test")));
    }
}
