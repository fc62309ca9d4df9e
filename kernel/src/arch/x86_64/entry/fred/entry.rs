//! FRED delivery: the entry page, its two entries, the MSRs, and the Rust entry points.

use core::sync::atomic::Ordering;
use x86_64::registers::control::Cr4;
use x86_64::registers::model_specific::Msr;

use super::decode::{self, SavedSs};
use crate::arch::x86_64::entry::event::{vector, Event};
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::handlers;
use crate::arch::x86_64::{cea, percpu};

const IA32_FRED_RSP0: u32 = 0x1cc;
const IA32_FRED_RSP1: u32 = 0x1cd;
const IA32_FRED_STKLVLS: u32 = 0x1d0;
const IA32_FRED_CONFIG: u32 = 0x1d4;
const CR4_FRED: u64 = 1 << 32;

/// IA32_FRED_STKLVLS holds two bits per exception vector: its stack level.
const fn stack_level(v: u8, level: u64) -> u64 {
    level << (2 * v as u64)
}

/// #DB at level 1, NMI and #MC at 2, #DF at 3; everything else 0.
pub const STACK_LEVELS: u64 =
    stack_level(vector::DB, 1) | stack_level(vector::NMI, 2) | stack_level(vector::MC, 2) | stack_level(vector::DF, 3);

/// The event data FRED saved right above the frame: CR2 for #PF, DR6-style bits for #DB.
fn event_data(frame: &TrapFrame) -> u64 {
    // SAFETY: under FRED every TrapFrame is the bottom of a FRED frame, whose next qword is the
    // event data.
    unsafe { *((frame as *const TrapFrame).add(1) as *const u64) }
}

/// What the CPU delivered, decoded by event type first.
fn decode(frame: &TrapFrame) -> Event {
    let event = decode::decode(SavedSs(frame.ss), frame.error_code, event_data(frame));
    if matches!(event, Event::Exception { vector: vector::DB, .. } | Event::Int1) {
        // FRED hands DR6 over in the event data; clear the register anyway so that nothing
        // reading it later sees stale bits (SDM Vol. 3B §18.2.3: DR6 is never cleared by the CPU).
        handlers::clear_dr6();
    }
    event
}

/// A FRED event from ring 3.
extern "C" fn fred_user_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    // The common case first, without the full decode: SYSCALL from 64-bit mode.
    if SavedSs(frame.ss).is_syscall64() {
        handlers::syscall64(frame);
        handlers::before_user_return();
        return;
    }
    // Then the user page fault (demand paging), also without it.
    if SavedSs(frame.ss).is_page_fault() {
        let event = Event::Exception { vector: vector::PF, error_code: frame.error_code, info: event_data(frame) };
        handlers::user_event(frame, event);
        handlers::before_user_return();
        return;
    }
    let event = decode(frame);
    handlers::user_event(frame, event);
    // Only the NMI's (or #MC's) own ERETU unblocks NMIs under FRED: such a frame must be
    // returned through, not abandoned by a thread switch or exit (the next tick reschedules).
    if !matches!(event, Event::Nmi | Event::Exception { vector: vector::MC, .. }) {
        handlers::before_user_return();
    }
}

/// A FRED event from ring 0. NMI, #DB and #MC need no GS care here: under FRED the kernel never
/// runs with the user's GS.
extern "C" fn fred_kernel_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    let mut event = decode(frame);
    if let Event::Interrupt { vector } = event {
        // Bochs' window (see fred_entry_user): an interrupt on the first instruction of the
        // entries IA32_FRED_CONFIG names now (ours, or a test build's benchmark floor), the
        // CLI, with the IF = 0 that delivery just set.
        // SAFETY: reading IA32_FRED_CONFIG has no side effects; FRED is on.
        let user_entry = unsafe { Msr::new(IA32_FRED_CONFIG).read() } & !0xfff;
        if frame.rflags & (1 << 9) == 0 && (frame.rip == user_entry || frame.rip == user_entry + 256) {
            handlers::interrupt_in_entry_window(vector);
            return;
        }
    }
    if let Event::Exception { vector: vector::GP, error_code, .. } = event {
        if frame.rip == eretu_instruction() {
            // SAFETY: RSP of the faulting context points at the ERETU frame the kernel built on
            // this thread's kernel stack: the error code, then RIP.
            let rip = unsafe { *((frame.rsp + 8) as *const u64) };
            event = Event::BadUserReturn { error_code, rip };
        }
    }
    handlers::kernel_event(frame, event);
}

