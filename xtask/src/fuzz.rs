//! `fuzz`: boots the kernel scenario `fuzz` (user/fuzz: a fuzzing process pinned to every CPU,
//! a victim checking its registers and memory, the servers up) with a seed and a count, streams
//! the serial log (the workers print their progress), then adds up the workers' `FUZZ` lines:
//! calls made, results per error kind, per call number. On failure it prints the command that
//! repeats the run with the same seed.

use crate::cli::{Command, EmulatorChoice, Options};
use crate::run;
use crate::util::{step, Result};
use abi::syscall as nr;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

pub const DEFAULT_COUNT: u64 = 1_000_000;

/// Outcome names in the order of the workers' `results` line (user/fuzz/src/tally.rs), and the
/// letter each has in `FUZZNR` entries (none for ok).
const OUTCOMES: [(&str, char); 13] = [
    ("ok", ' '),
    ("NoSuchCall", 'N'),
    ("InvalidArgument", 'I'),
    ("BadAddress", 'A'),
    ("NoMemory", 'M'),
    ("NotFound", 'F'),
    ("BadHandle", 'H'),
    ("NoRights", 'R'),
    ("PeerDied", 'P'),
    ("NoCaller", 'C'),
    ("other", 'X'),
    ("ended", 'E'),
    ("parked", 'W'),
];

/// System-call names by number (from `abi::syscall`, so that they follow renumbering).
const NAMES: &[(u64, &str)] = &[
    (nr::LOG, "log"),
    (nr::YIELD, "yield"),
    (nr::SLEEP, "sleep"),
    (nr::THREAD_EXIT, "thread_exit"),
    (nr::THREAD_CREATE, "thread_create"),
    (nr::CPU_ID, "cpu_id"),
    (nr::MAP, "map"),
    (nr::UNMAP, "unmap"),
    (nr::PROCESS_EXIT, "process_exit"),
    (nr::CPU_COUNT, "cpu_count"),
    (nr::SET_RETURN_CONTEXT, "set_return_context"),
    (nr::EXIT_PATH_COUNTS, "exit_path_counts"),
    (nr::THREAD_ID, "thread_id"),
    (nr::WAIT_THREADS, "wait_threads"),
    (nr::ENDPOINT_CREATE, "endpoint_create"),
    (nr::NOTIFICATION_CREATE, "notification_create"),
    (nr::CAP_DERIVE, "cap_derive"),
    (nr::CAP_DELETE, "cap_delete"),
    (nr::CAP_REVOKE, "cap_revoke"),
    (nr::CAP_INFO, "cap_info"),
    (nr::SEND, "send"),
    (nr::RECV, "recv"),
    (nr::CALL, "call"),
    (nr::REPLY, "reply"),
    (nr::REPLY_RECV, "reply_recv"),
    (nr::NOTIFY_SIGNAL, "notify_signal"),
    (nr::NOTIFY_WAIT, "notify_wait"),
    (nr::NOTIFY_TIMER, "notify_timer"),
    (nr::IRQ_BIND, "irq_bind"),
    (nr::IRQ_ACK, "irq_ack"),
    (nr::IOPORT_ENABLE, "ioport_enable"),
    (nr::SPAWN, "spawn"),
    (nr::PROCESS_WAIT, "process_wait"),
    (nr::PROCESS_KILL, "process_kill"),
    (nr::BENCH_NULL, "bench_null"),
    (nr::BENCH_BREAKPOINTS_RESUME, "bench_breakpoints_resume"),
    (nr::BENCH_SELF_NMI, "bench_self_nmi"),
    (nr::BENCH_FAULT_RESUME, "bench_fault_resume"),
    (nr::BENCH_COUNTER, "bench_counter"),
    (nr::BENCH_WATCH, "bench_watch"),
    (nr::BENCH_FLOOR, "bench_floor"),
    (nr::BENCH_BOOT_CLOCK, "bench_boot_clock"),
    (nr::KLOG_ATTACH, "klog_attach"),
    (nr::KLOG_READ, "klog_read"),
    (nr::SERVERS_READY, "servers_ready"),
    (nr::IPC_STATS, "ipc_stats"),
    (nr::THREAD_CAP, "thread_cap"),
    (nr::THREAD_WAIT, "thread_wait"),
];

fn name(n: u64) -> Option<&'static str> {
    NAMES.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// Per call number: calls, ok, and the letters of the other outcomes seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerNumber {
    pub calls: u64,
    pub ok: u64,
    pub kinds: String,
}

