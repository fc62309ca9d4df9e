//! The jump into the kernel, with the machine state PROTOCOL.md prescribes for x86-64:
//! GDT with the protocol's descriptors (CS 0x28, data 0x30), an empty IDT, RSP at the top of
//! the kernel's stack with a 0 return address pushed, IF and DF clear, every other general
//! purpose register 0; for base revision 1 and later the lower half (the identity map the
//! bridge ran on) unmapped.
//!
//! The stub runs from its HHDM alias, so removing the identity map does not pull the code out
//! from under it; it uses only RIP-relative and register addressing.

use super::gdt::{CODE64, DATA64};
use core::arch::global_asm;

// SAFETY: called once by the BSP, at the stub's HHDM alias, with: the kernel entry point, the
// top of the kernel stack (HHDM address, 16-byte aligned), the PML4's HHDM address, whether
// to clear its lower half, and a GDTR operand (GDT base at its HHDM address) that stays
// mapped. Interrupts are off. Nothing after the `ret` belongs to the bridge.
global_asm!(
    r#"
    .pushsection .text.bridge_handoff, "ax"
    .global bridge_handoff
bridge_handoff:
    cli
    cld
    mov rsp, rsi
    lgdt [r8]
    push {code64}
    lea rax, [rip + bridge_handoff_cs]
    push rax
    retfq
bridge_handoff_cs:
    mov eax, {data64}
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    push 0
    push 0
    lidt [rsp]
    add rsp, 16
    test rcx, rcx
    jz bridge_handoff_jump
    xor eax, eax
    mov r9d, 256
bridge_handoff_unmap:
    mov qword ptr [rdx], rax
    add rdx, 8
    dec r9d
    jnz bridge_handoff_unmap
    mov rax, cr3
    mov cr3, rax
bridge_handoff_jump:
    push 0
    push rdi
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    ret
    .popsection
    "#,
    code64 = const CODE64,
    data64 = const DATA64,
);

extern "C" {
    fn bridge_handoff(entry: u64, stack_top: u64, pml4: u64, unmap_lower: u64, gdtr: u64) -> !;
}

/// Everything the last jump needs.
pub struct Handoff {
    pub entry: u64,
    pub stack_top: u64,
    pub pml4_hhdm: u64,
    pub unmap_lower_half: bool,
    /// Address of a GDTR operand holding the GDT's HHDM address.
    pub gdtr: u64,
    pub hhdm: u64,
}

impl Handoff {
    pub fn jump(&self) -> ! {
        let stub = bridge_handoff as *const () as u64 + self.hhdm;
        // SAFETY: the stub's HHDM alias maps the same code (the direct map covers the bridge
        // image, executable); the arguments satisfy the contract stated on the assembly.
        unsafe {
            let stub: unsafe extern "C" fn(u64, u64, u64, u64, u64) -> ! =
                core::mem::transmute(stub as *const ());
            stub(
                self.entry,
                self.stack_top,
                self.pml4_hhdm,
                u64::from(self.unmap_lower_half),
                self.gdtr,
            )
        }
    }
}
