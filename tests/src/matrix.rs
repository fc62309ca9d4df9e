//! Which boots `cargo xtask test` runs, and what each one must print.

use std::fmt;
use std::time::Duration;

/// How QEMU executes guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// QEMU's binary translator: slow but the same everywhere (x2APIC with `-cpu max`, no FRED).
    Tcg,
    /// Hardware virtualisation through /dev/kvm: the host CPU's features, real cycles.
    Kvm,
}

/// The emulator a case boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Emulator {
    Qemu(Accel),
    /// Bochs interprets every instruction; its Intel models are the only place FRED runs.
    Bochs,
}

/// The kernel's event-entry backend, as the READY line names it (`entry=fred|ist`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Fred,
    Ist,
}

/// What loads the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BootPath {
    /// GRUB loads the boot/ bridge (Multiboot2), which boots the kernel by the Limine protocol.
    Bridge,
    /// A genuine Limine binary release (needs `LIMINE_DIR`).
    Limine,
}

/// The firmware a QEMU machine starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default: boots the bridge (GRUB) and Limine's BIOS loader.
    Bios,
    /// OVMF (Debian's `ovmf`): boots only Limine's UEFI loader; the bridge is BIOS-only.
    Uefi,
}

/// Something the machine must offer before a case can run; a case whose requirement is not met
/// is skipped with the reason, never failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// KVM works here and is faster than TCG: xtask's probe (a boot sector under both, in
    /// seconds, remembered per machine) said so.
    Kvm,
    /// Some Bochs binary is available.
    Bochs,
    /// A Bochs whose `wildcat_lake` model reports FRED (built with its FRED option).
    FredBochs,
    /// A Bochs built with its internal debugger (Debian's): its multi-CPU loop commits the
    /// instruction pointer after an exception, so an instruction breakpoint does not re-fire
    /// forever with more than one CPU (README, Bochs findings).
    DebuggerBochs,
    /// `LIMINE_DIR` (or `--limine`) names a Limine binary release.
    LimineRelease,
    /// OVMF, the UEFI firmware for QEMU.
    Ovmf,
}

/// One boot of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub emulator: Emulator,
    /// The emulator's CPU model (`-cpu` for QEMU, `cpu: model=` for Bochs).
    pub cpu_model: &'static str,
    /// Bochs only: `false` adds `exclude_features="fred"` to the CPU model, which gives the
    /// IST twin of a FRED model on otherwise identical hardware.
    pub fred: bool,
    pub smp: u32,
    /// The kernel scenario, passed as `test=<scenario>`.
    pub scenario: &'static str,
    /// Appended to the kernel command line after `test=<scenario>`.
    pub extra_cmdline: &'static str,
    /// The backend the READY line must name; `None` when either is right (KVM follows the host).
    pub expected_entry: Option<Backend>,
    pub boot_path: BootPath,
    pub timeout: Duration,
    /// Bochs only: needs a Bochs built with its internal debugger ([`Requirement::DebuggerBochs`]).
    pub bochs_debugger: bool,
    /// Part of the slow tier: booted only by `cargo xtask test --slow` (minutes on two cores).
    pub slow: bool,
    pub firmware: Firmware,
}

