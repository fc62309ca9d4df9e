//! From GRUB to 64-bit Rust: the Multiboot2 header, the 32-bit entry, and the switch to long
//! mode on a temporary identity map of the first 4 GiB.
//!
//! Machine state at entry (Multiboot2 specification 1.6, 3.3): 32-bit protected mode, paging
//! off, EAX = 0x36d76289, EBX = physical address of the boot information, no usable stack,
//! GDTR possibly pointing at memory GRUB no longer owns.

use super::gdt::{BRIDGE_GDT, CODE32, CODE64, DATA32, DATA64, GDT_LIMIT};
use core::arch::global_asm;
use core::cell::UnsafeCell;
use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::EferFlags;
use x86_64::structures::paging::PageTableFlags;

const MB2_HEADER_MAGIC: u32 = 0xe852_50d6;
const MB2_ARCH_I386: u32 = 0;
const MB2_TAG_END: u16 = 0;
/// Asks GRUB to load modules at page-aligned addresses.
const MB2_TAG_MODULE_ALIGN: u16 = 6;
/// EAX when a Multiboot2 loader jumps to us.
const MB2_BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
const IA32_EFER: u32 = 0xc000_0080;

pub const BOOT_STACK_SIZE: usize = 256 * 1024;
/// The temporary map covers 4 GiB with 2 MiB pages: one PD per GiB.
const TEMP_PDS: usize = 4;

/// Memory only the entry assembly writes (before any Rust runs).
#[repr(C, align(4096))]
pub struct AsmOwned<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: only the BSP's entry code writes these, before any other code runs.
unsafe impl<const N: usize> Sync for AsmOwned<N> {}

#[no_mangle]
static BRIDGE_BOOT_STACK: AsmOwned<BOOT_STACK_SIZE> =
    AsmOwned(UnsafeCell::new([0; BOOT_STACK_SIZE]));
#[no_mangle]
static BRIDGE_TEMP_PML4: AsmOwned<4096> = AsmOwned(UnsafeCell::new([0; 4096]));
#[no_mangle]
static BRIDGE_TEMP_PDPT: AsmOwned<4096> = AsmOwned(UnsafeCell::new([0; 4096]));
#[no_mangle]
static BRIDGE_TEMP_PDS: AsmOwned<{ TEMP_PDS * 4096 }> =
    AsmOwned(UnsafeCell::new([0; TEMP_PDS * 4096]));
/// The lowest word of the boot stack holds this while the bridge runs; finding it changed
/// means the stack overflowed into whatever lies below.
pub const STACK_CANARY: u64 = 0x6272_6964_6765_2121;

/// Arms the stack canary (call first thing).
pub fn arm_stack_canary() {
    // SAFETY: the lowest word of the boot stack, far below anything in use this early.
    unsafe { (BRIDGE_BOOT_STACK.0.get() as *mut u64).write_volatile(STACK_CANARY) };
}

/// Whether the boot stack stayed within its bounds so far.
pub fn stack_intact() -> bool {
    // SAFETY: as above; a plain read.
    unsafe { (BRIDGE_BOOT_STACK.0.get() as *const u64).read_volatile() == STACK_CANARY }
}

/// EBX at entry, for `bridge_main`.
#[no_mangle]
static BRIDGE_MBI_PHYS: AsmOwned<8> = AsmOwned(UnsafeCell::new([0; 8]));

const TABLE: u64 = PageTableFlags::PRESENT.bits() | PageTableFlags::WRITABLE.bits();
const HUGE_2M: u64 = TABLE | PageTableFlags::HUGE_PAGE.bits();
const CR0_LONG: u64 = Cr0Flags::PROTECTED_MODE_ENABLE.bits()
    | Cr0Flags::EXTENSION_TYPE.bits()
    | Cr0Flags::PAGING.bits();

// The Multiboot2 header (specification 3.1): magic, architecture, length, checksum, then tags.
// SAFETY: data only; GRUB reads it from the file.
global_asm!(
    r#"
    .pushsection .multiboot2, "a"
    .balign 8
bridge_mb2_header:
    .long {magic}
    .long {arch}
    .long bridge_mb2_header_end - bridge_mb2_header
    .long -({magic} + {arch} + (bridge_mb2_header_end - bridge_mb2_header))
    .balign 8
    .short {tag_module_align}
    .short 0
    .long 8
    .balign 8
    .short {tag_end}
    .short 0
    .long 8
bridge_mb2_header_end:
    .popsection

    .pushsection .data.bridge_gdtr, "aw"
    .balign 16
    .global bridge_gdtr
bridge_gdtr:
    .short {gdt_limit}
    .quad {gdt}
    .popsection
    "#,
    magic = const MB2_HEADER_MAGIC,
    arch = const MB2_ARCH_I386,
    tag_module_align = const MB2_TAG_MODULE_ALIGN,
    tag_end = const MB2_TAG_END,
    gdt_limit = const GDT_LIMIT,
    gdt = sym BRIDGE_GDT,
);

