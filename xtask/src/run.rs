//! `build`, `iso` and `run`.

use crate::bochs::{self, Bochs};
use crate::cli::{EmulatorChoice, Options};
use crate::emulator::{self, BootLimits, Machine};
use crate::images::{self, Flavor, Images};
use crate::iso::{self, Loader};
use crate::manifest::{self, Manifest};
use crate::tools::{self, Tool};
use crate::util::{root, step, tail, target_dir, which, Result};
use boot_tests::matrix::{default_timeout, qemu_cpu_model, BOCHS_FRED_MODEL, BOCHS_IST_MODEL};
use boot_tests::{Accel, Emulator, Expectation, Firmware, Outcome, Verdict};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why `--firmware uefi` does not boot the bridge, and what to do instead.
pub const UEFI_NEEDS_LIMINE: &str = "--firmware uefi boots a genuine Limine ISO: set LIMINE_DIR (or --limine DIR) to a \
     Limine >= 8 binary release; the bridge is a Multiboot2 image GRUB loads from BIOS only";

/// Lines of serial log shown when a boot times out or fails.
pub const LOG_TAIL_LINES: usize = 30;

pub fn load_manifest() -> Result<Manifest> {
    let path = root().join("limine.cfg");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    manifest::parse(&text).map_err(|e| e.to_string())
}

/// The loader chosen by `--limine` / `$LIMINE_DIR`, checked.
pub fn loader(opts: &Options) -> Result<Loader> {
    match opts.limine_dir() {
        Some(dir) => {
            iso::check_limine_dir(&dir)?;
            Ok(Loader::Limine(dir))
        }
        None => Ok(Loader::Bridge),
    }
}

/// The host tools an ISO for `loader` needs.
pub fn iso_tools(loader: &Loader) -> Vec<Tool> {
    match loader {
        Loader::Bridge => vec![Tool::GrubRescue, Tool::Xorriso, Tool::Mtools, Tool::Binutils],
        Loader::Limine(_) => vec![Tool::Xorriso, Tool::Binutils],
    }
}

pub fn build(opts: &Options) -> Result<Images> {
    let manifest = load_manifest()?;
    images::build(&manifest, opts.release, true, Flavor::for_cmdline(&opts.extra_cmdline()))
}

/// Builds what `opts` asks for and returns the ISO and the manifest it boots.
pub fn make_iso(opts: &Options, loader: &Loader) -> Result<(PathBuf, Manifest)> {
    let mut manifest = load_manifest()?;
    manifest.append_cmdline(&opts.extra_cmdline());
    let images = images::build(&manifest, opts.release, *loader == Loader::Bridge, if manifest.runs_scenario() { Flavor::Testing } else { Flavor::Production })?;
    let iso = iso::build(&manifest, &images, loader)?;
    Ok((iso, manifest))
}

pub fn iso(opts: &Options) -> Result<()> {
    let loader = loader(opts)?;
    tools::ensure(&iso_tools(&loader))?;
    let (iso, _) = make_iso(opts, &loader)?;
    println!("{}", iso.display());
    Ok(())
}

/// The scenario named by `test=` in a kernel command line (the last one wins, as in the kernel).
pub fn scenario_in(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("test="))
        .next_back()
        .map(String::from)
}

/// Finds the Bochs for `run`: a FRED-capable one when `--fred` is given; Debian's is installed
/// when nothing is found and `BOCHS` is unset.
fn bochs_for_run(fred_needed: bool) -> Result<Bochs> {
    if fred_needed {
        return bochs::find_fred();
    }
    match bochs::find() {
        Ok(found) => Ok(found),
        Err(why) if std::env::var_os("BOCHS").is_none() => {
            step(format!("{why}; trying Debian's bochs"));
            tools::ensure(&[Tool::Bochs])?;
            bochs::find()
        }
        Err(why) => Err(why),
    }
}

pub fn run(opts: &Options) -> Result<u8> {
    boot(opts).map(|r| r.code)
}

/// What `boot` saw.
pub struct Booted {
    /// The exit status of `run`: 0 if the scenario passed (or, without one, READY came and
    /// nothing broke).
    pub code: u8,
    pub serial: String,
    pub elapsed: Duration,
    /// When each line of `serial` arrived.
    pub line_times: Vec<Duration>,
}

