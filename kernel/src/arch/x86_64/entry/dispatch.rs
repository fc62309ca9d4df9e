//! Backend selection and the backend-agnostic handlers every event reaches.

use core::sync::atomic::{AtomicU8, Ordering};

use super::frame::TrapFrame;
use super::{extable, fred, ist, sysret};
use crate::sched;

use crate::arch::x86_64::cpu::Features;
use crate::arch::x86_64::{apic, gdt, ioapic, percpu, smp};
use crate::cmdline::EntryChoice;
use crate::harness::{self, Verdict};

/// Interrupt vectors the kernel programs (exceptions are 0..32).
pub mod vector {
    pub const TIMER: u8 = 0x20;
    /// Cross-CPU ping: the receiver answers its sender (the `ipi` scenario, liveness checks).
    pub const IPI_PING: u8 = 0xf0;
    /// Wake an idle CPU to look at its work queue.
    pub const IPI_WAKE: u8 = 0xf1;
    /// Flush this CPU's TLB entries for an address space that changed.
    pub const IPI_TLB_SHOOTDOWN: u8 = 0xf2;
    pub const APIC_ERROR: u8 = 0xfe;
    pub const SPURIOUS: u8 = 0xff;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Backend {
    Ist = 0,
    Fred = 1,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ist => "ist",
            Self::Fred => "fred",
        }
    }
}

static BACKEND: AtomicU8 = AtomicU8::new(Backend::Ist as u8);

/// Chooses the backend once, on the BSP, from the command line and CPUID.
pub fn select(choice: EntryChoice, features: &Features) -> Backend {
    // Every FRED CPU has LKGS, and the context switch needs it under FRED (`user_segments`).
    let backend = match (choice, features.fred && features.lkgs) {
        (EntryChoice::Ist, _) => Backend::Ist,
        (EntryChoice::Fred, false) if features.fred => {
            log::error!("entry=fred asked for, but this CPU has FRED without LKGS (CPUID.(7,1):EAX[18] = 0): using ist");
            Backend::Ist
        }
        (EntryChoice::Fred, false) => {
            log::error!("entry=fred asked for, but this CPU has no FRED (CPUID.(7,1):EAX[17] = 0): using ist");
            Backend::Ist
        }
        (EntryChoice::Fred | EntryChoice::Auto, true) => Backend::Fred,
        (EntryChoice::Auto, false) => Backend::Ist,
    };
    BACKEND.store(backend as u8, Ordering::Relaxed);
    log::info!("event entry: {}", backend.name());
    backend
}

pub fn backend() -> Backend {
    match BACKEND.load(Ordering::Relaxed) {
        1 => Backend::Fred,
        _ => Backend::Ist,
    }
}

/// Sets up this CPU's event delivery for the selected backend (after its entry area exists).
pub fn init_this_cpu(cpu_index: usize) {
    // The IDT and the SYSCALL MSRs also serve FRED: STAR gives FRED its selectors, and the
    // IDT stays valid until CR4.FRED is set.
    ist::load_idt();
    ist::init_syscall(cpu_index);
    if backend() == Backend::Fred {
        fred::init_this_cpu(cpu_index);
    }
}

/// The kernel stack the next event from ring 3 lands on (the running thread's), on this CPU.
pub fn set_kernel_stack(cpu_index: usize, top: u64) {
    percpu::this().kernel_stack_top.store(top, Ordering::Relaxed);
    crate::arch::x86_64::cea::set_rsp0(cpu_index, top);
    if backend() == Backend::Fred {
        fred::set_rsp0(top);
    }
}

/// The faulting address of a #PF: FRED hands it over in the frame, the IDT path in CR2.
fn fault_address(frame: &TrapFrame) -> u64 {
    match backend() {
        Backend::Fred => fred::event_data(frame),
        Backend::Ist => cr2(),
    }
}

/// Why a #DB happened, in DR6's layout.
fn debug_status(frame: &TrapFrame) -> u64 {
    match backend() {
        Backend::Fred => fred::event_data(frame),
        Backend::Ist => x86_64::registers::debug::Dr6::read().bits(),
    }
}

