//! Whether QEMU's KVM accelerator is worth a boot on this machine: decided in seconds by a
//! probe of the VM itself, and remembered per machine in `target/kvm-verdict.txt`.
//!
//! The probe boots a one-sector disk whose boot sector only writes the pass value to
//! `isa-debug-exit`, once under TCG and once under KVM, with the matrix's KVM CPU model. SeaBIOS
//! runs in both, so the probe sees what a boot spends in firmware: on a healthy host KVM reaches
//! the boot sector faster than TCG; under a nested hypervisor that exits on every firmware
//! access it is slower than TCG (3 to 4 s against 0.4 s on the project's machines, where a
//! whole KVM boot then takes minutes and ends in a KVM emulation failure). KVM counts as
//! usable when the VM starts (the `-cpu` model is accepted, the VM runs), the boot sector
//! reports within [`PROBE_TIMEOUT`] and KVM is no slower than [`SLOWDOWN_LIMIT`] times TCG.

use crate::emulator;
use crate::util::{target_dir, Result};
use boot_tests::matrix::qemu_cpu_model;
use boot_tests::Accel;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One probe boot may take this long before it counts as hanging.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// KVM may be this many times slower than TCG at reaching the boot sector and still count.
pub const SLOWDOWN_LIMIT: f64 = 2.0;
/// Changes whenever the probe or its rule changes, so an old verdict is not trusted.
const PROBE_VERSION: u32 = 1;
const VERDICT_FILE: &str = "kvm-verdict.txt";

/// What the probe decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub usable: bool,
    /// What was seen, with the times: the reason shown when KVM cases are skipped.
    pub reason: String,
}

/// Whether KVM is usable here: the remembered verdict for this machine, else a fresh probe
/// (at most 2 x [`PROBE_TIMEOUT`]). `Err` carries why not.
pub fn usable() -> std::result::Result<(), String> {
    emulator::kvm_accessible()?;
    let file = target_dir().join(VERDICT_FILE);
    let key = machine_key();
    let verdict = match std::fs::read_to_string(&file).ok().and_then(|t| parse_verdict(&t, &key)) {
        Some(remembered) => Verdict {
            reason: format!(
                "{} (remembered in {}; delete it to probe again)",
                remembered.reason,
                file.display()
            ),
            ..remembered
        },
        None => {
            crate::util::step("probing KVM (a boot sector under TCG and under KVM)...");
            let verdict = probe()?;
            let _ = std::fs::create_dir_all(target_dir());
            let _ = std::fs::write(&file, format_verdict(&key, &verdict));
            crate::util::step(format!(
                "KVM {}: {}",
                if verdict.usable { "usable" } else { "not usable" },
                verdict.reason
            ));
            verdict
        }
    };
    if verdict.usable {
        Ok(())
    } else {
        Err(verdict.reason)
    }
}

/// What identifies "this machine" for a remembered verdict: the machine id, the host kernel,
/// the CPU and QEMU's version (any of them changing may change what KVM can do).
fn machine_key() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let machine_id = read("/etc/machine-id").trim().to_string();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_default();
    let qemu = crate::tools::qemu_version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_default();
    format!("probe {PROBE_VERSION}; machine {machine_id}; kernel {kernel}; cpu {cpu}; qemu {qemu}")
}

pub fn format_verdict(key: &str, verdict: &Verdict) -> String {
    format!(
        "# cargo xtask: whether KVM is usable on this machine (delete this file to probe again)\n\
         key: {key}\nusable: {}\nreason: {}\n",
        if verdict.usable { "yes" } else { "no" },
        verdict.reason.replace('\n', " ")
    )
}

/// The verdict in `text` if it was made for `key`.
pub fn parse_verdict(text: &str, key: &str) -> Option<Verdict> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    if field("key:")? != key {
        return None;
    }
    let usable = match field("usable:")? {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    Some(Verdict { usable, reason: field("reason:")?.to_string() })
}

