//! Pass or fail, decided from the serial log and how the emulator ended.
//!
//! The kernel's side of the contract (ARCHITECTURE.md section 5): a scenario started with
//! `test=<name>` ends with the line `TEST <name>: PASS` or `TEST <name>: FAIL <reason>` and then
//! shuts the machine down; on QEMU through `isa-debug-exit` with status 33 (pass) or 35 (fail),
//! on Bochs through port 0x8900, whose exit status says nothing, so there the log decides. A
//! completed boot prints exactly one `READY cpus=<online>/<found> entry=<fred|ist> servers=...`
//! line. A line containing `PANIC` or `EXCEPTION` is a failure in every scenario.

use crate::matrix::{Backend, Case, Emulator};
use abi::harness::{qemu_status, QEMU_EXIT_FAIL, QEMU_EXIT_PASS};

/// How the emulator process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It exited by itself: `Some(status)`, or `None` when a signal ended it.
    Exited(Option<i32>),
    /// The time limit passed and the harness killed it.
    TimedOut,
}

/// Which exit status carries the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRule {
    /// QEMU with `isa-debug-exit`: a pass must end with [`QEMU_PASS_STATUS`].
    QemuDebugExit,
    /// Bochs: the status is the same for pass and fail; the log alone decides (but the run
    /// must still end by itself).
    LogOnly,
}

/// QEMU's exit status after the kernel wrote the pass value to `isa-debug-exit`.
pub const QEMU_PASS_STATUS: i32 = qemu_status(QEMU_EXIT_PASS);
/// QEMU's exit status after the kernel wrote the fail value to `isa-debug-exit`.
pub const QEMU_FAIL_STATUS: i32 = qemu_status(QEMU_EXIT_FAIL);

/// What a boot must show to pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub scenario: String,
    /// Every CPU the machine has must come online: `READY cpus=<smp>/<smp>`.
    pub smp: u32,
    /// The backend the READY line must name; `None` accepts either.
    pub entry: Option<Backend>,
    /// Whether the READY line must be present (the `boot` scenario exists to reach it); other
    /// scenarios may end before READY, but if they print it, it is checked all the same.
    pub ready_required: bool,
    pub exit_rule: ExitRule,
    /// The servers READY must list (in order); empty: not checked.
    pub servers: Vec<String>,
    /// `SEQ <stream> <n> ...` lines (console output of the echo clients) must come whole and
    /// in increasing order per stream, from this many streams; 0: not checked.
    pub seq_streams: u32,
    /// A line the log must contain (e.g. the error that explains a fallback); `None`: none.
    pub must_log: Option<String>,
    /// Every CPU must log its entry area exactly once (`cpu N: entry area at ...`, N from 0 to
    /// smp - 1): the `boot` scenario, which is how many-CPU boots prove each CPU came up.
    pub entry_areas: bool,
}

/// The servers init starts, as READY lists them.
pub const SERVERS: &[&str] = &["init", "console", "name", "echo"];

impl Expectation {
    pub fn for_case(case: &Case) -> Expectation {
        let mut e = Expectation::new(case.scenario, case.smp, case.expected_entry, case.emulator);
        // Asking for FRED where the CPU has none must say so, and boot with IST.
        if case.extra_cmdline.split_whitespace().any(|w| w == "entry=fred") && case.expected_entry == Some(Backend::Ist) {
            e.must_log = Some("entry=fred asked for, but this CPU has no FRED".to_string());
        }
        e
    }

    pub fn new(
        scenario: &str,
        smp: u32,
        entry: Option<Backend>,
        emulator: Emulator,
    ) -> Expectation {
        Expectation {
            scenario: scenario.to_string(),
            smp,
            entry,
            ready_required: matches!(scenario, "boot" | "servers" | "server_crash" | "fuzz"),
            exit_rule: match emulator {
                Emulator::Qemu(_) => ExitRule::QemuDebugExit,
                Emulator::Bochs => ExitRule::LogOnly,
            },
            servers: match scenario {
                "servers" | "server_crash" | "fuzz" => SERVERS.iter().map(|s| s.to_string()).collect(),
                _ => Vec::new(),
            },
            seq_streams: if scenario == "servers" { smp } else { 0 },
            must_log: None,
            entry_areas: scenario == "boot",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }
}

/// The parsed `READY cpus=<online>/<found> entry=<backend> servers=<list>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub online: u32,
    pub found: u32,
    pub entry: String,
    pub servers: Vec<String>,
}

