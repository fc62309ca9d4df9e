//! `compare`: the FRED/IST comparison. Boots Bochs `wildcat_lake` at 1 CPU twice, with FRED
//! (`entry=fred`) and with `exclude_features="fred"` (`entry=ist`), runs the kernel scenario
//! `bench` (user program `user/bench`), and tabulates the `BENCH` lines of both logs.
//!
//! Unit: Bochs' TSC, which advances one tick per retired instruction (with a taken jump before
//! each RDTSC, see EMULATORS.md), so the numbers are instructions of the software path. Event
//! delivery itself is not an instruction; IRET, SYSRET, ERETU and ERETS count one each.

use crate::bochs;
use crate::cli::{Entry, Options};
use crate::emulator::{self, BootLimits, Machine};
use crate::run::{iso_tools, loader, make_iso};
use crate::util::{step, tail, target_dir, Result};
use boot_tests::matrix::BOCHS_FRED_MODEL;
use boot_tests::{Backend, Emulator, Expectation, Verdict};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The kernel scenario that runs the bench program.
const SCENARIO: &str = "bench";

/// The events in table order: the name in `BENCH` lines, and what the row says.
pub const EVENTS: &[(&str, &str)] = &[
    ("syscall_null", "null system call (SYSCALL, return)"),
    ("int3", "int3 (#BP from ring 3, resumed)"),
    (
        "page_fault",
        "user page fault (#PF, resumed past the store)",
    ),
    (
        "page_fault_demand",
        "user page fault, demand paging (zeroed page mapped)",
    ),
    ("timer", "timer interrupt (LAPIC, from ring 3)"),
    (
        "nmi_self",
        "NMI self-IPI (in a system call, minus one without the send)",
    ),
    (
        "ipc_call",
        "IPC call/reply to a thread on the same CPU (fastpath)",
    ),
    (
        "switch_yield",
        "context switch: yield to a thread on the same CPU and back",
    ),
    (
        "switch_yield_avx",
        "the same, both threads with dirty AVX state (XSAVE writes YMM)",
    ),
];

/// One `BENCH <name> n=.. median=.. p10=.. p90=.. min=.. max=.. base=..` line, as the comparison uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    pub name: String,
    pub n: u64,
    pub median: i64,
    pub min: i64,
    pub max: i64,
    /// The framing (baseline) median that was subtracted.
    pub base: i64,
}

/// Reads the `BENCH` lines of a serial log (whatever prefix the kernel's logger put before
/// them). The log must end its measurements with `BENCH done`.
pub fn parse_log(serial: &str) -> std::result::Result<Vec<Measurement>, String> {
    // One parser for both views: the bench report's (which also reads p10 and p90).
    let figures = crate::report::parse_log(serial)?;
    Ok(figures
        .into_iter()
        .map(|f| Measurement { name: f.name, n: f.n, median: f.median, min: f.min, max: f.max, base: f.base })
        .collect())
}

/// The FRED/IST ratio of two medians, as the table prints it.
pub fn ratio(fred: i64, ist: i64) -> String {
    if ist <= 0 {
        return "n/a".into();
    }
    format!("{:.2}", fred as f64 / ist as f64)
}

/// The rows of the comparison: every event of [`EVENTS`], FRED's and IST's measurement.
pub struct Table<'a> {
    pub rows: Vec<(&'static str, &'static str, &'a Measurement, &'a Measurement)>,
}

