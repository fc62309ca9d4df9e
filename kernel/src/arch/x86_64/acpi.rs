//! ACPI: the MADT, through the `acpi` crate, for the list of CPUs and I/O APICs.

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use super::paging::{self, Mapping};

/// Firmware tables are reached through the direct map; tables outside RAM get mapped there
/// on demand (read-write, uncached is not needed for tables).
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = paging::map_direct_range(phys as u64, size as u64, Mapping::KernelData);
        // SAFETY: `virt` maps `size` bytes at `phys` (just ensured) and is never unmapped.
        unsafe { PhysicalMapping::new(phys, NonNull::new(virt as *mut T).unwrap(), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

#[derive(Clone, Copy, Debug)]
pub struct CpuEntry {
    pub acpi_uid: u32,
    pub apic_id: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

#[derive(Debug, Default)]
pub struct Platform {
    /// Enabled (or online-capable) processors, in MADT order.
    pub cpus: Vec<CpuEntry>,
    pub io_apics: Vec<IoApic>,
    /// ISA IRQs wired to another GSI, or with non-ISA polarity/trigger.
    pub isa_overrides: Vec<IsaOverride>,
    pub nmi_sources: usize,
}

/// An interrupt source override (ACPI 6.3 §5.2.12.5).
#[derive(Clone, Copy, Debug)]
pub struct IsaOverride {
    pub irq: u8,
    pub gsi: u32,
    /// MPS INTI flags: bits 0..2 polarity (3: active low), bits 2..4 trigger (3: level).
    pub flags: u16,
}

/// MADT flags bit 0: enabled; bit 1: online capable (ACPI 6.3 §5.2.12.2).
fn usable(flags: u32) -> bool {
    flags & 0b11 != 0
}

pub fn read_platform(rsdp_phys: u64) -> Result<Platform, acpi::AcpiError> {
    // SAFETY: the address comes from the bootloader's RSDP response.
    let tables = unsafe { AcpiTables::from_rsdp(DirectMap, rsdp_phys as usize)? };
    let madt = tables.find_table::<Madt>()?;
    let mut p = Platform::default();
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                if usable(flags) {
                    p.cpus.push(CpuEntry { acpi_uid: e.processor_id as u32, apic_id: e.apic_id as u32 });
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                let flags = e.flags;
                if usable(flags) {
                    p.cpus.push(CpuEntry { acpi_uid: e.processor_uid, apic_id: e.x2apic_id });
                }
            }
            MadtEntry::IoApic(e) => {
                p.io_apics.push(IoApic { id: e.io_apic_id, address: e.io_apic_address, gsi_base: e.global_system_interrupt_base })
            }
            MadtEntry::InterruptSourceOverride(e) => {
                p.isa_overrides.push(IsaOverride { irq: e.irq, gsi: e.global_system_interrupt, flags: e.flags })
            }
            MadtEntry::NmiSource(_) | MadtEntry::LocalApicNmi(_) | MadtEntry::X2ApicNmi(_) => p.nmi_sources += 1,
            _ => {}
        }
    }
    Ok(p)
}