/// Parses the part of a line from `READY ` on; `None` when it is not a READY line.
pub fn parse_ready(line: &str) -> Option<Result<Ready, String>> {
    let start = line.find("READY cpus=")?;
    let text = line[start..].trim_end();
    let mut online_found = None;
    let mut entry = None;
    let mut servers = Vec::new();
    for field in text.split_whitespace().skip(1) {
        match field.split_once('=') {
            Some(("cpus", value)) => online_found = Some(value),
            Some(("entry", value)) => entry = Some(value.to_string()),
            Some(("servers", value)) => {
                servers = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            _ => {}
        }
    }
    let parse = || -> Result<Ready, String> {
        let cpus = online_found.ok_or("no cpus= field")?;
        let (online, found) = cpus
            .split_once('/')
            .ok_or("cpus= is not <online>/<found>")?;
        let online = online
            .parse()
            .map_err(|_| format!("bad online count {online:?}"))?;
        let found = found
            .parse()
            .map_err(|_| format!("bad found count {found:?}"))?;
        let entry = entry.ok_or("no entry= field")?;
        Ok(Ready {
            online,
            found,
            entry,
            servers: servers.clone(),
        })
    };
    Some(parse().map_err(|why| format!("malformed READY line ({why}): {text}")))
}

/// What a line says about scenario `name`: `Some(Ok(()))` for its PASS line,
/// `Some(Err(reason))` for its FAIL line.
fn scenario_status(line: &str, name: &str) -> Option<Result<(), String>> {
    let marker = format!("TEST {name}: ");
    let start = line.find(&marker)?;
    let rest = line[start + marker.len()..].trim_end();
    if rest == "PASS" {
        Some(Ok(()))
    } else if rest == "FAIL" || rest.starts_with("FAIL ") {
        Some(Err(rest["FAIL".len()..].trim().to_string()))
    } else {
        None
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Fred => "fred",
        Backend::Ist => "ist",
    }
}

/// Decides whether a boot passed. The first problem found is the reason; problems the kernel
/// reported itself (panic, exception, FAIL line) come before what the harness infers.
pub fn judge(expect: &Expectation, log: &str, outcome: Outcome) -> Verdict {
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    let fail = |reason: String| Verdict::Fail(reason);

    if let Some(line) = lines.iter().find(|l| l.contains("PANIC")) {
        return fail(format!("kernel panic: {}", line.trim()));
    }
    if let Some(line) = lines.iter().find(|l| l.contains("EXCEPTION")) {
        return fail(format!("unexpected exception: {}", line.trim()));
    }
    let mut passed = false;
    for line in &lines {
        match scenario_status(line, &expect.scenario) {
            Some(Err(reason)) if reason.is_empty() => {
                return fail("scenario reported FAIL without a reason".to_string())
            }
            Some(Err(reason)) => return fail(format!("scenario reported FAIL: {reason}")),
            Some(Ok(())) => passed = true,
            None => {}
        }
    }

    let readies: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("READY cpus="))
        .collect();
    if readies.len() > 1 {
        return fail(format!(
            "{} READY lines, expected exactly one",
            readies.len()
        ));
    }
    match readies.first().map(|line| parse_ready(line)) {
        Some(Some(Err(why))) => return fail(why),
        Some(Some(Ok(ready))) => {
            if ready.online != expect.smp || ready.found != expect.smp {
                return fail(format!(
                    "READY reports cpus={}/{}, expected {}/{}",
                    ready.online, ready.found, expect.smp, expect.smp
                ));
            }
            if !expect.servers.is_empty() && ready.servers != expect.servers {
                return fail(format!(
                    "READY lists servers={}, expected servers={}",
                    ready.servers.join(","),
                    expect.servers.join(",")
                ));
            }
            if let Some(want) = expect.entry {
                if ready.entry != backend_name(want) {
                    return fail(format!(
                        "READY reports entry={}, expected entry={}",
                        ready.entry,
                        backend_name(want)
                    ));
                }
            }
        }
        Some(None) | None if expect.ready_required => {
            let how = match outcome {
                Outcome::TimedOut => "timed out".to_string(),
                Outcome::Exited(status) => ended(status),
            };
            return fail(format!("no READY line ({how})"));
        }
        Some(None) | None => {}
    }

    if let Some(want) = &expect.must_log {
        if !lines.iter().any(|l| l.contains(want.as_str())) {
            return fail(format!("no line containing `{want}`"));
        }
    }
    if expect.seq_streams > 0 {
        if let Err(why) = check_sequences(&lines, expect.seq_streams) {
            return fail(why);
        }
    }

    let pass_line = format!("TEST {}: PASS", expect.scenario);
    if !passed {
        return fail(match outcome {
            Outcome::TimedOut => format!("timed out before `{pass_line}`"),
            Outcome::Exited(status) => format!("no `{pass_line}` line ({})", ended(status)),
        });
    }
    if expect.entry_areas {
        if let Err(why) = check_entry_areas(&lines, expect.smp) {
            return fail(why);
        }
    }
    match (expect.exit_rule, outcome) {
        (_, Outcome::TimedOut) => fail(format!(
            "printed `{pass_line}` but did not shut the machine down (timed out)"
        )),
        (ExitRule::QemuDebugExit, Outcome::Exited(Some(QEMU_PASS_STATUS))) => Verdict::Pass,
        (ExitRule::QemuDebugExit, Outcome::Exited(Some(QEMU_FAIL_STATUS))) => fail(format!(
            "printed `{pass_line}` but exited through isa-debug-exit with the fail status \
             {QEMU_FAIL_STATUS}"
        )),
        (ExitRule::QemuDebugExit, Outcome::Exited(status)) => fail(format!(
            "printed `{pass_line}` but QEMU {}, expected status {QEMU_PASS_STATUS} from \
             isa-debug-exit",
            ended(status)
        )),
        (ExitRule::LogOnly, Outcome::Exited(_)) => Verdict::Pass,
    }
}

