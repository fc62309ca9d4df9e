//! The `cargo xtask bench` report: the figures of every configuration, read from the bench
//! program's `BENCH` lines, written as `report.json`, `report.md` and `report.svg`, and the
//! regression check of `bench --check` against a committed baseline. Pure: host-tested.

use crate::json::Value;
use std::fmt::Write as _;

/// One `BENCH <name> n=.. median=.. p10=.. p90=.. min=.. max=.. base=..` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Figure {
    pub name: String,
    pub n: u64,
    pub median: i64,
    pub p10: i64,
    pub p90: i64,
    pub min: i64,
    pub max: i64,
    /// The framing (baseline window) median that was subtracted; 0 for boot milestones.
    pub base: i64,
}

/// Reads the `BENCH` lines of a serial log (whatever prefix the kernel's logger put before
/// them). The log must end its measurements with `BENCH done`.
pub fn parse_log(serial: &str) -> Result<Vec<Figure>, String> {
    let mut out: Vec<Figure> = Vec::new();
    let mut done = false;
    for line in serial.lines() {
        let Some(at) = line.find("BENCH ") else {
            continue;
        };
        let rest = line[at + "BENCH ".len()..].trim();
        if rest == "done" {
            done = true;
            continue;
        }
        let name = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| format!("BENCH line without a name: {line:?}"))?;
        let field = |key: &str| -> Result<i64, String> {
            rest.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .find(|(k, _)| *k == key)
                .ok_or_else(|| format!("BENCH {name}: no {key}= in {line:?}"))?
                .1
                .parse::<i64>()
                .map_err(|e| format!("BENCH {name}: {key}: {e} in {line:?}"))
        };
        let figure = Figure {
            name: name.to_string(),
            n: field("n")?
                .try_into()
                .map_err(|_| format!("BENCH {name}: negative n"))?,
            median: field("median")?,
            p10: field("p10")?,
            p90: field("p90")?,
            min: field("min")?,
            max: field("max")?,
            base: field("base")?,
        };
        if out.iter().any(|f| f.name == figure.name) {
            return Err(format!("BENCH {name} appears twice"));
        }
        out.push(figure);
    }
    if !done {
        return Err("the log has no `BENCH done` line: the bench program did not finish".into());
    }
    Ok(out)
}

// --- what a report holds ----------------------------------------------------------------------

/// What one tick of a configuration's TSC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Retired instructions: Bochs (one tick per instruction) and QEMU `-icount shift=0` (one
    /// virtual nanosecond per instruction). Deterministic, so `--check` compares them.
    Instructions,
    /// Real cycles of the host's TSC (KVM): they vary from run to run.
    Cycles,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Instructions => "instructions",
            Unit::Cycles => "cycles",
        }
    }

    fn parse(s: &str) -> Option<Unit> {
        match s {
            "instructions" => Some(Unit::Instructions),
            "cycles" => Some(Unit::Cycles),
            _ => None,
        }
    }
}

/// One boot of a configuration and what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Boot {
    pub smp: u32,
    /// The kernel scenario: `bench` (every figure) or `bench_boot` (only the boot figures).
    pub scenario: String,
    pub seconds: f64,
    pub figures: Vec<Figure>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ran(Vec<Boot>),
    Skipped(String),
    Failed(String),
}

/// One machine the bench ran on (or could not).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Short and stable: the key `--check` matches the baseline by.
    pub id: String,
    pub title: String,
    /// `fred` or `ist`.
    pub backend: String,
    pub unit: Unit,
    pub outcome: Outcome,
}

impl Config {
    /// The figure `name` of the boot with `smp` CPUs.
    pub fn figure(&self, name: &str, smp: u32) -> Option<&Figure> {
        match &self.outcome {
            Outcome::Ran(boots) => boots
                .iter()
                .find(|b| b.smp == smp)?
                .figures
                .iter()
                .find(|f| f.name == name),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `git describe`-like: the commit the images were built from (`+dirty` if the tree was).
    pub commit: String,
    /// Free text: the host and emulator versions.
    pub host: String,
    pub configs: Vec<Config>,
}

// --- the rows ---------------------------------------------------------------------------------

/// One row of the tables: a figure of the boot with `smp` CPUs.
pub struct Row {
    pub name: &'static str,
    pub smp: u32,
    pub label: &'static str,
    /// How many times the round trip enters the kernel from user space (0: not a round trip
    /// from user space): the table shows how far it lies above that many floors
    /// (`syscall_floor`, the bare SYSCALL round trip of the same boot).
    pub entries: u32,
    /// In the SVG (the boot figures are too large to share an axis with the events).
    pub plotted: bool,
    /// Compared by `--check` (not the firmware and bootloader: they are not this project's code,
    /// and their count changes with the size of every boot module).
    pub checked: bool,
}

const fn row(
    name: &'static str,
    smp: u32,
    label: &'static str,
    entries: u32,
    plotted: bool,
    checked: bool,
) -> Row {
    Row {
        name,
        smp,
        label,
        entries,
        plotted,
        checked,
    }
}

pub const ROWS: &[Row] = &[
    row(
        "syscall_floor",
        1,
        "floor: bare SYSCALL round trip (minimal handler, SYSRET / ERETU)",
        0,
        true,
        true,
    ),
    row(
        "syscall_null",
        1,
        "null system call (bench_null: entry, dispatch, exit)",
        1,
        true,
        true,
    ),
    row("int3", 1, "int3 (#BP from ring 3, resumed)", 1, true, true),
    row(
        "page_fault",
        1,
        "user page fault (#PF, resumed past the store)",
        1,
        true,
        true,
    ),
    row(
        "page_fault_demand",
        1,
        "user page fault, demand paging (zeroed page mapped)",
        1,
        true,
        true,
    ),
    row(
        "timer",
        1,
        "timer interrupt (LAPIC, from ring 3)",
        1,
        true,
        true,
    ),
    row(
        "nmi_self",
        1,
        "NMI self-IPI (in a system call, minus one without the send)",
        0,
        true,
        true,
    ),
    row(
        "ipc_call",
        1,
        "IPC call/reply, server thread on the same CPU (fastpath)",
        2,
        true,
        true,
    ),
    row(
        "ipc_call_cross",
        2,
        "IPC call/reply, server thread on the other CPU (2 CPUs)",
        2,
        true,
        true,
    ),
    row(
        "switch_yield",
        1,
        "context switch: yield to a thread on the same CPU and back",
        2,
        true,
        true,
    ),
    row(
        "switch_yield_avx",
        1,
        "the same, both threads with dirty AVX state",
        2,
        true,
        true,
    ),
    row(
        "thread_create",
        1,
        "thread creation (thread_create, pinned to this CPU)",
        1,
        true,
        true,
    ),
    row(
        "ap_bringup",
        2,
        "AP bring-up: released by the BSP to online (2 CPUs)",
        0,
        false,
        true,
    ),
    row(
        "boot_ready",
        1,
        "boot: kernel entry to READY, 1 CPU",
        0,
        false,
        true,
    ),
    // With two CPUs sharing the emulated clock, this count moved by 1.2 % between two runs of
    // one commit on Bochs (22.29 M, then 22.55 M): checked with MULTI_CPU_PERCENT, like every
    // figure of a boot with more than one CPU.
    row(
        "boot_ready",
        2,
        "boot: kernel entry to READY, 2 CPUs",
        0,
        false,
        true,
    ),
    row(
        "boot_firmware",
        1,
        "boot: reset to kernel entry (firmware and bootloader), 1 CPU",
        0,
        false,
        false,
    ),
];

/// The configuration ids of the FRED/IST pair (same Bochs, same CPU model).
pub const FRED_ID: &str = "bochs-fred";
pub const IST_TWIN_ID: &str = "bochs-ist";

/// The published figures issue 12 measures against.
pub struct Reference {
    pub what: &'static str,
    pub figure: &'static str,
    /// The configurations whose figure goes beside it (empty: every one of `unit`).
    pub only: &'static [&'static str],
    pub unit: Unit,
    /// Our figure to put beside it: (row name, smp).
    pub ours: (&'static str, u32),
    /// The issue's target for our figure, if it sets one.
    pub target: Option<i64>,
}

pub const REFERENCES: &[Reference] = &[
    Reference {
        what: "Linux 7.3.4, null system call, same Bochs model",
        figure: "195 instructions (FRED) / 209 (IDT)",
        only: &[FRED_ID, IST_TWIN_ID],
        unit: Unit::Instructions,
        ours: ("syscall_null", 1),
        target: None,
    },
    Reference {
        what: "L4Re, null system call",
        figure: "148 instructions",
        only: &[],
        unit: Unit::Instructions,
        ours: ("syscall_null", 1),
        target: Some(148),
    },
    Reference {
        what: "L4Re, one IPC between address spaces (ours: between two threads of one process)",
        figure: "587 instructions (call + reply: 2 x 587 = 1,174)",
        only: &[],
        unit: Unit::Instructions,
        ours: ("ipc_call", 1),
        target: Some(1174),
    },
    Reference {
        what: "seL4, fastpath call + reply, Skylake",
        figure: "772 cycles",
        only: &[],
        unit: Unit::Cycles,
        ours: ("ipc_call", 1),
        target: None,
    },
];

// --- JSON -------------------------------------------------------------------------------------

impl Figure {
    fn to_json(&self) -> Value {
        Value::obj(vec![
            ("name", Value::str(&self.name)),
            ("n", Value::int(self.n as i64)),
            ("median", Value::int(self.median)),
            ("p10", Value::int(self.p10)),
            ("p90", Value::int(self.p90)),
            ("min", Value::int(self.min)),
            ("max", Value::int(self.max)),
            ("base", Value::int(self.base)),
        ])
    }

    fn from_json(v: &Value) -> Result<Figure, String> {
        let int = |k: &str| {
            v.get(k)
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("a figure without an integer {k:?}"))
        };
        Ok(Figure {
            name: v
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a figure without a name")?
                .to_string(),
            n: int("n")? as u64,
            median: int("median")?,
            p10: int("p10")?,
            p90: int("p90")?,
            min: int("min")?,
            max: int("max")?,
            base: int("base")?,
        })
    }
}

impl Report {
    pub fn to_json(&self) -> Value {
        let configs = self
            .configs
            .iter()
            .map(|c| {
                let mut pairs = vec![
                    ("id", Value::str(&c.id)),
                    ("title", Value::str(&c.title)),
                    ("backend", Value::str(&c.backend)),
                    ("unit", Value::str(c.unit.name())),
                ];
                match &c.outcome {
                    Outcome::Ran(boots) => {
                        pairs.push(("status", Value::str("ran")));
                        let boots = boots
                            .iter()
                            .map(|b| {
                                Value::obj(vec![
                                    ("smp", Value::int(b.smp as i64)),
                                    ("scenario", Value::str(&b.scenario)),
                                    ("seconds", Value::Num((b.seconds * 10.0).round() / 10.0)),
                                    (
                                        "figures",
                                        Value::Arr(b.figures.iter().map(Figure::to_json).collect()),
                                    ),
                                ])
                            })
                            .collect();
                        pairs.push(("boots", Value::Arr(boots)));
                    }
                    Outcome::Skipped(why) => {
                        pairs.push(("status", Value::str("skipped")));
                        pairs.push(("reason", Value::str(why)));
                    }
                    Outcome::Failed(why) => {
                        pairs.push(("status", Value::str("failed")));
                        pairs.push(("reason", Value::str(why)));
                    }
                }
                Value::obj(pairs)
            })
            .collect();
        Value::obj(vec![
            ("schema", Value::int(1)),
            ("commit", Value::str(&self.commit)),
            ("host", Value::str(&self.host)),
            ("configs", Value::Arr(configs)),
        ])
    }

