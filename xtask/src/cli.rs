//! Command-line parsing: `cargo xtask <command> [options]`, by hand (a handful of options).

use boot_tests::{Accel, Firmware};
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build        build the kernel, the bridge and the boot modules named in limine.cfg
  iso          build the bootable ISO and print its path
  run          boot the ISO in an emulator and stream the serial log (COM1) to stdout
  test         host unit tests, then the boot matrix (one line per case)
  compare      FRED vs IST: the bench program on Bochs wildcat_lake with FRED on and off, 1 CPU;
               a table of round trips in retired instructions (also in target/compare/)
  fuzz         the system-call fuzzer (scenario fuzz): streams its progress, prints the results
               per error kind and per call, and on failure the command that repeats the run
  bench        the bench program on every machine this host can run (QEMU -icount, KVM, Debian's
               Bochs tigerlake, Bochs wildcat_lake FRED on/off), at 1 and 2 CPUs, then boot to
               READY at 4, 8 and 64 CPUs (Bochs: 4, 8); the report in target/bench/
               (report.json, report.md, report.svg, report-boot.svg)

options (build, iso, run):
  --release | --debug     cargo profile of the bare-metal images (default: --release)
  --limine DIR            boot through a genuine Limine binary release in DIR (default: $LIMINE_DIR);
                          without it GRUB loads the boot/ bridge, which boots the kernel
  --cmdline \"...\"         appended to the kernel CMDLINE of limine.cfg
  --entry auto|fred|ist   entry backend: appends entry=... to the kernel command line

options (run and fuzz; --timeout also for compare):
  --emulator qemu|bochs   default: qemu (bochs when --fred is given)
  --accel tcg|kvm         QEMU accelerator (default: tcg; kvm needs /dev/kvm)
  --smp N                 number of CPUs (default: 4)
  --fred on|off           Bochs: CPU model wildcat_lake with FRED, or with exclude_features=\"fred\"
                          (the IST twin); needs a FRED-capable Bochs
  --cpu MODEL             override the CPU model (QEMU -cpu / Bochs cpu: model=)
  --timeout SECS          stop the emulator after SECS seconds (0: never; default: 60 for QEMU TCG,
                          120 for KVM, 240 for Bochs; none with --gdb)
  --firmware bios|uefi    run: SeaBIOS (default) or OVMF (Debian's ovmf, installed like the other
                          tools); UEFI needs a Limine release (--limine / LIMINE_DIR), the bridge
                          boots from BIOS only
  --gdb [PORT]            run: QEMU's gdb stub on 127.0.0.1:PORT (default 1234), every CPU stopped
                          before the firmware; prints the gdb command that loads the kernel's
                          symbols and stops at its entry

options (fuzz; also --cmdline, --entry and the run options above):
  --seed N                the generator's seed (default: a random one, printed)
  --count N               system calls in total, split over the CPUs (default: 1000000)

options (bench; also --timeout, and --filter to pick machines by id, e.g. --filter qemu-icount):
  --check FILE            run only the instruction-counting machines of the baseline FILE (a
                          report.json) and fail when a median grew beyond the tolerance

options (test):
  --filter TEXT           only boot cases whose label contains TEXT (',' separates alternatives),
                          e.g. --filter timer, --filter 'smp=1,bochs'
  --no-host               skip the host unit tests
  --slow                  also the slow tier: boot at 256 and 300 CPUs (about a minute more)
  --jobs N                run N emulators at once (default: 1); results stay in matrix order
  --release | --debug, --limine DIR  as above

environment:
  LIMINE_DIR              a Limine (>= 8) binary release: limine-bios.sys, limine-bios-cd.bin,
                          limine-uefi-cd.bin and the `limine` host tool
  BOCHS                   the Bochs binary to use (default: /opt/bochs-fred/bin/bochs if present,
                          else bochs on PATH)
  BOCHS_SHARE             its BIOS folder (default: <prefix>/share/bochs next to the binary)
";

/// QEMU's (and gdb's) usual port for the gdb stub.
pub const DEFAULT_GDB_PORT: u16 = 1234;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Build,
    Iso,
    Run,
    Test,
    Compare,
    Fuzz,
    Bench,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulatorChoice {
    Qemu,
    Bochs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Auto,
    Fred,
    Ist,
}