/// A FRED event from ring 3: SYSCALL, or anything the common handlers take.
pub(super) extern "C" fn fred_user_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    let vector = fred::vector_of(frame);
    if fred::event_type_of(frame) == fred::event_type::OTHER && vector == fred::OTHER_SYSCALL {
        x86_64::instructions::interrupts::enable();
        crate::syscall::dispatch(frame);
        x86_64::instructions::interrupts::disable();
        sched::before_user_return();
        return;
    }
    frame.vector = vector;
    handle_event(frame);
}

/// A FRED event from ring 0. NMI, #DB and #MC need no GS care here: under FRED the kernel never
/// runs with the user's GS.
pub(super) extern "C" fn fred_kernel_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    frame.vector = fred::vector_of(frame);
    match frame.vector {
        1 | 2 | 18 => kernel_ist_event(frame),
        _ => handle_event(frame),
    }
}

const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
    "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
    "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
    "#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check", "#MC machine check",
    "#XM SIMD error", "#VE virtualization", "#CP control protection", "reserved 22", "reserved 23",
    "reserved 24", "reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
    "#VC VMM communication", "#SX security", "reserved 31",
];

fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}

/// The IDT path's entry point of every event (the FRED entry points clear AC themselves and
/// call `handle_event` directly).
pub(super) extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    handle_event(frame);
}

/// The one high-level handler of every event, for both backends. Inlined into each entry
/// point, so that neither backend pays a call layer for the other's sake.
#[inline(always)]
fn handle_event(frame: &mut TrapFrame) {
    let from_user = frame.from_user();
    match frame.vector as u8 {
        8 => double_fault(frame),
        2 => nmi(frame),
        1 if from_user => user_debug_trap(frame),
        18 => machine_check(frame),
        14 if from_user && frame.error_code & 1 == 0 && demand_fault(fault_address(frame)) => {}
        // Benchmark opt-ins (`syscall::bench`); off by default, when the thread dies below.
        3 if from_user && crate::syscall::bench::resume_breakpoint() => {}
        14 if from_user && crate::syscall::bench::resume_fault(frame) => {}
        v if v < 32 && from_user => user_fault(frame),
        14 => page_fault(frame),
        // SAFETY (both arms): RSP of the faulting context points at the return frame the
        // kernel built on this thread's kernel stack: IRET's starts with RIP, ERETU's with the
        // error code.
        13 if frame.rip == ist::iret_instruction() => bad_return(frame, unsafe { *(frame.rsp as *const u64) }),
        13 if frame.rip == fred::eretu_instruction() => bad_return(frame, unsafe { *((frame.rsp + 8) as *const u64) }),
        v if v < 32 => fatal(frame, "unexpected exception"),
        vector::TIMER => {
            let me = percpu::this();
            let now = me.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            apic::end_of_interrupt();
            if me.cpu_index == 0 {
                crate::ipc::timer_tick(now);
                crate::klog::timer_tick();
            }
            sched::tick();
        }
        v if (ioapic::IRQ_BASE..ioapic::IRQ_BASE + ioapic::ISA_IRQS).contains(&v) => crate::ipc::on_irq(v - ioapic::IRQ_BASE),
        vector::IPI_TLB_SHOOTDOWN => {
            smp::on_tlb_shootdown();
            apic::end_of_interrupt();
        }
        vector::IPI_PING => {
            smp::on_ping();
            apic::end_of_interrupt();
        }
        vector::IPI_WAKE => apic::end_of_interrupt(),
        vector::APIC_ERROR => {
            log::warn!("local APIC error on cpu {}", percpu::this().cpu_index);
            apic::end_of_interrupt();
        }
        vector::SPURIOUS => {}
        v => {
            log::warn!("unexpected interrupt vector {v:#x} on cpu {}", percpu::this().cpu_index);
            apic::end_of_interrupt();
        }
    }
    // Under FRED only the NMI's (or #MC's) own ERETU unblocks NMIs: such a frame must be
    // returned through, not abandoned by a thread switch or exit (the next tick reschedules).
    let blocks_nmi = backend() == Backend::Fred && matches!(frame.vector, 2 | 18);
    if from_user && !blocks_nmi {
        sched::before_user_return();
    }
}

