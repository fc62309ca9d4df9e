//! Booting an ISO in QEMU or Bochs under a time limit, with the serial log (COM1) captured and,
//! for `run`, streamed live.
//!
//! QEMU writes COM1 to its stdout (`-serial stdio`); Bochs writes it to a file, which is tailed.
//! Each emulator runs in its own process group with stdin closed (so it never competes for the
//! terminal), and the whole group is killed on timeout or when xtask itself is interrupted.

use crate::bochs::{Bochs, BootMedium};
use crate::util::Result;
use boot_tests::{Accel, Emulator, Firmware, Outcome};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The machine an ISO boots on.
#[derive(Clone, Debug)]
pub struct Machine {
    pub emulator: Emulator,
    pub cpu_model: String,
    /// Bochs: add `exclude_features="fred"` to the CPU model (the IST twin of a FRED model).
    pub exclude_fred: bool,
    pub smp: u32,
    /// Which Bochs (required when `emulator` is Bochs).
    pub bochs: Option<Bochs>,
}

/// How long to let a machine run on after the kernel announced its end (a verdict line, a
/// panic), before it counts as not shutting down.
const GRACE_AFTER_END: Duration = Duration::from_secs(10);

pub struct BootLimits {
    pub timeout: Option<Duration>,
    /// The scenario that was asked for: once its verdict line (or a panic) is printed the
    /// machine should stop by itself, and is killed after [`GRACE_AFTER_END`] if it does not.
    pub scenario: Option<String>,
    /// Copy the serial log to stdout as it arrives (and the emulator's stderr to ours).
    pub echo: bool,
}

impl BootLimits {
    /// Whether the scenario needs machine checks injected from the host (QEMU only).
    fn injects_mce(&self) -> bool {
        self.scenario.as_deref() == Some(abi::harness::MCE_INJECT_SCENARIO)
    }
}

/// QEMU monitor commands that raise one recoverable machine check on each CPU: bank 1,
/// IA32_MCi_STATUS = VAL | UC | EN, MCG_STATUS = RIPV | MCIP (QEMU's `mce` command; an
/// uncorrected error is what makes it deliver #MC rather than only log it).
pub fn mce_commands(smp: u32) -> Vec<String> {
    (0..smp).map(|cpu| format!("mce {cpu} 1 0xb000000000000000 0x5 0 0")).collect()
}

pub struct BootResult {
    pub serial: String,
    pub outcome: Outcome,
    /// What the emulator itself printed (errors, warnings), for failure reports.
    pub emulator_output: String,
    pub elapsed: Duration,
    pub serial_log: PathBuf,
    /// When each line of `serial` arrived, from the emulator's start.
    pub line_times: Vec<Duration>,
}

/// The most CPUs QEMU numbers with APIC IDs an xAPIC can address (0 to 254; 255 is the
/// broadcast ID). Above it the guest needs x2APIC, and QEMU accepts such a machine only with an
/// IOMMU that remaps interrupts in extended (x2APIC) mode, which needs a split irqchip under KVM.
pub const XAPIC_MAX_CPUS: u32 = 255;

/// Guest memory for `smp` CPUs: 256 MiB, and 512 KiB more for every CPU beyond 64 (each CPU
/// costs about 280 KiB: its entry area, kernel stack and page tables, and the bridge's AP stack).
pub fn qemu_memory_mib(smp: u32) -> u32 {
    256 + smp.saturating_sub(64) / 2
}

/// The `qemu-system-x86_64` arguments for `machine` booting `iso`. The debug-exit device lets a
/// test scenario end QEMU with its verdict as the exit status.
pub fn qemu_args(machine: &Machine, iso: &Path) -> Vec<String> {
    let many_cpus = machine.smp > XAPIC_MAX_CPUS;
    let mut args: Vec<String> = vec!["-M".into(), if many_cpus { "q35,kernel-irqchip=split" } else { "q35" }.into()];
    if let Emulator::Qemu(Accel::Kvm) = machine.emulator {
        args.extend(["-accel", "kvm"].map(String::from));
    }
    let mut cpu = machine.cpu_model.clone();
    if many_cpus && !cpu.split(',').any(|f| f == "+x2apic") {
        cpu.push_str(",+x2apic");
    }
    args.extend(["-cpu".to_string(), cpu, "-smp".to_string(), machine.smp.to_string()]);
    if many_cpus {
        args.extend(["-device", "intel-iommu,intremap=on,eim=on"].map(String::from));
    }
    args.extend([
        "-m".to_string(),
        format!("{}M", qemu_memory_mib(machine.smp)),
        "-cdrom".to_string(),
        iso.display().to_string(),
        "-serial".to_string(),
        "stdio".to_string(),
        "-display".to_string(),
        "none".to_string(),
        "-no-reboot".to_string(),
        "-device".to_string(),
        format!(
            "isa-debug-exit,iobase={:#x},iosize=0x04",
            abi::harness::QEMU_DEBUG_EXIT_PORT
        ),
    ]);
    if let Emulator::Qemu(Accel::Kvm) = machine.emulator {
        // Under nested KVM a Limine BIOS boot hangs after its VGA mode set without this.
        args.extend(["-vga", "none"].map(String::from));
    }
    args
}