/// A 1 MiB raw disk (SeaBIOS refuses smaller ones) whose boot sector writes the pass value to
/// `isa-debug-exit` and halts: `mov al, PASS; out PORT, al; hlt; jmp $-1`.
pub fn boot_sector_disk() -> Vec<u8> {
    let port = abi::harness::QEMU_DEBUG_EXIT_PORT;
    assert!(port <= 0xff, "the probe's `out imm8, al` needs a port below 256");
    let mut disk = vec![0u8; 1 << 20];
    let code = [0xb0, abi::harness::QEMU_EXIT_PASS, 0xe6, port as u8, 0xf4, 0xeb, 0xfd];
    disk[..code.len()].copy_from_slice(&code);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    disk
}

/// QEMU's arguments for one probe boot of `disk`.
pub fn probe_args(accel: Accel, disk: &Path) -> Vec<String> {
    let accel_name = match accel {
        Accel::Tcg => "tcg",
        Accel::Kvm => "kvm",
    };
    [
        "-M",
        "q35",
        "-accel",
        accel_name,
        "-cpu",
        qemu_cpu_model(accel),
        "-smp",
        "1",
        "-m",
        "64M",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        "-drive".to_string(),
        format!("file={},format=raw,if=ide,file.locking=off", disk.display()),
        "-device".to_string(),
        format!("isa-debug-exit,iobase={:#x},iosize=0x04", abi::harness::QEMU_DEBUG_EXIT_PORT),
    ])
    .collect()
}

/// How one probe boot went.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeRun {
    /// The boot sector reported, after this long.
    Reached(Duration),
    /// QEMU ended without the boot sector's status: its exit status and first message.
    Failed(Option<i32>, String),
    TimedOut,
}

