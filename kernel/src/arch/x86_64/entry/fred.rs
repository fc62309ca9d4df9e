//! The FRED backend (Intel FRED specification, document 346446; Linux
//! `arch/x86/entry/entry_64_fred.S`, `arch/x86/kernel/fred.c`).
//!
//! Event delivery saves the whole context in a 64-byte frame on the stack of the event's
//! stack level, swaps GS itself when coming from ring 3, and ERETU/ERETS return. So the entry
//! code only pushes the general registers (plus the `vector` slot of our `TrapFrame`, right
//! under FRED's error code: the FRED frame *is* the bottom of a `TrapFrame`) and calls Rust.
//! No IST, no atomic-IST-entry, no SYSCALL trampoline, no SYSRET decision.
//!
//! Stack levels: #DB runs at level 1, NMI and #MC at level 2, #DF at level 3, each on its stack
//! in the entry area; everything else at level 0 (the thread's kernel stack from ring 3, the
//! current stack in ring 0). An event of a level not above the current one stays on the
//! current stack: a #DB inside the NMI handler runs on the NMI's stack without a switch.

use core::sync::atomic::Ordering;
use x86_64::registers::control::Cr4;
use x86_64::registers::model_specific::Msr;

use super::frame::TrapFrame;
use crate::arch::x86_64::{cea, percpu};

const IA32_FRED_RSP0: u32 = 0x1cc;
const IA32_FRED_RSP1: u32 = 0x1cd;
const IA32_FRED_STKLVLS: u32 = 0x1d0;
const IA32_FRED_CONFIG: u32 = 0x1d4;
const CR4_FRED: u64 = 1 << 32;

/// Event types, the saved SS qword's bits 51:48.
pub mod event_type {
    pub const EXTERNAL_INTERRUPT: u64 = 0;
    pub const NMI: u64 = 2;
    pub const HARDWARE_EXCEPTION: u64 = 3;
    pub const SOFTWARE_INTERRUPT: u64 = 4;
    pub const PRIVILEGED_SOFTWARE_EXCEPTION: u64 = 5;
    pub const SOFTWARE_EXCEPTION: u64 = 6;
    pub const OTHER: u64 = 7;
}
/// Vector of an `OTHER` event that is SYSCALL.
pub const OTHER_SYSCALL: u64 = 1;

/// IA32_FRED_STKLVLS holds two bits per exception vector: its stack level.
const fn stack_level(vector: u64, level: u64) -> u64 {
    level << (2 * vector)
}

/// #DB at level 1, NMI and #MC at 2, #DF at 3; everything else 0.
const STACK_LEVELS: u64 = stack_level(1, 1) | stack_level(2, 2) | stack_level(18, 2) | stack_level(8, 3);

pub fn event_type_of(frame: &TrapFrame) -> u64 {
    (frame.ss >> 48) & 0xf
}

pub fn vector_of(frame: &TrapFrame) -> u64 {
    (frame.ss >> 32) & 0xff
}

/// The event data FRED saved right above the frame: CR2 for #PF, DR6-style bits for #DB.
pub fn event_data(frame: &TrapFrame) -> u64 {
    // SAFETY: under FRED every TrapFrame is the bottom of a FRED frame, whose next qword is the
    // event data.
    unsafe { *((frame as *const TrapFrame).add(1) as *const u64) }
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
    "    push 0",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {user_event}",
    ".global fred_return_to_user",
    "fred_return_to_user:",
    pop_gprs!(),
    // ERETU starts at the error code, which it skips itself. A #GP here (a non-canonical
    // user RIP asked for by a return context) is the user's fault: see `dispatch::bad_return`.
    "    add rsp, 8",
    ".global fred_eretu_instruction",
    "fred_eretu_instruction:",
    "    .byte 0xf3, 0x0f, 0x01, 0xca", // ERETU
    // The supervisor entry is 256 bytes after the user entry (FRED spec §5.1).
    ".balign 256, 0xcc",
    ".global fred_entry_kernel",
    "fred_entry_kernel:",
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
    user_event = sym super::dispatch::fred_user_event,
    kernel_event = sym super::dispatch::fred_kernel_event,
    first_run = sym super::dispatch::first_run,
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
pub fn set_rsp0(top: u64) {
    // SAFETY: FRED is on; the stack is the thread's, mapped and page-aligned.
    unsafe { Msr::new(IA32_FRED_RSP0).write(top) };
}
