//! The local APIC: x2APIC when the CPU has it, xAPIC (MMIO) otherwise; the timer, EOI, IPIs.
//!
//! Set-up goes through the `x2apic` crate, which picks the mode from CPUID. The hot paths
//! (EOI, sending an IPI) are the few register writes below, chosen by the mode the CPU is
//! actually in (IA32_APIC_BASE.EXTD).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use x2apic::lapic::{LocalApicBuilder, TimerDivide, TimerMode};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

use super::entry::vector;
use super::paging::{self, Mapping};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EXTD: u64 = 1 << 10;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_ID: u32 = 0x802;
const XAPIC_ID: u64 = 0x20;
const XAPIC_EOI: u64 = 0xb0;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_NMI: u32 = 0b100 << 8;

static X2APIC: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC registers (xAPIC mode only).
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// Timer counts (divide by 16) per 10 ms, measured once on the BSP.
static TIMER_COUNT_10MS: AtomicU32 = AtomicU32::new(0);

pub const TIMER_HZ: u64 = 100;

fn xapic_reg(offset: u64) -> *mut u32 {
    (XAPIC_BASE.load(Ordering::Relaxed) + offset) as *mut u32
}

/// Maps the xAPIC window and calibrates the timer; BSP only, before `init_this_cpu`.
pub fn init_bsp() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base = unsafe { Msr::new(IA32_APIC_BASE).read() } & 0x000f_ffff_ffff_f000;
    XAPIC_BASE.store(paging::map_direct_range(base, 4096, Mapping::Mmio), Ordering::Relaxed);
    init_this_cpu();
    // The shortest of five: a virtual CPU paused by its host during a measurement lengthens
    // it (QEMU TCG on a loaded host measured up to three times the true count; before the
    // timer was started ahead of the PIT, a pause there once gave 1720 instead of 621196
    // counts, a timer 360 times too fast).
    let count = (0..5).map(|_| calibrate_timer()).min().unwrap_or(1000);
    TIMER_COUNT_10MS.store(count, Ordering::Relaxed);
    start_timer();
    log::info!(
        "local APIC in {} mode, timer {} counts per 10 ms ({TIMER_HZ} Hz)",
        if X2APIC.load(Ordering::Relaxed) { "x2APIC" } else { "xAPIC" },
        count
    );
}

/// The crate's `enable` also programs and unmasks the timer; an initial count of 0 keeps it
/// stopped until `start_timer`. (A tiny periodic count here floods the machine: QEMU re-arms
/// its timer every period even while the LVT entry is masked, and boots stalled for minutes.)
fn builder() -> LocalApicBuilder {
    let mut b = LocalApicBuilder::new();
    b.timer_vector(vector::TIMER as usize)
        .error_vector(vector::APIC_ERROR as usize)
        .spurious_vector(vector::SPURIOUS as usize)
        .timer_mode(TimerMode::OneShot)
        .timer_divide(TimerDivide::Div16)
        .timer_initial(0)
        .set_xapic_base(XAPIC_BASE.load(Ordering::Relaxed));
    b
}

/// Enables this CPU's local APIC (timer masked until `start_timer`).
pub fn init_this_cpu() {
    let mut lapic = builder().build().expect("local APIC configuration");
    // SAFETY: programs this CPU's own local APIC; the vectors have IDT gates.
    unsafe {
        lapic.enable();
        lapic.disable_timer();
    }
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let extd = unsafe { Msr::new(IA32_APIC_BASE).read() } & APIC_BASE_EXTD != 0;
    X2APIC.store(extd, Ordering::Relaxed);
}

/// Starts this CPU's periodic timer at `TIMER_HZ`.
pub fn start_timer() {
    let mut lapic = builder().build().expect("local APIC configuration");
    // SAFETY: this CPU's own local APIC, already enabled; the timer vector has a gate.
    unsafe {
        lapic.set_timer_divide(TimerDivide::Div16);
        lapic.set_timer_mode(TimerMode::Periodic);
        lapic.set_timer_initial(TIMER_COUNT_10MS.load(Ordering::Relaxed).max(1));
        lapic.enable_timer();
    }
}

/// Counts the APIC timer over 10 ms of PIT channel 2 (1.193182 MHz), the one time base every
/// PC and emulator has.
fn calibrate_timer() -> u32 {
    const PIT_HZ: u32 = 1_193_182;
    let pit_count = (PIT_HZ / 100) as u16;
    let mut lapic = builder().build().expect("local APIC configuration");
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: the PIT and port 0x61 are owned by the kernel; the speaker stays off (bit 1).
    let elapsed = unsafe {
        let g = gate.read() & !0x03;
        gate.write(g); // gate low: channel 2 stopped
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(pit_count as u8);
        ch2.write((pit_count >> 8) as u8);
        lapic.set_timer_mode(TimerMode::OneShot);
        lapic.set_timer_divide(TimerDivide::Div16);
        // The APIC timer runs before the PIT starts and is read after it ends, so a delay
        // anywhere (a virtual CPU paused by its host) lengthens the measurement, never
        // shortens it: the caller keeps the shortest of several.
        lapic.set_timer_initial(u32::MAX);
        let start = lapic.timer_current();
        gate.write(g | 0x01); // gate high: the count starts
        let mut spins = 0u64;
        while gate.read() & 0x20 == 0 {
            spins += 1;
            if spins > 200_000_000 {
                log::warn!("PIT channel 2 never finished counting; assuming a 100 MHz APIC timer");
                lapic.disable_timer();
                return 100_000_000 / 16 / 100;
            }
            core::hint::spin_loop();
        }
        let left = lapic.timer_current();
        lapic.disable_timer();
        start - left
    };
    elapsed.max(1000)
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is on, so the ID MSR exists.
        unsafe { Msr::new(X2APIC_ID).read() as u32 }
    } else {
        // SAFETY: the xAPIC window is mapped (init_bsp) and the ID register is read-only.
        unsafe { xapic_reg(XAPIC_ID).read_volatile() >> 24 }
    }
}

pub fn end_of_interrupt() {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: a write of 0 to the x2APIC EOI register ends the in-service interrupt.
        unsafe { Msr::new(X2APIC_EOI).write(0) };
    } else {
        // SAFETY: as above, through the mapped xAPIC window.
        unsafe { xapic_reg(XAPIC_EOI).write_volatile(0) };
    }
}

fn send(apic_id: u32, low: u32) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if X2APIC.load(Ordering::Relaxed) {
            // SAFETY: one ICR write sends the IPI in x2APIC mode (SDM Vol. 3A §11.12.9).
            unsafe { Msr::new(X2APIC_ICR).write((apic_id as u64) << 32 | low as u64) };
        } else {
            // SAFETY: the xAPIC ICR is written high then low; the low write sends. Interrupts
            // are off so no handler on this CPU interleaves another IPI between the writes.
            unsafe {
                while xapic_reg(XAPIC_ICR_LOW).read_volatile() & ICR_DELIVERY_PENDING != 0 {
                    core::hint::spin_loop();
                }
                xapic_reg(XAPIC_ICR_HIGH).write_volatile(apic_id << 24);
                xapic_reg(XAPIC_ICR_LOW).write_volatile(low);
            }
        }
    })
}

/// A fixed-vector IPI to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(apic_id, vector as u32);
}

/// An NMI to the CPU with `apic_id`.
pub fn send_nmi(apic_id: u32) {
    send(apic_id, ICR_NMI);
}
