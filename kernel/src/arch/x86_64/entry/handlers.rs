//! The shared handlers: what each event does, whichever backend delivered it.
//!
//! A backend decodes the delivery into an [`Event`] and calls one of three doors:
//! - [`user_event`]: the event interrupted ring 3 and runs on the thread's kernel stack;
//! - [`kernel_event`]: it interrupted ring 0 and runs on the interrupted stack;
//! - [`kernel_ist_event`]: an NMI, #DB or #MC that interrupted ring 0, on its own stack (the
//!   IST main stack, or a FRED stack level), which must not schedule or take a lock the
//!   interrupted code might hold.
//!
//! Nothing here imports a backend: what differs by delivery (CR2 or FRED's event data, which
//! instruction is the return to user space) the backend has already put into the `Event`.
//! From ring 3 every kind of event has exactly one outcome: a system call runs, an interrupt
//! is handled, and any exception, refused software interrupt or unexpected event kills the
//! thread with a report. Nothing a ring-3 program executes reaches the NMI, #DF or #MC
//! handlers, an IRQ handler or the timer: those only run for the event kinds hardware delivers.

use core::sync::atomic::Ordering;

use super::event::{self, exception_name, vector, Event, SyscallKind};
use super::frame::TrapFrame;
use crate::arch::x86_64::{apic, percpu, smp};
use crate::sched;

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_RF: u64 = 1 << 16;
/// DR6.BS: the #DB is a single-step trap (SDM Vol. 3B §18.2.3).
const DR6_BS: u64 = 1 << 14;
/// DR6.B0-B3: a debug register's breakpoint matched.
const DR6_BREAKPOINTS: u64 = 0xf;

/// An event that interrupted ring 3.
pub fn user_event(frame: &mut TrapFrame, event: Event) {
    match event {
        Event::Syscall(kind) => syscall(frame, kind),
        Event::Interrupt { vector } => interrupt(vector),
        Event::Nmi => nmi(frame),
        Event::Exception { vector: vector::MC, .. } => machine_check(frame),
        Event::Exception { vector: vector::PF, error_code, info } => user_page_fault(frame, error_code, info),
        Event::Exception { vector: vector::DB, info, .. } => user_debug(frame, info),
        Event::Exception { vector: vector::BP, .. } | Event::Int3 => user_breakpoint(frame),
        Event::Exception { vector, error_code, info } => kill_thread(frame, vector, exception_name(vector), error_code, info),
        // ICEBP raises #DB without a debug register: under the IDT it arrives as a #DB with no
        // cause in DR6, so both backends end the thread the same way.
        Event::Int1 => kill_thread(frame, vector::DB, "#DB (INT1)", 0, 0),
        Event::SoftwareInterrupt { vector: v } if vector::open_to_user(v) => user_breakpoint(frame),
        // What the IDT's DPL-0 gate does to the same instruction.
        Event::SoftwareInterrupt { vector: v } => kill_thread(frame, vector::GP, "#GP (int n)", event::int_n_error_code(v), 0),
        Event::BadUserReturn { error_code, rip } => bad_return(error_code, rip),
        Event::Unexpected { event_type, vector: v } => {
            if user_log_allowed() {
                log::warn!(target: "fault", "unexpected event type {event_type} vector {v:#x} from ring 3");
            }
            kill_thread(frame, vector::GP, "unexpected event", 0, 0)
        }
    }
}

/// An event that interrupted ring 0, handled on the interrupted stack.
pub fn kernel_event(frame: &mut TrapFrame, event: Event) {
    match event {
        // A CPU never delivers an external interrupt to code running with IF = 0; an emulator
        // that does (Bochs' FRED delivery, see fred/entry.rs) would break every lock the kernel
        // takes with interrupts off, so say so instead of deadlocking or overflowing a stack.
        // (The one place Bochs still does it harmlessly, the first instruction of a FRED entry,
        // its backend hands to `interrupt_in_entry_window`.)
        Event::Interrupt { .. } if frame.rflags & RFLAGS_IF == 0 => fatal(frame, event, "external interrupt delivered with IF = 0"),
        Event::Interrupt { vector } => interrupt(vector),
        Event::Nmi | Event::Exception { vector: vector::DB | vector::MC, .. } => kernel_ist_event(frame, event),
        Event::Exception { vector: vector::DF, .. } => double_fault(frame),
        Event::Exception { vector: vector::PF, error_code, info } => kernel_page_fault(frame, error_code, info),
        Event::BadUserReturn { error_code, rip } => bad_return(error_code, rip),
        _ => fatal(frame, event, "unexpected exception"),
    }
}

/// An external interrupt that arrived on the first instruction of an entry, before the entry
/// could run at all (nothing saved, nothing locked): handled like any other.
pub fn interrupt_in_entry_window(vector: u8) {
    interrupt(vector);
}