impl Entry {
    pub fn name(self) -> &'static str {
        match self {
            Entry::Auto => "auto",
            Entry::Fred => "fred",
            Entry::Ist => "ist",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub command: Command,
    pub release: bool,
    pub limine: Option<PathBuf>,
    pub cmdline: String,
    pub entry: Option<Entry>,
    pub emulator: Option<EmulatorChoice>,
    pub accel: Accel,
    pub smp: u32,
    pub fred: Option<bool>,
    pub cpu: Option<String>,
    /// `Some(0)` means no limit.
    pub timeout_secs: Option<u64>,
    pub filter: Option<String>,
    pub host_tests: bool,
    /// `test --slow`: also the slow tier (256 and 300 CPUs).
    pub slow: bool,
    /// `run --gdb [PORT]`: QEMU's gdb stub on this port, the CPUs stopped at the reset vector.
    pub gdb: Option<u16>,
    /// `run --firmware`: SeaBIOS (default) or OVMF.
    pub firmware: Firmware,
    pub jobs: usize,
    /// `fuzz`: the seed and the number of calls; `None`: the defaults.
    pub seed: Option<u64>,
    pub count: Option<u64>,
    /// `bench --check`: the baseline report.
    pub check: Option<PathBuf>,
}

impl Options {
    fn new(command: Command) -> Options {
        Options {
            command,
            release: true,
            limine: None,
            cmdline: String::new(),
            entry: None,
            emulator: None,
            accel: Accel::Tcg,
            smp: 4,
            fred: None,
            cpu: None,
            timeout_secs: None,
            filter: None,
            host_tests: true,
            slow: false,
            gdb: None,
            firmware: Firmware::Bios,
            jobs: 1,
            seed: None,
            count: None,
            check: None,
        }
    }

