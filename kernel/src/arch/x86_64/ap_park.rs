//! Where the APs wait from kernel entry until the BSP wants them: halted, not spinning.
//!
//! The bootloader (Limine, or the bridge) parks every AP in a loop that polls its
//! `goto_address`. Under an emulator each such loop is a host thread that never sleeps: with
//! hundreds of CPUs on two host cores the BSP got a sliver of the host while it built its page
//! tables and heap (64 CPUs under QEMU TCG: 9 s for what takes 0.6 s with 8). So the BSP sends
//! every AP here first thing. An AP loads a small IDT whose only gate is the NMI, says that it
//! is parked, and halts with interrupts off until its slot's `go` is set; the BSP then sends it
//! an NMI. An NMI that arrives between the check and the HLT moves its return address past the
//! HLT (`ap_park_nmi`), so no wake-up is lost. A released AP jumps to `smp::ap_entry` with the
//! registers and stack the bootloader gave it, as if the bootloader had sent it there.

use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{fence, AtomicU64, Ordering};
use x86_64::structures::idt::InterruptDescriptorTable;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use super::smp::MAX_CPUS;
use crate::boot::MpCpu;

/// One AP's side of the hand-shake, indexed by CPU index.
#[repr(C)]
struct Slot {
    /// Set by the BSP: leave the park.
    go: AtomicU64,
    /// Set by the AP once its NMI gate is loaded: from then on it may be halted, and an NMI
    /// wakes it safely.
    parked: AtomicU64,
}

static SLOTS: [Slot; MAX_CPUS] = [const { Slot { go: AtomicU64::new(0), parked: AtomicU64::new(0) } }; MAX_CPUS];

/// The parked APs' IDT (only the NMI gate is present) and its IDTR operand.
#[repr(C, align(16))]
struct ParkIdt {
    idt: UnsafeCell<InterruptDescriptorTable>,
    idtr: UnsafeCell<DescriptorTablePointer>,
}

// SAFETY: written only by the BSP in `park`, before any AP is sent to `ap_park_entry`
// (the goto_address store publishes it); afterwards only read, by LIDT.
unsafe impl Sync for ParkIdt {}

static PARK_IDT: ParkIdt = ParkIdt {
    idt: UnsafeCell::new(InterruptDescriptorTable::new()),
    idtr: UnsafeCell::new(DescriptorTablePointer { limit: 0, base: VirtAddr::zero() }),
};

extern "C" {
    fn ap_park_entry(cpu: &MpCpu) -> !;
    fn ap_park_nmi();
    fn ap_halt_forever(cpu: &MpCpu) -> !;
}

// SAFETY: `ap_park_entry` is entered only through a Limine `goto_address`, with RDI = this
// AP's `limine_mp_info`, whose `extra` the BSP set to the AP's CPU index (< MAX_CPUS), on the
// bootloader's stack and page tables (which map the kernel image). The NMI gate it loads
// points at `ap_park_nmi`, which only rewrites the interrupted RIP when that is the park
// loop's HLT. The released AP jumps to `smp::ap_entry` with RDI and RSP as it arrived.
core::arch::global_asm!(
    ".pushsection .text.ap_park, \"ax\"",
    ".global ap_park_entry",
    "ap_park_entry:",
    "    lidt [rip + {park_idt} + {idtr}]",
    "    mov rax, qword ptr [rdi + {extra}]",
    "    imul rax, rax, {slot_size}",
    "    lea rsi, [rip + {slots}]",
    "    add rsi, rax",
    "    mov qword ptr [rsi + {parked}], 1",
    // Store `parked`, then load `go`; the BSP stores `go`, then loads `parked`: with a full
    // fence on both sides at least one of us sees the other's store.
    "    mfence",
    "2:  cmp qword ptr [rsi + {go}], 0",
    "    jne 3f",
    ".global ap_park_hlt",
    "ap_park_hlt:",
    "    hlt",
    ".global ap_park_after_hlt",
    "ap_park_after_hlt:",
    "    jmp 2b",
    "3:  jmp {ap_entry}",
    "",
    ".global ap_park_nmi",
    "ap_park_nmi:",
    // An NMI right before the HLT would leave the AP asleep with `go` set: return past it.
    "    push rax",
    "    lea rax, [rip + ap_park_hlt]",
    "    cmp qword ptr [rsp + 8], rax",
    "    jne 4f",
    "    lea rax, [rip + ap_park_after_hlt]",
    "    mov qword ptr [rsp + 8], rax",
    "4:  pop rax",
    "    iretq",
    "",
    // CPUs beyond MAX_CPUS: asleep for good (an NMI would fault without an IDT; none is sent).
    ".global ap_halt_forever",
    "ap_halt_forever:",
    "    cli",
    "5:  hlt",
    "    jmp 5b",
    ".popsection",
    park_idt = sym PARK_IDT,
    idtr = const offset_of!(ParkIdt, idtr),
    extra = const offset_of!(MpCpu, extra),
    slot_size = const size_of::<Slot>(),
    slots = sym SLOTS,
    parked = const offset_of!(Slot, parked),
    go = const offset_of!(Slot, go),
    ap_entry = sym super::smp::ap_entry,
);

/// Sends every AP in `cpus` but the BSP to the park, numbering them 1, 2, ... in order (the
/// number goes into `extra`, and is the CPU index). CPUs past [`MAX_CPUS`] are put to sleep
/// for good. Returns how many were parked.
pub fn park(cpus: &[&MpCpu], bsp_lapic_id: u32) -> usize {
    // SAFETY: no AP runs kernel code yet, so nothing reads the IDT or IDTR; both live in a
    // static that stays mapped. The gate's selector is this CPU's CS, which the bootloader
    // loaded from the GDT every AP shares (Limine protocol: same GDT on every CPU).
    unsafe {
        let idt = &mut *PARK_IDT.idt.get();
        idt.non_maskable_interrupt.set_handler_addr(VirtAddr::new(ap_park_nmi as *const () as u64));
        *PARK_IDT.idtr.get() = DescriptorTablePointer {
            limit: (size_of::<InterruptDescriptorTable>() - 1) as u16,
            base: VirtAddr::new(idt as *const InterruptDescriptorTable as u64),
        };
    }
    let mut index = 1;
    let mut asleep = 0;
    for cpu in cpus.iter().filter(|c| c.lapic_id != bsp_lapic_id) {
        if index >= MAX_CPUS {
            cpu.goto_address.write(ap_halt_forever);
            asleep += 1;
            continue;
        }
        cpu.extra.store(index as u64, Ordering::Release);
        cpu.goto_address.write(ap_park_entry);
        index += 1;
    }
    if asleep > 0 {
        log::warn!("{asleep} CPUs beyond the kernel's limit of {MAX_CPUS}: left asleep");
    }
    index - 1
}

/// Lets the AP `cpu` (parked by [`park`]) go to `smp::ap_entry`.
pub fn release(cpu: &MpCpu) {
    let index = cpu.extra.load(Ordering::Acquire) as usize;
    let slot = &SLOTS[index];
    slot.go.store(1, Ordering::Release);
    fence(Ordering::SeqCst);
    if slot.parked.load(Ordering::Acquire) != 0 {
        super::apic::send_nmi(cpu.lapic_id);
    }
}
