//! The I/O APIC: routes device interrupt lines (ISA IRQs, through the MADT's overrides) to a
//! vector on one CPU. Lines start masked; a user driver's `irq_bind` unmasks its line, each
//! interrupt masks it again until the driver's `irq_ack`, so a level-triggered device cannot
//! storm the CPU before its driver ran. An edge that arrives while the line is masked is lost
//! (ISA lines are edge-triggered): a driver looks at its device after each `irq_ack` rather
//! than relying on one interrupt per event (the console checks the UART's status register).

use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, Once};

use super::acpi::{IoApic, IsaOverride, Platform};
use super::paging::{self, Mapping};

/// ISA IRQ `n` arrives on vector `IRQ_BASE + n`.
pub const IRQ_BASE: u8 = super::entry::vector::ISA_IRQ_BASE;
/// ISA IRQ lines a driver can bind.
pub const ISA_IRQS: u8 = super::entry::vector::ISA_IRQS;

struct Chip {
    /// Register-select window (IOREGSEL at +0, IOWIN at +0x10), mapped uncached.
    base: u64,
    gsi_base: u32,
    lines: u32,
}

struct Routing {
    chips: alloc::vec::Vec<Chip>,
    overrides: alloc::vec::Vec<IsaOverride>,
}

static ROUTING: Once<Routing> = Once::new();
/// IOREGSEL/IOWIN is a two-step access: one at a time. Taken in interrupt handlers too, so
/// always with interrupts off (`locked`).
static LOCK: Mutex<()> = Mutex::new(());

fn locked<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _g = LOCK.lock();
        f()
    })
}
/// Interrupts seen per ISA line (for reports and tests).
pub static COUNTS: [AtomicU64; ISA_IRQS as usize] = [const { AtomicU64::new(0) }; ISA_IRQS as usize];

fn read(chip: &Chip, reg: u32) -> u32 {
    // SAFETY: `base` maps this I/O APIC's register window (uncached) for the kernel's
    // lifetime; the caller holds LOCK, so the select/window pair is not interleaved.
    unsafe {
        core::ptr::write_volatile(chip.base as *mut u32, reg);
        core::ptr::read_volatile((chip.base + 0x10) as *const u32)
    }
}

fn write(chip: &Chip, reg: u32, value: u32) {
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile(chip.base as *mut u32, reg);
        core::ptr::write_volatile((chip.base + 0x10) as *mut u32, value);
    }
}

/// Maps every I/O APIC of the MADT and masks all their lines.
pub fn init(platform: &Platform) {
    ROUTING.call_once(|| {
        let chips = platform
            .io_apics
            .iter()
            .map(|&IoApic { address, gsi_base, .. }| {
                let base = paging::map_direct_range(address as u64, 4096, Mapping::Mmio);
                let mut chip = Chip { base, gsi_base, lines: 0 };
                locked(|| {
                    chip.lines = (read(&chip, 1) >> 16 & 0xff) + 1;
                    for line in 0..chip.lines {
                        write(&chip, 0x10 + 2 * line, 1 << 16);
                    }
                });
                chip
            })
            .collect();
        Routing { chips, overrides: platform.isa_overrides.clone() }
    });
}

/// The GSI and redirection flags (active-low, level) of ISA IRQ `irq`.
fn isa_gsi(r: &Routing, irq: u8) -> (u32, bool, bool) {
    match r.overrides.iter().find(|o| o.irq == irq) {
        Some(o) => (o.gsi, o.flags & 3 == 3, o.flags >> 2 & 3 == 3),
        None => (irq as u32, false, false),
    }
}

/// Programs ISA IRQ `irq` to arrive as vector `IRQ_BASE + irq` at the CPU with `apic_id`,
/// masked or not. False if no I/O APIC serves it.
pub fn route(irq: u8, apic_id: u32, masked: bool) -> bool {
    let Some(r) = ROUTING.get() else { return false };
    let (gsi, active_low, level) = isa_gsi(r, irq);
    let Some(chip) = r.chips.iter().find(|c| (c.gsi_base..c.gsi_base + c.lines).contains(&gsi)) else {
        return false;
    };
    let line = gsi - chip.gsi_base;
    let low = (IRQ_BASE + irq) as u32 | (active_low as u32) << 13 | (level as u32) << 15 | (masked as u32) << 16;
    // Physical destination: xAPIC IDs fit bits 56..63; x2APIC IDs above 255 would need
    // interrupt remapping, which these machines do not use for ISA lines.
    let high = (apic_id & 0xff) << 24;
    locked(|| {
        write(chip, 0x11 + 2 * line, high);
        write(chip, 0x10 + 2 * line, low);
    });
    true
}

/// Masks or unmasks ISA IRQ `irq`, keeping its routing.
pub fn set_masked(irq: u8, masked: bool) {
    let Some(r) = ROUTING.get() else { return };
    let (gsi, _, _) = isa_gsi(r, irq);
    let Some(chip) = r.chips.iter().find(|c| (c.gsi_base..c.gsi_base + c.lines).contains(&gsi)) else { return };
    let reg = 0x10 + 2 * (gsi - chip.gsi_base);
    locked(|| {
        let low = read(chip, reg);
        write(chip, reg, if masked { low | 1 << 16 } else { low & !(1 << 16) });
    });
}

/// Counts an interrupt of `irq`.
pub fn count(irq: u8) {
    COUNTS[irq as usize].fetch_add(1, Ordering::Relaxed);
}