/// Checks the `SEQ <stream> <n> on cpu <c>` lines: each whole (nothing else on the line, as
/// console output interleaved mid-line would leave), numbers strictly increasing per stream,
/// and `streams` streams in all.
pub fn check_sequences(lines: &[&str], streams: u32) -> Result<(), String> {
    let mut last: std::collections::BTreeMap<&str, u64> = Default::default();
    for line in lines.iter().filter(|l| l.contains("SEQ ")) {
        let rest = &line[line.find("SEQ ").unwrap() + 4..];
        let words: Vec<&str> = rest.split_whitespace().collect();
        let [stream, n, "on", "cpu", cpu] = words[..] else {
            return Err(format!("garbled console line: {line:?}"));
        };
        let (Ok(n), Ok(_)) = (n.parse::<u64>(), cpu.parse::<u32>()) else {
            return Err(format!("garbled console line: {line:?}"));
        };
        if let Some(&prev) = last.get(stream) {
            if n <= prev {
                return Err(format!("console lines of {stream} out of order: {n} after {prev}"));
            }
        }
        last.insert(stream, n);
    }
    if last.len() != streams as usize {
        return Err(format!("console lines from {} clients, expected {streams}", last.len()));
    }
    Ok(())
}

/// Checks that CPUs 0 to `smp - 1` each logged `cpu N: entry area at` exactly once.
pub fn check_entry_areas(lines: &[&str], smp: u32) -> Result<(), String> {
    let mut seen = vec![false; smp as usize];
    for line in lines {
        let Some(at) = line.find(": entry area at ") else { continue };
        let Some(cpu) = line[..at].rsplit("cpu ").next().and_then(|n| n.trim().parse::<usize>().ok()) else {
            return Err(format!("garbled entry-area line: {line:?}"));
        };
        match seen.get_mut(cpu) {
            None => return Err(format!("entry area of cpu {cpu}, but the machine has {smp} CPUs")),
            Some(true) => return Err(format!("cpu {cpu} set up its entry area twice")),
            Some(flag) => *flag = true,
        }
    }
    let missing: Vec<String> = seen.iter().enumerate().filter(|(_, &s)| !s).map(|(c, _)| c.to_string()).collect();
    match missing.len() {
        0 => Ok(()),
        n if n > 8 => Err(format!("{n} of {smp} CPUs logged no entry area (cpu {} ...)", missing[..8].join(", "))),
        _ => Err(format!("no entry area logged by cpu {}", missing.join(", "))),
    }
}