/// NMI, #DB or #MC from ring 0, with the kernel GS: count, record, and never schedule or take
/// a lock the interrupted code might hold.
pub fn kernel_ist_event(frame: &mut TrapFrame, event: Event) {
    match event {
        Event::Nmi => nmi(frame),
        Event::Exception { vector: vector::DB, info, .. } => {
            let me = percpu::this();
            me.last_db[0].store(frame.rip, Ordering::Relaxed);
            me.last_db[1].store(frame.rsp, Ordering::Relaxed);
            me.db_handler_rsp.store(current_rsp(), Ordering::Relaxed);
            me.db_count.fetch_add(1, Ordering::Relaxed);
            if info & DR6_BREAKPOINTS != 0 {
                // An instruction breakpoint: resume without hitting it again (RF).
                frame.rflags |= RFLAGS_RF;
            }
        }
        Event::Exception { vector: vector::MC, .. } => machine_check(frame),
        _ => fatal(frame, event, "unexpected event on an NMI/#DB/#MC stack"),
    }
}

/// A system call. Only SYSCALL from 64-bit mode is the kernel's ABI; the other ways in are
/// refused the way the hardware refuses them where it does: Intel raises #UD for SYSCALL
/// outside 64-bit mode, and SYSENTER with IA32_SYSENTER_CS = 0 raises #GP(0).
#[inline]
pub fn syscall(frame: &mut TrapFrame, kind: SyscallKind) {
    match kind {
        SyscallKind::Syscall64 => syscall64(frame),
        SyscallKind::SyscallCompat => kill_thread(frame, vector::UD, "#UD (SYSCALL from compatibility mode)", 0, 0),
        SyscallKind::Sysenter => kill_thread(frame, vector::GP, "#GP (SYSENTER)", 0, 0),
    }
}

/// SYSCALL from 64-bit mode: the system call, with interrupts on while it runs.
#[inline(always)]
pub fn syscall64(frame: &mut TrapFrame) {
    // SAFETY: the entry saved the whole user context and runs on the thread's kernel stack,
    // where interrupts may nest. A bare STI: the `x86_64` crate's `enable()` adds a NOP so its
    // caller's next instruction runs after the STI shadow, which a CALL does not need.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    crate::syscall::dispatch(frame);
    x86_64::instructions::interrupts::disable();
}

/// On the way back to ring 3: end the thread if its process is being killed, and give the CPU
/// away if the time slice is over.
#[inline]
pub fn before_user_return() {
    sched::before_user_return();
}

/// A new user thread's first run, on its own stack just before it enters user space.
pub extern "C" fn first_run() {
    sched::finish_switch();
    sched::before_user_return();
}

/// Reads DR6 and clears it: the CPU never clears it, so a stale BS bit from an earlier
/// single step would make a later INT1 look like one (SDM Vol. 3B §18.2.3; Linux
/// `debug_read_clear_dr6`).
pub fn read_clear_dr6() -> u64 {
    let dr6 = x86_64::registers::debug::Dr6::read().bits();
    clear_dr6();
    dr6
}

pub fn clear_dr6() {
    // SAFETY: writes DR6's architectural reset value; only ring 0 runs this.
    unsafe { core::arch::asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nomem, nostack, preserves_flags)) };
}

fn interrupt(v: u8) {
    match v {
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
        v if (vector::ISA_IRQ_BASE..vector::ISA_IRQ_BASE + vector::ISA_IRQS).contains(&v) => {
            crate::ipc::on_irq(v - vector::ISA_IRQ_BASE)
        }
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
            fatal(frame, Event::Exception { vector: vector::MC, error_code: 0, info: 0 }, "unrecoverable machine check");
        }
        // Clearing MCIP re-arms #MC: a second one while it is set shuts the machine down.
        Msr::new(IA32_MCG_STATUS).write(0);
    }
}

/// The return to user space (IRET, or FRED's ERETU) faulted in ring 0: the return context the
/// thread asked for is impossible (a non-canonical RIP, say). The thread dies; the kernel
/// carries on.
fn bad_return(error_code: u64, bad_rip: u64) -> ! {
    percpu::this().bad_iret_kills.fetch_add(1, Ordering::Relaxed);
    report_user_kill(vector::GP, "#GP on the return to user", error_code, bad_rip, 0);
    sched::exit_current()
}

fn report_user_kill(v: u8, what: &str, error: u64, rip: u64, addr: u64) {
    let cur = sched::current();
    let (pid, tid) = match &cur {
        Some(t) => (t.process.as_ref().map_or(0, |p| p.pid), t.tid),
        None => (0, 0),
    };
    if let Some(t) = &cur {
        t.set_exit_status(abi::thread_exit::killed(v, error));
        if let Some(p) = &t.process {
            p.record_fault(v as u64);
        }
    }
    if cur.as_ref().and_then(|t| t.process.as_ref()).is_none_or(|p| sched::user_log_allowed(p)) {
        log::warn!(target: "fault", "pid {pid} tid {tid} {what} at RIP {rip:#x} addr {addr:#x} error {error:#x}: thread killed");
    }
}

