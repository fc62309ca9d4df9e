//! `bench`: the bench program (kernel scenario `bench`, `user/bench`) on every machine this host
//! can run, each at 1 CPU (every single-CPU figure) and at 2 CPUs (IPC across CPUs, AP
//! bring-up, boot at 2 CPUs), then boot-only boots at more CPUs (scenario `bench_boot`: boot
//! to READY and AP bring-up per CPU count, [`Spec::boot_smps`]); the report in
//! `target/bench/` (`report.json`, `report.md`, `report.svg`, `report-boot.svg`, the serial
//! logs under `<config>/smp<N>/`). With `--check FILE`, only the instruction-counting machines
//! of the baseline FILE run, boot-only only at the CPU counts the baseline has, and the run
//! fails when a figure grew beyond [`TOLERANCE`] (or the wider tolerances of `report::check`).
//!
//! Machines: QEMU TCG with `-icount shift=0,sleep=off` (RDTSC reads QEMU's virtual clock, which
//! advances one nanosecond per retired instruction at shift 0; `sleep=off` makes idle time
//! jump to the next timer deadline instead of following the host's clock), QEMU KVM (host
//! cycles), Debian's Bochs `tigerlake` (IST), and a FRED-capable Bochs `wildcat_lake` with FRED
//! on and off. One that cannot run here is listed as skipped, with the reason.

use crate::bochs::{self, Bochs};
use crate::cli::{Entry, Options};
use crate::emulator::{self, BootLimits, Machine};
use crate::json;
use crate::report::{self, Boot, Config, Outcome, Report, Tolerance, Unit};
use crate::run::{iso_tools, loader, make_iso};
use crate::tools::{self, Tool};
use crate::util::{indent, is_root, step, tail, target_dir, which, Result};
use boot_tests::matrix::{qemu_cpu_model, BOCHS_FRED_MODEL, BOCHS_IST_MODEL};
use boot_tests::{Accel, Backend, Emulator, Expectation, Verdict};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SCENARIO: &str = "bench";
/// The same program with only its boot figures (no event loop): the boots at more CPUs.
const BOOT_SCENARIO: &str = "bench_boot";

/// QEMU's instruction counting: one virtual nanosecond (and TSC tick) per instruction, and
/// idle time skipped to the next timer deadline rather than slept in host time.
pub const ICOUNT: &[&str] = &["-icount", "shift=0,sleep=off"];

/// The CPU model under `-icount`: without x2APIC. QEMU 10.0 aborts with "Bad icount read" when
/// the kernel reads the x2APIC timer's current count by RDMSR (the MSR helper reads the
/// virtual clock outside an I/O boundary); as xAPIC MMIO the same read is fine.
pub const ICOUNT_CPU: &str = "max,-x2apic";

/// How far `--check` lets a figure's median grow over the baseline. Instruction counts repeat
/// exactly on Bochs; under QEMU `-icount` the events repeat exactly too and only figures that
/// include timer or idle timing (thread creation's heap state, boot, the cross-CPU round
/// trip) move, by well under 1 % between runs on this machine (README: the check).
pub const TOLERANCE: Tolerance = Tolerance {
    percent: 1.0,
    slack: 2,
};

/// The CPU counts each machine boots the whole bench with.
const SMPS: [u32; 2] = [1, 2];

/// The CPU counts of QEMU's boot-only boots (`-icount`: 64 CPUs take about 70 s on 2 host
/// cores; KVM far less where it is usable).
const QEMU_BOOT_SMPS: &[u32] = &[4, 8, 64];
/// Bochs' boot-only boots: Bochs runs every CPU in one host thread (Debian's 2.7 needs about
/// 12 s at 4 CPUs here, the FRED-capable build 2 s).
const BOCHS_BOOT_SMPS: &[u32] = &[4, 8];