/// What the workers' lines add up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub workers: u64,
    pub calls: u64,
    pub direct: u64,
    pub jobs: u64,
    pub excluded: u64,
    pub skipped: u64,
    pub anomalies: u64,
    /// Totals in [`OUTCOMES`] order.
    pub outcomes: [u64; 13],
    pub per_number: BTreeMap<u64, PerNumber>,
    pub anomaly_lines: Vec<String>,
}

fn fields(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.split_whitespace().filter_map(|w| {
        let (k, v) = w.split_once('=')?;
        Some((k, v.parse().ok()?))
    })
}

impl Summary {
    pub fn parse(log: &str) -> Summary {
        let mut s = Summary::default();
        for line in log.lines() {
            if let Some(at) = line.find("ANOMALY ") {
                s.anomaly_lines.push(line[at..].trim_end().to_string());
            }
            if let Some(at) = line.find("FUZZNR cpu=") {
                for entry in line[at..].split_whitespace().skip(2) {
                    let mut parts = entry.splitn(2, ':');
                    let (Some(n), Some(rest)) = (parts.next(), parts.next()) else { continue };
                    let mut v = rest.splitn(3, '/');
                    let (Ok(n), Some(Ok(calls)), Some(Ok(ok))) =
                        (n.parse::<u64>(), v.next().map(str::parse::<u64>), v.next().map(str::parse::<u64>))
                    else {
                        continue;
                    };
                    let e = s.per_number.entry(n).or_default();
                    e.calls += calls;
                    e.ok += ok;
                    for c in v.next().unwrap_or("").chars() {
                        if !e.kinds.contains(c) {
                            e.kinds.push(c);
                        }
                    }
                }
            } else if let Some(at) = line.find("FUZZ cpu=") {
                let text = &line[at..];
                if text.contains(" results ") {
                    for (k, v) in fields(text) {
                        if let Some(i) = OUTCOMES.iter().position(|(name, _)| *name == k) {
                            s.outcomes[i] += v;
                        }
                    }
                } else {
                    s.workers += 1;
                    for (k, v) in fields(text) {
                        match k {
                            "calls" => s.calls += v,
                            "direct" => s.direct += v,
                            "jobs" => s.jobs += v,
                            "excluded" => s.excluded += v,
                            "skipped" => s.skipped += v,
                            "anomalies" => s.anomalies += v,
                            _ => {}
                        }
                    }
                }
            }
        }
        for e in s.per_number.values_mut() {
            let mut letters: Vec<char> = e.kinds.chars().collect();
            letters.sort_by_key(|c| OUTCOMES.iter().position(|(_, l)| l == c));
            e.kinds = letters.into_iter().collect();
        }
        s
    }

    /// The report: totals, then one row per call number (undefined numbers that all answered
    /// NoSuchCall folded into ranges).
    pub fn report(&self) -> String {
        let mut out = String::new();
        let pct = |n: u64| if self.calls == 0 { 0.0 } else { 100.0 * n as f64 / self.calls as f64 };
        let _ = writeln!(
            out,
            "{} calls by {} workers: {} from the fuzz loop, {} as jobs (threads of their own); {} draws of process_exit excluded, {} jobs skipped; {} anomalies",
            self.calls, self.workers, self.direct, self.jobs, self.excluded, self.skipped, self.anomalies
        );
        let _ = writeln!(out, "results:");
        for (i, (name, _)) in OUTCOMES.iter().enumerate() {
            if self.outcomes[i] > 0 {
                let _ = writeln!(out, "  {name:<16} {:>10}  {:5.1}%", self.outcomes[i], pct(self.outcomes[i]));
            }
        }
        let letters = |kinds: &str| -> String {
            kinds.chars().filter_map(|c| OUTCOMES.iter().find(|(_, l)| *l == c).map(|(n, _)| *n)).collect::<Vec<_>>().join(" ")
        };
        let _ = writeln!(out, "per call (number name: calls, ok, other results):");
        let mut folded: Option<(u64, u64, u64)> = None; // first, last, calls
        let flush = |out: &mut String, folded: &mut Option<(u64, u64, u64)>| {
            if let Some((a, b, calls)) = folded.take() {
                let range = if a == b { format!("{a}") } else { format!("{a}-{b}") };
                let _ = writeln!(out, "  {range:>7} {:<26} {calls:>9} {:>8}  NoSuchCall", "(undefined)", 0);
            }
        };
        for (&n, e) in &self.per_number {
            let undefined = n < 128 && name(n).is_none() && e.ok == 0 && e.kinds == "N";
            if undefined {
                folded = match folded {
                    Some((a, b, c)) if b + 1 == n => Some((a, n, c + e.calls)),
                    other => {
                        let mut f = other;
                        flush(&mut out, &mut f);
                        Some((n, n, e.calls))
                    }
                };
                continue;
            }
            flush(&mut out, &mut folded);
            let label = match (n, name(n)) {
                (128, _) => "(numbers above 127)",
                (_, Some(name)) => name,
                (_, None) => "(undefined)",
            };
            let number = if n == 128 { "128+".to_string() } else { n.to_string() };
            let _ = writeln!(out, "  {number:>7} {label:<26} {:>9} {:>8}  {}", e.calls, e.ok, letters(&e.kinds));
        }
        flush(&mut out, &mut folded);
        out
    }
}