/// `run`'s work: boots the ISO `opts` asks for, streams COM1, judges the scenario if any.
pub fn boot(opts: &Options) -> Result<Booted> {
    let loader = loader(opts)?;
    let emulator = match opts.emulator.unwrap_or(EmulatorChoice::Qemu) {
        EmulatorChoice::Qemu => Emulator::Qemu(opts.accel),
        EmulatorChoice::Bochs => Emulator::Bochs,
    };
    if opts.firmware == Firmware::Uefi && loader == Loader::Bridge {
        return Err(UEFI_NEEDS_LIMINE.into());
    }
    let mut needed = iso_tools(&loader);
    if let Emulator::Qemu(_) = emulator {
        needed.push(Tool::Qemu);
    }
    if opts.firmware == Firmware::Uefi {
        needed.push(Tool::Ovmf);
    }
    tools::ensure(&needed)?;
    let machine = match emulator {
        Emulator::Qemu(accel) => {
            if accel == Accel::Kvm {
                emulator::kvm_accessible()?;
                if let Err(why) = crate::kvm::usable() {
                    step(format!("warning: KVM is not usable here ({why}); booting with it anyway"));
                }
            }
            Machine {
                emulator,
                cpu_model: opts
                    .cpu
                    .clone()
                    .unwrap_or_else(|| qemu_cpu_model(accel).to_string()),
                exclude_fred: false,
                smp: opts.smp,
                bochs: None,
            }
        }
        Emulator::Bochs => {
            let found = bochs_for_run(opts.fred.is_some())?;
            let model = match (&opts.cpu, opts.fred) {
                (Some(cpu), _) => cpu.clone(),
                (None, Some(_)) => BOCHS_FRED_MODEL.to_string(),
                (None, None) if found.fred => BOCHS_FRED_MODEL.to_string(),
                (None, None) => BOCHS_IST_MODEL.to_string(),
            };
            if !found.models.contains(&model) && !found.models.is_empty() {
                return Err(format!(
                    "{} ({}) has no CPU model {model}; it has: {}",
                    found.binary.display(),
                    found.version,
                    found.models.join(" ")
                ));
            }
            step(format!(
                "Bochs {} at {}, CPU {model}",
                found.version,
                found.binary.display()
            ));
            Machine {
                emulator,
                cpu_model: model,
                exclude_fred: opts.fred == Some(false),
                smp: opts.smp,
                bochs: Some(found),
            }
        }
    };
    let (iso, manifest) = make_iso(opts, &loader)?;
    let kernel_cmdline = manifest.entries[0].cmdline.clone();
    let scenario = scenario_in(&kernel_cmdline);
    let timeout = match opts.timeout_secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        // A debugging session lasts as long as the person at gdb wants.
        None if opts.gdb.is_some() => None,
        None => Some(default_timeout(emulator)),
    };
    let work_dir = target_dir().join("run").join(match emulator {
        Emulator::Qemu(Accel::Tcg) => "qemu-tcg",
        Emulator::Qemu(Accel::Kvm) => "qemu-kvm",
        Emulator::Bochs => "bochs",
    });
    step(format!(
        "booting {} with {} CPU(s), kernel command line {:?}{}",
        iso.file_name().unwrap().to_string_lossy(),
        opts.smp,
        kernel_cmdline,
        match timeout {
            Some(t) => format!(", time limit {} s", t.as_secs()),
            None => String::new(),
        }
    ));
    let limits = BootLimits {
        timeout,
        scenario: scenario.clone(),
        echo: true,
    };
    let mut qemu_extra = emulator::firmware_args(opts.firmware);
    if let Some(port) = opts.gdb {
        qemu_extra.extend(emulator::gdb_args(port));
        let flavor = if manifest.runs_scenario() { Flavor::Testing } else { Flavor::Production };
        let kernel = images::kernel_path(opts.release, flavor);
        step(format!("QEMU waits for gdb on 127.0.0.1:{port}, every CPU stopped; in another terminal:"));
        println!("{}", gdb_command(&kernel, port));
        step(format!(
            "user programs: add-symbol-file {} (every program is linked at 0x400000: one at a time); \
             the serial log goes on here and to {}",
            images::program_path(opts.release, "NAME").display(),
            work_dir.join("serial.log").display()
        ));
        if which("gdb").is_none() {
            step("gdb is not installed: apt-get install -y gdb");
        }
    }
    let result = emulator::boot_with(&machine, &iso, &work_dir, &limits, &qemu_extra)?;
    let elapsed = result.elapsed.as_secs_f64();
    if !result.serial.is_empty() && !result.serial.ends_with('\n') {
        // Keep our report off the kernel's last line.
        println!();
    }
    if let Some(t) = time_to_ready(&result.serial, &result.line_times) {
        step(format!("READY {:.2} s after the emulator started ({} CPUs)", t.as_secs_f64(), opts.smp));
    }

    if result.outcome == Outcome::TimedOut && scenario.is_none() {
        step(format!(
            "stopped the emulator after {elapsed:.1} s (time limit; --timeout 0 for none)"
        ));
    } else if result.outcome == Outcome::TimedOut {
        step(format!(
            "TIMEOUT: killed the emulator after {elapsed:.1} s; last {LOG_TAIL_LINES} lines of the serial log:"
        ));
        eprintln!(
            "{}",
            crate::util::indent(&tail(&result.serial, LOG_TAIL_LINES), "    | ")
        );
    } else if let Outcome::Exited(status) = result.outcome {
        step(format!(
            "emulator exited with status {} after {elapsed:.1} s",
            status.map_or("(signal)".into(), |s| s.to_string())
        ));
        if status.is_none() || (scenario.is_none() && emulator != Emulator::Bochs) {
            show_emulator_output(&result.emulator_output);
        }
    }
    let code = match scenario {
        Some(scenario) => {
            let expect = Expectation::new(&scenario, opts.smp, None, emulator);
            match boot_tests::judge(&expect, &result.serial, result.outcome) {
                Verdict::Pass => {
                    step(format!("TEST {scenario}: PASS"));
                    0
                }
                Verdict::Fail(reason) => {
                    step(format!("TEST {scenario}: FAIL: {reason}"));
                    show_emulator_output(&result.emulator_output);
                    1
                }
            }
        }
        None => {
            let ready = result.serial.lines().any(|l| l.contains("READY cpus="));
            let broken = result
                .serial
                .lines()
                .any(|l| l.contains("PANIC") || l.contains("EXCEPTION"));
            if ready && !broken {
                0
            } else {
                1
            }
        }
    };
    Ok(Booted {
        code,
        serial: result.serial,
        elapsed: result.elapsed,
        line_times: result.line_times,
    })
}

