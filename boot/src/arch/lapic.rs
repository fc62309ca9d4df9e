//! The BSP's local APIC, just enough to send INIT, STARTUP and NMI IPIs (Intel SDM Vol. 3A, 11.6
//! and 9.4.4), in xAPIC (MMIO) or x2APIC (MSR) mode.

use super::{cpu, phys};
use x86_64::registers::model_specific::{ApicBase, ApicBaseFlags};

const XAPIC_ID: u64 = 0x20;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
const X2APIC_ID: u32 = 0x802;
const X2APIC_ICR: u32 = 0x830;
const DELIVERY_PENDING: u32 = 1 << 12;
/// ICR: INIT, level assert.
const ICR_INIT: u32 = 0x4500;
/// ICR: STARTUP, level assert; the vector is the start page number.
const ICR_STARTUP: u32 = 0x4600;
/// ICR: NMI, level assert.
const ICR_NMI: u32 = 0x4400;

#[derive(Clone, Copy)]
pub enum Lapic {
    X { mmio: u64 },
    X2,
}

impl Lapic {
    /// The BSP's APIC in its current mode.
    pub fn current() -> Self {
        let (frame, flags) = ApicBase::read();
        if flags.contains(ApicBaseFlags::X2APIC_ENABLE) {
            Lapic::X2
        } else {
            Lapic::X {
                mmio: frame.start_address().as_u64(),
            }
        }
    }

    /// Switches the BSP's APIC to x2APIC mode (from xAPIC; SDM 11.12.5).
    pub fn enable_x2apic() -> Self {
        let (frame, flags) = ApicBase::read();
        // SAFETY: the caller checked CPUID for x2APIC; the APIC stays globally enabled.
        unsafe {
            ApicBase::write(
                frame,
                flags | ApicBaseFlags::LAPIC_ENABLE | ApicBaseFlags::X2APIC_ENABLE,
            )
        };
        Lapic::X2
    }

    pub fn id(&self) -> u32 {
        match *self {
            // SAFETY: the xAPIC page is mapped (direct map) and reading ID has no effect.
            Lapic::X { mmio } => (unsafe { phys::read::<u32>(mmio + XAPIC_ID) }) >> 24,
            Lapic::X2 => cpu::read_msr(X2APIC_ID) as u32,
        }
    }

    fn send(&self, dest: u32, command: u32) {
        match *self {
            Lapic::X { mmio } => {
                // SAFETY: writing ICR high then low sends one IPI; polling the delivery status
                // bit has no effect.
                unsafe {
                    phys::write::<u32>(mmio + XAPIC_ICR_HIGH, dest << 24);
                    phys::write::<u32>(mmio + XAPIC_ICR_LOW, command);
                    for _ in 0..1_000_000 {
                        if phys::read::<u32>(mmio + XAPIC_ICR_LOW) & DELIVERY_PENDING == 0 {
                            break;
                        }
                        core::hint::spin_loop();
                    }
                }
            }
            // SAFETY: one WRMSR to the x2APIC ICR sends one IPI (SDM 11.12.9).
            Lapic::X2 => unsafe {
                cpu::write_msr(X2APIC_ICR, (u64::from(dest) << 32) | u64::from(command))
            },
        }
    }

    pub fn send_init(&self, dest: u32) {
        self.send(dest, ICR_INIT);
    }

    pub fn send_startup(&self, dest: u32, page: u64) {
        self.send(dest, ICR_STARTUP | (page >> 12) as u32);
    }

    pub fn send_nmi(&self, dest: u32) {
        self.send(dest, ICR_NMI);
    }
}
