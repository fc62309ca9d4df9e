//! `test`: the host unit tests, then the boot matrix of the `boot-tests` crate.
//!
//! One line per case on stdout (`PASS ...`, `FAIL ...` with the reason and the log's tail,
//! `SKIP ...` with the reason), in matrix order even when `--jobs` runs several emulators at
//! once, and last `N passed, N failed, N skipped`. Progress goes to stderr.

use crate::bochs::{self, Bochs, Display};
use crate::cli::Options;
use crate::emulator::{self, BootLimits, Machine};
use crate::images::{self, Images};
use crate::iso::{self, Loader};
use crate::run::{iso_tools, load_manifest, LOG_TAIL_LINES};
use crate::kvm;
use crate::tools::{self, Tool};
use crate::util::{cargo, indent, root, step, tail, target_dir, Result};
use boot_tests::matrix::{matrix, BOCHS_FRED_MODEL};
use boot_tests::{Accel, BootPath, Case, Emulator, Expectation, Requirement, Verdict};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The exact skip text for FRED cases when no FRED-capable Bochs exists.
pub const NO_FRED_BOCHS: &str = "SKIPPED (no FRED-capable Bochs)";

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// One printed result.
enum Report {
    Pass {
        label: String,
        elapsed: Duration,
        note: String,
    },
    Fail {
        label: String,
        elapsed: Option<Duration>,
        reason: String,
        details: String,
    },
    Skip {
        label: String,
        reason: String,
    },
}