/// The firmware arguments: none for SeaBIOS (QEMU's default), OVMF as the BIOS image for UEFI.
pub fn firmware_args(firmware: Firmware) -> Vec<String> {
    match firmware {
        Firmware::Bios => Vec::new(),
        Firmware::Uefi => vec!["-bios".into(), crate::tools::OVMF_FD.into()],
    }
}

/// QEMU's gdb stub on `127.0.0.1:port` (not reachable from other machines), with every CPU
/// stopped before the first firmware instruction until gdb says `continue`.
pub fn gdb_args(port: u16) -> Vec<String> {
    vec!["-gdb".into(), format!("tcp:127.0.0.1:{port}"), "-S".into()]
}

/// Whether /dev/kvm can be opened for reading and writing (what QEMU needs).
pub fn kvm_accessible() -> std::result::Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/kvm: {e}"))
}

// --- process groups and interruption -------------------------------------------------------

const MAX_CHILDREN: usize = 16;
static CHILD_GROUPS: [AtomicI32; MAX_CHILDREN] = [const { AtomicI32::new(0) }; MAX_CHILDREN];
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

extern "C" fn on_interrupt(sig: i32) {
    for slot in &CHILD_GROUPS {
        let group = slot.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill is async-signal-safe; `group` is a process group we created.
            unsafe { kill(-group, SIGKILL) };
        }
    }
    // SAFETY: _exit is async-signal-safe and ends the process without running destructors.
    unsafe { _exit(128 + sig) }
}

/// Makes Ctrl-C (and SIGTERM) take the emulators down with xtask: they live in their own
/// process groups, so the terminal's signal does not reach them.
pub fn kill_children_on_interrupt() {
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: the handler only calls async-signal-safe functions (kill, _exit).
        unsafe { signal(sig, on_interrupt) };
    }
}

struct GroupGuard(usize);

impl GroupGuard {
    fn register(pid: u32) -> GroupGuard {
        for (i, slot) in CHILD_GROUPS.iter().enumerate() {
            if slot
                .compare_exchange(0, pid as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return GroupGuard(i);
            }
        }
        GroupGuard(usize::MAX)
    }

