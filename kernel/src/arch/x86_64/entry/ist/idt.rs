//! The IDT: 256 gates onto fixed-size stubs, the common entry, the decode and the IRET exit.

use core::mem::offset_of;
use spin::Once;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use super::syscall::{self, EXIT_BY_SYSRET};
use super::{aist, atomic_ist};
use crate::arch::x86_64::entry::event::{self, vector, Event};
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::handlers;
use crate::arch::x86_64::{gdt, tss};
pub use syscall::init_syscall;

/// Every stub is exactly this long, so gate `v` points at `ist_vector_stubs + v * STUB_SIZE`.
const STUB_SIZE: usize = 16;

// The stubs are emitted as raw bytes with fixed encodings (push imm8 0, push imm32 vector,
// jmp rel32) so that each one is 12 or 10 bytes wherever the assembler would otherwise pick
// shorter forms; padding to 16 keeps the arithmetic above exact.
// SAFETY: the stubs are entered only through IDT gates (and the trampoline only by SYSCALL through
// LSTAR), with the CPU's frame on the stack; offsets into `TrapFrame` and the entry area are `const`
// operands from Rust, SWAPGS follows the saved CS (or the IRET special case), and the exit restores
// exactly what the entry saved.
core::arch::global_asm!(
    ".pushsection .text.entry_ist, \"ax\"",
    ".balign 16",
    ".global ist_vector_stubs",
    "ist_vector_stubs:",
    ".set vec, 0",
    ".rept 256",
    "    .if (vec >= 32) || ((({errcode_vectors} >> vec) & 1) == 0)",
    "        .byte 0x6a, 0x00",                  // push 0: the error code the CPU did not push
    "    .endif",
    "    .byte 0x68",                            // push imm32: the vector
    "    .long vec",
    "    .byte 0xe9",                            // jmp rel32 ist_common_entry
    "    .long ist_common_entry - (. + 4)",
    "    .balign {stub_size}, 0xcc",
    "    .set vec, vec + 1",
    ".endr",
    "",
    // Stack on arrival: vector, error code, then the CPU's frame (RIP, CS, RFLAGS, RSP, SS).
    "ist_common_entry:",
    "    test byte ptr [rsp + {cs_from_vector}], 3",
    "    jnz 4f",
    // From ring 0, GS is the kernel's, except on the IRET back to user space, which runs
    // after SWAPGS: a #GP there (a bad user return context) arrives with the user's GS
    // (Linux: error_entry's .Lerror_bad_iret). That handler kills the thread, never returns.
    "    push rax",
    "    lea rax, [rip + ist_iret_instruction]",
    "    cmp [rsp + 8 + {rip_from_vector}], rax",
    "    pop rax",
    "    jne 1f",
    "4:  swapgs",
    // Both paths fence: a mispredicted CS test must not run kernel code on the user GS
    // (CVE-2019-1125, Linux FENCE_SWAPGS_{{USER,KERNEL}}_ENTRY).
    "1:  lfence",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {dispatch}",
    // Every return to an interrupted context, and a new thread's first entry to user space,
    // goes through here with RSP at a TrapFrame.
    ".global ist_trap_return",
    "ist_trap_return:",
    pop_gprs!(),
    // The syscall exit decision (Rust, `syscall_exit`) marked the vector slot if SYSRET
    // returns to exactly this context; RCX and R11 then already hold RIP and RFLAGS.
    "    cmp qword ptr [rsp], {exit_by_sysret}",
    "    je 3f",
    "    test byte ptr [rsp + {cs_from_vector}], 3",
    "    jz 2f",
    "    swapgs",
    "2:  add rsp, 16",
    // A #GP here (a non-canonical or otherwise bad user RIP) kills the thread: see
    // `decode` (Event::BadUserReturn).
    ".global ist_iret_instruction",
    "ist_iret_instruction:",
    "    iretq",
    "3:  mov rsp, [rsp + {rsp_from_vector}]",
    "    swapgs",
    // Ring 0 with the user's RSP and GS: an NMI, #MC or #DB here is what atomic-IST-entry's
    // GS-from-MSR rule is for (the `syscall_gap` scenario puts a breakpoint here).
    ".global ist_sysret_instruction",
    "ist_sysret_instruction:",
    "    sysretq",
    "",
    // A new user thread's first switch-in lands here, on a stack holding its TrapFrame.
    ".global ist_first_entry_to_user",
    "ist_first_entry_to_user:",
    "    call {first_run}",
    "    jmp ist_trap_return",
    ".popsection",
    errcode_vectors = const vector::ERROR_CODE_EXCEPTIONS,
    stub_size = const STUB_SIZE,
    cs_from_vector = const offset_of!(TrapFrame, cs) - offset_of!(TrapFrame, vector),
    rsp_from_vector = const offset_of!(TrapFrame, rsp) - offset_of!(TrapFrame, vector),
    rip_from_vector = const offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, vector),
    exit_by_sysret = const EXIT_BY_SYSRET,
    dispatch = sym idt_event,
    first_run = sym handlers::first_run,
);