    /// The Limine release to boot through: `--limine`, else `$LIMINE_DIR` (empty means unset).
    pub fn limine_dir(&self) -> Option<PathBuf> {
        self.limine.clone().or_else(|| {
            std::env::var_os("LIMINE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    /// The kernel command line added by options: `entry=` first, then `--cmdline`.
    pub fn extra_cmdline(&self) -> String {
        let mut parts = Vec::new();
        if let Some(entry) = self.entry {
            parts.push(format!("entry={}", entry.name()));
        }
        if !self.cmdline.trim().is_empty() {
            parts.push(self.cmdline.trim().to_string());
        }
        parts.join(" ")
    }
}

/// What went wrong on the command line; printed with a pointer to `--help`.
#[derive(Debug, PartialEq, Eq)]
pub enum CliError {
    Help,
    Bad(String),
}

fn bad<T>(message: impl Into<String>) -> Result<T, CliError> {
    Err(CliError::Bad(message.into()))
}

/// Which commands accept an option.
fn applies(option: &str, command: Command) -> bool {
    use Command::*;
    match option {
        "--release" | "--debug" | "--limine" => true,
        "--cmdline" | "--entry" => matches!(command, Build | Iso | Run | Fuzz),
        "--emulator" | "--accel" | "--smp" | "--fred" | "--cpu" => matches!(command, Run | Fuzz),
        "--timeout" => matches!(command, Run | Compare | Fuzz | Bench),
        "--filter" => matches!(command, Test | Bench),
        "--no-host" | "--jobs" | "--slow" => command == Test,
        "--gdb" | "--firmware" => command == Run,
        "--check" => command == Bench,
        "--seed" | "--count" => command == Fuzz,
        _ => false,
    }
}

const VALUE_OPTIONS: &[&str] = &[
    "--limine",
    "--cmdline",
    "--entry",
    "--emulator",
    "--accel",
    "--smp",
    "--fred",
    "--cpu",
    "--timeout",
    "--filter",
    "--jobs",
    "--seed",
    "--count",
    "--check",
    "--firmware",
];
const FLAG_OPTIONS: &[&str] = &["--release", "--debug", "--no-host", "--slow"];

fn number<T: std::str::FromStr>(option: &str, value: &str) -> Result<T, CliError> {
    value
        .parse()
        .or_else(|_| bad(format!("{option} takes a number, got {value:?}")))
}

/// Parses the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Options, CliError> {
    let mut args = args.iter().peekable();
    let command = match args.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Err(CliError::Help),
        Some("build") => Command::Build,
        Some("iso") => Command::Iso,
        Some("run") => Command::Run,
        Some("test") => Command::Test,
        Some("compare") => Command::Compare,
        Some("fuzz") => Command::Fuzz,
        Some("bench") => Command::Bench,
        Some(other) => return bad(format!("unknown command {other:?}")),
    };
    let mut opts = Options::new(command);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(CliError::Help);
        }
        let (name, inline_value) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        if name == "--gdb" {
            if !applies(name, command) {
                return bad(format!("--gdb does not apply to `{}`", command_name(command)));
            }
            // The port is optional: `--gdb`, `--gdb 1235`, `--gdb=1235`.
            let value = inline_value.or_else(|| args.next_if(|a| a.parse::<u16>().is_ok()).cloned());
            opts.gdb = Some(match value {
                None => DEFAULT_GDB_PORT,
                Some(v) => match v.parse::<u16>() {
                    Ok(port) if port > 0 => port,
                    _ => return bad(format!("--gdb takes a TCP port, got {v:?}")),
                },
            });
            continue;
        }
        let is_value = VALUE_OPTIONS.contains(&name);
        if !is_value && !FLAG_OPTIONS.contains(&name) {
            return bad(format!("unknown option {arg:?}"));
        }
        if !applies(name, command) {
            return bad(format!(
                "{name} does not apply to `{}`",
                command_name(command)
            ));
        }
        let value = if is_value {
            match inline_value {
                Some(value) => value,
                None => match args.next() {
                    Some(value) => value.clone(),
                    None => return bad(format!("{name} needs a value")),
                },
            }
        } else if inline_value.is_some() {
            return bad(format!("{name} takes no value"));
        } else {
            String::new()
        };
        match name {
            "--release" => opts.release = true,
            "--debug" => opts.release = false,
            "--no-host" => opts.host_tests = false,
            "--slow" => opts.slow = true,
            "--limine" => opts.limine = Some(PathBuf::from(value)),
            "--cmdline" => {
                if value.contains(['\n', '\r']) {
                    return bad("--cmdline must be one line");
                }
                opts.cmdline = value;
            }
            "--entry" => {
                opts.entry = Some(match value.as_str() {
                    "auto" => Entry::Auto,
                    "fred" => Entry::Fred,
                    "ist" => Entry::Ist,
                    _ => return bad(format!("--entry takes auto, fred or ist, got {value:?}")),
                })
            }
            "--emulator" => {
                opts.emulator = Some(match value.as_str() {
                    "qemu" => EmulatorChoice::Qemu,
                    "bochs" => EmulatorChoice::Bochs,
                    _ => return bad(format!("--emulator takes qemu or bochs, got {value:?}")),
                })
            }
            "--accel" => {
                opts.accel = match value.as_str() {
                    "tcg" => Accel::Tcg,
                    "kvm" => Accel::Kvm,
                    _ => return bad(format!("--accel takes tcg or kvm, got {value:?}")),
                }
            }
            "--fred" => {
                opts.fred = Some(match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return bad(format!("--fred takes on or off, got {value:?}")),
                })
            }
            "--smp" => {
                opts.smp = number(name, &value)?;
                if opts.smp == 0 {
                    return bad("--smp must be at least 1");
                }
            }
            "--cpu" => opts.cpu = Some(value),
            "--timeout" => opts.timeout_secs = Some(number(name, &value)?),
            "--filter" => opts.filter = Some(value),
            "--jobs" => {
                opts.jobs = number(name, &value)?;
                if opts.jobs == 0 {
                    return bad("--jobs must be at least 1");
                }
            }
            "--seed" => opts.seed = Some(number(name, &value)?),
            "--count" => {
                let count = number(name, &value)?;
                if count == 0 {
                    return bad("--count must be at least 1");
                }
                opts.count = Some(count);
            }
            "--check" => opts.check = Some(PathBuf::from(value)),
            "--firmware" => {
                opts.firmware = match value.as_str() {
                    "bios" => Firmware::Bios,
                    "uefi" => Firmware::Uefi,
                    _ => return bad(format!("--firmware takes bios or uefi, got {value:?}")),
                }
            }
            _ => unreachable!("option table and match disagree on {name}"),
        }
    }
    // Combinations that cannot work are refused here rather than half-way through a boot.
    if opts.fred.is_some() {
        match opts.emulator {
            None => opts.emulator = Some(EmulatorChoice::Bochs),
            Some(EmulatorChoice::Bochs) => {}
            Some(EmulatorChoice::Qemu) => {
                return bad("--fred needs --emulator bochs (QEMU's TCG does not emulate FRED)")
            }
        }
    }
    if opts.firmware == Firmware::Uefi && opts.emulator == Some(EmulatorChoice::Bochs) {
        return bad("--firmware uefi is QEMU with OVMF; Bochs here boots from its BIOS");
    }
    if opts.gdb.is_some() && opts.emulator == Some(EmulatorChoice::Bochs) {
        return bad("--gdb is QEMU's gdb stub; Bochs has its own debugger (a Bochs built with it)");
    }
    if opts.emulator == Some(EmulatorChoice::Bochs) && opts.accel == Accel::Kvm {
        return bad("--accel kvm is a QEMU option; Bochs always interprets");
    }
    Ok(opts)
}

