//! The AP trampoline: a STARTUP IPI sends an AP here in real mode; it climbs to long mode on
//! the kernel's final page tables, finds its slot by its APIC ID, lets Rust set its PAT, MTRRs
//! and x2APIC mode, then parks on its `limine_mp_info.goto_address`, running from the
//! trampoline's HHDM alias.
//!
//! The code is copied to a page below 1 MiB and is position independent: in real mode it finds
//! itself from CS, later from EBX/RBX (its physical base). Its data block (the
//! [`TrampolineData`] at its end) is filled by the BSP once, before it starts every AP at once;
//! the APs only read it, but for the `arrived` count. Each AP reads its APIC ID with CPUID and
//! takes its [`ApSlot`] from a table indexed by that ID. The park loop runs at the HHDM alias
//! because the BSP removes the identity map before it enters the kernel (base revision 1 and
//! later), and reloads CR3 before jumping so no stale identity-map TLB entry survives.
//!
//! While the BSP starts the others, a parked AP halts (interrupts off) instead of polling: under
//! an emulator a polling CPU is a host thread that never sleeps, and hundreds of them starve
//! the CPUs still starting and the BSP. Right before the hand-off the BSP sets `wake` and sends
//! each parked AP an NMI, whose handler (the data block holds its IDT) returns past the HLT;
//! from then on the AP polls `goto_address` as the protocol says.

use super::gdt::{DATA32, DATA64};
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

/// One AP's entry in the table the trampoline indexes by APIC ID.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ApSlot {
    /// HHDM address of the AP's `limine_mp_info` (its `reserved` field holds the stack top);
    /// 0: no CPU with this APIC ID is started.
    pub info: u64,
    /// Set to 1 by the AP when it parks.
    pub booted: u32,
    pub reserved: u32,
}

/// Where CPUID puts the APIC ID the trampoline looks up.
pub const APIC_ID_LEAF_1: u32 = 1;
/// CPUID leaf 0xB: EDX is the full 32-bit x2APIC ID.
pub const APIC_ID_LEAF_B: u32 = 0xb;

/// What the BSP tells the trampoline; at the end of the copied code.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct TrampolineData {
    /// How many APs parked (LOCK INC by each; first, so it is aligned).
    pub arrived: u32,
    /// Set by the BSP right before the hand-off: parked APs stop halting and poll.
    pub wake: u32,
    /// The final PML4 (below 4 GiB).
    pub cr3: u32,
    /// EFER bits to set: LME, and NXE when available.
    pub efer: u32,
    /// The final CR0: PE, ET, WP, PG.
    pub cr0: u32,
    /// [`APIC_ID_LEAF_1`] (xAPIC IDs, CPUID.1:EBX[31:24]) or [`APIC_ID_LEAF_B`] (CPUID.0BH:EDX).
    pub apic_id_leaf: u32,
    /// Entries in the slot table (the highest APIC ID started, plus one).
    pub slot_count: u32,
    pub hhdm: u64,
    /// `ap_prepare`, called at its identity address.
    pub prepare: u64,
    /// Physical address of the [`ApSlot`] table (identity-mapped while APs start).
    pub slots: u64,
    /// The trampoline's 32-bit entry and the 32-bit code selector (filled by the BSP).
    pub far32: FarPointer,
    /// The trampoline's 64-bit entry and the 64-bit code selector (filled by the BSP).
    pub far64: FarPointer,
    /// An empty IDT: any exception before the kernel's IDT is a shutdown, not a wild jump.
    pub idtr_null: Pointer32,
    /// The GDT at its physical address (for protected mode).
    pub gdtr_phys: Pointer32,
    /// The GDT at its HHDM address (for the kernel).
    pub gdtr_hhdm: Pointer64,
    /// The parked APs' IDT at its HHDM address: vectors 0 to 2, only the NMI gate present.
    pub idtr_park: Pointer64,
    pub park_idt: [[u64; 2]; 3],
}

const CR0_PROTECTED: u64 = Cr0Flags::PROTECTED_MODE_ENABLE.bits() | Cr0Flags::EXTENSION_TYPE.bits();