fn ended(status: Option<i32>) -> String {
    match status {
        Some(status) => format!("exited with status {status}"),
        None => "was ended by a signal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Accel;

    const TCG: Emulator = Emulator::Qemu(Accel::Tcg);

    fn boot(smp: u32) -> Expectation {
        Expectation::new("boot", smp, Some(Backend::Ist), TCG)
    }

    fn log(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\r\n")).collect()
    }

    /// What each of `smp` CPUs logs when its entry area is up.
    fn entry_areas(smp: u32) -> String {
        (0..smp).map(|c| format!("[cpu {c}] INFO  cea: cpu {c}: entry area at 0xfffffe0000000000 (ist)\r\n")).collect()
    }

    fn good_boot_log(smp: u32) -> String {
        let mut lines = vec!["limine-bridge: booting boot():/boot/kernel".to_string()];
        lines.extend((0..smp).map(|c| format!("[cpu {c}] INFO  cea: cpu {c}: entry area at 0xfffffe0000000000 (ist)")));
        lines.push(format!("READY cpus={smp}/{smp} entry=ist servers="));
        lines.push("TEST boot: PASS".to_string());
        log(&lines.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[test]
    fn boot_needs_one_entry_area_per_cpu() {
        assert_eq!(judge(&boot(300), &good_boot_log(300), PASS_EXIT), Verdict::Pass);
        let short = good_boot_log(4).replace("[cpu 2] INFO  cea: cpu 2: entry area at 0xfffffe0000000000 (ist)\r\n", "");
        let why = reason(judge(&boot(4), &short, PASS_EXIT));
        assert!(why.contains("no entry area logged by cpu 2"), "{why}");
        let twice = good_boot_log(2).replace("READY", "[cpu 1] INFO  cea: cpu 1: entry area at 0x0 (ist)\r\nREADY");
        assert!(reason(judge(&boot(2), &twice, PASS_EXIT)).contains("cpu 1 set up its entry area twice"));
    }

    fn reason(verdict: Verdict) -> String {
        match verdict {
            Verdict::Fail(reason) => reason,
            Verdict::Pass => panic!("expected a failure"),
        }
    }

    const PASS_EXIT: Outcome = Outcome::Exited(Some(QEMU_PASS_STATUS));

    #[test]
    fn console_sequences_must_be_whole_ordered_and_complete() {
        let ok = ["client: SEQ client-0 0 on cpu 0", "x", "client: SEQ client-1 0 on cpu 1", "client: SEQ client-0 5 on cpu 0"];
        assert_eq!(check_sequences(&ok, 2), Ok(()));
        assert!(check_sequences(&ok, 3).unwrap_err().contains("from 2 clients"));
        let reordered = ["client: SEQ client-0 5 on cpu 0", "client: SEQ client-0 0 on cpu 0"];
        assert!(check_sequences(&reordered, 1).unwrap_err().contains("out of order"));
        let garbled = ["client: SEQ client-0 5 on c[cpu 1] INFO x", "pu 0"];
        assert!(check_sequences(&garbled, 1).unwrap_err().contains("garbled"));
    }

    #[test]
    fn entry_fred_without_fred_must_log_the_fallback() {
        let case = crate::matrix::matrix().into_iter().find(|c| c.extra_cmdline == "entry=fred").unwrap();
        let expect = Expectation::for_case(&case);
        let pass = Outcome::Exited(Some(QEMU_PASS_STATUS));
        let quiet = format!("{}READY cpus=2/2 entry=ist servers=\nTEST boot: PASS\n", entry_areas(2));
        assert!(matches!(judge(&expect, &quiet, pass), Verdict::Fail(r) if r.contains("entry=fred asked for")));
        let told = format!("[cpu 0] ERROR dispatch: entry=fred asked for, but this CPU has no FRED (..): using ist\n{quiet}");
        assert_eq!(judge(&expect, &told, pass), Verdict::Pass);
    }

    #[test]
    fn servers_scenarios_need_every_server_in_ready() {
        let expect = Expectation::new("servers", 2, None, Emulator::Qemu(Accel::Tcg));
        let log = |servers: &str| {
            format!(
                "READY cpus=2/2 entry=ist servers={servers}\nclient: SEQ client-0 0 on cpu 0\nclient: SEQ client-1 0 on cpu 1\nTEST servers: PASS\n"
            )
        };
        let pass = Outcome::Exited(Some(QEMU_PASS_STATUS));
        assert_eq!(judge(&expect, &log("init,console,name,echo"), pass), Verdict::Pass);
        let missing = judge(&expect, &log("init,console,name"), pass);
        assert!(matches!(missing, Verdict::Fail(r) if r.contains("expected servers=init,console,name,echo")));
    }

    #[test]
    fn pass_status_constants_match_isa_debug_exit() {
        assert_eq!(QEMU_PASS_STATUS, 33);
        assert_eq!(QEMU_FAIL_STATUS, 35);
    }

    #[test]
    fn complete_boot_with_pass_status_passes() {
        assert_eq!(judge(&boot(4), &good_boot_log(4), PASS_EXIT), Verdict::Pass);
    }

    #[test]
    fn pass_line_without_exit_status_fails() {
        let why = reason(judge(&boot(4), &good_boot_log(4), Outcome::Exited(Some(0))));
        assert!(why.contains("expected status 33"), "{why}");
    }

    #[test]
    fn pass_line_with_fail_status_fails() {
        let why = reason(judge(
            &boot(4),
            &good_boot_log(4),
            Outcome::Exited(Some(35)),
        ));
        assert!(why.contains("fail status 35"), "{why}");
    }

    #[test]
    fn pass_line_then_killed_by_signal_fails() {
        assert!(!judge(&boot(4), &good_boot_log(4), Outcome::Exited(None)).passed());
    }

    #[test]
    fn pass_line_without_shutdown_fails_on_timeout() {
        let why = reason(judge(&boot(4), &good_boot_log(4), Outcome::TimedOut));
        assert!(why.contains("did not shut the machine down"), "{why}");
    }

    #[test]
    fn bochs_pass_ignores_exit_status() {
        let expect = Expectation::new("boot", 2, Some(Backend::Ist), Emulator::Bochs);
        assert_eq!(
            judge(&expect, &good_boot_log(2), Outcome::Exited(Some(1))),
            Verdict::Pass
        );
    }

    #[test]
    fn bochs_timeout_after_pass_fails() {
        let expect = Expectation::new("boot", 2, Some(Backend::Ist), Emulator::Bochs);
        assert!(!judge(&expect, &good_boot_log(2), Outcome::TimedOut).passed());
    }

    #[test]
    fn exit_status_alone_does_not_pass() {
        let text = log(&["READY cpus=4/4 entry=ist servers="]);
        let why = reason(judge(&boot(4), &text, PASS_EXIT));
        assert!(why.contains("no `TEST boot: PASS` line"), "{why}");
    }

    #[test]
    fn pass_line_of_another_scenario_does_not_count() {
        let text = log(&["READY cpus=1/1 entry=ist servers=", "TEST boot: PASS"]);
        let expect = Expectation::new("timer", 1, None, TCG);
        assert!(!judge(&expect, &text, PASS_EXIT).passed());
    }

    #[test]
    fn pass_with_trailing_text_is_not_a_pass() {
        let text = log(&["READY cpus=1/1 entry=ist servers=", "TEST boot: PASSED?"]);
        assert!(!judge(&boot(1), &text, PASS_EXIT).passed());
    }

    #[test]
    fn fail_line_fails_with_its_reason() {
        let text = log(&["TEST timer: FAIL no tick on cpu 2", "TEST timer: PASS"]);
        let expect = Expectation::new("timer", 4, None, TCG);
        let why = reason(judge(&expect, &text, PASS_EXIT));
        assert_eq!(why, "scenario reported FAIL: no tick on cpu 2");
    }

    #[test]
    fn fail_line_without_reason_fails() {
        let text = log(&["TEST ipi: FAIL"]);
        let expect = Expectation::new("ipi", 2, None, TCG);
        assert!(reason(judge(&expect, &text, Outcome::Exited(Some(35)))).contains("FAIL"));
    }

    #[test]
    fn panic_line_fails_even_after_pass() {
        let mut text = good_boot_log(2);
        text.push_str("[cpu 1] ERROR kernel: PANIC at kernel/src/main.rs:10: oops\n");
        let why = reason(judge(&boot(2), &text, PASS_EXIT));
        assert!(why.starts_with("kernel panic:"), "{why}");
    }

    #[test]
    fn exception_line_fails() {
        let mut text = good_boot_log(1);
        text.push_str("[cpu 0] ERROR entry: EXCEPTION #GP(0) at 0xffffffff80001234\n");
        let why = reason(judge(&boot(1), &text, PASS_EXIT));
        assert!(why.starts_with("unexpected exception:"), "{why}");
    }

    #[test]
    fn ready_with_missing_cpu_fails() {
        let text = log(&["READY cpus=3/4 entry=ist servers=", "TEST boot: PASS"]);
        let why = reason(judge(&boot(4), &text, PASS_EXIT));
        assert_eq!(why, "READY reports cpus=3/4, expected 4/4");
    }

    #[test]
    fn ready_with_cpus_not_found_fails() {
        let text = log(&["READY cpus=2/2 entry=ist servers=", "TEST boot: PASS"]);
        assert!(!judge(&boot(4), &text, PASS_EXIT).passed());
    }

    #[test]
    fn ready_with_wrong_backend_fails() {
        let text = log(&["READY cpus=1/1 entry=ist servers=", "TEST boot: PASS"]);
        let expect = Expectation::new("boot", 1, Some(Backend::Fred), Emulator::Bochs);
        let why = reason(judge(&expect, &text, Outcome::Exited(Some(1))));
        assert_eq!(why, "READY reports entry=ist, expected entry=fred");
    }

    #[test]
    fn either_backend_passes_when_none_expected() {
        let expect = Expectation::new("boot", 4, None, Emulator::Qemu(Accel::Kvm));
        for entry in ["fred", "ist"] {
            let text = entry_areas(4) + &log(&[&format!("READY cpus=4/4 entry={entry} servers=a,b"), "TEST boot: PASS"]);
            assert_eq!(judge(&expect, &text, PASS_EXIT), Verdict::Pass);
        }
    }

    #[test]
    fn boot_without_ready_fails() {
        let text = log(&["TEST boot: PASS"]);
        let why = reason(judge(&boot(1), &text, PASS_EXIT));
        assert!(why.starts_with("no READY line"), "{why}");
    }

    #[test]
    fn other_scenario_without_ready_passes() {
        let text = log(&["TEST page_fault: PASS"]);
        let expect = Expectation::new("page_fault", 2, Some(Backend::Ist), TCG);
        assert_eq!(judge(&expect, &text, PASS_EXIT), Verdict::Pass);
    }

    #[test]
    fn other_scenario_with_bad_ready_fails() {
        let text = log(&["READY cpus=1/2 entry=ist servers=", "TEST ipi: PASS"]);
        let expect = Expectation::new("ipi", 2, Some(Backend::Ist), TCG);
        assert!(!judge(&expect, &text, PASS_EXIT).passed());
    }

    #[test]
    fn two_ready_lines_fail() {
        let text = log(&[
            "READY cpus=1/1 entry=ist servers=",
            "READY cpus=1/1 entry=ist servers=",
            "TEST boot: PASS",
        ]);
        assert!(reason(judge(&boot(1), &text, PASS_EXIT)).contains("2 READY lines"));
    }

    #[test]
    fn malformed_ready_fails() {
        let text = log(&["READY cpus=four entry=ist", "TEST boot: PASS"]);
        assert!(reason(judge(&boot(4), &text, PASS_EXIT)).starts_with("malformed READY line"));
    }

    #[test]
    fn ready_behind_a_log_prefix_is_found() {
        let text = entry_areas(2)
            + &log(&["[cpu 0] INFO kernel: READY cpus=2/2 entry=ist servers=", "TEST boot: PASS"]);
        assert_eq!(judge(&boot(2), &text, PASS_EXIT), Verdict::Pass);
    }

    #[test]
    fn timeout_without_anything_names_the_missing_line() {
        let expect = Expectation::new("timer", 1, None, TCG);
        let why = reason(judge(&expect, "", Outcome::TimedOut));
        assert_eq!(why, "timed out before `TEST timer: PASS`");
    }

    #[test]
    fn ready_line_parses_all_fields() {
        let ready = parse_ready("READY cpus=3/4 entry=fred servers=init,console")
            .unwrap()
            .unwrap();
        assert_eq!(
            ready,
            Ready {
                online: 3,
                found: 4,
                entry: "fred".into(),
                servers: vec!["init".into(), "console".into()]
            }
        );
        assert!(parse_ready("no ready here").is_none());
    }
}