pub fn command_name(command: Command) -> &'static str {
    match command {
        Command::Build => "build",
        Command::Iso => "iso",
        Command::Run => "run",
        Command::Test => "test",
        Command::Compare => "compare",
        Command::Fuzz => "fuzz",
        Command::Bench => "bench",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Options, CliError> {
        parse(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    fn error(line: &str) -> String {
        match parse_str(line) {
            Err(CliError::Bad(message)) => message,
            other => panic!("expected an error for {line:?}, got {other:?}"),
        }
    }

    #[test]
    fn run_defaults_to_release_qemu_tcg_four_cpus() {
        let opts = parse_str("run").unwrap();
        assert!(opts.release);
        assert_eq!((opts.emulator, opts.accel, opts.smp), (None, Accel::Tcg, 4));
        assert_eq!(opts.extra_cmdline(), "");
    }

    #[test]
    fn values_are_accepted_with_space_or_equals() {
        let a = parse_str("run --smp 8 --accel=kvm --timeout=0").unwrap();
        assert_eq!((a.smp, a.accel, a.timeout_secs), (8, Accel::Kvm, Some(0)));
    }

    #[test]
    fn entry_is_appended_before_cmdline() {
        let args: Vec<String> = [
            "run",
            "--cmdline",
            "test=timer loglevel=debug",
            "--entry",
            "ist",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let opts = parse(&args).unwrap();
        assert_eq!(opts.extra_cmdline(), "entry=ist test=timer loglevel=debug");
    }

    #[test]
    fn fred_selects_bochs() {
        let opts = parse_str("run --fred off").unwrap();
        assert_eq!(
            (opts.emulator, opts.fred),
            (Some(EmulatorChoice::Bochs), Some(false))
        );
    }

    #[test]
    fn fred_on_qemu_is_refused() {
        assert!(error("run --emulator qemu --fred on").contains("--fred needs --emulator bochs"));
    }

    #[test]
    fn kvm_on_bochs_is_refused() {
        assert!(error("run --emulator bochs --accel kvm").contains("QEMU option"));
    }

    #[test]
    fn bad_values_name_the_choices() {
        assert!(error("run --emulator vbox").contains("qemu or bochs"));
        assert!(error("run --entry idt").contains("auto, fred or ist"));
        assert!(error("run --smp many").contains("takes a number"));
        assert!(error("run --smp 0").contains("at least 1"));
        assert!(error("run --smp").contains("needs a value"));
    }

    #[test]
    fn unknown_option_and_command_are_refused() {
        assert!(error("run --fast").contains("unknown option"));
        assert!(error("boot").contains("unknown command"));
    }

    #[test]
    fn options_of_other_commands_are_refused() {
        assert!(error("test --smp 2").contains("does not apply to `test`"));
        assert!(error("run --jobs 2").contains("does not apply to `run`"));
        assert!(error("build --no-host").contains("does not apply"));
    }

    #[test]
    fn flags_take_no_value() {
        assert!(error("test --no-host=yes").contains("takes no value"));
    }

    #[test]
    fn help_anywhere_asks_for_usage() {
        assert_eq!(parse_str(""), Err(CliError::Help));
        assert_eq!(parse_str("run --help"), Err(CliError::Help));
    }

    #[test]
    fn compare_takes_a_timeout_and_refuses_machine_options() {
        let opts = parse_str("compare --timeout 100 --debug").unwrap();
        assert_eq!((opts.command, opts.timeout_secs, opts.release), (Command::Compare, Some(100), false));
        assert!(error("compare --smp 4").contains("does not apply to `compare`"));
        assert!(error("compare --fred off").contains("does not apply to `compare`"));
    }

    #[test]
    fn fuzz_takes_seed_count_and_the_machine_options() {
        let opts = parse_str("fuzz --seed 7 --count=5000 --smp 2 --emulator bochs --fred on").unwrap();
        assert_eq!((opts.command, opts.seed, opts.count, opts.smp), (Command::Fuzz, Some(7), Some(5000), 2));
        assert_eq!((opts.emulator, opts.fred), (Some(EmulatorChoice::Bochs), Some(true)));
        let defaults = parse_str("fuzz").unwrap();
        assert_eq!((defaults.seed, defaults.count, defaults.smp), (None, None, 4));
    }

    #[test]
    fn fuzz_refuses_a_bad_seed_or_count_and_other_commands_refuse_them() {
        assert!(error("fuzz --seed x").contains("takes a number"));
        assert!(error("fuzz --seed -1").contains("takes a number"));
        assert!(error("fuzz --count 0").contains("at least 1"));
        assert!(error("run --seed 1").contains("does not apply to `run`"));
        assert!(error("test --count 5").contains("does not apply to `test`"));
        assert!(error("fuzz --jobs 2").contains("does not apply to `fuzz`"));
    }

    #[test]
    fn bench_takes_check_filter_and_timeout_only() {
        let opts = parse_str("bench --check bench/baseline.json --filter qemu-icount --timeout 100").unwrap();
        assert_eq!(opts.command, Command::Bench);
        assert_eq!(opts.check, Some(PathBuf::from("bench/baseline.json")));
        assert_eq!((opts.filter.as_deref(), opts.timeout_secs), (Some("qemu-icount"), Some(100)));
        assert_eq!(parse_str("bench").unwrap().check, None);
        assert!(error("bench --smp 2").contains("does not apply to `bench`"));
        assert!(error("run --check x").contains("does not apply to `run`"));
    }

    #[test]
    fn firmware_is_bios_by_default_and_uefi_only_on_qemu() {
        assert_eq!(parse_str("run").unwrap().firmware, Firmware::Bios);
        assert_eq!(parse_str("run --firmware uefi").unwrap().firmware, Firmware::Uefi);
        assert!(error("run --firmware coreboot").contains("bios or uefi"));
        assert!(error("run --emulator bochs --firmware uefi").contains("QEMU with OVMF"));
        assert!(error("test --firmware uefi").contains("does not apply to `test`"));
    }

    #[test]
    fn gdb_takes_an_optional_port_and_only_qemu() {
        assert_eq!(parse_str("run --gdb").unwrap().gdb, Some(DEFAULT_GDB_PORT));
        assert_eq!(parse_str("run --gdb 1235 --smp 2").unwrap().gdb, Some(1235));
        assert_eq!(parse_str("run --gdb=4321").unwrap().gdb, Some(4321));
        // A following option is not taken for the port.
        let opts = parse_str("run --gdb --smp 2").unwrap();
        assert_eq!((opts.gdb, opts.smp), (Some(DEFAULT_GDB_PORT), 2));
        assert!(error("run --gdb=0").contains("takes a TCP port"));
        assert!(error("run --gdb=x").contains("takes a TCP port"));
        assert!(error("test --gdb").contains("does not apply to `test`"));
        assert!(error("run --emulator bochs --gdb").contains("Bochs has its own debugger"));
    }

    #[test]
    fn test_options_parse() {
        let opts = parse_str("test --filter timer --no-host --jobs 2 --debug").unwrap();
        assert_eq!(opts.filter.as_deref(), Some("timer"));
        assert!(!opts.host_tests && !opts.release && !opts.slow);
        assert!(parse_str("test --slow").unwrap().slow);
        assert!(error("run --slow").contains("does not apply to `run`"));
        assert_eq!(opts.jobs, 2);
    }
}