/// NMI, #DB or #MC from ring 0, on the IST main stack with the kernel GS (see `aist`): count,
/// record, and never schedule or take a lock the interrupted code might hold.
pub(super) fn kernel_ist_event(frame: &mut TrapFrame) {
    match frame.vector {
        2 => nmi(frame),
        1 => {
            let me = percpu::this();
            let dr6 = debug_status(frame);
            me.last_db[0].store(frame.rip, Ordering::Relaxed);
            me.last_db[1].store(frame.rsp, Ordering::Relaxed);
            me.db_handler_rsp.store(current_rsp(), Ordering::Relaxed);
            me.db_count.fetch_add(1, Ordering::Relaxed);
            // SAFETY: DR6 is sticky; clearing it makes the next #DB's cause unambiguous.
            unsafe { core::arch::asm!("xor eax, eax", "mov dr6, rax", out("rax") _, options(nomem, nostack)) };
            if dr6 & 0xf != 0 {
                // An instruction breakpoint: resume without hitting it again (RF).
                frame.rflags |= sysret::RFLAGS_RF;
            }
        }
        _ => machine_check(frame),
    }
}

/// Where the NMI handler starts (the `nesting` scenario puts a breakpoint there).
pub fn nmi_handler_address() -> u64 {
    nmi as *const () as u64
}

/// An NMI: counted, and, if another CPU asked for it, a report of where this CPU was (a
/// cross-CPU backtrace) or a stop (after a panic elsewhere).
#[inline(never)]
fn nmi(frame: &TrapFrame) {
    let me = percpu::this();
    me.last_nmi[0].store(frame.rip, Ordering::Relaxed);
    me.last_nmi[1].store(frame.rsp, Ordering::Relaxed);
    me.nmi_count.fetch_add(1, Ordering::Relaxed);
    let request = me.nmi_request.swap(0, Ordering::AcqRel);
    if request & smp::NMI_BACKTRACE != 0 {
        log::info!(
            "cpu {} was at rip={:#x} rsp={:#x} ({}, backtrace by NMI)",
            me.cpu_index,
            frame.rip,
            frame.rsp,
            if frame.from_user() { "user" } else { "kernel" }
        );
        smp::backtrace_answered();
    }
    if request & smp::NMI_STOP != 0 {
        crate::arch::x86_64::halt_forever();
    }
}

/// #MC: report every bank that holds an error, then recover if the CPU says the interrupted
/// context can go on (MCG_STATUS.RIPV), else stop (SDM Vol. 3B §16.3, §17.10).
fn machine_check(frame: &TrapFrame) {
    use x86_64::registers::model_specific::Msr;
    const IA32_MCG_CAP: u32 = 0x179;
    const IA32_MCG_STATUS: u32 = 0x17a;
    const IA32_MC0_STATUS: u32 = 0x401;
    const STATUS_VAL: u64 = 1 << 63;
    let me = percpu::this();
    me.mc_count.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the machine-check MSRs exist on every CPU that can raise #MC; bank registers are
    // only touched below the count MCG_CAP reports.
    unsafe {
        let banks = Msr::new(IA32_MCG_CAP).read() & 0xff;
        let mcg_status = Msr::new(IA32_MCG_STATUS).read();
        let recoverable = mcg_status & 1 != 0; // RIPV
        for bank in 0..banks as u32 {
            let mut status_msr = Msr::new(IA32_MC0_STATUS + 4 * bank);
            let status = status_msr.read();
            if status & STATUS_VAL != 0 {
                log::log!(
                    if recoverable { log::Level::Warn } else { log::Level::Error },
                    "#MC on cpu {} at rip={:#x}: bank {bank} status {status:#x}, MCG_STATUS {mcg_status:#x}: {}",
                    me.cpu_index,
                    frame.rip,
                    if recoverable { "recoverable, resuming" } else { "not recoverable" }
                );
                status_msr.write(0);
            }
        }
        if !recoverable {
            fatal(frame, "unrecoverable machine check");
        }
        // Clearing MCIP re-arms #MC: a second one while it is set shuts the machine down.
        Msr::new(IA32_MCG_STATUS).write(0);
    }
}