fn run_probe(accel: Accel, disk: &Path) -> Result<ProbeRun> {
    use std::os::unix::process::CommandExt;
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(probe_args(accel, disk))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let elapsed = start.elapsed();
            if status.code() == Some(boot_tests::verdict::QEMU_PASS_STATUS) {
                return Ok(ProbeRun::Reached(elapsed));
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            let message = emulator::notable_output(&stderr).lines().next().unwrap_or("").to_string();
            return Ok(ProbeRun::Failed(status.code(), message));
        }
        if start.elapsed() >= PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(ProbeRun::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Boots the probe under TCG, then under KVM, and judges.
fn probe() -> Result<Verdict> {
    let dir = target_dir().join("kvm-probe");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let disk: PathBuf = dir.join("boot-sector.img");
    std::fs::write(&disk, boot_sector_disk()).map_err(|e| format!("cannot write {}: {e}", disk.display()))?;
    let tcg = run_probe(Accel::Tcg, &disk)?;
    let kvm = run_probe(Accel::Kvm, &disk)?;
    judge(&tcg, &kvm)
}

/// The rule: KVM must reach the boot sector, and not much slower than TCG. An `Err` means the
/// TCG reference itself failed, which says nothing about KVM (and is not remembered).
pub fn judge(tcg: &ProbeRun, kvm: &ProbeRun) -> Result<Verdict> {
    let ProbeRun::Reached(tcg_time) = tcg else {
        return Err(format!("the KVM probe's TCG reference boot did not reach its boot sector: {tcg:?}"));
    };
    let secs = |d: &Duration| d.as_secs_f64();
    let verdict = match kvm {
        ProbeRun::Reached(kvm_time) if secs(kvm_time) <= secs(tcg_time) * SLOWDOWN_LIMIT => Verdict {
            usable: true,
            reason: format!(
                "SeaBIOS reached a boot sector in {:.2} s under KVM, {:.2} s under TCG",
                secs(kvm_time),
                secs(tcg_time)
            ),
        },
        ProbeRun::Reached(kvm_time) => Verdict {
            usable: false,
            reason: format!(
                "KVM is slower than TCG here: SeaBIOS reached a boot sector in {:.1} s under KVM, \
                 {:.1} s under TCG (a nested hypervisor?), so a KVM boot would take minutes",
                secs(kvm_time),
                secs(tcg_time)
            ),
        },
        ProbeRun::Failed(status, message) => Verdict {
            usable: false,
            reason: format!(
                "QEMU with -accel kvm -cpu {} stopped (status {}){}",
                qemu_cpu_model(Accel::Kvm),
                status.map_or("signal".to_string(), |s| s.to_string()),
                if message.is_empty() { String::new() } else { format!(": {message}") }
            ),
        },
        ProbeRun::TimedOut => Verdict {
            usable: false,
            reason: format!(
                "under KVM SeaBIOS did not reach a boot sector within {} s (TCG: {:.1} s)",
                PROBE_TIMEOUT.as_secs(),
                secs(tcg_time)
            ),
        },
    };
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_disk_is_a_bootable_sector_that_reports_pass_on_the_debug_exit_port() {
        let disk = boot_sector_disk();
        assert_eq!(disk.len(), 1 << 20);
        assert_eq!(&disk[510..512], &[0x55, 0xaa]);
        // mov al, 0x10; out 0xf4, al
        assert_eq!(&disk[..4], &[0xb0, abi::harness::QEMU_EXIT_PASS, 0xe6, 0xf4]);
    }

    #[test]
    fn probe_runs_without_firmware_extras_and_with_the_matrix_cpu_model() {
        let args = probe_args(Accel::Kvm, Path::new("/t/disk.img")).join(" ");
        assert!(args.contains("-accel kvm -cpu host,-arch-capabilities -smp 1"), "{args}");
        // No NIC: SeaBIOS would try a network boot (iPXE) before giving up on the disk.
        assert!(args.contains("-nodefaults"), "{args}");
        assert!(args.contains("-drive file=/t/disk.img,format=raw,if=ide,file.locking=off"), "{args}");
        assert!(args.ends_with("-device isa-debug-exit,iobase=0xf4,iosize=0x04"), "{args}");
    }

    #[test]
    fn kvm_slower_than_tcg_is_not_usable() {
        let v = judge(&ProbeRun::Reached(Duration::from_millis(400)), &ProbeRun::Reached(Duration::from_millis(4000))).unwrap();
        assert!(!v.usable);
        assert!(v.reason.contains("slower than TCG"), "{}", v.reason);
        let fast = judge(&ProbeRun::Reached(Duration::from_millis(400)), &ProbeRun::Reached(Duration::from_millis(150))).unwrap();
        assert!(fast.usable, "{}", fast.reason);
    }

    #[test]
    fn kvm_that_stops_or_hangs_is_not_usable_and_says_why() {
        let tcg = ProbeRun::Reached(Duration::from_millis(400));
        let failed = judge(&tcg, &ProbeRun::Failed(Some(1), "failed to set MSR 0x10a".into())).unwrap();
        assert!(!failed.usable && failed.reason.contains("failed to set MSR 0x10a"), "{}", failed.reason);
        let hung = judge(&tcg, &ProbeRun::TimedOut).unwrap();
        assert!(!hung.usable && hung.reason.contains("within 20 s"), "{}", hung.reason);
    }

    #[test]
    fn a_failed_tcg_reference_decides_nothing() {
        assert!(judge(&ProbeRun::TimedOut, &ProbeRun::Reached(Duration::from_millis(100))).is_err());
    }

    #[test]
    fn remembered_verdict_holds_only_for_the_same_machine() {
        let v = Verdict { usable: false, reason: "KVM is slower than TCG here".into() };
        let text = format_verdict("probe 1; machine a", &v);
        assert_eq!(parse_verdict(&text, "probe 1; machine a"), Some(v));
        assert_eq!(parse_verdict(&text, "probe 1; machine b"), None);
        assert_eq!(parse_verdict("garbage", "probe 1; machine a"), None);
    }
}