// SAFETY: entered only by FRED event delivery (IA32_FRED_CONFIG points at this page), with a
// 64-byte FRED frame on the level's stack; the pushes complete a `TrapFrame` (layout asserted in
// frame.rs) and ERETU/ERETS run with RSP back at the frame's error code, as the spec requires.
core::arch::global_asm!(
    ".pushsection .text.entry_fred, \"ax\"",
    ".balign 4096",
    // From ring 3: RSP is the level's stack, GS already the kernel's.
    ".global fred_entry_user",
    "fred_entry_user:",
    // Event delivery has cleared RFLAGS.IF already; the CLI is for Bochs (3.0.devel, 2026-08),
    // whose FRED delivery clears RFLAGS without updating its interrupt mask (cpu/fred.cc
    // writes `eflags = 0x2` without handleInterruptMaskChange), so that it would go on
    // delivering external interrupts to a handler that runs with IF = 0. On hardware it is a
    // one-cycle no-op.
    "    cli",
    "    push 0",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {user_event}",
    ".global fred_return_to_user",
    "fred_return_to_user:",
    pop_gprs!(),
    // ERETU starts at the error code, which it skips itself. A #GP here (a non-canonical
    // user RIP asked for by a return context) is the user's fault: see `handlers::user_event` (Event::BadUserReturn).
    "    add rsp, 8",
    ".global fred_eretu_instruction",
    "fred_eretu_instruction:",
    "    .byte 0xf3, 0x0f, 0x01, 0xca", // ERETU
    // The supervisor entry is 256 bytes after the user entry (FRED spec §5.1).
    ".balign 256, 0xcc",
    ".global fred_entry_kernel",
    "fred_entry_kernel:",
    "    cli", // as in fred_entry_user
    "    push 0",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {kernel_event}",
    pop_gprs!(),
    "    add rsp, 8",
    "    .byte 0xf2, 0x0f, 0x01, 0xca", // ERETS
    "",
    // A new user thread's first switch-in, on a stack holding its TrapFrame.
    ".global fred_first_entry_to_user",
    "fred_first_entry_to_user:",
    "    call {first_run}",
    "    jmp fred_return_to_user",
    ".popsection",
    user_event = sym fred_user_event,
    kernel_event = sym fred_kernel_event,
    first_run = sym handlers::first_run,
);

extern "C" {
    fn fred_entry_user();
    fn fred_entry_kernel();
    fn fred_first_entry_to_user();
}

/// The ERETU that returns to user space.
pub fn eretu_instruction() -> u64 {
    extern "C" {
        static fred_eretu_instruction: u8;
    }
    // SAFETY: only the symbol's address is taken.
    unsafe { &fred_eretu_instruction as *const u8 as u64 }
}

pub fn first_entry_to_user() -> u64 {
    fred_first_entry_to_user as *const () as u64
}

/// Programs this CPU's FRED MSRs, then turns FRED on (every MSR first: FRED spec §6).
pub fn init_this_cpu(cpu_index: usize) {
    let user = fred_entry_user as *const () as u64;
    assert_eq!(user % 4096, 0, "the FRED user entry must be page-aligned");
    assert_eq!(fred_entry_kernel as *const () as u64, user + 256, "the FRED supervisor entry must be 256 bytes after the user entry");
    let tops = cea::stack_tops(cpu_index);
    let me = percpu::this();
    // SAFETY: the FRED MSRs exist (CPUID said FRED); the stacks are this CPU's, mapped, and
    // 64-byte aligned (page-aligned tops), as WRMSR requires for RSP1..3.
    unsafe {
        Msr::new(IA32_FRED_RSP0).write(me.kernel_stack_top.load(Ordering::Relaxed));
        for (level, top) in tops.fred.iter().enumerate() {
            Msr::new(IA32_FRED_RSP1 + level as u32).write(*top);
        }
        Msr::new(IA32_FRED_STKLVLS).write(STACK_LEVELS);
        // Entry page, no red zone, external interrupts at level 0.
        Msr::new(IA32_FRED_CONFIG).write(user);
        let cr4 = Cr4::read_raw();
        Cr4::write_raw(cr4 | CR4_FRED);
    }
}

/// The stack a ring-3 event switches to: the running thread's kernel stack.
#[inline]
pub fn set_rsp0(top: u64) {
    // SAFETY: FRED is on; the stack is the thread's, mapped and page-aligned.
    unsafe { Msr::new(IA32_FRED_RSP0).write(top) };
}
