//! The benchmark calls (`abi::syscall::BENCH_*`, 40..=49) and the opt-ins they switch on: what
//! the `bench` program needs to time each kind of event's round trip through the entry layer.
//!
//! They are answered before the dispatcher looks up the calling thread, so `bench_null` is the
//! entry and exit path and nothing else. The opt-ins are per process and off by default: without
//! them a user INT3 or a stray page fault still kills its thread (`user_faults` relies on it).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use x86_64::registers::model_specific::Msr;

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::{apic, percpu, smp};
use crate::sched;
use abi::syscall::{self as nr, bench_counter};
use abi::Error;

/// A process's benchmark opt-ins and what they counted.
#[derive(Default)]
pub struct BenchState {
    breakpoints_resume: AtomicBool,
    /// Where a page fault that demand paging does not resolve resumes; 0: nowhere (kill).
    fault_resume_rip: AtomicU64,
    breakpoints: AtomicU64,
    faults_resumed: AtomicU64,
}

/// How long `bench_self_nmi` waits for its NMI, in loop iterations.
const NMI_WAIT_SPINS: u64 = 10_000_000;

/// Runs benchmark call `frame.rax` (in 40..=49) and puts the result in RAX.
pub fn dispatch(frame: &mut TrapFrame) {
    let result = match frame.rax {
        nr::BENCH_NULL => Ok(0),
        nr::BENCH_SELF_NMI => Ok(self_nmi(frame.rdi == 1)),
        nr::BENCH_BREAKPOINTS_RESUME => with_state(|s| {
            s.breakpoints_resume.store(frame.rdi == 1, Ordering::Relaxed);
            Ok(0)
        }),
        nr::BENCH_FAULT_RESUME => {
            let rip = frame.rdi;
            if rip >= abi::layout::USER_END {
                Err(Error::BadAddress)
            } else {
                with_state(|s| {
                    s.fault_resume_rip.store(rip, Ordering::Relaxed);
                    Ok(0)
                })
            }
        }
        nr::BENCH_COUNTER => counter(frame.rdi),
        nr::BENCH_WATCH => test_program_only().and_then(|_| watch(frame.rdi)),
        nr::BENCH_FLOOR => test_program_only().and_then(|_| floor(frame.rdi)),
        nr::BENCH_BOOT_CLOCK => boot_clock(frame.rdi, frame.rsi),
        _ => Err(Error::NoSuchCall),
    };
    frame.rax = match result {
        Ok(v) => v,
        Err(e) => e.to_raw(),
    };
}

/// The boot modules whose processes may change CPU-wide state through `bench_watch` (a debug
/// register) and `bench_floor` (the SYSCALL entry): the hazard suite and the benchmark. Any
/// other process (the fuzzer, a hostile program) gets `NoSuchCall`: a watchpoint it armed would
/// fire in whatever process next ran on that CPU at that address and kill its thread.
const TEST_PROGRAMS: [&str; 2] = ["utest", "bench"];

fn test_program_only() -> Result<(), Error> {
    let process = sched::current().and_then(|t| t.process.clone()).ok_or(Error::NoSuchCall)?;
    if TEST_PROGRAMS.contains(&process.name.as_str()) {
        Ok(())
    } else {
        Err(Error::NoSuchCall)
    }
}

fn with_state(f: impl FnOnce(&BenchState) -> Result<u64, Error>) -> Result<u64, Error> {
    let process = sched::current().and_then(|t| t.process.clone()).ok_or(Error::NoSuchCall)?;
    f(&process.bench)
}

fn counter(which: u64) -> Result<u64, Error> {
    let me = percpu::this();
    match which {
        bench_counter::TIMER_TICKS => Ok(me.ticks.load(Ordering::Relaxed)),
        bench_counter::NMIS => Ok(me.nmi_count.load(Ordering::Relaxed)),
        _ => {
            let process = sched::current().and_then(|t| t.process.clone()).ok_or(Error::NoSuchCall)?;
            match which {
                bench_counter::BREAKPOINTS => Ok(process.bench.breakpoints.load(Ordering::Relaxed)),
                bench_counter::FAULTS_RESUMED => Ok(process.bench.faults_resumed.load(Ordering::Relaxed)),
                bench_counter::DEMAND_FAULTS => Ok(process.demand_faults.load(Ordering::Relaxed)),
                _ => Err(Error::InvalidArgument),
            }
        }
    }
}

/// Arms (or, for 0, disarms) this CPU's user watchpoint; the kernel #DB count so far.
fn watch(addr: u64) -> Result<u64, Error> {
    use crate::testing::scenario::{debug_register, Watch};
    if addr == 0 {
        debug_register(0, None);
    } else if addr % 2 != 0 || !crate::syscall::uaccess::is_user_range(addr, 2) {
        return Err(Error::BadAddress);
    } else {
        debug_register(0, Some((addr, Watch::Access2)));
    }
    Ok(percpu::this().db_count.load(Ordering::Relaxed))
}