// The 32-bit entry. Its order matters:
// - the loader magic is checked and EBX saved before anything clobbers them;
// - .bss is zeroed before the stack (in .bss) is used;
// - our GDT is loaded before any segment register is, since GRUB's GDT may be gone;
// - long mode is checked with CPUID before EFER.LME is touched (a #GP would triple-fault).
// SAFETY: runs first, alone, with interrupts off; touches only the bridge's own image (its
// .bss, stack and temporary tables) and COM1. The temporary tables identity-map the first
// 4 GiB, which holds the bridge, GRUB's MBI and modules (Multiboot2 addresses are 32-bit).
global_asm!(
    r#"
    .pushsection .text.entry32, "ax"
    .code32
    .global bridge_entry32
bridge_entry32:
    cli
    cld
    mov ebp, eax
    mov esi, ebx

    lea edi, [__bss_start]
    lea ecx, [__bss_end]
    sub ecx, edi
    xor eax, eax
    rep stosb

    lea esp, [{stack} + {stack_size}]
    mov dword ptr [{mbi_slot}], esi

    lgdt [bridge_gdtr]
    push {code32}
    lea eax, [bridge_entry32_flat]
    push eax
    retf
bridge_entry32_flat:
    mov ax, {data32}
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax

    cmp ebp, {bootloader_magic}
    jne bridge_entry32_not_multiboot2

    pushfd
    pop eax
    mov ecx, eax
    xor eax, 1 << 21
    push eax
    popfd
    pushfd
    pop eax
    push ecx
    popfd
    xor eax, ecx
    test eax, 1 << 21
    jz bridge_entry32_no_long_mode
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb bridge_entry32_no_long_mode
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 29
    jz bridge_entry32_no_long_mode

    lea eax, [{pdpt} + {table}]
    mov dword ptr [{pml4}], eax
    lea edi, [{pdpt}]
    lea eax, [{pds} + {table}]
    mov ecx, {temp_pds}
bridge_entry32_fill_pdpt:
    mov dword ptr [edi], eax
    add eax, 4096
    add edi, 8
    loop bridge_entry32_fill_pdpt
    lea edi, [{pds}]
    mov eax, {huge}
    mov ecx, {temp_pds} * 512
bridge_entry32_fill_pds:
    mov dword ptr [edi], eax
    add eax, 0x200000
    add edi, 8
    loop bridge_entry32_fill_pds

    mov eax, {cr4_pae}
    mov cr4, eax
    lea eax, [{pml4}]
    mov cr3, eax
    mov ecx, {efer}
    rdmsr
    or eax, {efer_lme}
    wrmsr
    mov eax, {cr0_long}
    mov cr0, eax
    push {code64}
    lea eax, [bridge_entry64]
    push eax
    retf

bridge_entry32_not_multiboot2:
    lea esi, [bridge_msg_not_multiboot2]
    jmp bridge_entry32_die
bridge_entry32_no_long_mode:
    lea esi, [bridge_msg_no_long_mode]
bridge_entry32_die:
    mov dx, 0x3fb
    mov al, 0x80
    out dx, al
    mov dx, 0x3f8
    mov al, 1
    out dx, al
    mov dx, 0x3f9
    xor al, al
    out dx, al
    mov dx, 0x3fb
    mov al, 3
    out dx, al
bridge_entry32_die_next:
    mov bl, byte ptr [esi]
    test bl, bl
    jz bridge_entry32_halt
    mov dx, 0x3fd
bridge_entry32_die_wait:
    in al, dx
    test al, 0x20
    jz bridge_entry32_die_wait
    mov dx, 0x3f8
    mov al, bl
    out dx, al
    inc esi
    jmp bridge_entry32_die_next
bridge_entry32_halt:
    cli
    hlt
    jmp bridge_entry32_halt

    .code64
bridge_entry64:
    mov ax, {data64}
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + {stack} + {stack_size}]
    mov edi, dword ptr [rip + {mbi_slot}]
    call {main}
    ud2
    .popsection

    .pushsection .rodata.bridge_entry32, "a"
bridge_msg_not_multiboot2:
    .asciz "limine-bridge: not started by a Multiboot2 loader (boot it with GRUB's multiboot2 command)\r\n"
bridge_msg_no_long_mode:
    .asciz "limine-bridge: this CPU has no long mode (x86-64): cannot boot a 64-bit kernel\r\n"
    .popsection
    "#,
    stack = sym BRIDGE_BOOT_STACK,
    stack_size = const BOOT_STACK_SIZE,
    mbi_slot = sym BRIDGE_MBI_PHYS,
    pml4 = sym BRIDGE_TEMP_PML4,
    pdpt = sym BRIDGE_TEMP_PDPT,
    pds = sym BRIDGE_TEMP_PDS,
    temp_pds = const TEMP_PDS,
    table = const TABLE,
    huge = const HUGE_2M,
    code32 = const CODE32,
    data32 = const DATA32,
    code64 = const CODE64,
    data64 = const DATA64,
    bootloader_magic = const MB2_BOOTLOADER_MAGIC,
    cr4_pae = const Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits(),
    efer = const IA32_EFER,
    efer_lme = const EferFlags::LONG_MODE_ENABLE.bits(),
    cr0_long = const CR0_LONG,
    main = sym super::boot::bridge_main,
);