// SAFETY: this code runs only on APs the BSP starts with a STARTUP IPI pointing at a copy of
// it below 1 MiB, after the BSP filled the copy's data block once (far pointers included) and
// the slot table: the page tables in `cr3` map the copy at identity and HHDM addresses, the
// bridge (for `prepare`) and the slot table at identity, and each slot's `info.reserved` is a
// stack of its own. APs run it all at once: they only read the data block (but for the LOCK INC
// of `arrived`) and write only their own slot; parked APs read only their own
// `limine_mp_info`.
global_asm!(
    r#"
    .pushsection .rodata.bridge_ap_trampoline, "a"
    // Offsets inside the trampoline (the copy runs at another address).
    .set BRIDGE_AP_DATA, bridge_ap_data - bridge_ap_trampoline
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
    mov eax, {cr0_protected}
    mov cr0, eax
    jmp fword ptr [BRIDGE_AP_DATA + {far32}]

    .code32
    .global bridge_ap_protected
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
    jmp fword ptr [ebx + BRIDGE_AP_DATA + {far64}]

    .code64
    .global bridge_ap_long
bridge_ap_long:
    mov ax, {data64}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    // The upper halves of registers are undefined after the mode switch.
    mov ebx, ebx
    // Which AP am I: the APIC ID picks the slot (CPUID clobbers RBX, kept in R14).
    mov r14, rbx
    mov eax, dword ptr [rbx + BRIDGE_AP_DATA + {apic_id_leaf}]
    xor ecx, ecx
    cpuid
    cmp dword ptr [r14 + BRIDGE_AP_DATA + {apic_id_leaf}], {leaf_b}
    je 1f
    shr ebx, 24
    mov edx, ebx
1:
    mov rbx, r14
    cmp edx, dword ptr [rbx + BRIDGE_AP_DATA + {slot_count}]
    jae bridge_ap_stray
    shl rdx, 4
    mov r15, qword ptr [rbx + BRIDGE_AP_DATA + {slots}]
    add r15, rdx
    mov r12, qword ptr [r15 + {slot_info}]
    test r12, r12
    jz bridge_ap_stray
    mov rsp, qword ptr [r12 + {mp_reserved}]
    mov rdi, r12
    call qword ptr [rbx + BRIDGE_AP_DATA + {prepare}]
    lgdt [rbx + BRIDGE_AP_DATA + {gdtr_hhdm}]
    mov r13, qword ptr [rbx + BRIDGE_AP_DATA + {hhdm}]
    // The slot through the HHDM too: the identity map goes at the hand-off.
    add r15, r13
    add r13, rbx
    lea rax, [r13 + BRIDGE_AP_PARK]
    jmp rax
bridge_ap_park:
    lidt [r13 + BRIDGE_AP_DATA + {idtr_park}]
    mov dword ptr [r15 + {slot_booted}], 1
    lock inc dword ptr [r13 + BRIDGE_AP_DATA + {arrived}]
bridge_ap_sleep:
    cmp dword ptr [r13 + BRIDGE_AP_DATA + {wake}], 0
    jne bridge_ap_spin
bridge_ap_hlt:
    hlt
bridge_ap_after_hlt:
    jmp bridge_ap_sleep
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
    // The BSP's wake-up: an NMI that lands between the `wake` check and the HLT returns past
    // the HLT, so the AP cannot sleep through it.
    .global bridge_ap_nmi
bridge_ap_nmi:
    push rax
    lea rax, [rip + bridge_ap_hlt]
    cmp qword ptr [rsp + 8], rax
    jne 2f
    lea rax, [rip + bridge_ap_after_hlt]
    mov qword ptr [rsp + 8], rax
2:
    pop rax
    iretq
    // A CPU whose APIC ID has no slot (one the BSP did not mean to start): asleep for good.
bridge_ap_stray:
    cli
    hlt
    jmp bridge_ap_stray

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
    arrived = const offset_of!(TrampolineData, arrived),
    wake = const offset_of!(TrampolineData, wake),
    apic_id_leaf = const offset_of!(TrampolineData, apic_id_leaf),
    slot_count = const offset_of!(TrampolineData, slot_count),
    slots = const offset_of!(TrampolineData, slots),
    idtr_park = const offset_of!(TrampolineData, idtr_park),
    slot_info = const offset_of!(ApSlot, info),
    slot_booted = const offset_of!(ApSlot, booted),
    leaf_b = const APIC_ID_LEAF_B,
    data_size = const size_of::<TrampolineData>(),
    mp_reserved = const offset_of!(MpInfo, reserved),
    mp_goto = const offset_of!(MpInfo, goto_address),
    data32 = const DATA32,
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

extern "C" {
    static bridge_ap_protected: u8;
    static bridge_ap_long: u8;
    static bridge_ap_nmi: u8;
}

/// Where a label of the trampoline sits in the copied image.
fn offset_of_label(label: *const u8) -> u64 {
    label as u64 - core::ptr::addr_of!(bridge_ap_trampoline) as u64
}

/// Where the 32-bit entry, the 64-bit entry and the NMI handler sit in the copied image.
pub fn entry_offsets() -> (u64, u64, u64) {
    (
        offset_of_label(core::ptr::addr_of!(bridge_ap_protected)),
        offset_of_label(core::ptr::addr_of!(bridge_ap_long)),
        offset_of_label(core::ptr::addr_of!(bridge_ap_nmi)),
    )
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