/// The SYSCALL path's high-level half: run the call, then decide how to return.
pub(super) extern "C" fn syscall_entry(frame: &mut TrapFrame) {
    x86_64::instructions::interrupts::enable();
    crate::syscall::dispatch(frame);
    x86_64::instructions::interrupts::disable();
    sched::before_user_return();
    syscall_exit(frame);
}

/// Chooses SYSRET or IRET for this return (seed 001) and counts the choice.
fn syscall_exit(frame: &mut TrapFrame) {
    let ctx = sysret::ReturnContext {
        rip: frame.rip,
        rcx: frame.rcx,
        rflags: frame.rflags,
        r11: frame.r11,
        cs: frame.cs,
        ss: frame.ss,
    };
    let me = percpu::this();
    match sysret::sysret_allowed(&ctx, gdt::USER_CS.0 as u64, gdt::USER_SS.0 as u64) {
        Ok(()) => {
            frame.vector = ist::EXIT_BY_SYSRET;
            me.sysret_exits.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            frame.vector = ist::SYSCALL_VECTOR;
            me.iret_exits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A new user thread's first run, on its own stack just before it enters user space.
pub(super) extern "C" fn first_run() {
    sched::finish_switch();
    sched::before_user_return();
}

/// The return to user space (IRET, or FRED's ERETU) faulted in ring 0: the return context the
/// thread asked for is impossible (a non-canonical RIP, say). The thread dies; the kernel
/// carries on.
fn bad_return(frame: &TrapFrame, bad_rip: u64) -> ! {
    percpu::this().bad_iret_kills.fetch_add(1, Ordering::Relaxed);
    report_user_kill(13, "#GP on the return to user", frame.error_code, bad_rip, 0);
    sched::exit_current()
}

fn report_user_kill(vector: u64, what: &str, error: u64, rip: u64, addr: u64) {
    let cur = sched::current();
    let (pid, tid) = match &cur {
        Some(t) => (t.process.as_ref().map_or(0, |p| p.pid), t.tid),
        None => (0, 0),
    };
    if let Some(p) = cur.as_ref().and_then(|t| t.process.as_ref()) {
        p.record_fault(vector);
    }
    log::warn!(target: "fault", "pid {pid} tid {tid} {what} at RIP {rip:#x} addr {addr:#x} error {error:#x}: thread killed");
}

/// A user page fault on memory `map` reserved but nobody touched yet.
fn demand_fault(addr: u64) -> bool {
    sched::current().and_then(|t| t.process.clone()).is_some_and(|p| p.demand_fault(addr))
}

/// An exception raised by user code: the faulting thread dies, everything else carries on.
fn user_fault(frame: &TrapFrame) -> ! {
    let v = frame.vector as usize;
    let name = EXCEPTION_NAMES[v].split(' ').next().unwrap_or("?");
    let addr = if v == 14 { fault_address(frame) } else { 0 };
    report_user_kill(frame.vector, name, frame.error_code, frame.rip, addr);
    sched::exit_current()
}

/// #DB from user space. A single-step trap (TF, e.g. left set by a return context) is
/// acknowledged by clearing TF, since no debugger is attached; anything else is a fault.
fn user_debug_trap(frame: &mut TrapFrame) {
    if debug_status(frame) & (1 << 14) != 0 {
        // BS: single-step
        frame.rflags &= !sysret::RFLAGS_TF;
        log::info!("single-step trap at rip={:#x} from user space: TF cleared", frame.rip);
        return;
    }
    user_fault(frame)
}

fn page_fault(frame: &mut TrapFrame) {
    let addr = fault_address(frame);
    if !frame.from_user() && extable::fixup(frame) {
        let me = percpu::this();
        me.last_fixup_cr2.store(addr, Ordering::Relaxed);
        log::info!(
            "#PF (vector 14) on cpu {}: error={:#x} rip={:#x} cr2={addr:#x}: fixed up",
            me.cpu_index,
            frame.error_code,
            frame.rip
        );
        return;
    }
    fatal(frame, "page fault")
}

/// #DF arrives on its own IST stack whatever state the faulting stack is in; the usual cause
/// here is a kernel stack overflow into a guard page.
fn double_fault(frame: &mut TrapFrame) {
    let me = percpu::this();
    let guard = me.boot_stack_bottom - 4096..me.boot_stack_bottom;
    let rsp_near_guard = frame.rsp >= guard.start && frame.rsp < me.boot_stack_bottom + 4096;
    let aist = me.aist_failure.load(Ordering::Relaxed);
    if aist != 0 {
        let why = match aist >> 8 {
            1 => "an event nested into its own unfinished entry",
            2 => "RIP and RSP disagree about which entry was interrupted",
            _ => "the IST main stack is full",
        };
        log::error!("EXCEPTION #DF forced by atomic-IST-entry on cpu {}: {why} (code {aist:#x})", me.cpu_index);
        fatal(frame, "atomic-IST-entry failure")
    }
    if me.expect_stack_overflow.load(Ordering::Relaxed) {
        log::info!(
            "#DF (vector 8) on cpu {} (rsp now {:#x}): interrupted rip={:#x} rsp={:#x}, guard page {:#x}..{:#x}",
            me.cpu_index,
            current_rsp(),
            frame.rip,
            frame.rsp,
            guard.start,
            guard.end
        );
        use crate::arch::x86_64::cea;
        let tops = cea::stack_tops(me.cpu_index);
        // The #DF stack: its IST slot, or FRED's stack level 3.
        let df_stack = match backend() {
            Backend::Ist => tops.df - (cea::DF_STACK_PAGES * cea::PAGE) as u64..tops.df,
            Backend::Fred => tops.fred[2] - (cea::FRED_STACK_PAGES * cea::PAGE) as u64..tops.fred[2],
        };
        let on_df_stack = df_stack.contains(&current_rsp());
        if rsp_near_guard && on_df_stack {
            log::info!("stack overflow on cpu {} caught by the guard page", me.cpu_index);
            harness::finish(Verdict::Pass);
        }
        harness::finish(Verdict::Fail(format_args!(
            "double fault not at the guard page (rsp={:#x}) or not on the #DF stack",
            frame.rsp
        )));
    }
    if rsp_near_guard {
        log::error!("kernel stack overflow on cpu {}: rsp={:#x} hit the guard page", me.cpu_index, frame.rsp);
    }
    fatal(frame, "double fault")
}

fn current_rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads RSP only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// An event the kernel cannot continue from: report everything, then stop (with the
/// scenario's verdict when one runs).
fn fatal(frame: &TrapFrame, why: &str) -> ! {
    let v = frame.vector as usize;
    let name = EXCEPTION_NAMES.get(v).copied().unwrap_or("interrupt");
    log::error!(
        "EXCEPTION {name} (vector {v}) on cpu {}: {why}, error={:#x} rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} cr2={:#x}",
        percpu::cpu_index_or_boot(),
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        cr2()
    );
    log::error!(
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    if harness::scenario().is_some() {
        harness::finish(Verdict::Fail(format_args!("{name} at rip={:#x}", frame.rip)));
    }
    crate::arch::x86_64::halt_forever()
}

/// Where a new user thread's first context switch returns to: the selected backend's path into
/// user space.
pub fn first_entry_to_user() -> u64 {
    match backend() {
        Backend::Ist => ist::first_entry_to_user(),
        Backend::Fred => fred::first_entry_to_user(),
    }
}
