//! The AP trampoline: a STARTUP IPI sends an AP here in real mode; it climbs to long mode on
//! the kernel's final page tables, lets Rust set its PAT, MTRRs and x2APIC mode, then parks on
//! its `limine_mp_info.goto_address`, running from the trampoline's HHDM alias.
//!
//! The code is copied to a page below 1 MiB and is position independent: in real mode it finds
//! itself from CS, later from EBX/RBX (its physical base). Its data block (the
//! [`TrampolineData`] at its end) is filled by the BSP before each AP is started. The park
//! loop runs at the HHDM alias because the BSP removes the identity map before it enters the
//! kernel (base revision 1 and later), and reloads CR3 before jumping so no stale
//! identity-map TLB entry survives.

use super::gdt::{CODE32, DATA32, DATA64};
use crate::arch::cpu;
use bridge::protocol::MpInfo;
use core::arch::global_asm;
use core::mem::{offset_of, size_of};
use x86_64::registers::control::{Cr0Flags, Cr4Flags};

/// An LGDT/LIDT operand as real mode reads it (with a 32-bit operand size).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Pointer32 {
    pub limit: u16,
    pub base: u32,
}

/// An LGDT operand in 64-bit mode.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Pointer64 {
    pub limit: u16,
    pub base: u64,
}

/// An indirect far jump target (m16:32).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct FarPointer {
    pub offset: u32,
    pub selector: u16,
}

/// What the BSP tells the trampoline; at the end of the copied code.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct TrampolineData {
    /// Set to 1 by the AP once it no longer reads this block (first, so it is aligned).
    pub booted: u32,
    /// The final PML4 (below 4 GiB).
    pub cr3: u32,
    /// EFER bits to set: LME, and NXE when available.
    pub efer: u32,
    /// The final CR0: PE, ET, WP, PG.
    pub cr0: u32,
    pub hhdm: u64,
    /// `ap_prepare`, called at its identity address.
    pub prepare: u64,
    /// HHDM address of this AP's `limine_mp_info`; its `reserved` field holds the stack top.
    pub info: u64,
    /// Patched by the trampoline itself: its 32-bit entry and the 32-bit code selector.
    pub far32: FarPointer,
    /// Patched by the trampoline itself: its 64-bit entry and the 64-bit code selector.
    pub far64: FarPointer,
    /// An empty IDT: any exception before the kernel's IDT is a shutdown, not a wild jump.
    pub idtr_null: Pointer32,
    /// The GDT at its physical address (for protected mode).
    pub gdtr_phys: Pointer32,
    /// The GDT at its HHDM address (for the kernel).
    pub gdtr_hhdm: Pointer64,
}

const CR0_PROTECTED: u64 = Cr0Flags::PROTECTED_MODE_ENABLE.bits() | Cr0Flags::EXTENSION_TYPE.bits();

