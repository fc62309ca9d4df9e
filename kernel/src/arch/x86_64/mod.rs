//! x86_64: CPU features, the per-CPU entry area, descriptors, paging, APIC, ACPI, SMP and the
//! event-entry layer.

#[cfg(target_os = "none")]
pub mod acpi;
#[cfg(target_os = "none")]
pub mod ap_park;
#[cfg(target_os = "none")]
pub mod apic;
#[cfg(target_os = "none")]
pub mod cea;
#[cfg(target_os = "none")]
pub mod cpu;
pub mod entry;
#[cfg(target_os = "none")]
pub mod fpu;
#[cfg(target_os = "none")]
pub mod gdt;
pub mod id_ranges;
#[cfg(target_os = "none")]
pub mod ioapic;
#[cfg(target_os = "none")]
pub mod paging;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod serial;
#[cfg(target_os = "none")]
pub mod smp;
#[cfg(target_os = "none")]
pub mod tss;
#[cfg(target_os = "none")]
pub mod user_segments;

#[cfg(target_os = "none")]
/// Stops this CPU for good: interrupts off, HLT in a loop (an NMI may still wake it).
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

#[cfg(target_os = "none")]
/// Switches this CPU to the stack whose top is `top` and calls `f(arg)` there; the current
/// stack is abandoned (it is the bootloader's, which is never returned to).
pub fn run_on_stack(top: u64, f: extern "C" fn(usize) -> !, arg: usize) -> ! {
    // SAFETY: `top` is the 16-byte-aligned top of a mapped kernel stack owned by this CPU;
    // `f` never returns, so nothing on the old stack is used again. RBP is cleared so stack
    // walks stop at the new stack's first frame.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {f}",
            "ud2",
            top = in(reg) top,
            f = in(reg) f,
            in("rdi") arg,
            options(noreturn)
        )
    }
}