/// The kernel test scenarios every QEMU TCG configuration runs.
pub const SCENARIOS: &[&str] = &[
    "boot",
    "ipi",
    "page_fault",
    "stack_overflow",
    "timer",
    "user",
    "sysret",
    "user_faults",
    "preempt",
    "ist_nesting",
    "syscall_gap",
    "nmi_storm",
    "nmi_backtrace",
    // QEMU only: xtask injects the machine checks through QEMU's monitor.
    "mce_inject",
    // IPC and the servers (the console owns COM1 through the I/O APIC's IRQ 4 here).
    "ipc",
    "caps",
    "servers",
    "server_crash",
    // Hostile input: the entry-hazard suite (utest `hazards`).
    "hazards",
    // The user FPU/SIMD state across switches, NMIs and processes (utest `fpu_*`).
    "fpu",
];
/// Hostile-input scenarios that also run on Bochs' Intel `tigerlake` (IST with Intel
/// semantics: SYSCALL from compatibility mode is #UD in hardware there) at 1 and 4 CPUs.
pub const BOCHS_HOSTILE_SCENARIOS: &[&str] = &["hazards"];
/// CPU counts of the hostile-input cases on Bochs.
pub const BOCHS_HOSTILE_SMP: &[u32] = &[1, 4];
/// The system-call fuzzer's short runs (`cargo xtask fuzz` makes the long ones): a fixed seed
/// and a count that ends in seconds, on QEMU TCG at 1 and 4 CPUs, and with fewer calls on Bochs
/// `tigerlake` (IST, Intel semantics) and `wildcat_lake` with FRED on and off, at 1 and 4. On
/// an idle host TCG makes about 3,000 calls/s at 4 CPUs, Bochs about 1,000; the time limit
/// leaves room for a host busy with other emulators (4 CPUs on 2 host cores slow down sharply).
pub const FUZZ_TIMEOUT: Duration = Duration::from_secs(180);
pub const FUZZ_TCG: &str = "fuzz_seed=1 fuzz_count=10000";
pub const FUZZ_BOCHS: &str = "fuzz_seed=1 fuzz_count=4000";
pub const FUZZ_SMP: &[u32] = &[1, 4];
/// Scenarios QEMU TCG runs at the CPU counts listed only: `bounded` times long system calls
/// against a heartbeat on the same CPU (1) and on another one (4); `memory` exhausts each kind
/// of kernel memory from a hostile process beside a steady one (init's `program/memory.rs`);
/// `bench_boot` is the boot-only bench `cargo xtask bench` runs at more CPUs (the boot figures,
/// here at 8 CPUs).
pub const TCG_SOME_SMP_SCENARIOS: &[(&str, &[u32])] = &[("bounded", &[1, 4]), ("memory", &[1, 4]), ("bench_boot", &[8])];
/// Scenarios that also run on Bochs' Intel model at 2 CPUs: SYSRET's ring-0 #GP on a
/// non-canonical return is Intel behaviour QEMU's TCG does not reproduce. The breakpoint
/// scenarios run there in their `_watch` form (write watchpoints only): Bochs built without its
/// internal debugger re-raises #DB forever after an instruction breakpoint once it runs more
/// than one CPU (README, emulator findings).
pub const BOCHS_SCENARIOS: &[&str] = &["boot", "sysret", "ist_nesting_watch", "syscall_gap_watch"];
/// Scenarios run on Bochs' Intel model at 1 CPU: the instruction breakpoints of the breakpoint
/// scenarios, which work on Bochs with one CPU.
pub const BOCHS_UP_SCENARIOS: &[&str] = &["ist_nesting", "syscall_gap"];
/// The breakpoint scenarios in full (instruction breakpoints) at 2 CPUs on a Bochs built with
/// its internal debugger (Debian's), where they do not hit the re-firing breakpoint.
pub const BOCHS_DEBUGGER_SCENARIOS: &[&str] = &["ist_nesting", "syscall_gap"];
/// Scenarios run on Bochs `wildcat_lake` with FRED on and with FRED off. (`sysret`,
/// `ist_nesting` and `syscall_gap` test IST-only mechanisms; `mce_inject` needs QEMU's monitor.)
pub const FRED_SCENARIOS: &[&str] = &[
    "boot",
    "ipi",
    "page_fault",
    "stack_overflow",
    "timer",
    "user",
    "user_faults",
    "preempt",
    "nmi_storm",
    "nmi_backtrace",
    // The comparison's bench program: every event it times must really happen on both backends.
    "bench",
    // IPC and the servers (context switches set FRED's RSP0; the console's IRQ on Bochs).
    "ipc",
    "caps",
    "servers",
    "server_crash",
    "hazards",
    "fpu",
];
/// Scenarios run with FRED on and off at one CPU count each: `nesting` shows FRED's stack levels
/// at work, a #DB inside the NMI handler running on the NMI's level-2 stack (with FRED off it
/// runs `ist_nesting`). With more than one CPU it runs as `nesting_watch`, without the
/// instruction breakpoint (see BOCHS_SCENARIOS: this Bochs re-raises the #DB forever).
/// `memory` (memory budgets under exhaustion) runs at 4 CPUs.
pub const FRED_PAIRED_SCENARIOS: &[(&str, u32)] = &[("nesting", 1), ("nesting_watch", 4), ("memory", 4)];
/// IST-only mechanisms on the FRED model with FRED off (there is no SYSCALL gap under FRED):
/// `syscall_gap` at 1 CPU, its watchpoint form at 4.
pub const FRED_OFF_SCENARIOS: &[(&str, u32)] = &[("syscall_gap", 1), ("syscall_gap_watch", 4)];
/// CPU counts of the FRED on/off matrix.
pub const FRED_SMP: &[u32] = &[1, 4];
/// Through UEFI (OVMF and the genuine Limine's UEFI loader), with `LIMINE_DIR`: the kernel up,
/// and user space with its servers. OVMF alone takes about 5 s under TCG.
pub const UEFI_CASES: &[(&str, u32)] = &[("boot", 1), ("boot", 4), ("servers", 4)];
pub const UEFI_TIMEOUT: Duration = Duration::from_secs(90);
/// CPU counts of the QEMU TCG matrix.
pub const TCG_SMP: &[u32] = &[1, 2, 4, 8];
/// Many CPUs: `boot` (every CPU online, one entry area each) on QEMU TCG. 64 CPUs reach READY
/// in about 3 s on two host cores, so they run every time.
pub const MANY_CPUS_SMP: &[u32] = &[64];
/// The slow tier (`cargo xtask test --slow`): `boot` at 256 CPUs, and at 300, past the 255
/// an xAPIC can address (x2APIC IDs; QEMU adds an interrupt-remapping IOMMU). 20 to 30 s each
/// to READY on two host cores, more on a busy host.
pub const SLOW_SMP: &[u32] = &[256, 300];
/// The time limit of a many-CPU boot.
pub const MANY_CPUS_TIMEOUT: Duration = Duration::from_secs(240);
/// The Bochs CPU model that offers FRED (CPUID.(7,1).EAX bit 17) in a FRED-enabled build.
pub const BOCHS_FRED_MODEL: &str = "wildcat_lake";
/// An Intel 64-bit model without FRED that every Bochs since 2.7 knows.
pub const BOCHS_IST_MODEL: &str = "tigerlake";