// SAFETY: this code runs only on APs the BSP starts with a STARTUP IPI pointing at a copy of
// it below 1 MiB, after the BSP filled the copy's data block: the page tables in `cr3` map the
// copy at identity and HHDM addresses, the bridge (for `prepare`) at identity, and the stack in
// `info.reserved`. Each AP leaves the data block alone once it set `booted`, so the BSP can
// start the next one; parked APs read only their own `limine_mp_info`.
global_asm!(
    r#"
    .pushsection .rodata.bridge_ap_trampoline, "a"
    // Offsets inside the trampoline (the copy runs at another address).
    .set BRIDGE_AP_DATA, bridge_ap_data - bridge_ap_trampoline
    .set BRIDGE_AP_PROTECTED, bridge_ap_protected - bridge_ap_trampoline
    .set BRIDGE_AP_LONG, bridge_ap_long - bridge_ap_trampoline
    .set BRIDGE_AP_PARK, bridge_ap_park - bridge_ap_trampoline
    .balign 16
    .global bridge_ap_trampoline
bridge_ap_trampoline:
    .code16
    cli
    cld
    mov ax, cs
    mov ds, ax
    xor ebx, ebx
    mov bx, ax
    shl ebx, 4
    lidt [BRIDGE_AP_DATA + {idtr_null}]
    // Operand-size prefix: load all 32 bits of the GDT base, not 24.
    .byte 0x66
    lgdt [BRIDGE_AP_DATA + {gdtr_phys}]
    lea eax, [ebx + BRIDGE_AP_PROTECTED]
    mov dword ptr [BRIDGE_AP_DATA + {far32}], eax
    mov word ptr [BRIDGE_AP_DATA + {far32} + 4], {code32}
    mov eax, {cr0_protected}
    mov cr0, eax
    jmp fword ptr [BRIDGE_AP_DATA + {far32}]

    .code32
bridge_ap_protected:
    mov ax, {data32}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov eax, {cr4}
    mov cr4, eax
    mov eax, dword ptr [ebx + BRIDGE_AP_DATA + {cr3}]
    mov cr3, eax
    mov ecx, {efer_msr}
    rdmsr
    or eax, dword ptr [ebx + BRIDGE_AP_DATA + {efer}]
    wrmsr
    mov eax, dword ptr [ebx + BRIDGE_AP_DATA + {cr0}]
    mov cr0, eax
    lea eax, [ebx + BRIDGE_AP_LONG]
    mov dword ptr [ebx + BRIDGE_AP_DATA + {far64}], eax
    mov word ptr [ebx + BRIDGE_AP_DATA + {far64} + 4], {code64}
    jmp fword ptr [ebx + BRIDGE_AP_DATA + {far64}]

    .code64
bridge_ap_long:
    mov ax, {data64}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    // The upper halves of registers are undefined after the mode switch.
    mov ebx, ebx
    mov r12, qword ptr [rbx + BRIDGE_AP_DATA + {info}]
    mov rsp, qword ptr [r12 + {mp_reserved}]
    mov rdi, r12
    call qword ptr [rbx + BRIDGE_AP_DATA + {prepare}]
    lgdt [rbx + BRIDGE_AP_DATA + {gdtr_hhdm}]
    mov r13, qword ptr [rbx + BRIDGE_AP_DATA + {hhdm}]
    add r13, rbx
    lea rax, [r13 + BRIDGE_AP_PARK]
    jmp rax
bridge_ap_park:
    mov dword ptr [r13 + BRIDGE_AP_DATA + {booted}], 1
bridge_ap_spin:
    mov rax, qword ptr [r12 + {mp_goto}]
    test rax, rax
    jnz bridge_ap_go
    pause
    jmp bridge_ap_spin
bridge_ap_go:
    mov rcx, cr3
    mov cr3, rcx
    mov rdi, r12
    mov rsp, qword ptr [r12 + {mp_reserved}]
    push 0
    push rax
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
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

    .balign 16
    .global bridge_ap_data
bridge_ap_data:
    .space {data_size}
    .global bridge_ap_trampoline_end
bridge_ap_trampoline_end:
    .popsection
    "#,
    idtr_null = const offset_of!(TrampolineData, idtr_null),
    gdtr_phys = const offset_of!(TrampolineData, gdtr_phys),
    far32 = const offset_of!(TrampolineData, far32),
    far64 = const offset_of!(TrampolineData, far64),
    cr3 = const offset_of!(TrampolineData, cr3),
    efer = const offset_of!(TrampolineData, efer),
    cr0 = const offset_of!(TrampolineData, cr0),
    gdtr_hhdm = const offset_of!(TrampolineData, gdtr_hhdm),
    hhdm = const offset_of!(TrampolineData, hhdm),
    prepare = const offset_of!(TrampolineData, prepare),
    info = const offset_of!(TrampolineData, info),
    booted = const offset_of!(TrampolineData, booted),
    data_size = const size_of::<TrampolineData>(),
    mp_reserved = const offset_of!(MpInfo, reserved),
    mp_goto = const offset_of!(MpInfo, goto_address),
    code32 = const CODE32,
    data32 = const DATA32,
    code64 = const super::gdt::CODE64,
    data64 = const DATA64,
    cr0_protected = const CR0_PROTECTED,
    cr4 = const Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits(),
    efer_msr = const 0xc000_0080u32,
);

extern "C" {
    static bridge_ap_trampoline: u8;
    static bridge_ap_data: u8;
    static bridge_ap_trampoline_end: u8;
}

/// The trampoline's code and data block, as bytes to copy.
pub fn image() -> &'static [u8] {
    // SAFETY: the three symbols delimit one contiguous .rodata block defined above.
    unsafe {
        let start = core::ptr::addr_of!(bridge_ap_trampoline);
        let end = core::ptr::addr_of!(bridge_ap_trampoline_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// Where the data block sits in the copied image.
pub fn data_offset() -> usize {
    core::ptr::addr_of!(bridge_ap_data) as usize
        - core::ptr::addr_of!(bridge_ap_trampoline) as usize
}

/// What every AP must set up before it parks, decided by the BSP.
pub struct ApSetup {
    pub pat: bool,
    pub mtrrs: Option<cpu::Mtrrs>,
    pub x2apic: bool,
}

/// Written by the BSP before it starts any AP, only read afterwards.
pub struct SharedSetup(core::cell::UnsafeCell<ApSetup>);

// SAFETY: the BSP writes it once, before the first STARTUP IPI; APs only read it.
unsafe impl Sync for SharedSetup {}

pub static AP_SETUP: SharedSetup = SharedSetup(core::cell::UnsafeCell::new(ApSetup {
    pat: false,
    mtrrs: None,
    x2apic: false,
}));

impl SharedSetup {
    /// # Safety
    /// No AP is running the trampoline.
    pub unsafe fn set(&self, setup: ApSetup) {
        // SAFETY: per the caller, nothing reads it concurrently.
        unsafe { *self.0.get() = setup };
    }
}

/// Runs on each AP (at its identity address, on its own stack, interrupts off) before it
/// parks: the per-CPU state the protocol gives every CPU.
pub extern "C" fn ap_prepare(_info: u64) {
    // SAFETY: the BSP finished writing AP_SETUP before sending this AP's STARTUP IPI.
    let setup = unsafe { &*AP_SETUP.0.get() };
    // SAFETY: the BSP found PAT, MTRRs and x2APIC via CPUID and the APs are the same model;
    // the values are the protocol's PAT layout and the BSP's own MTRRs.
    unsafe {
        if let Some(mtrrs) = &setup.mtrrs {
            mtrrs.restore();
        }
        if setup.pat {
            cpu::write_msr(cpu::IA32_PAT, cpu::PAT_LAYOUT);
        }
        if setup.x2apic {
            super::lapic::Lapic::enable_x2apic();
        }
    }
}