    pub fn from_json(v: &Value) -> Result<Report, String> {
        if v.get("schema").and_then(Value::as_i64) != Some(1) {
            return Err("not a bench report (schema 1)".into());
        }
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut configs = Vec::new();
        for c in v
            .get("configs")
            .and_then(Value::as_array)
            .ok_or("no configs")?
        {
            let id = text(c, "id").ok_or("a configuration without an id")?;
            let unit = text(c, "unit")
                .as_deref()
                .and_then(Unit::parse)
                .ok_or_else(|| format!("{id}: no unit"))?;
            let reason = || text(c, "reason").unwrap_or_default();
            let outcome = match text(c, "status").as_deref() {
                Some("ran") => {
                    let mut boots = Vec::new();
                    for b in c
                        .get("boots")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("{id}: no boots"))?
                    {
                        let figures = b
                            .get("figures")
                            .and_then(Value::as_array)
                            .ok_or_else(|| format!("{id}: a boot without figures"))?
                            .iter()
                            .map(Figure::from_json)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("{id}: {e}"))?;
                        boots.push(Boot {
                            smp: b
                                .get("smp")
                                .and_then(Value::as_i64)
                                .ok_or_else(|| format!("{id}: a boot without smp"))?
                                as u32,
                            // Reports before the boot-only boots had only the whole bench.
                            scenario: text(b, "scenario").unwrap_or_else(|| "bench".into()),
                            seconds: b.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
                            figures,
                        });
                    }
                    Outcome::Ran(boots)
                }
                Some("skipped") => Outcome::Skipped(reason()),
                Some("failed") => Outcome::Failed(reason()),
                other => return Err(format!("{id}: status {other:?}")),
            };
            configs.push(Config {
                title: text(c, "title").unwrap_or_else(|| id.clone()),
                backend: text(c, "backend").unwrap_or_default(),
                id,
                unit,
                outcome,
            });
        }
        Ok(Report {
            commit: text(v, "commit").unwrap_or_default(),
            host: text(v, "host").unwrap_or_default(),
            configs,
        })
    }
}

// --- Markdown ---------------------------------------------------------------------------------

/// `1234567` as `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// `a / b` with two decimals.
pub fn ratio(a: i64, b: i64) -> String {
    if b <= 0 {
        return "n/a".into();
    }
    format!("{:.2}", a as f64 / b as f64)
}

fn status(c: &Config) -> String {
    match &c.outcome {
        Outcome::Ran(boots) => {
            let parts: Vec<String> = boots
                .iter()
                .map(|b| {
                    format!(
                        "{} CPU{}{}: {:.0} s",
                        b.smp,
                        if b.smp == 1 { "" } else { "s" },
                        if b.scenario == BOOT_ONLY { " boot only" } else { "" },
                        b.seconds
                    )
                })
                .collect();
            format!("ran ({})", parts.join(", "))
        }
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Failed(why) => format!("FAILED: {why}"),
    }
}

/// The table of one configuration.
pub fn config_table(c: &Config) -> String {
    let mut s = String::new();
    s.push_str("| event | median | p10 | p90 | n | over the floor (entries x floor) |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    let floor = c.figure("syscall_floor", 1).map(|f| f.median);
    for r in ROWS {
        let Some(f) = c.figure(r.name, r.smp) else {
            continue;
        };
        let over = match (r.entries, floor) {
            (0, _) | (_, None) => String::new(),
            (k, Some(floor)) => format!(
                "+{} ({k} x {floor})",
                thousands(f.median - k as i64 * floor)
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {over} |",
            r.label,
            thousands(f.median),
            thousands(f.p10),
            thousands(f.p90),
            f.n
        );
    }
    s
}

/// Every machine that ran side by side: one column of medians each, and FRED/IST where the
/// wildcat_lake pair ran (the README's table).
pub fn summary_table(report: &Report) -> String {
    let ran: Vec<&Config> = report
        .configs
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Ran(_)))
        .collect();
    let pair = ran.iter().any(|c| c.id == FRED_ID) && ran.iter().any(|c| c.id == IST_TWIN_ID);
    let mut s = String::from("| event |");
    for c in &ran {
        let _ = write!(
            s,
            " {} ({}, {}) |",
            c.id,
            c.backend.to_uppercase(),
            c.unit.name()
        );
    }
    if pair {
        s.push_str(" FRED/IST |");
    }
    s.push_str("\n| --- |");
    s.push_str(&" ---: |".repeat(ran.len() + usize::from(pair)));
    s.push('\n');
    for r in ROWS {
        if !ran.iter().any(|c| c.figure(r.name, r.smp).is_some()) {
            continue;
        }
        let _ = write!(s, "| {} |", r.label);
        for c in &ran {
            match c.figure(r.name, r.smp) {
                Some(f) => {
                    let _ = write!(s, " {} |", thousands(f.median));
                }
                None => s.push_str(" |"),
            }
        }
        if pair {
            let get = |id: &str| {
                ran.iter()
                    .find(|c| c.id == id)
                    .and_then(|c| c.figure(r.name, r.smp))
                    .map(|f| f.median)
            };
            match (get(FRED_ID), get(IST_TWIN_ID)) {
                (Some(f), Some(i)) => {
                    let _ = write!(s, " {} |", ratio(f, i));
                }
                _ => s.push_str(" |"),
            }
        }
        s.push('\n');
    }
    s
}