/// Sends this CPU an NMI (or, for the baseline, does everything but the send) and waits until it
/// has been handled. Returns the NMIs taken meanwhile: 1, or 0 for the baseline.
fn self_nmi(send: bool) -> u64 {
    let me = percpu::this();
    let before = me.nmi_count.load(Ordering::Relaxed);
    if send {
        apic::send_nmi(smp::apic_id(me.cpu_index));
        // The NMI is taken at an instruction boundary right after the ICR write; the wait only
        // guards against a CPU model that delivers it later.
        let mut spins = 0;
        while me.nmi_count.load(Ordering::Relaxed) == before && spins < NMI_WAIT_SPINS {
            core::hint::spin_loop();
            spins += 1;
        }
    }
    me.nmi_count.load(Ordering::Relaxed) - before
}

/// A #BP from ring 3: resume after the INT3 if the process opted in. INT3 is a trap, so the
/// frame's RIP already points past it.
pub fn resume_breakpoint() -> bool {
    let Some(process) = sched::current().and_then(|t| t.process.clone()) else { return false };
    if !process.bench.breakpoints_resume.load(Ordering::Relaxed) {
        return false;
    }
    process.bench.breakpoints.fetch_add(1, Ordering::Relaxed);
    true
}

/// A #PF from ring 3 that demand paging did not resolve: resume at the process's registered
/// RIP if it opted in.
pub fn resume_fault(frame: &mut TrapFrame) -> bool {
    let Some(process) = sched::current().and_then(|t| t.process.clone()) else { return false };
    let rip = process.bench.fault_resume_rip.load(Ordering::Relaxed);
    if rip == 0 {
        return false;
    }
    process.bench.faults_resumed.fetch_add(1, Ordering::Relaxed);
    frame.rip = rip;
    true
}

/// A boot milestone's TSC (`bench_boot_clock`).
fn boot_clock(which: u64, cpu: u64) -> Result<u64, Error> {
    use abi::syscall::bench_boot_clock as milestone;
    use smp::boot_clock as clock;
    match which {
        milestone::KERNEL_ENTRY => Ok(clock::KERNEL_ENTRY.load(Ordering::Relaxed)),
        milestone::APS_RELEASED => Ok(clock::APS_RELEASED.load(Ordering::Relaxed)),
        milestone::READY => Ok(clock::READY.load(Ordering::Relaxed)),
        milestone::CPU_ONLINE if cpu < smp::online() as u64 => Ok(clock::online(cpu as usize)),
        milestone::CPU_ONLINE => Err(Error::NotFound),
        _ => Err(Error::InvalidArgument),
    }
}

// ---- The floor (`bench_floor`): the cheapest SYSCALL round trip the CPU allows, for the
// `syscall_floor` figure beside `bench_null`. While it is on, one CPU enters through the stubs
// below instead of its own entry; they answer only SYSCALLs whose return address is the one
// the bench program registered, and pass everything else on to the real entry unchanged.

/// The user return address whose SYSCALLs the floor answers (0: none).
static FLOOR_RIP: AtomicU64 = AtomicU64::new(0);
/// The real entries the stubs pass everything else to: IST's IA32_LSTAR, or FRED's user and
/// supervisor entries.
static FLOOR_NEXT: AtomicU64 = AtomicU64::new(0);
static FLOOR_NEXT_KERNEL: AtomicU64 = AtomicU64::new(0);
/// The CPU whose entry MSR points at a stub (`usize::MAX`: none), and the value it had.
static FLOOR_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
static FLOOR_SAVED_MSR: AtomicU64 = AtomicU64::new(0);

const IA32_LSTAR: u32 = 0xc000_0082;
const IA32_FRED_CONFIG: u32 = 0x1d4;

/// The saved SS qword's event type (bits 51:48), vector (39:32) and long-mode bit (57), shifted
/// down by 32 so that the FRED stub tests them with 32-bit immediates.
const FRED_SS_MASK_HI: u64 = (0xf << 48 | 0xff << 32 | 1 << 57) >> 32;
const FRED_SS_SYSCALL64_HI: u64 = {
    use crate::arch::x86_64::entry::fred::decode::{event_type, SavedSs, OTHER_SYSCALL};
    SavedSs::new(event_type::OTHER, OTHER_SYSCALL, true).0 >> 32
};