impl Report {
    fn print(&self, tally: &mut Tally) {
        match self {
            Report::Pass {
                label,
                elapsed,
                note,
            } => {
                tally.passed += 1;
                println!("PASS {label} ({:.1}s{note})", elapsed.as_secs_f64());
            }
            Report::Fail {
                label,
                elapsed,
                reason,
                details,
            } => {
                tally.failed += 1;
                match elapsed {
                    Some(t) => println!("FAIL {label} ({:.1}s): {reason}", t.as_secs_f64()),
                    None => println!("FAIL {label}: {reason}"),
                }
                if !details.is_empty() {
                    println!("{details}");
                }
            }
            Report::Skip { label, reason } => {
                tally.skipped += 1;
                println!("SKIP {label}: {reason}");
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

pub fn test(opts: &Options) -> Result<u8> {
    let mut tally = Tally::default();
    if opts.host_tests {
        host_tests(&mut tally)?;
        production_kernel(&mut tally);
    }
    boot_matrix(opts, &mut tally)?;
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    Ok(if tally.failed > 0 { 1 } else { 0 })
}

// --- host unit tests ------------------------------------------------------------------------

/// The packages with host unit tests, as `cargo test` selections.
const HOST_TESTS: &[&[&str]] = &[
    &["-p", "kernel", "--lib"],
    &["-p", "elf"],
    &["-p", "abi"],
    &["-p", "rt"],
    &["-p", "bench"],
    &["-p", "fuzz"],
    &["-p", "bridge", "--lib"],
    &["-p", "boot-tests"],
    &["-p", "xtask"],
];

fn host_triple() -> Result<String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| "rustc -vV names no host".into())
}

/// Adds up the `test result: ok. N passed; ...` lines of cargo test.
fn count_unit_tests(output: &str) -> usize {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
        .filter_map(|l| {
            l.split_once(". ")?
                .1
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum()
}

fn host_tests(tally: &mut Tally) -> Result<()> {
    // Explicitly for the host: nothing in .cargo/config.toml may redirect these to bare metal.
    let host = host_triple()?;
    for selection in HOST_TESTS {
        let label = format!("host cargo test {}", selection.join(" "));
        step(format!("{label}..."));
        let start = Instant::now();
        let output = cargo()
            .arg("test")
            .args(["--target", &host])
            .args(*selection)
            .output()
            .map_err(|e| format!("cannot run cargo test: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        let result = if output.status.success() {
            Report::Pass {
                label,
                elapsed: start.elapsed(),
                note: format!(", {} tests", count_unit_tests(&text)),
            }
        } else {
            Report::Fail {
                label,
                elapsed: Some(start.elapsed()),
                reason: format!("cargo test {}", output.status),
                details: indent(&tail(&text, 40), "    | "),
            }
        };
        result.print(tally);
    }
    Ok(())
}

/// The kernel without the `testing` feature builds, and has no scenario code in it (the
/// scenario dispatcher's "unknown scenario" message is the marker).
fn production_kernel(tally: &mut Tally) {
    let label = "production kernel (no `testing` feature) builds without scenarios".to_string();
    step(format!("{label}..."));
    let start = Instant::now();
    let result = crate::images::build_production_kernel().and_then(|path| {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        match bytes.windows(16).any(|w| w == b"unknown scenario") {
            true => Err(format!("{} contains scenario code", path.display())),
            false => Ok(()),
        }
    });
    match result {
        Ok(()) => Report::Pass { label, elapsed: start.elapsed(), note: String::new() },
        Err(why) => Report::Fail { label, elapsed: Some(start.elapsed()), reason: why, details: String::new() },
    }
    .print(tally);
}

// --- the boot matrix ------------------------------------------------------------------------

struct Job {
    /// Where its result goes in the report.
    slot: usize,
    case: Case,
    iso: PathBuf,
    machine: Machine,
}

struct Shared {
    results: Mutex<(Vec<Option<Report>>, usize, Tally)>,
    /// Bochs with the rfb display listens on TCP 5900: one at a time.
    rfb: Mutex<()>,
    /// Nested KVM guests spend their time in host exits; two at once on two cores starve
    /// each other past any sane time limit: one at a time.
    kvm_guest: Mutex<()>,
}

impl Shared {
    /// Stores a result and prints every result that is now next in order.
    fn finish(&self, slot: usize, result: Report) {
        let mut guard = self.results.lock().unwrap();
        let (results, next, tally) = &mut *guard;
        results[slot] = Some(result);
        while *next < results.len() {
            match results[*next].as_ref() {
                Some(r) => {
                    r.print(tally);
                    *next += 1;
                }
                None => break,
            }
        }
    }
}

/// Runs one boot and judges it.
fn boot_case(shared: &Shared, job: &Job) -> (Verdict, String, Duration) {
    let _rfb = match job.machine.bochs.as_ref().map(|b| &b.display) {
        Some(Display::Rfb) => Some(shared.rfb.lock().unwrap()),
        _ => None,
    };
    let _kvm = (job.machine.emulator == Emulator::Qemu(Accel::Kvm))
        .then(|| shared.kvm_guest.lock().unwrap());
    let work_dir = target_dir().join("test-runs").join(job.case.id());
    let limits = BootLimits {
        timeout: Some(job.case.timeout),
        scenario: Some(job.case.scenario.to_string()),
        echo: false,
    };
    match emulator::boot_with(&job.machine, &job.iso, &work_dir, &limits, &emulator::firmware_args(job.case.firmware)) {
        Err(why) => (Verdict::Fail(why), String::new(), Duration::ZERO),
        Ok(result) => {
            let verdict = boot_tests::judge(
                &Expectation::for_case(&job.case),
                &result.serial,
                result.outcome,
            );
            let mut details = String::new();
            if !verdict.passed() {
                let log_tail = tail(&result.serial, LOG_TAIL_LINES);
                details = if log_tail.trim().is_empty() {
                    "    (the serial log is empty)".to_string()
                } else {
                    indent(&log_tail, "    | ")
                };
                let emulator_output = emulator::notable_output(&result.emulator_output);
                if !emulator_output.is_empty() {
                    details.push_str(&format!(
                        "\n    emulator output:\n{}",
                        indent(&tail(&emulator_output, 10), "    ! ")
                    ));
                }
                details.push_str(&format!("\n    full log: {}", result.serial_log.display()));
            }
            (verdict, details, result.elapsed)
        }
    }
}

fn run_job(shared: &Shared, job: &Job) {
    let label = job.case.to_string();
    let (verdict, details, elapsed) = boot_case(shared, job);
    let result = match verdict {
        Verdict::Pass => Report::Pass {
            label,
            elapsed,
            note: String::new(),
        },
        Verdict::Fail(reason) => Report::Fail {
            label,
            elapsed: Some(elapsed),
            reason,
            details,
        },
    };
    shared.finish(job.slot, result);
}

/// What the machine offers, each with the reason when it does not.
struct Offers {
    bochs: std::result::Result<Bochs, String>,
    fred_bochs: std::result::Result<Bochs, String>,
    debugger_bochs: std::result::Result<Bochs, String>,
    limine: std::result::Result<PathBuf, String>,
    kvm: std::result::Result<(), String>,
    ovmf: std::result::Result<(), String>,
}

fn survey(opts: &Options, cases: &[Case]) -> Offers {
    let needs = |r: Requirement| cases.iter().any(|c| c.requirements().contains(&r));
    let not_needed = || Err::<Bochs, String>("not needed".into());
    let bochs = if needs(Requirement::Bochs) {
        bochs::find().or_else(|why| {
            if std::env::var_os("BOCHS").is_some() {
                return Err(why);
            }
            step(format!("{why}; trying Debian's bochs"));
            tools::ensure(&[Tool::Bochs]).and_then(|_| bochs::find())
        })
    } else {
        not_needed()
    };
    let fred_bochs = if needs(Requirement::FredBochs) {
        bochs::find_fred().inspect_err(|why| step(why))
    } else {
        not_needed()
    };
    let debugger_bochs = if needs(Requirement::DebuggerBochs) {
        bochs::find_debugger().or_else(|why| {
            step(format!("{why}; trying Debian's bochs"));
            tools::ensure(&[Tool::Bochs]).and_then(|_| bochs::find_debugger())
        })
    } else {
        not_needed()
    };
    let limine = match opts.limine_dir() {
        None => Err("LIMINE_DIR is not set (a Limine >= 8 binary release)".to_string()),
        Some(dir) => iso::check_limine_dir(&dir).map(|_| dir),
    };
    let kvm = if needs(Requirement::Kvm) {
        kvm::usable()
    } else {
        Ok(())
    };
    // UEFI cases boot a Limine release: without one they are skipped for that, OVMF or not.
    let ovmf = if needs(Requirement::Ovmf) && limine.is_ok() {
        tools::ensure(&[Tool::Ovmf])
    } else {
        Err("not needed".into())
    };
    Offers {
        bochs,
        fred_bochs,
        debugger_bochs,
        limine,
        kvm,
        ovmf,
    }
}

/// Why `case` cannot run here, if it cannot; else the machine it runs on.
fn machine_for(case: &Case, offers: &Offers) -> std::result::Result<Machine, String> {
    let mut bochs = None;
    for need in case.requirements() {
        match need {
            Requirement::Kvm => offers
                .kvm
                .clone()
                .map_err(|why| format!("KVM not usable: {why}"))?,
            Requirement::Bochs => {
                bochs = Some(
                    offers
                        .bochs
                        .clone()
                        .map_err(|why| format!("no Bochs: {why}"))?,
                )
            }
            Requirement::FredBochs => {
                bochs = Some(
                    offers
                        .fred_bochs
                        .clone()
                        .map_err(|_| NO_FRED_BOCHS.to_string())?,
                )
            }
            Requirement::DebuggerBochs => {
                bochs = Some(
                    offers
                        .debugger_bochs
                        .clone()
                        .map_err(|why| format!("no Bochs built with its debugger: {why}"))?,
                )
            }
            Requirement::LimineRelease => {
                offers.limine.clone()?;
            }
            Requirement::Ovmf => offers.ovmf.clone().map_err(|why| format!("no OVMF: {why}"))?,
        }
    }
    if let Some(found) = &bochs {
        if !found.models.iter().any(|m| m == case.cpu_model) {
            return Err(format!(
                "{} ({}) has no CPU model {}",
                found.binary.display(),
                found.version,
                case.cpu_model
            ));
        }
    }
    Ok(Machine {
        emulator: case.emulator,
        cpu_model: case.cpu_model.to_string(),
        exclude_fred: case.cpu_model == BOCHS_FRED_MODEL && !case.fred,
        smp: case.smp,
        bochs,
    })
}

fn boot_matrix(opts: &Options, tally: &mut Tally) -> Result<()> {
    let cases: Vec<Case> = matrix()
        .into_iter()
        .filter(|c| opts.filter.as_deref().is_none_or(|f| c.matches(f)))
        .collect();
    if cases.is_empty() {
        step(format!(
            "no boot case matches --filter {:?}",
            opts.filter.as_deref().unwrap_or("")
        ));
        return Ok(());
    }
    let mut needed = iso_tools(&Loader::Bridge);
    needed.push(Tool::Qemu);
    if cases.iter().any(|c| c.boot_path == BootPath::Limine) && opts.limine_dir().is_some() {
        needed.extend(iso_tools(&Loader::Limine(PathBuf::new())));
    }
    tools::ensure(&needed)?;
    let offers = survey(opts, &cases);

    let base = load_manifest()?;
    let images: Images = match images::build(&base, opts.release, true, images::Flavor::Testing) {
        Ok(images) => images,
        Err(why) => {
            Report::Fail {
                label: "build images".into(),
                elapsed: None,
                reason: why,
                details: String::new(),
            }
            .print(tally);
            for case in &cases {
                Report::Skip {
                    label: case.to_string(),
                    reason: "the images did not build".into(),
                }
                .print(tally);
            }
            return Ok(());
        }
    };

    // Decide every case up front: skip it, or build its ISO (cached) and queue it.
    let mut results: Vec<Option<Report>> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for case in &cases {
        let slot = results.len();
        let label = case.to_string();
        if case.slow && !opts.slow {
            results.push(Some(Report::Skip { label, reason: "slow tier (cargo xtask test --slow)".into() }));
            continue;
        }
        let machine = match machine_for(case, &offers) {
            Ok(machine) => machine,
            Err(reason) => {
                results.push(Some(Report::Skip { label, reason }));
                continue;
            }
        };
        let loader = match case.boot_path {
            BootPath::Bridge => Loader::Bridge,
            BootPath::Limine => Loader::Limine(offers.limine.clone()?),
        };
        let mut manifest = base.clone();
        manifest.append_cmdline(&case.cmdline());
        let iso = match iso::build(&manifest, &images, &loader) {
            Ok(iso) => iso,
            Err(why) => {
                results.push(Some(Report::Fail {
                    label,
                    elapsed: None,
                    reason: why,
                    details: String::new(),
                }));
                continue;
            }
        };
        results.push(None);
        jobs.push(Job {
            slot,
            case: case.clone(),
            iso,
            machine,
        });
    }

    step(format!(
        "booting {} case(s), {} skipped, {} at a time",
        jobs.len(),
        results.iter().filter(|r| r.is_some()).count(),
        opts.jobs
    ));
    let shared = Shared {
        results: Mutex::new((results, 0, std::mem::take(tally))),
        rfb: Mutex::new(()),
        kvm_guest: Mutex::new(()),
    };
    // Print the skips that lead the list before any boot finishes.
    {
        let mut guard = shared.results.lock().unwrap();
        let (results, next, tally) = &mut *guard;
        while *next < results.len() && results[*next].is_some() {
            results[*next].as_ref().unwrap().print(tally);
            *next += 1;
        }
    }
    let next_job = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.min(jobs.len().max(1)) {
            scope.spawn(|| loop {
                let index = next_job.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(index) else { break };
                run_job(&shared, job);
            });
        }
    });
    let (results, next, done_tally) = shared.results.into_inner().unwrap();
    debug_assert_eq!(next, results.len(), "every result printed");
    *tally = done_tally;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_test_counts_add_up_over_crates() {
        let output = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 0 ignored\n\
                      test result: ok. 0 passed; 0 failed\ntest result: FAILED. 2 passed; 1 failed\n";
        assert_eq!(count_unit_tests(output), 5);
    }

    #[test]
    fn fred_cases_skip_with_the_documented_text() {
        let offers = Offers {
            bochs: Err("none".into()),
            fred_bochs: Err("none".into()),
            debugger_bochs: Err("none".into()),
            limine: Err("LIMINE_DIR is not set".into()),
            kvm: Err("no".into()),
            ovmf: Err("not needed".into()),
        };
        let fred_case = matrix()
            .into_iter()
            .find(|c| c.cpu_model == BOCHS_FRED_MODEL)
            .unwrap();
        assert_eq!(machine_for(&fred_case, &offers).unwrap_err(), NO_FRED_BOCHS);
        let limine_case = matrix()
            .into_iter()
            .find(|c| c.boot_path == BootPath::Limine)
            .unwrap();
        assert!(machine_for(&limine_case, &offers)
            .unwrap_err()
            .contains("LIMINE_DIR"));
        let uefi_case = matrix().into_iter().find(|c| c.firmware == boot_tests::Firmware::Uefi).unwrap();
        assert!(machine_for(&uefi_case, &offers).unwrap_err().contains("LIMINE_DIR"));
        let debugger_case = matrix().into_iter().find(|c| c.bochs_debugger).unwrap();
        assert!(machine_for(&debugger_case, &offers)
            .unwrap_err()
            .contains("built with its debugger"));
    }
}