/// FRED against IST on the same Bochs model, if both ran.
pub fn fred_ist_table(report: &Report) -> Option<String> {
    let fred = report.configs.iter().find(|c| c.id == FRED_ID)?;
    let ist = report.configs.iter().find(|c| c.id == IST_TWIN_ID)?;
    let mut s = String::new();
    s.push_str("| event | FRED median | FRED p10..p90 | IST median | IST p10..p90 | FRED/IST |\n");
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: |\n");
    let mut rows = 0;
    for r in ROWS {
        let (Some(f), Some(i)) = (fred.figure(r.name, r.smp), ist.figure(r.name, r.smp)) else {
            continue;
        };
        rows += 1;
        let _ = writeln!(
            s,
            "| {} | {} | {}..{} | {} | {}..{} | {} |",
            r.label,
            thousands(f.median),
            thousands(f.p10),
            thousands(f.p90),
            thousands(i.median),
            thousands(i.p10),
            thousands(i.p90),
            ratio(f.median, i.median)
        );
    }
    (rows > 0).then_some(s)
}

/// Our figures beside the published ones: for each reference, every configuration that ran.
pub fn references_table(report: &Report) -> String {
    let mut s = String::new();
    s.push_str("| reference | their figure | ours | target (issue 12) |\n");
    s.push_str("| --- | --- | --- | --- |\n");
    for r in REFERENCES {
        let ours: Vec<String> = report
            .configs
            .iter()
            .filter(|c| c.unit == r.unit && (r.only.is_empty() || r.only.contains(&c.id.as_str())))
            .filter_map(|c| {
                let f = c.figure(r.ours.0, r.ours.1)?;
                Some(format!(
                    "{} {} ({}, {})",
                    thousands(f.median),
                    c.unit.name(),
                    c.id,
                    c.backend.to_uppercase()
                ))
            })
            .collect();
        let target = match r.target {
            Some(t) => {
                let measured: Vec<(&Config, i64)> = report
                    .configs
                    .iter()
                    .filter(|c| c.id == FRED_ID || c.id == IST_TWIN_ID)
                    .filter_map(|c| c.figure(r.ours.0, r.ours.1).map(|f| (c, f.median)))
                    .collect();
                let misses: Vec<String> = measured
                    .iter()
                    .filter(|(_, m)| *m > t)
                    .map(|(c, m)| format!("{} misses by {}", c.id, thousands(m - t)))
                    .collect();
                if measured.is_empty() {
                    format!(
                        "at most {} on wildcat_lake: not measured here",
                        thousands(t)
                    )
                } else if misses.is_empty() {
                    format!("at most {} on wildcat_lake: met", thousands(t))
                } else {
                    format!(
                        "at most {} on wildcat_lake: {}",
                        thousands(t),
                        misses.join(", ")
                    )
                }
            }
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {target} |",
            r.what,
            r.figure,
            if ours.is_empty() {
                "(not measured here)".to_string()
            } else {
                ours.join("; ")
            }
        );
    }
    s
}

/// The whole `report.md`.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# `cargo xtask bench`\n");
    let _ = writeln!(s, "Commit {}; {}.\n", report.commit, report.host);
    s.push_str(
        "Every figure is the round trip of one event from user space (or a boot milestone), as a \
         median with p10 and p90 over n samples, in the configuration's TSC unit, with the \
         framing of an identical window without the event subtracted. Under Bochs and QEMU \
         `-icount shift=0` a TSC tick is one retired instruction (event delivery itself is not \
         one; IRET, SYSRET, ERETU and ERETS count one each); under KVM it is a cycle of the \
         host. Rows marked 2 CPUs come from a second boot with 2 CPUs, where both CPUs advance \
         one emulated clock (so a cross-CPU figure counts the instructions of both sides, and \
         any idle time). \"Over the floor\" is the median minus the floor's, the bare SYSCALL \
         round trip of the same boot.\n\n",
    );
    s.push_str("| configuration | backend | unit | status |\n| --- | --- | --- | --- |\n");
    for c in &report.configs {
        let _ = writeln!(
            s,
            "| {} (`{}`) | {} | {} | {} |",
            c.title,
            c.id,
            c.backend.to_uppercase(),
            c.unit.name(),
            status(c)
        );
    }
    let _ = write!(s, "\n## Medians side by side\n\n{}", summary_table(report));
    if let Some(t) = ready_by_cpus_table(report) {
        let _ = write!(
            s,
            "\n## Boot to READY by CPU count\n\nKernel entry to READY, one boot each: at 1 and 2 \
             CPUs the boots of the whole bench, at more CPUs boot-only boots (scenario \
             `{BOOT_ONLY}`, no event loop). Every CPU advances the one emulated clock, so the \
             count includes what the APs execute meanwhile. In parentheses: against the same \
             machine at 1 CPU.\n\n{t}"
        );
    }
    if let Some(t) = ap_by_cpus_table(report) {
        let _ = write!(
            s,
            "\n## AP bring-up by CPU count\n\nFrom the BSP's release of the APs to the last AP \
             online (the median AP in parentheses), in the same boots.\n\n{t}"
        );
    }
    for c in &report.configs {
        if let Outcome::Ran(_) = c.outcome {
            let _ = write!(
                s,
                "\n## {} ({}, {})\n\n{}",
                c.title,
                c.backend.to_uppercase(),
                c.unit.name(),
                config_table(c)
            );
        }
    }
    if let Some(t) = fred_ist_table(report) {
        let _ = write!(
            s,
            "\n## FRED / IST (Bochs `wildcat_lake`, FRED on and off)\n\n{t}"
        );
    }
    let _ = write!(
        s,
        "\n## Beside the published figures\n\n{}",
        references_table(report)
    );
    s
}

// --- SVG --------------------------------------------------------------------------------------

const COLOURS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Grouped horizontal bars: one group per event, one bar per configuration that ran, on a
/// logarithmic axis (the events span 4 to 100,000 ticks); one panel per unit.
pub fn svg(report: &Report) -> String {
    const LABEL_W: f64 = 300.0;
    const PLOT_W: f64 = 560.0;
    const BAR_H: f64 = 9.0;
    const GAP: f64 = 10.0;
    let ran: Vec<(usize, &Config)> = report
        .configs
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Ran(_)))
        .enumerate()
        .collect();
    let mut body = String::new();
    let mut y = 30.0;
    // The legend.
    for (k, c) in &ran {
        let _ = writeln!(
            body,
            r#"<rect x="10" y="{:.1}" width="10" height="10" fill="{}"/><text x="26" y="{:.1}">{} ({}, {})</text>"#,
            y,
            COLOURS[k % COLOURS.len()],
            y + 9.0,
            escape(&c.title),
            c.backend.to_uppercase(),
            c.unit.name()
        );
        y += 16.0;
    }
    for unit in [Unit::Instructions, Unit::Cycles] {
        let panel: Vec<&(usize, &Config)> = ran.iter().filter(|(_, c)| c.unit == unit).collect();
        let rows: Vec<&Row> = ROWS
            .iter()
            .filter(|r| r.plotted && panel.iter().any(|(_, c)| c.figure(r.name, r.smp).is_some()))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let max = rows
            .iter()
            .flat_map(|r| {
                panel
                    .iter()
                    .filter_map(|(_, c)| c.figure(r.name, r.smp).map(|f| f.median))
            })
            .max()
            .unwrap_or(10)
            .max(10);
        let decades = (max as f64).log10().ceil().max(1.0);
        let x_of = |v: i64| LABEL_W + (v.max(1) as f64).log10() / decades * PLOT_W;
        y += 14.0;
        let _ = writeln!(
            body,
            r#"<text x="10" y="{:.1}" font-size="13" font-weight="bold">Median round trip, {} (log scale)</text>"#,
            y + 12.0,
            unit.name()
        );
        y += 22.0;
        let top = y;
        let group_h = panel.len() as f64 * (BAR_H + 1.0) + GAP;
        // The bars go after the grid lines, which are drawn once the panel's height is known.
        let mut bars = String::new();
        for r in &rows {
            let _ = writeln!(
                bars,
                r#"<text x="10" y="{:.1}">{}</text>"#,
                y + group_h / 2.0,
                escape(r.name)
            );
            for (j, (k, c)) in panel.iter().enumerate() {
                let by = y + j as f64 * (BAR_H + 1.0);
                if let Some(f) = c.figure(r.name, r.smp) {
                    let w = (x_of(f.median) - LABEL_W).max(1.0);
                    let _ = writeln!(
                        bars,
                        r#"<rect x="{LABEL_W}" y="{by:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
                        COLOURS[k % COLOURS.len()],
                        LABEL_W + w + 3.0,
                        by + BAR_H - 1.0,
                        thousands(f.median)
                    );
                }
            }
            y += group_h;
        }
        // The axis: one tick per decade.
        let _ = writeln!(
            body,
            r##"<line x1="{LABEL_W}" y1="{top:.1}" x2="{LABEL_W}" y2="{y:.1}" stroke="#444"/>"##
        );
        let _ = writeln!(
            body,
            r##"<line x1="{LABEL_W}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444"/>"##,
            LABEL_W + PLOT_W
        );
        for d in 0..=decades as i64 {
            let x = LABEL_W + d as f64 / decades * PLOT_W;
            let _ = writeln!(
                body,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"##,
                y + 4.0,
                y + 16.0,
                thousands(10i64.pow(d as u32))
            );
        }
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} per round trip</text>"#,
            LABEL_W + PLOT_W / 2.0,
            y + 32.0,
            unit.name()
        );
        body.push_str(&bars);
        y += 40.0;
    }
    let width = LABEL_W + PLOT_W + 80.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{:.0}" font-family="sans-serif" font-size="11">"#,
        y + 10.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14">cargo xtask bench: {}</text>"#,
        escape(&report.commit)
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    s
}