/// Whether a log line the current user process caused may be printed (per-process rate limit,
/// `sched::user_log_allowed`); lines from kernel threads always are.
fn user_log_allowed() -> bool {
    sched::current().and_then(|t| t.process.clone()).is_none_or(|p| sched::user_log_allowed(&p))
}

/// An event raised by user code that ends the thread; everything else carries on.
fn kill_thread(frame: &TrapFrame, v: u8, what: &str, error: u64, addr: u64) -> ! {
    report_user_kill(v, what, error, frame.rip, addr);
    sched::exit_current()
}

/// A user page fault: demand paging, else the thread dies.
fn user_page_fault(frame: &mut TrapFrame, error_code: u64, addr: u64) {
    let not_present = error_code & 1 == 0;
    if not_present && sched::current().and_then(|t| t.process.clone()).is_some_and(|p| p.demand_fault(addr)) {
        return;
    }
    #[cfg(feature = "testing")]
    if crate::testing::bench::resume_fault(frame) {
        return;
    }
    kill_thread(frame, vector::PF, "#PF", error_code, addr)
}

/// INT3 from ring 3: no debugger is attached, so the thread dies (unless a benchmark asked to
/// count breakpoints).
fn user_breakpoint(frame: &mut TrapFrame) {
    #[cfg(feature = "testing")]
    if crate::testing::bench::resume_breakpoint() {
        return;
    }
    kill_thread(frame, vector::BP, "#BP", 0, 0)
}

/// #DB from user space. A single-step trap (TF, e.g. left set by a return context or across a
/// SYSCALL) is acknowledged by clearing TF, since no debugger is attached; anything else
/// (including INT1 under the IDT, which sets no DR6 cause) ends the thread.
fn user_debug(frame: &mut TrapFrame, dr6: u64) {
    if dr6 & DR6_BS != 0 {
        frame.rflags &= !RFLAGS_TF;
        if user_log_allowed() {
            log::info!("single-step trap at rip={:#x} from user space: TF cleared", frame.rip);
        }
        return;
    }
    kill_thread(frame, vector::DB, "#DB", 0, 0)
}

fn kernel_page_fault(frame: &mut TrapFrame, error_code: u64, addr: u64) {
    if super::extable::fixup(frame) {
        let me = percpu::this();
        me.last_fixup_cr2.store(addr, Ordering::Relaxed);
        // A fixed-up fault is a user copy a system call's caller made fail: rate-limited per
        // process, since a hostile one can cause millions.
        if user_log_allowed() {
            log::info!("#PF (vector 14) on cpu {}: error={error_code:#x} rip={:#x} cr2={addr:#x}: fixed up", me.cpu_index, frame.rip);
        }
        return;
    }
    fatal(frame, Event::Exception { vector: vector::PF, error_code, info: addr }, "page fault")
}

/// #DF arrives on its own stack whatever state the faulting stack is in; the usual cause here
/// is a kernel stack overflow into a guard page.
fn double_fault(frame: &mut TrapFrame) -> ! {
    let me = percpu::this();
    let aist = me.aist_failure.load(Ordering::Relaxed);
    let df = Event::Exception { vector: vector::DF, error_code: 0, info: 0 };
    if aist != 0 {
        let why = match aist >> 8 {
            1 => "an event nested into its own unfinished entry",
            2 => "RIP and RSP disagree about which entry was interrupted",
            _ => "the IST main stack is full",
        };
        log::error!("EXCEPTION #DF forced by atomic-IST-entry on cpu {}: {why} (code {aist:#x})", me.cpu_index);
        fatal(frame, df, "atomic-IST-entry failure")
    }
    #[cfg(feature = "testing")]
    crate::testing::on_double_fault(frame, current_rsp());
    let guard_end = me.boot_stack_bottom;
    if frame.rsp >= guard_end - 4096 && frame.rsp < guard_end + 4096 {
        log::error!("kernel stack overflow on cpu {}: rsp={:#x} hit the guard page", me.cpu_index, frame.rsp);
    }
    fatal(frame, df, "double fault")
}

fn current_rsp() -> u64 {
    let rsp: u64;
    // SAFETY: reads RSP only.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// An event the kernel cannot continue from: report everything, then stop (with the
/// scenario's verdict when one runs).
fn fatal(frame: &TrapFrame, event: Event, why: &str) -> ! {
    let v = event.vector();
    let name = event::EXCEPTION_NAMES.get(v as usize).copied().unwrap_or("interrupt");
    log::error!(
        "EXCEPTION {name} (vector {v}) on cpu {}: {why} ({event:?}), rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} cr2={:#x}",
        percpu::cpu_index_or_boot(),
        frame.rip,
        frame.cs,
        frame.rflags,
        frame.rsp,
        x86_64::registers::control::Cr2::read_raw()
    );
    log::error!(
        "  rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    );
    #[cfg(feature = "testing")]
    crate::testing::on_fatal(name, frame.rip);
    crate::arch::x86_64::halt_forever()
}
