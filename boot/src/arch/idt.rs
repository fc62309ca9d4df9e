//! Exception reporting while the bridge runs: a fault in the bridge prints what and where on
//! COM1 instead of triple-faulting silently. Replaced by an empty IDT at the hand-off.

use super::gdt::CODE64;
use super::serial::say;
use core::arch::global_asm;
use core::cell::UnsafeCell;

const VECTORS: usize = 32;

/// What the stubs push, then what the CPU pushed (Intel SDM Vol. 3A, 6.14.2).
#[repr(C)]
pub struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

// One stub per vector: vectors without an error code push 0 in its place, so every frame has
// the same layout; the common path passes the frame to Rust on an aligned stack.
// SAFETY: reached only through the IDT below, from an exception in the bridge; the handler
// never returns.
global_asm!(
    r#"
    .pushsection .text.bridge_exceptions, "ax"
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
bridge_exception_\n:
    .if (\n == 8) || ((\n >= 10) && (\n <= 14)) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    push 0
    .endif
    push \n
    jmp bridge_exception_common
    .endr
bridge_exception_common:
    mov rdi, rsp
    and rsp, -16
    call {report}
    ud2
    .popsection

    .pushsection .rodata.bridge_exception_stubs, "a"
    .balign 8
    .global bridge_exception_stubs
bridge_exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad bridge_exception_\n
    .endr
    .popsection
    "#,
    report = sym report,
);

extern "C" {
    static bridge_exception_stubs: [u64; VECTORS];
}

extern "C" fn report(frame: &ExceptionFrame) -> ! {
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    say!(
        "CPU exception {} (error code {:#x}) at RIP {:#x}, RSP {:#x}, CR2 {:#x}",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp,
        cr2
    );
    say!("internal error in the bridge; halting");
    super::halt()
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[[u64; 2]; VECTORS]>);

// SAFETY: written once by the BSP in `init`, before LIDT; read only by the CPU afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; 2]; VECTORS]));

/// An interrupt gate (Intel SDM Vol. 3A, 6.14.1): present, DPL 0, type 0xE.
pub fn gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(CODE64) << 16)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Installs the reporting IDT on the BSP.
pub fn init() {
    // SAFETY: the stub table is 32 addresses; IDT is written before LIDT makes the CPU use
    // it, by the only CPU running.
    unsafe {
        let table = &mut *IDT.0.get();
        for (entry, &stub) in table.iter_mut().zip(bridge_exception_stubs.iter()) {
            *entry = gate(stub);
        }
        let pointer = x86_64::structures::DescriptorTablePointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: x86_64::VirtAddr::new(IDT.0.get() as u64),
        };
        x86_64::instructions::tables::lidt(&pointer);
    }
}
