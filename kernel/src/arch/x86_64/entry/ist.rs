//! The IDT/IST backend: an IDT whose 256 gates point at fixed-size stubs, one common entry
//! that saves the general registers into a `TrapFrame`, and the IRET exit.
//!
//! NMI, #DB and #MC are delivered on their own IST stacks and #DF on its own; everything else
//! stays on the current kernel stack (TSS.RSP0 when coming from ring 3).

use core::mem::offset_of;
use spin::Once;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use super::frame::TrapFrame;
use crate::arch::x86_64::{gdt, tss};

/// Vectors for which the CPU pushes an error code (SDM Vol. 3A, Table 6-1): #DF, #TS, #NP,
/// #SS, #GP, #PF, #AC, #CP, #VC, #SX.
pub const ERROR_CODE_VECTORS: u32 =
    1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 17 | 1 << 21 | 1 << 29 | 1 << 30;

/// Every stub is exactly this long, so gate `v` points at `ist_vector_stubs + v * STUB_SIZE`.
const STUB_SIZE: usize = 16;

// The stubs are emitted as raw bytes with fixed encodings (push imm8 0, push imm32 vector,
// jmp rel32) so that each one is 12 or 10 bytes wherever the assembler would otherwise pick
// shorter forms; padding to 16 keeps the arithmetic above exact.
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
    "    jz 1f",
    "    swapgs",
    // Both paths fence: a mispredicted CS test must not run kernel code on the user GS
    // (CVE-2019-1125, Linux FENCE_SWAPGS_{USER,KERNEL}_ENTRY).
    "1:  lfence",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov rdi, rsp",
    "    cld",
    "    call {dispatch}",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    test byte ptr [rsp + {cs_from_vector}], 3",
    "    jz 2f",
    "    swapgs",
    "2:  add rsp, 16",
    "    iretq",
    ".popsection",
    errcode_vectors = const ERROR_CODE_VECTORS,
    stub_size = const STUB_SIZE,
    cs_from_vector = const offset_of!(TrapFrame, cs) - offset_of!(TrapFrame, vector),
    dispatch = sym super::trap_dispatch,
);

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
fn ist_slot(vector: u8) -> u16 {
    match vector {
        2 => tss::IST_NMI,
        1 => tss::IST_DB,
        18 => tss::IST_MC,
        8 => tss::IST_DF,
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
            let dpl = if v == 3 { 3 } else { 0 };
            *gate = Gate::new(stubs + (v * STUB_SIZE) as u64, ist_slot(v as u8), dpl);
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