extern "C" {
    fn ist_first_entry_to_user();
    static ist_iret_instruction: u8;
    static ist_sysret_instruction: u8;
}

/// The SYSRET that returns to user space.
pub fn sysret_instruction() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &ist_sysret_instruction as *const u8 as u64 }
}

/// Where a new user thread's first context switch returns to.
pub fn first_entry_to_user() -> u64 {
    ist_first_entry_to_user as *const () as u64
}

/// The address of the IRET that returns to user space (a #GP there is the user's fault).
pub fn iret_instruction() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &ist_iret_instruction as *const u8 as u64 }
}

/// The Rust entry of every IDT stub, and of NMI, #DB and #MC from ring 3 once atomic-IST-entry
/// has moved them to the thread's kernel stack: decode, let the shared handlers decide, and
/// on the way back to ring 3 give the scheduler its turn.
pub(in crate::arch::x86_64::entry) extern "C" fn idt_event(frame: &mut TrapFrame) {
    crate::syscall::uaccess::clac_on_entry();
    let event = decode(frame);
    if frame.from_user() {
        handlers::user_event(frame, event);
        handlers::before_user_return();
    } else {
        handlers::kernel_event(frame, event);
    }
}

/// What arrived through gate `frame.vector`, with CR2 or DR6 where they apply.
pub(in crate::arch::x86_64::entry) fn decode(frame: &TrapFrame) -> Event {
    let v = frame.vector as u8;
    let info = match v {
        vector::PF => x86_64::registers::control::Cr2::read_raw(),
        vector::DB => handlers::read_clear_dr6(),
        _ => 0,
    };
    match event::decode_idt(v, frame.error_code, frame.from_user(), info) {
        // The IRET back to user space runs after SWAPGS: a #GP there (a non-canonical RIP the
        // thread asked to return to) is the thread's fault, not the kernel's.
        Event::Exception { vector: vector::GP, error_code, .. } if !frame.from_user() && frame.rip == iret_instruction() => {
            // SAFETY: RSP of the faulting context points at the IRET frame the kernel built on
            // this thread's kernel stack, which starts with RIP.
            Event::BadUserReturn { error_code, rip: unsafe { *(frame.rsp as *const u64) } }
        }
        e => e,
    }
}

extern "C" {
    static ist_vector_stubs: [[u8; STUB_SIZE]; 256];
}

/// An IDT gate descriptor (SDM Vol. 3A §6.14.1, Figure 6-8).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST index (0 = none).
    ist: u8,
    /// P, DPL, type (0xE = 64-bit interrupt gate: IF cleared on entry).
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const INTERRUPT_GATE: u8 = 0x8e;

    fn new(handler: u64, ist: u16, dpl: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CS.0,
            ist: ist as u8,
            type_attr: Self::INTERRUPT_GATE | (dpl & 3) << 5,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// The IST slot each vector is delivered on (0 = the current stack).
fn ist_slot(v: u8) -> u16 {
    match v {
        vector::NMI => tss::IST_NMI,
        vector::DB => tss::IST_DB,
        vector::MC => tss::IST_MC,
        vector::DF => tss::IST_DF,
        _ => 0,
    }
}

/// Loads the IDT (built once, shared by every CPU) on this CPU.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        // SAFETY: only the address of the stub table is taken.
        let stubs = unsafe { ist_vector_stubs.as_ptr() } as u64;
        let mut gates = [Gate::default(); 256];
        for (v, gate) in gates.iter_mut().enumerate() {
            // #BP may be raised from ring 3 with INT3; every other gate is for ring 0 and
            // hardware only, so a user `int N` on it faults with #GP instead.
            let dpl = if vector::open_to_user(v as u8) { 3 } else { 0 };
            let handler = match atomic_ist::Event::ALL.into_iter().find(|e| e.vector() == v as u64) {
                Some(e) => aist::entry_point(e),
                None => stubs + (v * STUB_SIZE) as u64,
            };
            *gate = Gate::new(handler, ist_slot(v as u8), dpl);
        }
        Idt(gates)
    });
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a static that lives forever; every gate points at a stub in kernel
    // text with the kernel code selector.
    unsafe { lidt(&ptr) };
}