// SAFETY: IST: `bench_floor_syscall` is IA32_LSTAR only while the floor is on, so it runs only
// after SYSCALL from 64-bit mode, with interrupts masked (SFMASK) and the user's GS and RSP; it
// touches neither, reads only RIP-relative kernel data, and SYSRETs only to the registered
// RIP, which `floor` checked is a user address (canonical: no #GP on SYSRET), with R11 the
// user's own RFLAGS. Everything else jumps to the CPU's real SYSCALL entry with every register
// as SYSCALL left it. FRED: the page is the entry page (IA32_FRED_CONFIG) only while the floor
// is on. The user entry saves RAX on the level-0 stack and answers only type 7 / vector 1
// (SYSCALL) from 64-bit mode at the registered RIP, by ERETU with the frame the CPU built; it
// restores RSP and RAX before passing anything else to the real entry. The supervisor entry
// passes everything on.
core::arch::global_asm!(
    ".pushsection .text.bench_floor, \"ax\"",
    ".global bench_floor_syscall",
    "bench_floor_syscall:",
    "    cmp rcx, qword ptr [rip + {rip}]",
    "    jne 1f",
    "    sysretq",
    "1:  jmp qword ptr [rip + {next}]",
    ".balign 4096, 0xcc",
    ".global bench_floor_fred_user",
    "bench_floor_fred_user:",
    // As in fred_entry_user: Bochs' FRED delivery leaves its interrupt mask open until a CLI.
    "    cli",
    "    push rax",
    // Above RAX: error code, RIP, CS, RFLAGS, RSP, SS (+ event type and vector).
    "    mov rax, qword ptr [rsp + 48]",
    "    shr rax, 32",
    "    and eax, {ss_mask}",
    "    cmp eax, {ss_syscall64}",
    "    jne 2f",
    "    mov rax, qword ptr [rsp + 16]",
    "    cmp rax, qword ptr [rip + {rip}]",
    "    jne 2f",
    "    pop rax",
    "    .byte 0xf3, 0x0f, 0x01, 0xca", // ERETU
    "2:  pop rax",
    "    jmp qword ptr [rip + {next}]",
    // The supervisor entry is 256 bytes after the user entry (FRED spec §5.1).
    ".balign 256, 0xcc",
    ".global bench_floor_fred_kernel",
    "bench_floor_fred_kernel:",
    "    cli",
    "    jmp qword ptr [rip + {next_kernel}]",
    ".popsection",
    rip = sym FLOOR_RIP,
    next = sym FLOOR_NEXT,
    next_kernel = sym FLOOR_NEXT_KERNEL,
    ss_mask = const FRED_SS_MASK_HI,
    ss_syscall64 = const FRED_SS_SYSCALL64_HI,
);

extern "C" {
    fn bench_floor_syscall();
    fn bench_floor_fred_user();
    fn bench_floor_fred_kernel();
}

/// `bench_floor(rip)`: points this CPU's SYSCALL entry at the floor for SYSCALLs returning to
/// `rip`, or (0) puts the real entry back.
fn floor(rip: u64) -> Result<u64, Error> {
    use crate::arch::x86_64::entry::{backend, Backend};
    let me = percpu::this().cpu_index;
    let msr = match backend() {
        Backend::Ist => IA32_LSTAR,
        Backend::Fred => IA32_FRED_CONFIG,
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        if rip == 0 {
            if FLOOR_CPU.load(Ordering::Acquire) == me {
                // SAFETY: the value this CPU's entry MSR had before the floor.
                unsafe { Msr::new(msr).write(FLOOR_SAVED_MSR.load(Ordering::Relaxed)) };
                FLOOR_RIP.store(0, Ordering::Relaxed);
                FLOOR_CPU.store(usize::MAX, Ordering::Release);
            }
            return Ok(0);
        }
        if rip >= abi::layout::USER_END {
            return Err(Error::BadAddress);
        }
        match FLOOR_CPU.compare_exchange(usize::MAX, me, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(holder) if holder == me => {
                FLOOR_RIP.store(rip, Ordering::Relaxed);
                return Ok(0);
            }
            Err(_) => return Err(Error::InvalidArgument),
        }
        // SAFETY: reads this CPU's own entry MSR, which exists on the running backend.
        let saved = unsafe { Msr::new(msr).read() };
        FLOOR_SAVED_MSR.store(saved, Ordering::Relaxed);
        FLOOR_RIP.store(rip, Ordering::Relaxed);
        let stub = match backend() {
            Backend::Ist => {
                FLOOR_NEXT.store(saved, Ordering::Relaxed);
                bench_floor_syscall as *const () as u64
            }
            Backend::Fred => {
                let (user, kernel) = (bench_floor_fred_user as *const () as u64, bench_floor_fred_kernel as *const () as u64);
                assert!(user % 4096 == 0 && kernel == user + 256, "the floor's FRED entry page is misplaced");
                FLOOR_NEXT.store(saved & !0xfff, Ordering::Relaxed);
                FLOOR_NEXT_KERNEL.store((saved & !0xfff) + 256, Ordering::Relaxed);
                // The low 12 bits (red zone, interrupt stack level) stay as they were.
                user | (saved & 0xfff)
            }
        };
        // SAFETY: the stub answers what it recognizes and passes everything else to the entry
        // the MSR named before (stored above, before the switch).
        unsafe { Msr::new(msr).write(stub) };
        Ok(0)
    })
}