    fn kill(&self, pid: u32) {
        // SAFETY: the child leads its own process group (process_group(0)), so -pid names
        // exactly the emulator and anything it started.
        unsafe { kill(-(pid as i32), SIGKILL) };
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(slot) = CHILD_GROUPS.get(self.0) {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

// --- booting -----------------------------------------------------------------------------

fn plain_path(path: &Path) -> Result<()> {
    let text = path.display().to_string();
    if text.contains(|c: char| c.is_whitespace() || c == ',' || c == '"') {
        return Err(format!(
            "{text}: Bochs configuration paths must not contain spaces, commas or quotes"
        ));
    }
    Ok(())
}

/// Boots `iso` on `machine`, keeping files (serial log, bochsrc, ...) in `work_dir`.
pub fn boot(
    machine: &Machine,
    iso: &Path,
    work_dir: &Path,
    limits: &BootLimits,
) -> Result<BootResult> {
    boot_with(machine, iso, work_dir, limits, &[])
}

/// [`boot`] with `qemu_extra` appended to QEMU's arguments (`cargo xtask bench`: `-icount`).
pub fn boot_with(
    machine: &Machine,
    iso: &Path,
    work_dir: &Path,
    limits: &BootLimits,
    qemu_extra: &[String],
) -> Result<BootResult> {
    std::fs::create_dir_all(work_dir)
        .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
    let serial_log = work_dir.join("serial.log");
    let _ = std::fs::remove_file(&serial_log);
    let (mut command, tail_serial) = match machine.emulator {
        Emulator::Qemu(_) => {
            let mut command = Command::new("qemu-system-x86_64");
            command.args(qemu_args(machine, iso)).args(qemu_extra);
            if limits.injects_mce() {
                let socket = work_dir.join("monitor.sock");
                let _ = std::fs::remove_file(&socket);
                command.arg("-monitor").arg(format!("unix:{},server,nowait", socket.display()));
            }
            (command, false)
        }
        Emulator::Bochs => {
            let bochs = machine
                .bochs
                .as_ref()
                .ok_or("internal: Bochs machine without a Bochs")?;
            plain_path(iso)?;
            plain_path(work_dir)?;
            let config = bochs.config(
                &machine.cpu_model,
                machine.exclude_fred,
                machine.smp,
                &BootMedium::Cdrom(iso.to_path_buf()),
                work_dir,
            );
            std::fs::write(work_dir.join("bochsrc"), config)
                .map_err(|e| format!("cannot write the bochsrc: {e}"))?;
            (bochs.command(work_dir)?, true)
        }
    };
    let monitor = (limits.injects_mce() && matches!(machine.emulator, Emulator::Qemu(_)))
        .then(|| (work_dir.join("monitor.sock"), mce_commands(machine.smp)));
    run_streaming(&mut command, &serial_log, tail_serial, limits, monitor)
}

/// Sends `commands` to the QEMU monitor listening on `socket`.
fn send_monitor(socket: &Path, commands: &[String]) -> Result<()> {
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("QEMU monitor at {}: {e}", socket.display()))?;
    for c in commands {
        stream.write_all(format!("{c}\n").as_bytes()).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

fn reader(
    mut pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Chunk>,
    wrap: fn(Vec<u8>) -> Chunk,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(wrap(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// The line that means the kernel is done, if the log has one: the scenario's verdict line, or
/// a panic.
fn end_marker(serial: &str, scenario: &str) -> bool {
    let pass = format!("TEST {scenario}: PASS");
    let fail = format!("TEST {scenario}: FAIL");
    serial
        .lines()
        .any(|l| l.contains(&pass) || l.contains(&fail) || l.contains("PANIC"))
}

fn run_streaming(
    command: &mut Command,
    serial_log: &Path,
    tail_serial: bool,
    limits: &BootLimits,
    mut monitor: Option<(PathBuf, Vec<String>)>,
) -> Result<BootResult> {
    use std::os::unix::process::CommandExt;
    let shown = crate::util::show(command);
    let start = Instant::now();
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let pid = child.id();
    let group = GroupGuard::register(pid);
    let (tx, rx) = mpsc::channel();
    reader(
        child.stdout.take().expect("piped"),
        tx.clone(),
        Chunk::Stdout,
    );
    reader(child.stderr.take().expect("piped"), tx, Chunk::Stderr);

    let mut serial: Vec<u8> = Vec::new();
    let mut emulator_output: Vec<u8> = Vec::new();
    let mut serial_file = if tail_serial {
        None
    } else {
        Some(std::fs::File::create(serial_log).map_err(|e| e.to_string())?)
    };
    let mut tail: Option<std::fs::File> = None;
    let mut deadline = limits.timeout.map(|t| start + t);
    let mut ended = false;
    let stdout = std::io::stdout();
    let line_times = std::cell::RefCell::new(Vec::new());

    let take_serial = |bytes: &[u8], serial: &mut Vec<u8>| {
        let now = start.elapsed();
        line_times.borrow_mut().extend(bytes.iter().filter(|&&b| b == b'\n').map(|_| now));
        if limits.echo {
            let mut out = stdout.lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
        serial.extend_from_slice(bytes);
    };

    let outcome = loop {
        // Gather what arrived: pipes, and for Bochs the growing COM1 file.
        let mut got_any = false;
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => {
                got_any = true;
                let mut chunks = vec![chunk];
                chunks.extend(rx.try_iter());
                for chunk in chunks {
                    match chunk {
                        Chunk::Stdout(bytes) if !tail_serial => {
                            if let Some(file) = serial_file.as_mut() {
                                let _ = file.write_all(&bytes);
                            }
                            take_serial(&bytes, &mut serial);
                        }
                        Chunk::Stdout(bytes) => emulator_output.extend_from_slice(&bytes),
                        Chunk::Stderr(bytes) => {
                            if limits.echo && !tail_serial {
                                let _ = std::io::stderr().write_all(&bytes);
                            }
                            emulator_output.extend_from_slice(&bytes)
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
        if tail_serial {
            if tail.is_none() {
                tail = std::fs::File::open(serial_log).ok();
            }
            if let Some(file) = tail.as_mut() {
                let mut bytes = Vec::new();
                let _ = file.read_to_end(&mut bytes);
                if !bytes.is_empty() {
                    got_any = true;
                    take_serial(&bytes, &mut serial);
                }
            }
        }
        if got_any && monitor.is_some() && String::from_utf8_lossy(&serial).contains(abi::harness::MCE_INJECT_MARKER) {
            let (socket, commands) = monitor.take().expect("checked");
            if let Err(e) = send_monitor(&socket, &commands) {
                emulator_output.extend_from_slice(format!("xtask: cannot inject machine checks: {e}\n").as_bytes());
            }
        }
        if got_any && !ended {
            if let Some(scenario) = &limits.scenario {
                if end_marker(&String::from_utf8_lossy(&serial), scenario) {
                    ended = true;
                    let grace = Instant::now() + GRACE_AFTER_END;
                    deadline = Some(deadline.map_or(grace, |d| d.min(grace)));
                }
            }
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Outcome::Exited(status.code());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            group.kill(pid);
            let _ = child.wait();
            break Outcome::TimedOut;
        }
    };
    // What was still in the pipes when the emulator ended: the readers stop at end of file
    // (unless something the emulator started still holds a pipe, hence the bound).
    let drain_until = Instant::now() + Duration::from_secs(2);
    while let Ok(chunk) = rx.recv_timeout(drain_until.saturating_duration_since(Instant::now())) {
        match chunk {
            Chunk::Stdout(bytes) if !tail_serial => {
                if let Some(file) = serial_file.as_mut() {
                    let _ = file.write_all(&bytes);
                }
                take_serial(&bytes, &mut serial);
            }
            Chunk::Stdout(bytes) | Chunk::Stderr(bytes) => {
                emulator_output.extend_from_slice(&bytes)
            }
        }
    }
    if tail_serial {
        if let Ok(mut file) = std::fs::File::open(serial_log) {
            let _ = file.seek(SeekFrom::Start(serial.len() as u64));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            take_serial(&bytes, &mut serial);
        }
    }
    drop(group);
    Ok(BootResult {
        serial: String::from_utf8_lossy(&serial).into_owned(),
        outcome,
        emulator_output: String::from_utf8_lossy(&emulator_output).into_owned(),
        elapsed: start.elapsed(),
        serial_log: serial_log.to_path_buf(),
        line_times: line_times.into_inner(),
    })
}

/// What the emulator printed, less its banners and routine chatter (Bochs' header and plugin
/// lines, ALSA complaining about a missing sound card, QEMU's KVM CPU-count hint).
pub fn notable_output(text: &str) -> String {
    const NOISE: &[&str] = &[
        "Bochs x86 Emulator",
        "Built from",
        "Compiled on",
        "Timestamp:",
        "using log file",
        "LTDL_LIBRARY_PATH",
        "lt_dlhandle",
        "[PLUGIN]",
        "installing ",
        "ALSA lib",
        "quit_sim called",
        "exceeds the recommended cpus supported by KVM",
    ];
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '='))
        .filter(|l| !NOISE.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(emulator: Emulator, cpu: &str) -> Machine {
        Machine {
            emulator,
            cpu_model: cpu.into(),
            exclude_fred: false,
            smp: 4,
            bochs: None,
        }
    }

    #[test]
    fn notable_output_keeps_the_reason_bochs_stopped() {
        let text = "00000000000i[      ] using log file /x/bochs.log\n\
                    ========================================================================\n\
                    Bochs is exiting with the following message:\n\
                    [UNMAP ] Shutdown port: shutdown requested\n\
                    ========================================================================\n\
                    \x20                    Bochs x86 Emulator 3.0.devel\n\
                    ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM default\n";
        assert_eq!(
            notable_output(text),
            "Bochs is exiting with the following message:\n[UNMAP ] Shutdown port: shutdown requested"
        );
    }

    #[test]
    fn qemu_tcg_command_line_is_the_documented_one() {
        let args = qemu_args(
            &machine(Emulator::Qemu(Accel::Tcg), "max"),
            Path::new("/x.iso"),
        );
        assert_eq!(
            args.join(" "),
            "-M q35 -cpu max -smp 4 -m 256M -cdrom /x.iso -serial stdio -display none -no-reboot \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04"
        );
    }

    #[test]
    fn qemu_kvm_adds_accel_and_drops_vga() {
        let args = qemu_args(
            &machine(Emulator::Qemu(Accel::Kvm), "host,-arch-capabilities"),
            Path::new("/x.iso"),
        );
        let line = args.join(" ");
        assert!(
            line.starts_with("-M q35 -accel kvm -cpu host,-arch-capabilities "),
            "{line}"
        );
        assert!(line.ends_with(" -vga none"), "{line}");
    }

    #[test]
    fn more_than_255_cpus_get_x2apic_an_interrupt_remapping_iommu_and_more_memory() {
        let mut m = machine(Emulator::Qemu(Accel::Tcg), "max");
        m.smp = 300;
        let line = qemu_args(&m, Path::new("/x.iso")).join(" ");
        assert!(
            line.starts_with("-M q35,kernel-irqchip=split -cpu max,+x2apic -smp 300 -device intel-iommu,intremap=on,eim=on -m 374M "),
            "{line}"
        );
        m.smp = XAPIC_MAX_CPUS;
        let line = qemu_args(&m, Path::new("/x.iso")).join(" ");
        assert!(line.starts_with("-M q35 -cpu max -smp 255 -m 351M "), "{line}");
        assert!(!line.contains("iommu"), "{line}");
    }

    #[test]
    fn uefi_boots_with_debians_ovmf_and_bios_with_qemus_default() {
        assert!(firmware_args(Firmware::Bios).is_empty());
        assert_eq!(firmware_args(Firmware::Uefi), ["-bios", "/usr/share/ovmf/OVMF.fd"]);
    }

    #[test]
    fn gdb_stub_listens_on_localhost_only_with_the_cpus_stopped() {
        assert_eq!(gdb_args(1234), ["-gdb", "tcp:127.0.0.1:1234", "-S"]);
    }

    #[test]
    fn end_marker_sees_verdicts_and_panics_of_the_scenario() {
        assert!(end_marker("x\nTEST boot: PASS\n", "boot"));
        assert!(end_marker("TEST boot: FAIL why\n", "boot"));
        assert!(end_marker("[cpu 0] ERROR kernel: PANIC at x\n", "timer"));
        assert!(!end_marker("TEST boot: PASS\n", "timer"));
        assert!(!end_marker("READY cpus=1/1 entry=ist servers=\n", "boot"));
    }

    #[test]
    fn timeout_kills_the_process_group_and_keeps_the_output() {
        let dir = std::env::temp_dir().join(format!("xtask-emulator-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("serial.log");
        let mut command = Command::new("sh");
        // The grandchild `sleep` must die with the group, or the pipe would stay open.
        command.args(["-c", "echo booting; sleep 30 & echo started; wait"]);
        let limits = BootLimits {
            timeout: Some(Duration::from_millis(500)),
            scenario: None,
            echo: false,
        };
        let result = run_streaming(&mut command, &log, false, &limits, None).unwrap();
        assert_eq!(result.outcome, Outcome::TimedOut);
        assert_eq!(result.serial, "booting\nstarted\n");
        assert!(result.elapsed < Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "booting\nstarted\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mce_injection_raises_one_recoverable_machine_check_per_cpu() {
        let c = mce_commands(2);
        assert_eq!(c, ["mce 0 1 0xb000000000000000 0x5 0 0", "mce 1 1 0xb000000000000000 0x5 0 0"]);
    }

    #[test]
    fn exit_status_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-emulator-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo 'TEST boot: PASS'; echo oops >&2; exit 33"]);
        let limits = BootLimits {
            timeout: Some(Duration::from_secs(10)),
            scenario: Some("boot".into()),
            echo: false,
        };
        let result = run_streaming(&mut command, &dir.join("serial.log"), false, &limits, None).unwrap();
        assert_eq!(result.outcome, Outcome::Exited(Some(33)));
        assert_eq!(result.serial, "TEST boot: PASS\n");
        assert_eq!(result.emulator_output, "oops\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn serial_file_is_tailed() {
        let dir = std::env::temp_dir().join(format!("xtask-emulator-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("serial.log");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "printf 'one\\n' > {0}; sleep 0.2; printf 'TEST x: PASS\\n' >> {0}; echo bochs-noise",
            log.display()
        ));
        let limits = BootLimits {
            timeout: Some(Duration::from_secs(10)),
            scenario: Some("x".into()),
            echo: false,
        };
        let result = run_streaming(&mut command, &log, true, &limits, None).unwrap();
        assert_eq!(result.serial, "one\nTEST x: PASS\n");
        assert_eq!(result.outcome, Outcome::Exited(Some(0)));
        assert_eq!(result.emulator_output, "bochs-noise\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