/// The gdb command line that attaches to QEMU's stub on `port` with the symbols of `kernel`,
/// and runs to the kernel's entry point. A hardware breakpoint, because at the reset vector the
/// kernel is not loaded yet (a software breakpoint would be written into memory that the
/// loader then overwrites, or that is not mapped).
pub fn gdb_command(kernel: &Path, port: u16) -> String {
    format!(
        "gdb -q {} -ex 'target remote 127.0.0.1:{port}' -ex 'hbreak kernel_bsp_entry' -ex continue",
        kernel.display()
    )
}

/// When the READY line arrived, from the emulator's start (`line_times` has one entry per
/// complete line of `serial`).
pub fn time_to_ready(serial: &str, line_times: &[Duration]) -> Option<Duration> {
    let index = serial.lines().position(|l| l.contains("READY cpus="))?;
    line_times.get(index).copied()
}

fn show_emulator_output(text: &str) {
    let text = emulator::notable_output(text);
    if !text.is_empty() {
        eprintln!(
            "[xtask] the emulator printed:\n{}",
            crate::util::indent(&tail(&text, 15), "    ! ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_command_loads_the_kernel_symbols_and_stops_at_its_entry() {
        let line = gdb_command(Path::new("/w/target/x86_64-unknown-none/release/kernel.production"), 1235);
        assert_eq!(
            line,
            "gdb -q /w/target/x86_64-unknown-none/release/kernel.production -ex 'target remote 127.0.0.1:1235' \
             -ex 'hbreak kernel_bsp_entry' -ex continue"
        );
    }

    #[test]
    fn time_to_ready_is_when_the_ready_line_arrived() {
        let serial = "a\nb\nREADY cpus=8/8 entry=ist servers=\nTEST boot: PASS\n";
        let times = [1, 2, 3, 4].map(Duration::from_millis);
        assert_eq!(time_to_ready(serial, &times), Some(Duration::from_millis(3)));
        assert_eq!(time_to_ready("a\nb\n", &times), None);
    }

    #[test]
    fn scenario_is_read_from_the_kernel_cmdline() {
        assert_eq!(
            scenario_in("log=debug test=timer entry=ist").as_deref(),
            Some("timer")
        );
        assert_eq!(scenario_in("test=boot test=ipi").as_deref(), Some("ipi"));
        assert_eq!(scenario_in("entry=fred"), None);
        assert_eq!(scenario_in("nottest=boot"), None);
    }
}
