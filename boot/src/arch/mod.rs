//! The hardware side of the bridge (x86_64-unknown-none only).

pub mod boot;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod handoff;
pub mod idt;
pub mod lapic;
pub mod phys;
pub mod pit;
pub mod serial;
pub mod trampoline;

/// Stops this CPU for good.
pub fn halt() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