/// The boots of one machine, in order: the whole bench at each of [`SMPS`], then boot-only at
/// each of `boot_smps`. Under `--check` (`baseline`: the baseline's run of this machine) only
/// the boot-only counts the baseline has boots at: the check compares nothing else, and a
/// baseline without them costs no boot.
fn boots_planned(boot_smps: &[u32], baseline: Option<&Config>) -> Vec<(u32, &'static str)> {
    let mut out: Vec<(u32, &'static str)> = SMPS.iter().map(|&n| (n, SCENARIO)).collect();
    for &n in boot_smps {
        let in_baseline = baseline.is_none_or(|b| match &b.outcome {
            Outcome::Ran(boots) => boots.iter().any(|x| x.smp == n),
            _ => false,
        });
        if in_baseline && !SMPS.contains(&n) {
            out.push((n, BOOT_SCENARIO));
        }
    }
    out
}

/// One machine of the report.
struct Spec {
    id: &'static str,
    title: String,
    backend: Backend,
    unit: Unit,
    /// The CPU counts of its boot-only boots (scenario `bench_boot`), beyond [`SMPS`].
    boot_smps: &'static [u32],
}

/// How to boot it, once it is known to be there.
struct Setup {
    emulator: Emulator,
    cpu_model: String,
    exclude_fred: bool,
    bochs: Option<Bochs>,
    entry: Entry,
    qemu_extra: Vec<String>,
    timeout: Duration,
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Fred => "fred",
        Backend::Ist => "ist",
    }
}

/// Every machine `wanted` (by id and unit), with how to boot it or why it cannot run here.
/// Machines not wanted are not looked for (no KVM probe, no Bochs inspection).
fn machines(
    opts: &Options,
    wanted: &dyn Fn(&str, Unit) -> bool,
) -> Vec<(Spec, std::result::Result<Setup, String>)> {
    let timeout = |default: u64| {
        Duration::from_secs(match opts.timeout_secs {
            Some(0) | None => default,
            Some(s) => s,
        })
    };
    let mut out = Vec::new();

    let qemu = tools::ensure(&[Tool::Qemu]).map_err(|e| format!("no usable QEMU: {e}"));
    let qemu_version = tools::qemu_version()
        .map(|(a, b)| format!(" {a}.{b}"))
        .unwrap_or_default();
    if wanted("qemu-icount", Unit::Instructions) {
        out.push((
            Spec {
                id: "qemu-icount",
                title: format!("QEMU{qemu_version} TCG -icount shift=0, -cpu {ICOUNT_CPU}"),
                backend: Backend::Ist,
                unit: Unit::Instructions,
                boot_smps: QEMU_BOOT_SMPS,
            },
            qemu.clone().map(|_| Setup {
                emulator: Emulator::Qemu(Accel::Tcg),
                cpu_model: ICOUNT_CPU.into(),
                exclude_fred: false,
                bochs: None,
                entry: Entry::Auto,
                qemu_extra: ICOUNT.iter().map(|s| s.to_string()).collect(),
                timeout: timeout(300),
            }),
        ));
    }

    if wanted("qemu-kvm", Unit::Cycles) {
        out.push((
            Spec {
                id: "qemu-kvm",
                title: format!(
                    "QEMU{qemu_version} KVM, -cpu {}",
                    qemu_cpu_model(Accel::Kvm)
                ),
                backend: Backend::Ist,
                unit: Unit::Cycles,
                boot_smps: QEMU_BOOT_SMPS,
            },
            qemu.and_then(|_| crate::kvm::usable().map_err(|e| format!("KVM not usable: {e}")))
                .map(|_| Setup {
                    emulator: Emulator::Qemu(Accel::Kvm),
                    cpu_model: qemu_cpu_model(Accel::Kvm).into(),
                    exclude_fred: false,
                    bochs: None,
                    entry: Entry::Auto,
                    qemu_extra: Vec::new(),
                    timeout: timeout(300),
                }),
        ));
    }

    if wanted("bochs-tigerlake", Unit::Instructions) {
        let debian = debian_bochs(opts.check.is_none());
        out.push((
            Spec {
                id: "bochs-tigerlake",
                title: format!(
                    "Bochs{} (Debian) tigerlake",
                    debian
                        .as_ref()
                        .map(|b| format!(" {}", b.version))
                        .unwrap_or_default()
                ),
                backend: Backend::Ist,
                unit: Unit::Instructions,
                boot_smps: BOCHS_BOOT_SMPS,
            },
            debian.map(|b| Setup {
                emulator: Emulator::Bochs,
                cpu_model: BOCHS_IST_MODEL.into(),
                exclude_fred: false,
                bochs: Some(b),
                entry: Entry::Ist,
                qemu_extra: Vec::new(),
                timeout: timeout(600),
            }),
        ));
    }

    if !wanted(report::FRED_ID, Unit::Instructions)
        && !wanted(report::IST_TWIN_ID, Unit::Instructions)
    {
        return out;
    }
    let fred = bochs::find_fred();
    let version = fred
        .as_ref()
        .map(|b| format!(" {}", b.version))
        .unwrap_or_default();
    for on in [true, false] {
        if !wanted(
            if on {
                report::FRED_ID
            } else {
                report::IST_TWIN_ID
            },
            Unit::Instructions,
        ) {
            continue;
        }
        out.push((
            Spec {
                id: if on {
                    report::FRED_ID
                } else {
                    report::IST_TWIN_ID
                },
                title: format!(
                    "Bochs{version} {BOCHS_FRED_MODEL}{}",
                    if on { "" } else { " exclude_features=fred" }
                ),
                backend: if on { Backend::Fred } else { Backend::Ist },
                unit: Unit::Instructions,
                boot_smps: BOCHS_BOOT_SMPS,
            },
            fred.clone().map(|b| Setup {
                emulator: Emulator::Bochs,
                cpu_model: BOCHS_FRED_MODEL.into(),
                exclude_fred: !on,
                bochs: Some(b),
                entry: if on { Entry::Fred } else { Entry::Ist },
                qemu_extra: Vec::new(),
                timeout: timeout(600),
            }),
        ));
    }
    out
}