/// From the first worker's first line to the last worker's last, by when the lines arrived.
pub fn run_time(log: &str, line_times: &[Duration]) -> Option<Duration> {
    let mut first = None;
    let mut last = None;
    for (line, &t) in log.lines().zip(line_times) {
        if line.contains("fuzz: cpu ") && line.contains(": seed ") && first.is_none() {
            first = Some(t);
        }
        if line.contains("fuzz: cpu ") && line.contains(" calls made, ") {
            last = Some(t);
        }
    }
    Some(last?.saturating_sub(first?))
}

/// A seed nobody chose: the clock and the process id, mixed.
fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut z = t ^ (std::process::id() as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 1_000_000_000
}

/// The command that boots this run again.
pub fn repeat_command(opts: &Options, seed: u64, count: u64) -> String {
    let mut c = format!("cargo xtask fuzz --seed {seed} --count {count} --smp {}", opts.smp);
    match opts.emulator {
        Some(EmulatorChoice::Bochs) if opts.fred.is_none() => c.push_str(" --emulator bochs"),
        _ => {}
    }
    if let Some(fred) = opts.fred {
        let _ = write!(c, " --fred {}", if fred { "on" } else { "off" });
    }
    if opts.accel == boot_tests::Accel::Kvm {
        c.push_str(" --accel kvm");
    }
    if let Some(cpu) = &opts.cpu {
        let _ = write!(c, " --cpu {cpu}");
    }
    if let Some(entry) = opts.entry {
        let _ = write!(c, " --entry {}", entry.name());
    }
    if !opts.cmdline.trim().is_empty() {
        let _ = write!(c, " --cmdline {:?}", opts.cmdline.trim());
    }
    if !opts.release {
        c.push_str(" --debug");
    }
    if let Some(secs) = opts.timeout_secs {
        let _ = write!(c, " --timeout {secs}");
    }
    c
}