impl<'a> Table<'a> {
    /// Pairs up the two runs' measurements; every event must be in both.
    pub fn new(
        fred: &'a [Measurement],
        ist: &'a [Measurement],
    ) -> std::result::Result<Table<'a>, String> {
        let find = |set: &'a [Measurement], name: &str, which: &str| {
            set.iter()
                .find(|m| m.name == name)
                .ok_or_else(|| format!("the {which} run reported no {name}"))
        };
        let mut rows = Vec::new();
        for &(name, label) in EVENTS {
            rows.push((
                name,
                label,
                find(fred, name, "FRED")?,
                find(ist, name, "IST")?,
            ));
        }
        Ok(Table { rows })
    }

    /// A Markdown table: medians, min..max, and the ratio of the medians.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| event | FRED median | FRED min..max | IST median | IST min..max | FRED/IST |\n",
        );
        s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (_, label, f, i) in &self.rows {
            let _ = writeln!(
                s,
                "| {label} | {} | {}..{} | {} | {}..{} | {} |",
                f.median,
                f.min,
                f.max,
                i.median,
                i.min,
                i.max,
                ratio(f.median, i.median)
            );
        }
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("event,fred_n,fred_median,fred_min,fred_max,fred_base,ist_n,ist_median,ist_min,ist_max,ist_base,fred_over_ist\n");
        for (name, _, f, i) in &self.rows {
            let _ = writeln!(
                s,
                "{name},{},{},{},{},{},{},{},{},{},{},{}",
                f.n,
                f.median,
                f.min,
                f.max,
                f.base,
                i.n,
                i.median,
                i.min,
                i.max,
                i.base,
                ratio(f.median, i.median)
            );
        }
        s
    }

    /// A horizontal bar chart of the medians, FRED and IST side by side for each event.
    pub fn svg(&self) -> String {
        const LABEL_W: f64 = 250.0;
        const BAR_W: f64 = 420.0;
        const BAR_H: f64 = 14.0;
        const GROUP_H: f64 = 44.0;
        const TOP: f64 = 40.0;
        let max = self
            .rows
            .iter()
            .flat_map(|(_, _, f, i)| [f.median, i.median])
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let height = TOP + GROUP_H * self.rows.len() as f64 + 30.0;
        let width = LABEL_W + BAR_W + 90.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r##"<text x="10" y="20" font-size="14">Round trip, median retired instructions (Bochs wildcat_lake, 1 CPU): <tspan fill="#1f77b4">FRED</tspan> vs <tspan fill="#ff7f0e">IST</tspan></text>"##
        );
        for (k, (name, _, f, i)) in self.rows.iter().enumerate() {
            let y = TOP + GROUP_H * k as f64;
            let _ = writeln!(s, r#"<text x="10" y="{}">{name}</text>"#, y + BAR_H + 4.0);
            for (j, (m, colour)) in [(f, "#1f77b4"), (i, "#ff7f0e")].into_iter().enumerate() {
                let by = y + j as f64 * (BAR_H + 2.0);
                let w = (m.median.max(0) as f64 / max * BAR_W).max(1.0);
                let _ = writeln!(
                    s,
                    r#"<rect x="{LABEL_W}" y="{by}" width="{w:.1}" height="{BAR_H}" fill="{colour}"/>"#
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    LABEL_W + w + 4.0,
                    by + BAR_H - 3.0,
                    m.median
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Boots the bench on one backend and returns its measurements.
fn run_one(
    opts: &Options,
    found: &bochs::Bochs,
    fred: bool,
    dir: &Path,
) -> Result<Vec<Measurement>> {
    let backend = if fred { Backend::Fred } else { Backend::Ist };
    let name = if fred { "fred" } else { "ist" };
    let mut opts = opts.clone();
    opts.entry = Some(if fred { Entry::Fred } else { Entry::Ist });
    opts.cmdline = format!("test={SCENARIO}");
    let loader = loader(&opts)?;
    let (iso, _) = make_iso(&opts, &loader)?;
    let machine = Machine {
        emulator: Emulator::Bochs,
        cpu_model: BOCHS_FRED_MODEL.to_string(),
        exclude_fred: !fred,
        smp: 1,
        bochs: Some(found.clone()),
    };
    let timeout = Duration::from_secs(match opts.timeout_secs {
        Some(0) | None => 600,
        Some(s) => s,
    });
    step(format!(
        "{name}: booting Bochs {BOCHS_FRED_MODEL}{} with 1 CPU, entry={name}, test={SCENARIO} (time limit {} s)...",
        if fred { "" } else { " exclude_features=\"fred\"" },
        timeout.as_secs()
    ));
    let limits = BootLimits {
        timeout: Some(timeout),
        scenario: Some(SCENARIO.to_string()),
        echo: false,
    };
    let work = dir.join(name);
    let result = emulator::boot(&machine, &iso, &work, &limits)?;
    let expect = Expectation::new(SCENARIO, 1, Some(backend), Emulator::Bochs);
    if let Verdict::Fail(why) = boot_tests::judge(&expect, &result.serial, result.outcome) {
        return Err(format!(
            "{name}: the bench run failed: {why} (log: {}); last lines:\n{}",
            result.serial_log.display(),
            crate::util::indent(&tail(&result.serial, 20), "    | ")
        ));
    }
    let measured = parse_log(&result.serial)
        .map_err(|e| format!("{name}: {e} (log: {})", result.serial_log.display()))?;
    step(format!(
        "{name}: {} measurements in {:.1} s (log: {})",
        measured.len(),
        result.elapsed.as_secs_f64(),
        result.serial_log.display()
    ));
    Ok(measured)
}

pub fn compare(opts: &Options) -> Result<u8> {
    crate::tools::ensure(&iso_tools(&loader(opts)?))?;
    let found = bochs::find_fred()?;
    step(format!(
        "Bochs {} at {} (FRED-capable)",
        found.version,
        found.binary.display()
    ));
    let dir = target_dir().join("compare");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let fred = run_one(opts, &found, true, &dir)?;
    let ist = run_one(opts, &found, false, &dir)?;
    let table = Table::new(&fred, &ist)?;
    let md = format!(
        "Round trips in retired instructions (Bochs {} `{BOCHS_FRED_MODEL}`, 1 CPU; TSC = instruction count; \
         event delivery is not an instruction, IRET/SYSRET/ERETU/ERETS count one each). \
         n = {} samples each (timer {}, demand faults {}); median, then min..max.\n\n{}",
        found.version,
        fred[0].n,
        fred.iter().find(|m| m.name == "timer").map_or(0, |m| m.n),
        fred.iter().find(|m| m.name == "page_fault_demand").map_or(0, |m| m.n),
        table.markdown()
    );
    for (file, text) in [
        ("compare.md", &md),
        ("compare.csv", &table.csv()),
        ("compare.svg", &table.svg()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("\n{md}");
    step(format!(
        "wrote compare.md, compare.csv and compare.svg to {}",
        dir.display()
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(extra: &str) -> String {
        let mut s = String::from("READY cpus=1/1 entry=fred servers=\n");
        for (k, (name, _)) in EVENTS.iter().enumerate() {
            let k = k as i64;
            s.push_str(&format!(
                "[cpu 0] INFO  bench: BENCH {name} n=100 median={} p10=1 p90=1 min={} max={} base=5\n",
                100 + k,
                90 + k,
                300 + k
            ));
        }
        s.push_str(extra);
        s
    }

    #[test]
    fn bench_lines_are_read_through_the_log_prefix() {
        let m = parse_log(&log("[cpu 0] INFO  bench: BENCH done\n")).unwrap();
        assert_eq!(m.len(), EVENTS.len());
        assert_eq!(
            m[1],
            Measurement {
                name: "int3".into(),
                n: 100,
                median: 101,
                min: 91,
                max: 301,
                base: 5
            }
        );
    }

    #[test]
    fn a_log_without_done_is_an_unfinished_run() {
        assert!(parse_log(&log("")).unwrap_err().contains("BENCH done"));
    }

    #[test]
    fn malformed_and_repeated_lines_are_refused() {
        let bad = "BENCH int3 n=1 median=x p10=1 p90=1 min=1 max=1 base=0\nBENCH done\n";
        assert!(parse_log(bad).unwrap_err().contains("median"));
        let missing = "BENCH int3 n=1 median=1 p10=1 p90=1 max=1 base=0\nBENCH done\n";
        assert!(parse_log(missing).unwrap_err().contains("no min="));
        let twice = "BENCH int3 n=1 median=1 p10=1 p90=1 min=1 max=1 base=0\nBENCH int3 n=1 median=1 p10=1 p90=1 min=1 max=1 base=0\nBENCH done\n";
        assert!(parse_log(twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn ratio_is_fred_over_ist_with_two_decimals() {
        assert_eq!(ratio(158, 184), "0.86");
        assert_eq!(ratio(388, 116), "3.34");
        assert_eq!(ratio(5, 0), "n/a");
    }

    #[test]
    fn table_pairs_every_event_and_fails_on_a_missing_one() {
        let fred = parse_log(&log("BENCH done\n")).unwrap();
        let mut ist = fred.clone();
        for m in &mut ist {
            m.median *= 2;
        }
        let table = Table::new(&fred, &ist).unwrap();
        let md = table.markdown();
        assert_eq!(md.lines().count(), 2 + EVENTS.len());
        assert!(md.contains(
            "| null system call (SYSCALL, return) | 100 | 90..300 | 200 | 90..300 | 0.50 |"
        ));
        let csv = table.csv();
        assert!(csv
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("syscall_null,100,100,90,300,5,100,200,"));
        assert_eq!(table.svg().matches("<rect x=").count(), 2 * EVENTS.len());
        ist.retain(|m| m.name != "timer");
        assert!(Table::new(&fred, &ist)
            .err()
            .unwrap()
            .contains("IST run reported no timer"));
    }
}