/// QEMU's CPU model for an accelerator. Under KVM, `-cpu host` aborts on these AMD hosts
/// ("failed to set MSR 0x10a") unless `arch-capabilities` is removed.
pub fn qemu_cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Tcg => "max",
        Accel::Kvm => "host,-arch-capabilities",
    }
}

/// The default time limit of one boot. KVM cases run only where the probe found KVM faster
/// than TCG (a nested KVM slower than TCG, where GRUB alone took minutes, is skipped); Bochs
/// interprets everything.
pub fn default_timeout(emulator: Emulator) -> Duration {
    match emulator {
        Emulator::Qemu(Accel::Tcg) => Duration::from_secs(60),
        Emulator::Qemu(Accel::Kvm) => Duration::from_secs(120),
        Emulator::Bochs => Duration::from_secs(240),
    }
}

impl Case {
    fn new(emulator: Emulator, smp: u32, scenario: &'static str) -> Case {
        let cpu_model = match emulator {
            Emulator::Qemu(accel) => qemu_cpu_model(accel),
            Emulator::Bochs => BOCHS_IST_MODEL,
        };
        let expected_entry = match emulator {
            // TCG emulates no FRED (checked on QEMU 10 and 11).
            Emulator::Qemu(Accel::Tcg) => Some(Backend::Ist),
            Emulator::Qemu(Accel::Kvm) => None,
            Emulator::Bochs => Some(Backend::Ist),
        };
        Case {
            emulator,
            cpu_model,
            fred: false,
            smp,
            scenario,
            extra_cmdline: "",
            expected_entry,
            boot_path: BootPath::Bridge,
            timeout: default_timeout(emulator),
            bochs_debugger: false,
            slow: false,
            firmware: Firmware::Bios,
        }
    }

    /// The kernel command line of this case (before the manifest's own CMDLINE is prepended).
    pub fn cmdline(&self) -> String {
        let mut cmdline = format!("test={}", self.scenario);
        if !self.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(self.extra_cmdline);
        }
        cmdline
    }

    /// What the machine must offer for this case to run.
    pub fn requirements(&self) -> Vec<Requirement> {
        let mut needs = Vec::new();
        match self.emulator {
            Emulator::Qemu(Accel::Kvm) => needs.push(Requirement::Kvm),
            Emulator::Qemu(Accel::Tcg) => {}
            Emulator::Bochs if self.cpu_model == BOCHS_FRED_MODEL => {
                needs.push(Requirement::FredBochs)
            }
            Emulator::Bochs if self.bochs_debugger => needs.push(Requirement::DebuggerBochs),
            Emulator::Bochs => needs.push(Requirement::Bochs),
        }
        if self.boot_path == BootPath::Limine {
            needs.push(Requirement::LimineRelease);
        }
        if self.firmware == Firmware::Uefi {
            needs.push(Requirement::Ovmf);
        }
        needs
    }

    /// A short name that is unique in the matrix and safe as a file name.
    pub fn id(&self) -> String {
        self.to_string().replace(['=', ' ', ','], "-")
    }

    /// Whether `filter` (a substring; `,` separates alternatives) selects this case.
    pub fn matches(&self, filter: &str) -> bool {
        let label = self.to_string();
        filter
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .any(|f| label.contains(f))
    }
}

