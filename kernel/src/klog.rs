//! The kernel log: the `log` crate over COM1, one line per record, in the format
//! `[cpu N] LEVEL target: message` that people and the boot tests read.
//!
//! The serial lock is owned per CPU: an exception or NMI that logs while its own CPU holds the
//! lock prints anyway (lines may interleave) instead of deadlocking; other CPUs wait.
//!
//! Once a user-space console owns COM1 (`klog_attach`), the kernel stops writing to it: lines
//! are queued whole in a ring that the console drains (`klog_read`) and prints between its
//! clients' lines, so the two never interleave mid-line. Errors, and anything logged when the
//! ring is full or busy (an NMI on top of a logging CPU), still go straight to the UART after
//! what is queued, and a verdict or panic takes the UART back for good (`take_over`).

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;

use crate::ipc::Notification;

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

/// Bytes the ring holds before lines go to the UART directly.
const RING_BYTES: usize = 64 * 1024;
/// Whether the console owns COM1 and reads the kernel log from the ring.
static ATTACHED: AtomicBool = AtomicBool::new(false);
/// Set when a line was queued where the console could not be signalled (interrupts off):
/// CPU 0's timer tick signals it.
static SIGNAL_PENDING: AtomicBool = AtomicBool::new(false);
static RING: Mutex<VecDeque<u8>> = Mutex::new(VecDeque::new());
static CONSOLE: Mutex<Option<(Arc<Notification>, u64)>> = Mutex::new(None);

/// The longest line (longer ones are cut).
pub const LINE_MAX: usize = 600;

/// A line being formatted, on the stack (no allocation: NMI handlers log).
struct LineBuf {
    bytes: [u8; LINE_MAX],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Hands the kernel log to the console: from now on lines are queued and `bits` signalled
/// on `n` when there are new ones.
pub fn attach(n: Arc<Notification>, bits: u64) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        // The whole ring now: queueing a line must never allocate (an NMI may log while this
        // CPU holds the heap lock).
        RING.lock().reserve_exact(RING_BYTES + LINE_MAX);
        *CONSOLE.lock() = Some((n, bits))
    });
    ATTACHED.store(true, Ordering::Release);
    n_signal();
}

/// Moves whole queued lines into `out`; returns the bytes moved.
pub fn read_queued(out: &mut [u8]) -> usize {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut ring = RING.lock();
        // Only whole lines: up to the last newline that fits.
        let fit = ring.len().min(out.len());
        let Some(end) = ring.iter().take(fit).rposition(|&b| b == b'\n').map(|i| i + 1) else { return 0 };
        for (slot, b) in out.iter_mut().zip(ring.drain(..end)) {
            *slot = b;
        }
        end
    })
}

/// The kernel writes COM1 itself again, for good (verdicts, panics): first whatever is still
/// queued. When a console owned COM1, it is given a moment to drain the queue (if interrupts
/// are on), then every other CPU is stopped by NMI so that nothing writes the UART any more,
/// and a newline ends a line the console may have left half-written.
/// `stop_others: false` leaves the other CPUs running (the panic handler asks them for
/// backtraces first, then stops them itself).
pub fn take_over(stop_others: bool) {
    if !ATTACHED.swap(false, Ordering::AcqRel) {
        return flush_ring_direct();
    }
    let me = percpu::cpu_index_or_boot();
    if x86_64::instructions::interrupts::are_enabled() {
        let ticks = || crate::arch::x86_64::percpu::of(me).ticks.load(Ordering::Relaxed);
        let start = ticks();
        // Up to 0.5 s for the queue to empty, then two ticks for the console's last burst.
        while ticks() - start < 50 && !x86_64::instructions::interrupts::without_interrupts(|| RING.lock().is_empty()) {
            x86_64::instructions::hlt();
        }
        let drained = ticks();
        while ticks() - drained < 2 {
            x86_64::instructions::hlt();
        }
    }
    if stop_others && crate::arch::x86_64::smp::online() > 1 {
        crate::arch::x86_64::smp::nmi_others(crate::arch::x86_64::smp::NMI_STOP);
        // Let the NMIs land; a CPU stopped while holding the serial lock would hold it forever.
        for _ in 0..1_000_000 {
            core::hint::spin_loop();
        }
        OWNER.store(NO_OWNER, Ordering::Release);
    }
    with_serial(|com| put(com, b'\n'));
    flush_ring_direct();
}

fn flush_ring_direct() {
    // Bounded: a CPU stopped while holding the lock must not stop us.
    let mut ring = None;
    for _ in 0..1_000_000 {
        ring = RING.try_lock();
        if ring.is_some() {
            break;
        }
        core::hint::spin_loop();
    }
    if let Some(mut ring) = ring {
        if ring.is_empty() {
            return;
        }
        with_serial(|com| {
            for b in ring.drain(..) {
                put(com, b);
            }
        });
    }
}

/// One byte to the UART, a newline as CR LF (as `Com1`'s `fmt::Write` does).
fn put(com: &mut Com1, b: u8) {
    if b == b'\n' {
        com.write_byte(b'\r');
    }
    com.write_byte(b);
}

fn n_signal() {
    let console = x86_64::instructions::interrupts::without_interrupts(|| CONSOLE.lock().clone());
    if let Some((n, bits)) = console {
        n.signal(bits);
    }
}

/// From CPU 0's timer tick: signal the console for lines queued with interrupts off.
pub fn timer_tick() {
    if SIGNAL_PENDING.load(Ordering::Relaxed) && SIGNAL_PENDING.swap(false, Ordering::AcqRel) {
        n_signal();
    }
}

/// Emits one formatted line: queued for the console, or written to the UART.
fn emit(line: &LineBuf, urgent: bool) {
    let interrupts_were_on = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::without_interrupts(|| {
        if ATTACHED.load(Ordering::Acquire) && !urgent {
            if let Some(mut ring) = RING.try_lock() {
                if ring.len() + line.len <= RING_BYTES {
                    ring.extend(&line.bytes[..line.len]);
                    return true;
                }
            }
        }
        // Lines queued before (or while) the console was detached go first.
        flush_ring_direct();
        with_serial(|com| {
            for &b in &line.bytes[..line.len] {
                put(com, b);
            }
        });
        false
    })
    .then(|| {
        if interrupts_were_on {
            n_signal();
        } else {
            SIGNAL_PENDING.store(true, Ordering::Release);
        }
    });
}

/// Prints one line that is not a log record (READY, TEST verdicts): the contract lines.
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut line = LineBuf { bytes: [0; LINE_MAX], len: 0 };
    let _ = line.write_fmt(args);
    line.len = line.len.min(line.bytes.len() - 1);
    line.bytes[line.len] = b'\n';
    line.len += 1;
    emit(&line, false);
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
        let mut line = LineBuf { bytes: [0; LINE_MAX], len: 0 };
        let _ = write!(line, "[cpu {cpu}] {:<5} {target}: {}", record.level(), record.args());
        line.len = line.len.min(line.bytes.len() - 1);
        line.bytes[line.len] = b'\n';
        line.len += 1;
        emit(&line, record.level() == log::Level::Error);
    }

    fn flush(&self) {}
}

static LOGGER: KernelLogger = KernelLogger;

pub fn init() {
    Com1::init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}