pub fn fuzz(opts: &Options) -> Result<u8> {
    let seed = opts.seed.unwrap_or_else(random_seed);
    let count = opts.count.unwrap_or(DEFAULT_COUNT);
    step(format!(
        "fuzz: seed {seed}{}, {count} system calls over {} CPU(s)",
        if opts.seed.is_none() { " (random; --seed repeats it)" } else { "" },
        opts.smp
    ));
    let mut boot = opts.clone();
    boot.command = Command::Run;
    boot.cmdline = format!("test=fuzz fuzz_seed={seed} fuzz_count={count} {}", opts.cmdline).trim().to_string();
    // After the kernel's own limit, so that its report (a backtrace of every CPU) comes first.
    boot.timeout_secs = opts.timeout_secs.or(Some(abi::harness::fuzz_time_limit_secs(count) + 60));
    let booted = run::boot(&boot)?;
    let summary = Summary::parse(&booted.serial);
    println!();
    step("fuzz summary:");
    println!("{}", crate::util::indent(summary.report().trim_end(), "    "));
    let (time, over) = match run_time(&booted.serial, &booted.line_times).filter(|t| !t.is_zero()) {
        Some(t) => (t, "from the first worker's start to the last one's end"),
        None => (booted.elapsed, "the whole boot"),
    };
    if summary.calls > 0 && !time.is_zero() {
        let secs = time.as_secs_f64();
        step(format!("{:.0} calls/s ({} calls in {secs:.1} s, {over})", summary.calls as f64 / secs, summary.calls));
    }
    for line in &summary.anomaly_lines {
        step(line);
    }
    if booted.code != 0 || summary.calls != count || summary.anomalies > 0 {
        step(format!("FAILED (seed {seed}); to repeat this run: {}", repeat_command(opts, seed, count)));
        return Ok(1);
    }
    step(format!("fuzz: PASS (seed {seed})"));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
fuzz: FUZZ cpu=0 seed=7 calls=100 direct=90 jobs=10 excluded=2 skipped=1 anomalies=0
fuzz: FUZZ cpu=0 results ok=30 NoSuchCall=50 InvalidArgument=5 BadAddress=5 NoMemory=0 NotFound=0 BadHandle=5 NoRights=0 PeerDied=0 NoCaller=0 other=0 ended=3 parked=2
fuzz: FUZZNR cpu=0 0:10/4/A 3:5/0/E 14:7/0/N 15:3/0/N 17:2/0/N 128:20/0/N
fuzz: FUZZ cpu=1 seed=7 calls=100 direct=95 jobs=5 excluded=0 skipped=0 anomalies=1
fuzz: FUZZ cpu=1 results ok=40 NoSuchCall=50 InvalidArgument=0 BadAddress=0 NoMemory=0 NotFound=0 BadHandle=10 NoRights=0 PeerDied=0 NoCaller=0 other=0 ended=0 parked=0
fuzz: FUZZNR cpu=1 0:10/6/IA 14:1/0/N
fuzz: ANOMALY cpu 1 seed 7 call 5 nr 0x20 (notify_wait) args [0x1, 0x2, 0x3, 0x4, 0x5, 0x6] rax 0x9: what
[cpu 0] INFO  fuzz: fuzz run took 12.50 s; free frames: 1 before, 1 after
";

    #[test]
    fn workers_lines_add_up() {
        let s = Summary::parse(LOG);
        assert_eq!((s.workers, s.calls, s.direct, s.jobs, s.excluded, s.skipped, s.anomalies), (2, 200, 185, 15, 2, 1, 1));
        assert_eq!(s.outcomes[0], 70);
        assert_eq!(s.outcomes[6], 15);
        assert_eq!(s.per_number[&0], PerNumber { calls: 20, ok: 10, kinds: "IA".into() });
        assert_eq!(s.per_number[&14].calls, 8);
        assert_eq!(s.anomaly_lines.len(), 1);
        assert!(s.anomaly_lines[0].starts_with("ANOMALY cpu 1 seed 7"));
    }

    #[test]
    fn the_run_is_timed_from_the_first_workers_start_to_the_last_workers_end() {
        let log = "READY\nfuzz: cpu 0: seed 7 (worker seed 0x1), 5 calls\nfuzz: cpu 1: seed 7 (worker seed 0x2), 5 calls\n\
                   fuzz: cpu 1: 5 calls made, 0 jobs still parked, 0 anomalies: ok\nx\nfuzz: cpu 0: 5 calls made, 0 jobs still parked, 0 anomalies: ok\nTEST\n";
        let times: Vec<Duration> = (0..7).map(|i| Duration::from_secs(i * 10)).collect();
        assert_eq!(run_time(log, &times), Some(Duration::from_secs(40)));
        assert_eq!(run_time("READY\n", &times), None);
    }

    #[test]
    fn report_names_calls_and_folds_undefined_numbers() {
        let report = Summary::parse(LOG).report();
        assert!(report.contains("200 calls by 2 workers"), "{report}");
        assert!(report.lines().any(|l| l.contains(" log ") && l.contains("InvalidArgument BadAddress")), "{report}");
        assert!(report.lines().any(|l| l.trim_start().starts_with("14-15 (undefined)") && l.contains(" 11 ")), "{report}");
        assert!(report.lines().any(|l| l.trim_start().starts_with("17 (undefined)")), "{report}");
        assert!(report.lines().any(|l| l.contains("128+") && l.contains("(numbers above 127)")), "{report}");
        assert!(report.lines().any(|l| l.contains("thread_exit") && l.ends_with("ended")), "{report}");
    }

    #[test]
    fn a_failing_run_can_be_repeated_exactly() {
        let opts = crate::cli::parse(&["fuzz", "--smp", "2", "--fred", "off", "--debug"].map(String::from)).unwrap();
        assert_eq!(repeat_command(&opts, 42, 1000), "cargo xtask fuzz --seed 42 --count 1000 --smp 2 --fred off --debug");
        let opts = crate::cli::parse(&["fuzz", "--emulator", "bochs", "--cpu", "tigerlake"].map(String::from)).unwrap();
        assert_eq!(repeat_command(&opts, 1, 5), "cargo xtask fuzz --seed 1 --count 5 --smp 4 --emulator bochs --cpu tigerlake");
    }

    #[test]
    fn every_name_is_unique() {
        for (i, (n, _)) in NAMES.iter().enumerate() {
            assert!(NAMES[i + 1..].iter().all(|(m, _)| m != n), "{n} named twice");
        }
    }
}