impl fmt::Display for Case {
    /// `qemu-tcg smp=4 boot`, `bochs wildcat_lake fred=on smp=1 boot`, `qemu-tcg limine smp=4 boot`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.emulator {
            Emulator::Qemu(Accel::Tcg) => write!(f, "qemu-tcg")?,
            Emulator::Qemu(Accel::Kvm) => write!(f, "qemu-kvm")?,
            Emulator::Bochs => {
                write!(f, "bochs {}", self.cpu_model)?;
                if self.cpu_model == BOCHS_FRED_MODEL {
                    write!(f, " fred={}", if self.fred { "on" } else { "off" })?;
                }
                if self.bochs_debugger {
                    write!(f, " debugger-build")?;
                }
            }
        }
        if self.boot_path == BootPath::Limine {
            write!(f, " limine")?;
        }
        if self.firmware == Firmware::Uefi {
            write!(f, " uefi")?;
        }
        write!(f, " smp={} {}", self.smp, self.scenario)?;
        if !self.extra_cmdline.is_empty() {
            write!(f, " {}", self.extra_cmdline)?;
        }
        Ok(())
    }
}

/// The boot matrix, in the order results are reported.
///
/// - every scenario on QEMU TCG at 1, 2, 4 and 8 CPUs (the bridge path), `boot` at 64 CPUs
///   and, in the slow tier, at 256 and 300, and `boot` with `entry=fred` at 2 (TCG has no
///   FRED: the kernel must say so and use IST);
/// - `boot` on KVM at 4 CPUs, skipped unless xtask's KVM probe (a boot sector under TCG and
///   KVM, seconds, remembered per machine) finds KVM working and faster than TCG. Only `boot`:
///   KVM proves the kernel runs on a real CPU model and leaves the scenarios to TCG;
/// - `boot` through a genuine Limine release at 4 CPUs, and through UEFI (OVMF, Limine's UEFI
///   loader) `boot` at 1 and 4 and `servers` at 4 (all skipped without `LIMINE_DIR`);
/// - `boot`, `sysret` and the breakpoint scenarios' `_watch` forms on Bochs' Intel `tigerlake`
///   at 2 CPUs, the breakpoint scenarios themselves at 1 CPU, and at 2 CPUs on a Bochs built
///   with its debugger (Debian's): the IST backend on an Intel CPU model;
/// - the FRED scenarios on Bochs `wildcat_lake` with FRED on and off at 1 and 4 CPUs (skipped
///   without a FRED-capable Bochs).
pub fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for &smp in TCG_SMP {
        for &scenario in SCENARIOS {
            cases.push(Case::new(Emulator::Qemu(Accel::Tcg), smp, scenario));
        }
    }
    for &smp in FUZZ_SMP {
        cases.push(Case { extra_cmdline: FUZZ_TCG, timeout: FUZZ_TIMEOUT, ..Case::new(Emulator::Qemu(Accel::Tcg), smp, "fuzz") });
    }
    for &(scenario, counts) in TCG_SOME_SMP_SCENARIOS {
        for &smp in counts {
            cases.push(Case::new(Emulator::Qemu(Accel::Tcg), smp, scenario));
        }
    }
    for &smp in MANY_CPUS_SMP {
        cases.push(Case::new(Emulator::Qemu(Accel::Tcg), smp, "boot"));
    }
    for &smp in SLOW_SMP {
        cases.push(Case { slow: true, timeout: MANY_CPUS_TIMEOUT, ..Case::new(Emulator::Qemu(Accel::Tcg), smp, "boot") });
    }
    // `entry=fred` where there is no FRED: the error, then IST.
    cases.push(Case { extra_cmdline: "entry=fred", ..Case::new(Emulator::Qemu(Accel::Tcg), 2, "boot") });
    cases.push(Case::new(Emulator::Qemu(Accel::Kvm), 4, "boot"));
    cases.push(Case {
        boot_path: BootPath::Limine,
        ..Case::new(Emulator::Qemu(Accel::Tcg), 4, "boot")
    });
    for &(scenario, smp) in UEFI_CASES {
        cases.push(Case {
            boot_path: BootPath::Limine,
            firmware: Firmware::Uefi,
            timeout: UEFI_TIMEOUT,
            ..Case::new(Emulator::Qemu(Accel::Tcg), smp, scenario)
        });
    }
    for &scenario in BOCHS_SCENARIOS {
        cases.push(Case::new(Emulator::Bochs, 2, scenario));
    }
    for &smp in BOCHS_HOSTILE_SMP {
        for &scenario in BOCHS_HOSTILE_SCENARIOS {
            cases.push(Case::new(Emulator::Bochs, smp, scenario));
        }
    }
    for &smp in FUZZ_SMP {
        cases.push(Case { extra_cmdline: FUZZ_BOCHS, timeout: FUZZ_TIMEOUT, ..Case::new(Emulator::Bochs, smp, "fuzz") });
    }
    for &scenario in BOCHS_UP_SCENARIOS {
        cases.push(Case::new(Emulator::Bochs, 1, scenario));
    }
    for &scenario in BOCHS_DEBUGGER_SCENARIOS {
        cases.push(Case { bochs_debugger: true, ..Case::new(Emulator::Bochs, 2, scenario) });
    }
    // The same CPU model with FRED on and off: both backends on identical (emulated) hardware.
    for &(scenario, smp) in FRED_PAIRED_SCENARIOS {
        for fred in [true, false] {
            cases.push(Case {
                cpu_model: BOCHS_FRED_MODEL,
                fred,
                expected_entry: Some(if fred { Backend::Fred } else { Backend::Ist }),
                ..Case::new(Emulator::Bochs, smp, scenario)
            });
        }
    }
    for &(scenario, smp) in FRED_OFF_SCENARIOS {
        cases.push(Case {
            cpu_model: BOCHS_FRED_MODEL,
            expected_entry: Some(Backend::Ist),
            ..Case::new(Emulator::Bochs, smp, scenario)
        });
    }
    for &smp in FUZZ_SMP {
        for fred in [true, false] {
            cases.push(Case {
                cpu_model: BOCHS_FRED_MODEL,
                fred,
                expected_entry: Some(if fred { Backend::Fred } else { Backend::Ist }),
                extra_cmdline: FUZZ_BOCHS,
                timeout: FUZZ_TIMEOUT,
                ..Case::new(Emulator::Bochs, smp, "fuzz")
            });
        }
    }
    for &smp in FRED_SMP {
        for &scenario in FRED_SCENARIOS {
            for fred in [true, false] {
                cases.push(Case {
                    cpu_model: BOCHS_FRED_MODEL,
                    fred,
                    expected_entry: Some(if fred { Backend::Fred } else { Backend::Ist }),
                    ..Case::new(Emulator::Bochs, smp, scenario)
                });
            }
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn case_ids_are_unique() {
        let cases = matrix();
        let ids: HashSet<String> = cases.iter().map(Case::id).collect();
        assert_eq!(ids.len(), cases.len());
    }

    #[test]
    fn tcg_runs_every_scenario_at_every_cpu_count() {
        let cases = matrix();
        for &smp in TCG_SMP {
            for &scenario in SCENARIOS {
                assert!(
                    cases
                        .iter()
                        .any(|c| c.emulator == Emulator::Qemu(Accel::Tcg)
                            && c.boot_path == BootPath::Bridge
                            && c.smp == smp
                            && c.scenario == scenario),
                    "missing qemu-tcg smp={smp} {scenario}"
                );
            }
        }
    }

    #[test]
    fn tcg_runs_the_partial_scenarios_at_their_cpu_counts_only() {
        let cases = matrix();
        for &(scenario, counts) in TCG_SOME_SMP_SCENARIOS {
            let mut got: Vec<u32> =
                cases.iter().filter(|c| c.scenario == scenario && c.emulator == Emulator::Qemu(Accel::Tcg)).map(|c| c.smp).collect();
            got.sort();
            assert_eq!(got, counts, "{scenario}");
        }
    }

    #[test]
    fn fred_model_cases_need_a_fred_bochs_and_run_each_scenario_fred_on_and_off() {
        let fred_cases: Vec<Case> = matrix()
            .into_iter()
            .filter(|c| c.cpu_model == BOCHS_FRED_MODEL)
            .collect();
        assert_eq!(
            fred_cases.len(),
            FRED_SCENARIOS.len() * 2 * FRED_SMP.len()
                + FRED_PAIRED_SCENARIOS.len() * 2
                + FRED_OFF_SCENARIOS.len()
                + FUZZ_SMP.len() * 2
        );
        for case in fred_cases.iter().filter(|c| !FRED_OFF_SCENARIOS.iter().any(|&(s, _)| s == c.scenario)) {
            assert_eq!(case.requirements(), vec![Requirement::FredBochs]);
            let want = if case.fred { Backend::Fred } else { Backend::Ist };
            assert_eq!(case.expected_entry, Some(want));
            let twin = fred_cases.iter().find(|c| c.fred != case.fred && c.smp == case.smp && c.scenario == case.scenario);
            assert!(twin.is_some(), "{case} has no twin with FRED {}", if case.fred { "off" } else { "on" });
        }
    }

    #[test]
    fn bochs_cases_with_more_than_one_cpu_set_no_instruction_breakpoint() {
        // (A Bochs built with its debugger commits RIP after the #DB and runs them fine.)
        for case in matrix().iter().filter(|c| c.emulator == Emulator::Bochs && c.smp > 1 && !c.bochs_debugger) {
            assert!(!["ist_nesting", "syscall_gap", "nesting"].contains(&case.scenario), "{case}");
        }
    }

    #[test]
    fn fuzz_cases_name_their_seed_so_a_failure_repeats() {
        let fuzz: Vec<Case> = matrix().into_iter().filter(|c| c.scenario == "fuzz").collect();
        assert_eq!(fuzz.len(), FUZZ_SMP.len() * 4, "TCG, tigerlake, FRED on and off at each count");
        for case in &fuzz {
            assert!(case.cmdline().contains("fuzz_seed=") && case.cmdline().contains("fuzz_count="), "{case}");
        }
        assert!(fuzz.iter().any(|c| c.to_string() == "qemu-tcg smp=4 fuzz fuzz_seed=1 fuzz_count=10000"));
    }

    #[test]
    fn many_cpu_boots_cover_64_every_time_and_256_and_300_in_the_slow_tier() {
        let boots: Vec<(u32, bool)> = matrix()
            .into_iter()
            .filter(|c| c.emulator == Emulator::Qemu(Accel::Tcg) && c.scenario == "boot" && c.smp > 8)
            .map(|c| (c.smp, c.slow))
            .collect();
        assert_eq!(boots, [(64, false), (256, true), (300, true)]);
    }

    #[test]
    fn limine_cases_need_a_release_and_uefi_ones_ovmf_too() {
        let limine: Vec<Case> = matrix()
            .into_iter()
            .filter(|c| c.boot_path == BootPath::Limine)
            .collect();
        assert_eq!(limine.len(), 1 + UEFI_CASES.len());
        assert!(limine.iter().all(|c| c.requirements().contains(&Requirement::LimineRelease)));
        let uefi: Vec<&Case> = limine.iter().filter(|c| c.firmware == Firmware::Uefi).collect();
        assert_eq!(uefi.len(), UEFI_CASES.len());
        assert!(uefi.iter().all(|c| c.requirements().contains(&Requirement::Ovmf)));
    }

    #[test]
    fn the_bridge_is_never_booted_through_uefi() {
        assert!(matrix().iter().all(|c| c.firmware == Firmware::Bios || c.boot_path == BootPath::Limine));
    }

    #[test]
    fn labels_read_as_documented() {
        let cases = matrix();
        let labels: Vec<String> = cases.iter().map(Case::to_string).collect();
        assert!(labels.contains(&"qemu-tcg smp=4 boot".to_string()));
        assert!(labels.contains(&"bochs wildcat_lake fred=on smp=1 boot".to_string()));
        assert!(labels.contains(&"qemu-tcg limine smp=4 boot".to_string()));
        assert!(labels.contains(&"qemu-tcg limine uefi smp=4 servers".to_string()));
    }

    #[test]
    fn filter_matches_substrings_and_alternatives() {
        let case = Case::new(Emulator::Qemu(Accel::Tcg), 2, "timer");
        assert!(case.matches("timer"));
        assert!(case.matches("smp=2 timer"));
        assert!(case.matches("bochs, qemu-tcg"));
        assert!(!case.matches("bochs"));
        assert!(!case.matches(""));
    }

    #[test]
    fn cmdline_starts_with_the_scenario() {
        let mut case = Case::new(Emulator::Bochs, 2, "ipi");
        assert_eq!(case.cmdline(), "test=ipi");
        case.extra_cmdline = "entry=ist";
        assert_eq!(case.cmdline(), "test=ipi entry=ist");
    }
}