// --- boot by CPU count ------------------------------------------------------------------------

/// The scenario of the boot-only boots: the bench program's boot figures and nothing else.
pub const BOOT_ONLY: &str = "bench_boot";

/// The figures a boot-only boot has, and the ones recorded per CPU count.
pub const SCALING_FIGURES: &[&str] = &["boot_ready", "ap_bringup"];

/// The configurations that ran and measured boot to READY, and the CPU counts they measured
/// it at (ascending, each once).
fn scaling(report: &Report) -> (Vec<&Config>, Vec<u32>) {
    let mut counts = Vec::new();
    let mut configs = Vec::new();
    for c in &report.configs {
        let Outcome::Ran(boots) = &c.outcome else {
            continue;
        };
        let mut any = false;
        for b in boots {
            if b.figures.iter().any(|f| f.name == "boot_ready") {
                any = true;
                if !counts.contains(&b.smp) {
                    counts.push(b.smp);
                }
            }
        }
        if any {
            configs.push(c);
        }
    }
    counts.sort_unstable();
    (configs, counts)
}

fn column_head(c: &Config) -> String {
    format!(" {} ({}, {}) |", c.id, c.backend.to_uppercase(), c.unit.name())
}

/// The head of a per-CPU-count table: a `CPUs` column, then one per machine.
fn cpus_table_head(configs: &[&Config]) -> String {
    let mut s = String::from("| CPUs |");
    for c in configs {
        s.push_str(&column_head(c));
    }
    s.push_str("\n| ---: |");
    s.push_str(&" ---: |".repeat(configs.len()));
    s.push('\n');
    s
}

/// Boot to READY (kernel entry to READY) per CPU count, one column per machine, with its
/// ratio to the same machine's 1-CPU boot. `None` if no machine measured it at more than one
/// count.
pub fn ready_by_cpus_table(report: &Report) -> Option<String> {
    let (configs, counts) = scaling(report);
    if counts.len() < 2 {
        return None;
    }
    let mut s = cpus_table_head(&configs);
    for &n in &counts {
        let _ = write!(s, "| {n} |");
        for c in &configs {
            let one = c.figure("boot_ready", 1).map(|f| f.median);
            match c.figure("boot_ready", n) {
                Some(f) => match one {
                    Some(one) if n > 1 => {
                        let _ = write!(s, " {} (x{}) |", thousands(f.median), ratio(f.median, one));
                    }
                    _ => {
                        let _ = write!(s, " {} |", thousands(f.median));
                    }
                },
                None => s.push_str(" |"),
            }
        }
        s.push('\n');
    }
    Some(s)
}

/// AP bring-up per CPU count: from the BSP's release of the APs to the last AP online (the
/// `ap_bringup` figure's max), the median AP in parentheses. `None` without any.
pub fn ap_by_cpus_table(report: &Report) -> Option<String> {
    let (configs, counts) = scaling(report);
    let counts: Vec<u32> = counts.into_iter().filter(|&n| n > 1).collect();
    let configs: Vec<&Config> = configs
        .into_iter()
        .filter(|c| counts.iter().any(|&n| c.figure("ap_bringup", n).is_some()))
        .collect();
    if configs.is_empty() {
        return None;
    }
    let mut s = cpus_table_head(&configs);
    for &n in &counts {
        let _ = write!(s, "| {n} |");
        for c in &configs {
            match c.figure("ap_bringup", n) {
                Some(f) if f.n > 1 => {
                    let _ = write!(s, " {} (median {}) |", thousands(f.max), thousands(f.median));
                }
                Some(f) => {
                    let _ = write!(s, " {} |", thousands(f.max));
                }
                None => s.push_str(" |"),
            }
        }
        s.push('\n');
    }
    Some(s)
}

/// `64710147` as `64.7 M`: the plot's axis labels.
fn short(v: f64) -> String {
    let (d, unit) = match v.abs() {
        a if a >= 1e9 => (1e9, " G"),
        a if a >= 1e6 => (1e6, " M"),
        a if a >= 1e3 => (1e3, " K"),
        _ => (1.0, ""),
    };
    let x = v / d;
    if x.fract() == 0.0 {
        format!("{x:.0}{unit}")
    } else {
        format!("{x:.1}{unit}")
    }
}

/// The step of a linear axis from 0 to `max` with about five ticks: 1, 2 or 5 times a power of
/// ten.
fn axis_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