/// Debian's Bochs (`bochs` on `PATH`, not the FRED build): installed when we are root and may
/// install.
fn debian_bochs(may_install: bool) -> std::result::Result<Bochs, String> {
    let path = match which("bochs") {
        Some(p) => p,
        None if may_install && is_root() => {
            tools::ensure(&[Tool::Bochs])
                .map_err(|e| format!("cannot install Debian's bochs: {e}"))?;
            which("bochs").ok_or("bochs is still not on PATH")?
        }
        None => return Err(
            "Debian's bochs is not installed (apt-get install bochs bochs-term bochsbios vgabios)"
                .into(),
        ),
    };
    let found = bochs::inspect(&path)?;
    if !found.models.iter().any(|m| m == BOCHS_IST_MODEL) {
        return Err(format!(
            "{} ({}) has no {BOCHS_IST_MODEL} model",
            path.display(),
            found.version
        ));
    }
    Ok(found)
}

/// Prints each `BENCH` line of a growing serial log as it arrives, until `stop`.
fn follow(log: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut offset = 0u64;
        let mut partial = String::new();
        loop {
            let last = stop.load(Ordering::Acquire);
            if let Ok(mut file) = std::fs::File::open(&log) {
                if file.metadata().map(|m| m.len()).unwrap_or(0) < offset {
                    offset = 0;
                    partial.clear();
                }
                let mut bytes = Vec::new();
                if file.seek(SeekFrom::Start(offset)).is_ok()
                    && file.read_to_end(&mut bytes).is_ok()
                {
                    offset += bytes.len() as u64;
                    partial.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(end) = partial.find('\n') {
                        let line: String = partial.drain(..=end).collect();
                        if let Some(at) = line.find("BENCH ") {
                            let text = line[at + 6..].trim();
                            if text != "done" {
                                eprintln!("[xtask]      {}", progress_line(text));
                            }
                        }
                    }
                }
            }
            if last {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

/// `syscall_null n=1000 median=115 p10=115 p90=115 ...` as `syscall_null  115 (p10 115, p90 115)`.
fn progress_line(text: &str) -> String {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or("?");
    let get = |key: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("?")
    };
    format!(
        "{name:<20} {:>12} (p10 {}, p90 {}, n={})",
        get("median"),
        get("p10"),
        get("p90"),
        get("n")
    )
}

/// One boot of the bench (`scenario`: [`SCENARIO`] or [`BOOT_SCENARIO`]) on `setup` with `smp`
/// CPUs.
fn run_boot(
    opts: &Options,
    spec: &Spec,
    setup: &Setup,
    smp: u32,
    scenario: &'static str,
    dir: &Path,
) -> Result<Boot> {
    let mut opts = opts.clone();
    opts.entry = Some(setup.entry);
    opts.cmdline = format!("test={scenario}");
    let loader = loader(&opts)?;
    let (iso, _) = make_iso(&opts, &loader)?;
    let machine = Machine {
        emulator: setup.emulator,
        cpu_model: setup.cpu_model.clone(),
        exclude_fred: setup.exclude_fred,
        smp,
        bochs: setup.bochs.clone(),
    };
    let limits = BootLimits {
        timeout: Some(setup.timeout),
        scenario: Some(scenario.to_string()),
        echo: false,
    };
    let work = dir.join(spec.id).join(format!("smp{smp}"));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let log = work.join("serial.log");
    let _ = std::fs::remove_file(&log);
    let stop = Arc::new(AtomicBool::new(false));
    let follower = follow(log, stop.clone());
    let result = emulator::boot_with(&machine, &iso, &work, &limits, &setup.qemu_extra);
    stop.store(true, Ordering::Release);
    let _ = follower.join();
    let result = result?;
    let expect = Expectation::new(scenario, smp, Some(spec.backend), setup.emulator);
    if let Verdict::Fail(why) = boot_tests::judge(&expect, &result.serial, result.outcome) {
        return Err(format!(
            "{why} (log: {}); last lines:\n{}",
            result.serial_log.display(),
            indent(&tail(&result.serial, 15), "    | ")
        ));
    }
    let figures = report::parse_log(&result.serial)
        .map_err(|e| format!("{e} (log: {})", result.serial_log.display()))?;
    Ok(Boot {
        smp,
        scenario: scenario.to_string(),
        seconds: result.elapsed.as_secs_f64(),
        figures,
    })
}

fn commit() -> String {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty=+dirty", "--abbrev=10"])
        .current_dir(crate::util::root())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

fn host() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("host: {cpus} x {model}")
}

pub fn bench(opts: &Options) -> Result<u8> {
    crate::tools::ensure(&iso_tools(&loader(opts)?))?;
    let baseline = match &opts.check {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the baseline {}: {e}", file.display()))?;
            let value = json::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            Some(Report::from_json(&value).map_err(|e| format!("{}: {e}", file.display()))?)
        }
        None => None,
    };
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    // Which machines this run is about: `--filter`, and for `--check` the instruction-counting
    // ones the baseline has.
    let wanted = |id: &str, unit: Unit| {
        let picked = opts
            .filter
            .as_deref()
            .is_none_or(|f| f.split(',').any(|part| id.contains(part.trim())));
        let in_baseline = baseline.as_ref().is_none_or(|b| {
            unit == Unit::Instructions
                && b.configs
                    .iter()
                    .any(|c| c.id == id && matches!(c.outcome, Outcome::Ran(_)))
        });
        picked && in_baseline
    };
    let plan = machines(opts, &wanted);
    if plan.is_empty() {
        return Err("no machine selected (see --filter, and the baseline's configurations)".into());
    }
    let boots_of = |spec: &Spec| {
        let base = baseline
            .as_ref()
            .and_then(|b| b.configs.iter().find(|c| c.id == spec.id));
        boots_planned(spec.boot_smps, base)
    };
    let boots_total: usize = plan
        .iter()
        .filter(|(_, s)| s.is_ok())
        .map(|(spec, _)| boots_of(spec).len())
        .sum();
    for (spec, setup) in &plan {
        if let Err(why) = setup {
            step(format!("{}: skipped ({why})", spec.id));
        }
    }
    let mut configs = Vec::new();
    let mut boot_no = 0;
    let mut failed = 0;
    for (spec, setup) in &plan {
        let outcome = match setup {
            Err(why) => Outcome::Skipped(why.clone()),
            Ok(setup) => {
                let mut boots = Vec::new();
                let mut error = None;
                let planned = boots_of(spec);
                for &(smp, scenario) in &planned {
                    boot_no += 1;
                    step(format!(
                        "[{boot_no}/{boots_total}] {} ({}), {smp} CPU{}{}: booting (time limit {} s)...",
                        spec.title,
                        backend_name(spec.backend).to_uppercase(),
                        if smp == 1 { "" } else { "s" },
                        if scenario == BOOT_SCENARIO { ", boot only" } else { "" },
                        setup.timeout.as_secs()
                    ));
                    match run_boot(opts, spec, setup, smp, scenario, &dir) {
                        Ok(boot) => {
                            step(format!(
                                "[{boot_no}/{boots_total}] {}: {} figures in {:.1} s",
                                spec.id,
                                boot.figures.len(),
                                boot.seconds
                            ));
                            boots.push(boot);
                        }
                        Err(why) => {
                            step(format!(
                                "[{boot_no}/{boots_total}] {}, {smp} CPU{}: FAILED: {why}",
                                spec.id,
                                if smp == 1 { "" } else { "s" }
                            ));
                            error = Some(format!(
                                "{smp} CPU{}: {}",
                                if smp == 1 { "" } else { "s" },
                                why.lines().next().unwrap_or("")
                            ));
                            boot_no += planned.len() - boots.len() - 1;
                            break;
                        }
                    }
                }
                match error {
                    None => Outcome::Ran(boots),
                    // A KVM that cannot boot the bench is a KVM that is not usable here.
                    Some(why) if spec.unit == Unit::Cycles => {
                        Outcome::Skipped(format!("KVM not usable: the bench boot failed: {why}"))
                    }
                    Some(why) => {
                        failed += 1;
                        Outcome::Failed(why)
                    }
                }
            }
        };
        configs.push(Config {
            id: spec.id.to_string(),
            title: spec.title.clone(),
            backend: backend_name(spec.backend).to_string(),
            unit: spec.unit,
            outcome,
        });
    }
    let report = Report {
        commit: commit(),
        host: host(),
        configs,
    };
    let md = report::markdown(&report);
    let boot_svg = dir.join("report-boot.svg");
    let _ = std::fs::remove_file(&boot_svg);
    let mut files = vec![
        ("report.json", report.to_json().pretty()),
        ("report.md", md.clone()),
        ("report.svg", report::svg(&report)),
    ];
    if let Some(svg) = report::boot_svg(&report) {
        files.push(("report-boot.svg", svg));
    }
    for (file, text) in &files {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("{md}");
    let names: Vec<&str> = files.iter().map(|(f, _)| *f).collect();
    step(format!("wrote {} to {}", names.join(", "), dir.display()));
    if let Some(baseline) = baseline {
        let (checked, not_compared) = report::check(&baseline, &report, TOLERANCE);
        let text = report::check_text(&checked, &not_compared, TOLERANCE);
        print!("{text}");
        let beyond = checked
            .iter()
            .filter(|c| matches!(c.verdict, report::Verdict::Grew | report::Verdict::Missing))
            .count();
        if beyond > 0 || failed > 0 {
            return Ok(1);
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_median_and_spread() {
        assert_eq!(
            progress_line("syscall_null n=1000 median=115 p10=114 p90=117 min=1 max=2 base=6"),
            "syscall_null                  115 (p10 114, p90 117, n=1000)"
        );
    }

    #[test]
    fn boot_only_boots_follow_the_whole_bench_and_the_check_boots_only_what_the_baseline_has() {
        assert_eq!(
            boots_planned(&[4, 8, 64], None),
            vec![
                (1, SCENARIO),
                (2, SCENARIO),
                (4, BOOT_SCENARIO),
                (8, BOOT_SCENARIO),
                (64, BOOT_SCENARIO)
            ]
        );
        let config = |smps: &[u32], ran: bool| Config {
            id: "qemu-icount".into(),
            title: "t".into(),
            backend: "ist".into(),
            unit: Unit::Instructions,
            outcome: if ran {
                Outcome::Ran(
                    smps.iter()
                        .map(|&smp| Boot {
                            smp,
                            scenario: SCENARIO.into(),
                            seconds: 1.0,
                            figures: Vec::new(),
                        })
                        .collect(),
                )
            } else {
                Outcome::Skipped("no".into())
            },
        };
        // A baseline from before the boot-only boots: the whole bench at 1 and 2 CPUs only.
        assert_eq!(
            boots_planned(&[4, 8, 64], Some(&config(&[1, 2], true))),
            vec![(1, SCENARIO), (2, SCENARIO)]
        );
        assert_eq!(
            boots_planned(&[4, 8, 64], Some(&config(&[1, 2, 4, 64], true))),
            vec![(1, SCENARIO), (2, SCENARIO), (4, BOOT_SCENARIO), (64, BOOT_SCENARIO)]
        );
        assert_eq!(
            boots_planned(&[4], Some(&config(&[], false))),
            vec![(1, SCENARIO), (2, SCENARIO)]
        );
        // Nobody boots a boot-only run at a count the whole bench already covers.
        assert_eq!(boots_planned(&[2, 4], None).len(), 3);
        assert_eq!(report::BOOT_ONLY, BOOT_SCENARIO);
    }

    #[test]
    fn icount_counts_instructions_without_host_sleep() {
        assert_eq!(ICOUNT.join(" "), "-icount shift=0,sleep=off");
    }
}
