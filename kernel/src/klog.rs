//! The kernel log: the `log` crate over COM1, one line per record, in the format
//! `[cpu N] LEVEL target: message` that people and the boot tests read.
//!
//! The serial lock is owned per CPU: an exception or NMI that logs while its own CPU holds the
//! lock prints anyway (lines may interleave) instead of deadlocking; other CPUs wait.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::x86_64::{percpu, serial::Com1};

const NO_OWNER: u32 = u32::MAX;
static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);

/// Runs `f` with exclusive use of the serial port (re-entrant on the owning CPU).
pub fn with_serial<R>(f: impl FnOnce(&mut Com1) -> R) -> R {
    let me = percpu::cpu_index_or_boot() as u32;
    let reentered = OWNER.load(Ordering::Acquire) == me;
    if !reentered {
        while OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }
    let r = f(&mut Com1);
    if !reentered {
        OWNER.store(NO_OWNER, Ordering::Release);
    }
    r
}

/// Prints one line that is not a log record (READY, TEST verdicts): the contract lines.
pub fn print_line(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        with_serial(|com| {
            let _ = com.write_fmt(args);
            let _ = com.write_str("\n");
        })
    })
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::klog::print_line(format_args!($($arg)*)) };
}

struct KernelLogger;

impl log::Log for KernelLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let cpu = percpu::cpu_index_or_boot();
        // The module path minus the crate name reads better: `arch::x86_64::smp` -> `smp`.
        let target = record.target().rsplit("::").next().unwrap_or("kernel");
        x86_64::instructions::interrupts::without_interrupts(|| {
            with_serial(|com| {
                let _ = writeln!(com, "[cpu {cpu}] {:<5} {target}: {}", record.level(), record.args());
            })
        });
    }

    fn flush(&self) {}
}

static LOGGER: KernelLogger = KernelLogger;

pub fn init() {
    Com1::init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