/// `report-boot.svg`: boot to READY (linear axis from 0) and the last AP online (log axis)
/// against the CPU count (log2 axis), one line per machine in the colours of `report.svg`,
/// one pair of panels per unit. `None` if no machine measured boot to READY at more than one
/// CPU count.
pub fn boot_svg(report: &Report) -> Option<String> {
    const LEFT: f64 = 90.0;
    const PLOT_W: f64 = 620.0;
    const PLOT_H: f64 = 220.0;
    let (configs, counts) = scaling(report);
    if counts.len() < 2 {
        return None;
    }
    // The colour of each machine is that of its bars in report.svg: its place among those that ran.
    let colour = |c: &Config| {
        let k = report
            .configs
            .iter()
            .filter(|x| matches!(x.outcome, Outcome::Ran(_)))
            .position(|x| x.id == c.id)
            .unwrap_or(0);
        COLOURS[k % COLOURS.len()]
    };
    let top_count = *counts.last().unwrap_or(&2);
    let doublings = (top_count.max(2) as f64).log2().ceil();
    let x_of = |n: u32| LEFT + (n as f64).log2() / doublings * PLOT_W;
    let mut body = String::new();
    let mut y = 30.0;
    for c in &configs {
        let _ = writeln!(
            body,
            r#"<rect x="10" y="{:.1}" width="10" height="10" fill="{}"/><text x="26" y="{:.1}">{} ({}, {})</text>"#,
            y,
            colour(c),
            y + 9.0,
            escape(&c.title),
            c.backend.to_uppercase(),
            c.unit.name()
        );
        y += 16.0;
    }
    for unit in [Unit::Instructions, Unit::Cycles] {
        let panel: Vec<&&Config> = configs.iter().filter(|c| c.unit == unit).collect();
        for (figure, title, log) in [
            ("boot_ready", "Boot: kernel entry to READY", false),
            ("ap_bringup", "AP bring-up: release to the last AP online (log scale)", true),
        ] {
            // (colour, points) per machine; the AP figure is the slowest AP's (max).
            let lines: Vec<(&str, Vec<(u32, i64)>)> = panel
                .iter()
                .map(|c| {
                    let pts = counts
                        .iter()
                        .filter_map(|&n| {
                            let f = c.figure(figure, n)?;
                            Some((n, if log { f.max } else { f.median }))
                        })
                        .collect();
                    (colour(c), pts)
                })
                .filter(|(_, pts): &(&str, Vec<(u32, i64)>)| !pts.is_empty())
                .collect();
            if lines.is_empty() {
                continue;
            }
            let max = lines
                .iter()
                .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
                .max()
                .unwrap_or(1)
                .max(1) as f64;
            y += 14.0;
            let _ = writeln!(
                body,
                r#"<text x="10" y="{:.1}" font-size="13" font-weight="bold">{title}, {} by CPU count</text>"#,
                y + 12.0,
                unit.name()
            );
            y += 26.0;
            let top = y;
            let bottom = top + PLOT_H;
            // The value axis: linear from 0 in steps of 1, 2 or 5, or one tick per decade.
            let (y_of, ticks): (Box<dyn Fn(f64) -> f64>, Vec<f64>) = if log {
                let lo = lines
                    .iter()
                    .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
                    .min()
                    .unwrap_or(1)
                    .max(1) as f64;
                let (d0, d1) = (lo.log10().floor(), max.log10().ceil().max(lo.log10().floor() + 1.0));
                (
                    Box::new(move |v: f64| bottom - (v.max(1.0).log10() - d0) / (d1 - d0) * PLOT_H),
                    (d0 as i32..=d1 as i32).map(|d| 10f64.powi(d)).collect(),
                )
            } else {
                let step = axis_step(max);
                let end = (max / step).ceil() * step;
                (
                    Box::new(move |v: f64| bottom - v / end * PLOT_H),
                    (0..=(end / step).round() as i64).map(|k| k as f64 * step).collect(),
                )
            };
            for t in &ticks {
                let ty = y_of(*t);
                let _ = writeln!(
                    body,
                    r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                    LEFT + PLOT_W,
                    LEFT - 4.0,
                    ty + 3.5,
                    short(*t)
                );
            }
            for d in 0..=doublings as u32 {
                let n = 1u32 << d;
                let tx = x_of(n);
                let measured = counts.contains(&n);
                let _ = writeln!(
                    body,
                    r##"<line x1="{tx:.1}" y1="{top:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#{}"/><text x="{tx:.1}" y="{:.1}" font-size="10" text-anchor="middle"{}>{n}</text>"##,
                    bottom + 4.0,
                    if measured { "bbb" } else { "eee" },
                    bottom + 16.0,
                    if measured { r#" font-weight="bold""# } else { "" }
                );
            }
            let _ = writeln!(
                body,
                r##"<line x1="{LEFT}" y1="{top:.1}" x2="{LEFT}" y2="{bottom:.1}" stroke="#444"/><line x1="{LEFT}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="#444"/>"##,
                LEFT + PLOT_W
            );
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">CPUs (log scale)</text>"#,
                LEFT + PLOT_W / 2.0,
                bottom + 32.0
            );
            for (colour, pts) in &lines {
                let path: Vec<String> = pts
                    .iter()
                    .map(|&(n, v)| format!("{:.1},{:.1}", x_of(n), y_of(v as f64)))
                    .collect();
                let _ = writeln!(
                    body,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                    path.join(" ")
                );
                for &(n, v) in pts {
                    let _ = writeln!(
                        body,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{n} CPUs: {}</title></circle>"#,
                        x_of(n),
                        y_of(v as f64),
                        thousands(v)
                    );
                }
            }
            y = bottom + 44.0;
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif" font-size="11">"#,
        LEFT + PLOT_W + 40.0,
        y + 10.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14">cargo xtask bench, boot by CPU count: {}</text>"#,
        escape(&report.commit)
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    Some(s)
}

// --- the regression check ---------------------------------------------------------------------

/// The least tolerance, in percent, of a figure measured in a boot with more than one CPU.
pub const MULTI_CPU_PERCENT: f64 = 5.0;


/// How much a figure may grow over the baseline before `--check` fails: the larger of
/// `percent` of the baseline's median and `slack` ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub percent: f64,
    pub slack: i64,
}

impl Tolerance {
    pub fn limit(&self, baseline: i64) -> i64 {
        let by_percent = (baseline.max(0) as f64 * self.percent / 100.0).ceil() as i64;
        baseline + by_percent.max(self.slack)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Within,
    /// Beyond the tolerance: the check fails.
    Grew,
    /// Smaller by more than the tolerance: fine, but the baseline is stale.
    Shrank,
    /// In the baseline, not in this run: the check fails.
    Missing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub config: String,
    pub figure: String,
    pub smp: u32,
    pub baseline: i64,
    pub now: Option<i64>,
    pub limit: i64,
    pub verdict: Verdict,
}

/// Compares every checked figure of every instruction-counting configuration that ran both in
/// `baseline` and in `run`. Returns the comparisons and the configurations it could not
/// compare (with the reason).
pub fn check(
    baseline: &Report,
    run: &Report,
    tol: Tolerance,
) -> (Vec<Checked>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut not_compared = Vec::new();
    for b in &baseline.configs {
        if b.unit != Unit::Instructions || !matches!(b.outcome, Outcome::Ran(_)) {
            continue;
        }
        let Some(r) = run.configs.iter().find(|c| c.id == b.id) else {
            not_compared.push((b.id.clone(), "not run".into()));
            continue;
        };
        match &r.outcome {
            Outcome::Ran(_) => {}
            Outcome::Skipped(why) => {
                not_compared.push((b.id.clone(), format!("skipped: {why}")));
                continue;
            }
            // A configuration that cannot finish its run is a failure of every figure.
            Outcome::Failed(_) => {}
        }
        for row in ROWS.iter().filter(|row| row.checked) {
            let Some(base) = b.figure(row.name, row.smp) else {
                continue;
            };
            // Figures of a boot with two CPUs share the emulated clock between them and move by
            // about 1 % from run to run of one commit (cross-CPU IPC on Bochs: 3,480, then
            // 3,518): they get MULTI_CPU_PERCENT at least. So does boot to READY at any count:
            // it includes loading the boot modules, whose bytes differ between checkouts (their
            // debug information names the checkout's path): a fresh clone of one commit took
            // 1.0 % longer to READY at 1 CPU on Bochs (22,176,479 against 21,953,355).
            let row_tol = if row.smp > 1 || row.name == "boot_ready" {
                Tolerance {
                    percent: tol.percent.max(MULTI_CPU_PERCENT),
                    ..tol
                }
            } else {
                tol
            };
            let now = r.figure(row.name, row.smp).map(|f| f.median);
            out.push(compare(&b.id, row.name, row.smp, base.median, now, row_tol));
        }
        // Boot to READY and AP bring-up at the CPU counts no row covers (the boot-only boots at
        // more than 2 CPUs), only where the baseline has them: MULTI_CPU_PERCENT at least, like
        // every multi-CPU figure. AP bring-up there is the last AP's (the max, as in the
        // tables): between two runs of one commit at 64 CPUs under QEMU the median AP moved by 10 %
        // (1.97 M, then 1.77 M), the last by 0.09 %, boot to READY by 0.001 %.
        let Outcome::Ran(boots) = &b.outcome else {
            continue;
        };
        let multi = Tolerance {
            percent: tol.percent.max(MULTI_CPU_PERCENT),
            ..tol
        };
        for boot in boots {
            for &name in SCALING_FIGURES {
                if ROWS.iter().any(|row| row.name == name && row.smp == boot.smp) {
                    continue;
                }
                let Some(base) = boot.figures.iter().find(|f| f.name == name) else {
                    continue;
                };
                let last = name == "ap_bringup";
                let value = |f: &Figure| if last { f.max } else { f.median };
                let now = r.figure(name, boot.smp).map(value);
                let label = if last { "ap_bringup (last AP)" } else { name };
                out.push(compare(&b.id, label, boot.smp, value(base), now, multi));
            }
        }
    }
    (out, not_compared)
}

/// One figure of a run (`now`) against the baseline's.
fn compare(config: &str, name: &str, smp: u32, baseline: i64, now: Option<i64>, tol: Tolerance) -> Checked {
    let limit = tol.limit(baseline);
    let verdict = match now {
        None => Verdict::Missing,
        Some(n) if n > limit => Verdict::Grew,
        Some(n) if n < baseline - (limit - baseline) => Verdict::Shrank,
        Some(_) => Verdict::Within,
    };
    Checked {
        config: config.to_string(),
        figure: name.to_string(),
        smp,
        baseline,
        now,
        limit,
        verdict,
    }
}

/// The check's lines, one per comparison that is not simply within the tolerance, and a
/// summary line.
pub fn check_text(
    checked: &[Checked],
    not_compared: &[(String, String)],
    tol: Tolerance,
) -> String {
    let mut s = String::new();
    for c in checked {
        let now = c.now.map_or("-".to_string(), thousands);
        let what = format!(
            "{} {} ({} CPU{})",
            c.config,
            c.figure,
            c.smp,
            if c.smp == 1 { "" } else { "s" }
        );
        let line = match c.verdict {
            Verdict::Within => continue,
            Verdict::Grew => format!(
                "FAIL {what}: {now}, baseline {} (limit {})",
                thousands(c.baseline),
                thousands(c.limit)
            ),
            Verdict::Missing => format!(
                "FAIL {what}: not measured (baseline {})",
                thousands(c.baseline)
            ),
            Verdict::Shrank => format!(
                "note {what}: {now}, baseline {}: faster; refresh the baseline",
                thousands(c.baseline)
            ),
        };
        let _ = writeln!(s, "{line}");
    }
    for (id, why) in not_compared {
        let _ = writeln!(s, "note {id}: not compared ({why})");
    }
    let failed = checked
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Grew | Verdict::Missing))
        .count();
    let _ = writeln!(
        s,
        "bench --check: {} figures compared, {failed} beyond the tolerance (+{}% or +{}, whichever is larger; +{}% at more than one CPU and for boot to READY)",
        checked.len(),
        tol.percent,
        tol.slack,
        tol.percent.max(MULTI_CPU_PERCENT)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(name: &str, median: i64) -> Figure {
        Figure {
            name: name.into(),
            n: 1000,
            median,
            p10: median - 1,
            p90: median + 2,
            min: median - 3,
            max: median * 10,
            base: 6,
        }
    }

    fn config(id: &str, unit: Unit, figures: &[(&str, u32, i64)]) -> Config {
        let mut boots: Vec<Boot> = Vec::new();
        for &(name, smp, median) in figures {
            match boots.iter_mut().find(|b| b.smp == smp) {
                Some(b) => b.figures.push(fig(name, median)),
                None => boots.push(Boot {
                    smp,
                    scenario: if smp > 2 { BOOT_ONLY } else { "bench" }.into(),
                    seconds: 5.0,
                    figures: vec![fig(name, median)],
                }),
            }
        }
        Config {
            id: id.into(),
            title: format!("title of {id}"),
            backend: if id == FRED_ID { "fred" } else { "ist" }.into(),
            unit,
            outcome: Outcome::Ran(boots),
        }
    }

    const TOLERANCE_FOR_TESTS: Tolerance = Tolerance {
        percent: 1.0,
        slack: 2,
    };

    fn report() -> Report {
        Report {
            commit: "abc1234".into(),
            host: "test host".into(),
            configs: vec![
                config(
                    "qemu-icount",
                    Unit::Instructions,
                    &[
                        ("syscall_floor", 1, 10),
                        ("syscall_null", 1, 150),
                        ("ipc_call_cross", 2, 9000),
                        ("boot_firmware", 1, 5_000_000),
                    ],
                ),
                config(
                    FRED_ID,
                    Unit::Instructions,
                    &[
                        ("syscall_floor", 1, 12),
                        ("syscall_null", 1, 115),
                        ("ipc_call", 1, 2236),
                    ],
                ),
                config(
                    IST_TWIN_ID,
                    Unit::Instructions,
                    &[
                        ("syscall_floor", 1, 4),
                        ("syscall_null", 1, 157),
                        ("ipc_call", 1, 1100),
                    ],
                ),
                config("qemu-kvm", Unit::Cycles, &[("syscall_null", 1, 900)]),
                Config {
                    id: "bochs-tigerlake".into(),
                    title: "t".into(),
                    backend: "ist".into(),
                    unit: Unit::Instructions,
                    outcome: Outcome::Skipped("no Debian bochs".into()),
                },
            ],
        }
    }

    /// Boot figures at 1, 2 and more CPUs (the boot-only boots above 2).
    fn scaling_report() -> Report {
        Report {
            commit: "abc1234".into(),
            host: "test host".into(),
            configs: vec![
                config(
                    "qemu-icount",
                    Unit::Instructions,
                    &[
                        ("syscall_null", 1, 150),
                        ("boot_ready", 1, 50_000_000),
                        ("boot_ready", 2, 60_000_000),
                        ("ap_bringup", 2, 50_000),
                        ("boot_ready", 4, 61_000_000),
                        ("ap_bringup", 4, 100_000),
                        ("boot_ready", 64, 65_000_000),
                        ("ap_bringup", 64, 1_800_000),
                    ],
                ),
                config(
                    "bochs-tigerlake",
                    Unit::Instructions,
                    &[
                        ("boot_ready", 1, 21_000_000),
                        ("boot_ready", 2, 22_000_000),
                        ("ap_bringup", 2, 600_000),
                        ("boot_ready", 4, 23_000_000),
                        ("ap_bringup", 4, 1_200_000),
                    ],
                ),
                config("qemu-kvm", Unit::Cycles, &[("boot_ready", 1, 9_000_000)]),
                Config {
                    id: FRED_ID.into(),
                    title: "f".into(),
                    backend: "fred".into(),
                    unit: Unit::Instructions,
                    outcome: Outcome::Skipped("no FRED-capable Bochs".into()),
                },
            ],
        }
    }

    /// `run` with the median of `name` at `smp` CPUs of configuration `config` changed by `f`
    /// (`None`: the figure removed).
    fn with_figure(
        mut run: Report,
        config: &str,
        name: &str,
        smp: u32,
        f: impl Fn(i64) -> Option<i64>,
    ) -> Report {
        let c = run.configs.iter_mut().find(|c| c.id == config).unwrap();
        let Outcome::Ran(boots) = &mut c.outcome else {
            unreachable!()
        };
        let boot = boots.iter_mut().find(|b| b.smp == smp).unwrap();
        let at = boot.figures.iter().position(|x| x.name == name).unwrap();
        match f(boot.figures[at].median) {
            Some(m) => boot.figures[at].median = m,
            None => {
                boot.figures.remove(at);
            }
        }
        run
    }

    #[test]
    fn boot_only_boots_survive_json_and_old_reports_read_as_the_whole_bench() {
        let r = scaling_report();
        let text = r.to_json().pretty();
        assert!(text.contains("\"scenario\": \"bench_boot\""), "{text}");
        assert_eq!(Report::from_json(&crate::json::parse(&text).unwrap()).unwrap(), r);
        // A baseline written before the boot-only boots: no "scenario" key.
        let old = r#"{"schema": 1, "configs": [{"id": "q", "unit": "instructions", "status": "ran",
            "boots": [{"smp": 2, "seconds": 1.0, "figures": []}]}]}"#;
        let old = Report::from_json(&crate::json::parse(old).unwrap()).unwrap();
        let Outcome::Ran(boots) = &old.configs[0].outcome else {
            panic!("{old:?}")
        };
        assert_eq!(boots[0].scenario, "bench");
        assert!(status(&r.configs[0]).contains("64 CPUs boot only: 5 s"));
    }

    #[test]
    fn ready_by_cpu_count_has_a_row_per_count_and_the_ratio_to_one_cpu() {
        let t = ready_by_cpus_table(&scaling_report()).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| CPUs | qemu-icount (IST, instructions) | bochs-tigerlake (IST, instructions) | qemu-kvm (IST, cycles) |"
        );
        assert_eq!(lines.len(), 2 + 4, "{t}"); // 1, 2, 4, 64
        assert_eq!(lines[2], "| 1 | 50,000,000 | 21,000,000 | 9,000,000 |");
        assert_eq!(lines[4], "| 4 | 61,000,000 (x1.22) | 23,000,000 (x1.10) | |");
        assert_eq!(lines[5], "| 64 | 65,000,000 (x1.30) | | |");
        // One count only (the sample without boot figures, or a 1-CPU run): no table.
        assert_eq!(ready_by_cpus_table(&report()), None);
        let md = markdown(&scaling_report());
        assert!(md.contains("\n## Boot to READY by CPU count\n"), "{md}");
        assert!(md.contains("\n## AP bring-up by CPU count\n"), "{md}");
        assert!(!markdown(&report()).contains("by CPU count"));
    }

    #[test]
    fn ap_bring_up_by_cpu_count_shows_the_last_ap_and_the_median() {
        let t = ap_by_cpus_table(&scaling_report()).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        // KVM has no AP figure: no column; no row for 1 CPU.
        assert_eq!(
            lines[0],
            "| CPUs | qemu-icount (IST, instructions) | bochs-tigerlake (IST, instructions) |"
        );
        assert_eq!(lines.len(), 2 + 3, "{t}");
        // fig(): max is ten times the median.
        assert_eq!(
            lines[3],
            "| 4 | 1,000,000 (median 100,000) | 12,000,000 (median 1,200,000) |"
        );
        assert_eq!(ap_by_cpus_table(&report()), None);
    }

    #[test]
    fn boot_svg_draws_a_line_per_machine_and_panel() {
        let svg = boot_svg(&scaling_report()).unwrap();
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        // Instructions: READY and AP (2 machines each); cycles: READY only (one point).
        assert_eq!(svg.matches("<polyline ").count(), 2 + 2 + 1, "{svg}");
        // Points: READY 4 + 3 + 1, AP 3 + 2.
        assert_eq!(svg.matches("<circle ").count(), 8 + 5, "{svg}");
        assert!(svg.contains("<title>64 CPUs: 65,000,000</title>"), "{svg}");
        // The AP panel plots the slowest AP (max: ten times the median in the sample).
        assert!(svg.contains("<title>64 CPUs: 18,000,000</title>"), "{svg}");
        assert!(svg.contains("Boot: kernel entry to READY, cycles by CPU count"));
        // The same colours as report.svg: bochs-tigerlake is the second machine that ran.
        assert!(svg.contains(&format!(r#"stroke="{}""#, COLOURS[1])));
        // The CPU axis runs to 64 in doublings.
        assert!(svg.contains(">32</text>") && svg.contains(r#"font-weight="bold">64</text>"#));
        assert_eq!(boot_svg(&report()), None);
        assert_eq!((short(65_000_000.0), short(2e5), short(1.0)), ("65 M".into(), "200 K".into(), "1".into()));
        assert_eq!((axis_step(65e6), axis_step(23e6), axis_step(3.0)), (2e7, 5e6, 1.0));
    }

    #[test]
    fn boot_figures_of_every_cpu_count_may_grow_by_the_multi_cpu_tolerance() {
        let tol = TOLERANCE_FOR_TESTS;
        let base = scaling_report();
        let verdicts = |run: &Report| -> Vec<(String, String, u32, Verdict)> {
            check(&base, run, tol)
                .0
                .into_iter()
                .map(|c| (c.config, c.figure, c.smp, c.verdict))
                .collect()
        };
        let has = |v: &[(String, String, u32, Verdict)], config: &str, name: &str, smp: u32| {
            v.iter()
                .find(|(c, f, n, _)| c == config && f == name && *n == smp)
                .map(|x| x.3.clone())
        };
        let v = verdicts(&base);
        // Boot to READY at every count; AP bring-up at 2 CPUs (a row, one AP) and, above,
        // the last AP of the boot-only boots.
        for (config, name, smp) in [
            ("qemu-icount", "boot_ready", 1),
            ("qemu-icount", "boot_ready", 2),
            ("qemu-icount", "ap_bringup", 2),
            ("qemu-icount", "boot_ready", 4),
            ("qemu-icount", "ap_bringup (last AP)", 4),
            ("qemu-icount", "boot_ready", 64),
            ("qemu-icount", "ap_bringup (last AP)", 64),
            ("bochs-tigerlake", "boot_ready", 2),
            ("bochs-tigerlake", "ap_bringup (last AP)", 4),
        ] {
            assert_eq!(has(&v, config, name, smp), Some(Verdict::Within), "{config} {name} {smp}");
        }
        // qemu-icount: syscall_null and 7 boot figures; tigerlake: 5.
        assert_eq!(v.len(), 1 + 7 + 5, "{v:?}");
        // 4 % more at 64 CPUs is within MULTI_CPU_PERCENT, 6 % is not; so at 2 CPUs.
        let grown = |smp: u32, p: i64| {
            with_figure(scaling_report(), "qemu-icount", "boot_ready", smp, move |m| Some(m + m * p / 100))
        };
        assert_eq!(MULTI_CPU_PERCENT, 5.0);
        for smp in [2, 64] {
            assert_eq!(has(&verdicts(&grown(smp, 4)), "qemu-icount", "boot_ready", smp), Some(Verdict::Within));
            assert_eq!(has(&verdicts(&grown(smp, 6)), "qemu-icount", "boot_ready", smp), Some(Verdict::Grew));
        }
        // The last AP (the max) is compared, not the median AP.
        let median_up = with_figure(scaling_report(), "qemu-icount", "ap_bringup", 64, |m| Some(m * 2));
        let last = "ap_bringup (last AP)";
        assert_eq!(has(&verdicts(&median_up), "qemu-icount", last, 64), Some(Verdict::Within));
        let mut later = scaling_report();
        let Outcome::Ran(boots) = &mut later.configs[0].outcome else {
            unreachable!()
        };
        boots[3].figures[1].max += boots[3].figures[1].max / 10; // 64 CPUs: the last AP 10 % later
        assert_eq!(has(&verdicts(&later), "qemu-icount", last, 64), Some(Verdict::Grew));
        let gone = with_figure(scaling_report(), "bochs-tigerlake", "ap_bringup", 4, |_| None);
        assert_eq!(has(&verdicts(&gone), "bochs-tigerlake", last, 4), Some(Verdict::Missing));
        // A baseline without the 64-CPU boot compares nothing there, whatever the run has.
        let mut older = scaling_report();
        let Outcome::Ran(boots) = &mut older.configs[0].outcome else {
            unreachable!()
        };
        boots.retain(|b| b.smp != 64);
        let (c, _) = check(&older, &grown(64, 50), tol);
        assert!(c.iter().all(|c| c.smp != 64), "{c:?}");
        let text = check_text(&check(&base, &grown(64, 6), tol).0, &[], tol);
        assert!(
            text.contains("FAIL qemu-icount boot_ready (64 CPUs): 68,900,000, baseline 65,000,000 (limit 68,250,000)"),
            "{text}"
        );
    }

    #[test]
    fn bench_lines_are_read_through_the_log_prefix() {
        let log = "READY cpus=1/1 entry=ist servers=\n\
                   [cpu 0] INFO  bench: BENCH syscall_floor n=1000 median=4 p10=4 p90=5 min=4 max=9 base=6\n\
                   [cpu 0] INFO  bench: BENCH boot_ready n=1 median=21217384 p10=21217384 p90=21217384 min=21217384 max=21217384 base=0\n\
                   [cpu 0] INFO  bench: BENCH done\n";
        let f = parse_log(log).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0],
            Figure {
                name: "syscall_floor".into(),
                n: 1000,
                median: 4,
                p10: 4,
                p90: 5,
                min: 4,
                max: 9,
                base: 6
            }
        );
        assert_eq!(f[1].median, 21_217_384);
    }

    #[test]
    fn unfinished_malformed_and_repeated_logs_are_refused() {
        assert!(
            parse_log("BENCH int3 n=1 median=1 p10=1 p90=1 min=1 max=1 base=0\n")
                .unwrap_err()
                .contains("BENCH done")
        );
        assert!(
            parse_log("BENCH int3 n=1 median=1 min=1 max=1 base=0\nBENCH done\n")
                .unwrap_err()
                .contains("no p10=")
        );
        assert!(
            parse_log("BENCH int3 n=1 median=x p10=1 p90=1 min=1 max=1 base=0\nBENCH done\n")
                .unwrap_err()
                .contains("median")
        );
        let twice =
            "BENCH a n=1 median=1 p10=1 p90=1 min=1 max=1 base=0\n".repeat(2) + "BENCH done\n";
        assert!(parse_log(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn report_survives_json_both_ways() {
        let r = report();
        let text = r.to_json().pretty();
        assert_eq!(
            Report::from_json(&crate::json::parse(&text).unwrap()).unwrap(),
            r
        );
        assert!(Report::from_json(&crate::json::parse("{\"schema\": 2}").unwrap()).is_err());
    }

    #[test]
    fn thousands_and_ratio_format_like_the_readme() {
        assert_eq!(
            (
                thousands(0),
                thousands(999),
                thousands(1000),
                thousands(-1_234_567)
            ),
            (
                "0".into(),
                "999".into(),
                "1,000".into(),
                "-1,234,567".into()
            )
        );
        assert_eq!(
            (ratio(115, 157), ratio(5, 0)),
            ("0.73".into(), "n/a".into())
        );
    }

    #[test]
    fn markdown_has_a_table_per_configuration_the_ratios_and_the_references() {
        let md = markdown(&report());
        assert_eq!(md.matches("\n## ").count(), 1 + 4 + 2, "{md}"); // summary, 4 ran, FRED/IST, references
        assert!(md.contains("| null system call (bench_null: entry, dispatch, exit) | 150 | 149 | 152 | 1000 | +140 (1 x 10) |"), "{md}");
        assert!(
            md.contains("| IPC call/reply, server thread on the other CPU (2 CPUs) | 9,000 |"),
            "{md}"
        );
        // FRED/IST: the floor and the null call, 115 / 157.
        assert!(
            md.contains("| 115 | 114..117 | 157 | 156..159 | 0.73 |"),
            "{md}"
        );
        assert!(md.contains("skipped: no Debian bochs"));
        // The targets: 148 for the null call (FRED 115 and IST 157: IST misses by 9), 1,174 for IPC.
        assert!(
            md.contains("at most 148 on wildcat_lake: bochs-ist misses by 9"),
            "{md}"
        );
        assert!(
            md.contains("at most 1,174 on wildcat_lake: bochs-fred misses by 1,062"),
            "{md}"
        );
        assert!(
            md.contains(
                "| seL4, fastpath call + reply, Skylake | 772 cycles | (not measured here) |"
            ),
            "{md}"
        );
        // Linux's figure is on the same Bochs model: only the wildcat_lake pair goes beside it.
        assert!(md.contains("| 195 instructions (FRED) / 209 (IDT) | 115 instructions (bochs-fred, FRED); 157 instructions (bochs-ist, IST) |"), "{md}");
    }

    #[test]
    fn summary_has_a_column_per_machine_that_ran_and_the_ratio() {
        let t = summary_table(&report());
        let header = t.lines().next().unwrap();
        assert_eq!(header, "| event | qemu-icount (IST, instructions) | bochs-fred (FRED, instructions) | bochs-ist (IST, instructions) | qemu-kvm (IST, cycles) | FRED/IST |");
        assert!(t.contains("| null system call (bench_null: entry, dispatch, exit) | 150 | 115 | 157 | 900 | 0.73 |"), "{t}");
        assert!(
            t.contains(
                "| IPC call/reply, server thread on the other CPU (2 CPUs) | 9,000 | | | | |"
            ),
            "{t}"
        );
        assert!(
            !t.contains("thread creation"),
            "rows nobody measured are left out: {t}"
        );
    }

    #[test]
    fn svg_has_one_bar_per_plotted_figure_and_a_panel_per_unit() {
        let svg = svg(&report());
        // Plotted: qemu-icount 3 (boot_firmware is not), FRED 3, IST 3, KVM 1; plus 4 legend squares.
        assert_eq!(svg.matches("<rect x=\"300\"").count(), 10, "{svg}");
        assert!(svg.contains("Median round trip, instructions (log scale)"));
        assert!(svg.contains("Median round trip, cycles (log scale)"));
        assert!(svg.contains(">10,000</text>"), "{svg}");
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn tolerance_is_the_larger_of_percent_and_slack() {
        let t = Tolerance {
            percent: 2.0,
            slack: 3,
        };
        assert_eq!(t.limit(10), 13);
        assert_eq!(t.limit(1000), 1020);
        assert_eq!(t.limit(1001), 1022); // 20.02 rounds up
    }

    #[test]
    fn boot_to_ready_gets_the_multi_cpu_tolerance_at_one_cpu_too() {
        let tol = Tolerance { percent: 1.0, slack: 2 };
        let mut base = report();
        let Outcome::Ran(boots) = &mut base.configs[1].outcome else { unreachable!() };
        boots[0].figures.push(Figure { name: "boot_ready".into(), n: 1, median: 21_953_355, p10: 21_953_355, p90: 21_953_355, min: 21_953_355, max: 21_953_355, base: 0 });
        let ready = |now: i64| {
            let mut run = base.clone();
            let Outcome::Ran(boots) = &mut run.configs[1].outcome else { unreachable!() };
            boots[0].figures.iter_mut().find(|f| f.name == "boot_ready").unwrap().median = now;
            check(&base, &run, tol).0.into_iter().find(|c| c.figure == "boot_ready" && c.smp == 1).expect("boot_ready is checked").verdict
        };
        // The fresh clone's 1.0 % passes; 6 % does not; a syscall figure at 1 CPU keeps 1 %.
        assert_eq!(ready(22_176_479), Verdict::Within);
        assert_eq!(ready(21_953_355 * 106 / 100), Verdict::Grew);
        let mut run = base.clone();
        let Outcome::Ran(boots) = &mut run.configs[1].outcome else { unreachable!() };
        boots[0].figures.iter_mut().find(|f| f.name == "syscall_null").unwrap().median = 115 * 103 / 100;
        assert!(check(&base, &run, tol).0.iter().any(|c| c.figure == "syscall_null" && c.verdict == Verdict::Grew));
    }

    #[test]
    fn two_cpu_figures_get_the_multi_cpu_tolerance() {
        let tol = Tolerance { percent: 1.0, slack: 2 };
        let base = report();
        let cross = |run: &Report| {
            check(&base, run, tol)
                .0
                .into_iter()
                .find(|c| c.config == "qemu-icount" && c.figure == "ipc_call_cross")
                .expect("ipc_call_cross is checked")
        };
        let grown = |by_percent: f64| {
            let mut run = report();
            let Outcome::Ran(boots) = &mut run.configs[0].outcome else { unreachable!() };
            let f = boots[1].figures.iter_mut().find(|f| f.name == "ipc_call_cross").expect("in the sample");
            f.median += (f.median as f64 * by_percent / 100.0).ceil() as i64;
            run
        };
        assert_eq!(cross(&grown(3.0)).verdict, Verdict::Within);
        assert_eq!(cross(&grown(MULTI_CPU_PERCENT + 1.0)).verdict, Verdict::Grew);
    }

    #[test]
    fn check_fails_on_growth_and_missing_figures_only() {
        let tol = Tolerance {
            percent: 2.0,
            slack: 3,
        };
        let base = report();
        let mut run = report();
        let (same, skipped) = check(&base, &run, tol);
        assert!(same.iter().all(|c| c.verdict == Verdict::Within));
        // boot_firmware and the KVM cycles are never compared; tigerlake was skipped in the baseline.
        assert!(same
            .iter()
            .all(|c| c.figure != "boot_firmware" && c.config != "qemu-kvm"));
        assert_eq!(same.len(), 3 + 3 + 3);
        assert!(skipped.is_empty());
        let Outcome::Ran(boots) = &mut run.configs[0].outcome else {
            unreachable!()
        };
        boots[0].figures[1].median = 154; // syscall_null 150 -> 154: limit 153
        boots[0].figures[0].median = 13; // floor 10 -> 13: limit 13, within
        boots[1].figures.clear(); // ipc_call_cross gone
        let Outcome::Ran(boots) = &mut run.configs[1].outcome else {
            unreachable!()
        };
        boots[0].figures[2].median = 2000; // ipc_call 2236 -> 2000: faster
        run.configs[2].outcome = Outcome::Skipped("no FRED-capable Bochs".into());
        let (checked, not_compared) = check(&base, &run, tol);
        let verdict = |config: &str, figure: &str| {
            checked
                .iter()
                .find(|c| c.config == config && c.figure == figure)
                .map(|c| c.verdict.clone())
        };
        assert_eq!(verdict("qemu-icount", "syscall_null"), Some(Verdict::Grew));
        assert_eq!(
            verdict("qemu-icount", "syscall_floor"),
            Some(Verdict::Within)
        );
        assert_eq!(
            verdict("qemu-icount", "ipc_call_cross"),
            Some(Verdict::Missing)
        );
        assert_eq!(verdict(FRED_ID, "ipc_call"), Some(Verdict::Shrank));
        assert_eq!(verdict(IST_TWIN_ID, "syscall_null"), None);
        assert_eq!(
            not_compared,
            vec![(
                IST_TWIN_ID.to_string(),
                "skipped: no FRED-capable Bochs".to_string()
            )]
        );
        let text = check_text(&checked, &not_compared, tol);
        assert!(
            text.contains("FAIL qemu-icount syscall_null (1 CPU): 154, baseline 150 (limit 153)"),
            "{text}"
        );
        assert!(
            text.contains("FAIL qemu-icount ipc_call_cross (2 CPUs): not measured"),
            "{text}"
        );
        assert!(
            text.contains("note bochs-fred ipc_call (1 CPU): 2,000, baseline 2,236: faster"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "6 figures compared, 2 beyond the tolerance (+2% or +3, whichever is larger; +5% at more than one CPU and for boot to READY)\n"
            ),
            "{text}"
        );
    }
}
