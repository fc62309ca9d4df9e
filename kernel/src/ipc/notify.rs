//! Notifications: a word of signal bits. `signal` ORs bits in and wakes the waiter; `wait`
//! blocks until a bit is set, then returns and clears them all. Signalling never blocks and
//! takes only an interrupt-safe lock, so interrupt handlers use it: device IRQs bound by a user
//! driver (`irq_bind`) and one-shot timers (`notify_timer`).

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

use crate::arch::x86_64::{apic, ioapic, percpu, smp};
use crate::sched::{self, Thread};
use abi::Error;

pub struct Notification {
    bits: AtomicU64,
    /// The one thread blocked in `wait` (interrupt-safe lock).
    waiter: Mutex<Option<Arc<Thread>>>,
    /// What it costs its creator's budget (`None`: the kernel's own), given back when freed.
    _charge: Option<crate::mm::budget::Charge>,
}

impl Notification {
    /// `None` if the kernel heap cannot hold it (the charge is given back).
    pub fn new(charge: Option<crate::mm::budget::Charge>) -> Option<Arc<Self>> {
        crate::fallible::try_arc(Self { bits: AtomicU64::new(0), waiter: Mutex::new(None), _charge: charge }).ok()
    }

    /// Sets `bits` and wakes the waiter. Safe in interrupt context.
    pub fn signal(&self, bits: u64) {
        self.bits.fetch_or(bits, Ordering::AcqRel);
        let waiter = without_interrupts(|| self.waiter.lock().take());
        if let Some(w) = waiter {
            sched::wake(&w);
        }
    }

    /// Blocks until some bit is set; returns them, cleared. One waiter at a time.
    pub fn wait(&self, me: &Arc<Thread>) -> Result<u64, Error> {
        loop {
            let bits = self.bits.swap(0, Ordering::AcqRel);
            if bits != 0 {
                return Ok(bits);
            }
            let blocked = without_interrupts(|| {
                let mut w = self.waiter.lock();
                if w.as_ref().is_some_and(|t| !Arc::ptr_eq(t, me)) {
                    return Err(Error::InvalidArgument);
                }
                // Checked again under the lock: a signal after this sees us as the waiter.
                if self.bits.load(Ordering::Acquire) != 0 {
                    return Ok(false);
                }
                if !sched::block_unless_killed(me) {
                    return Err(Error::PeerDied);
                }
                *w = Some(me.clone());
                Ok(true)
            })?;
            if blocked {
                sched::schedule();
                // Killed while waiting: leave no stale waiter behind.
                without_interrupts(|| {
                    let mut w = self.waiter.lock();
                    if w.as_ref().is_some_and(|t| Arc::ptr_eq(t, me)) {
                        *w = None;
                    }
                });
            }
        }
    }
}

/// The notification each ISA IRQ line signals, and with which bits.
static IRQ_BINDINGS: [Mutex<Option<(Arc<Notification>, u64)>>; ioapic::ISA_IRQS as usize] =
    [const { Mutex::new(None) }; ioapic::ISA_IRQS as usize];

/// Routes ISA IRQ `irq` to this CPU, signalling `bits` on `n` at each interrupt, and unmasks
/// it.
pub fn irq_bind(irq: u8, n: Arc<Notification>, bits: u64) -> Result<(), Error> {
    if irq >= ioapic::ISA_IRQS {
        return Err(Error::InvalidArgument);
    }
    without_interrupts(|| *IRQ_BINDINGS[irq as usize].lock() = Some((n, bits)));
    if !ioapic::route(irq, smp::apic_id(percpu::this().cpu_index), false) {
        return Err(Error::NotFound);
    }
    Ok(())
}

pub fn irq_ack(irq: u8) {
    ioapic::set_masked(irq, false);
}

/// The interrupt handler of ISA IRQ `irq`: mask the line until the driver acks, signal.
pub fn on_irq(irq: u8) {
    ioapic::count(irq);
    ioapic::set_masked(irq, true);
    let binding = IRQ_BINDINGS[irq as usize].lock().clone();
    apic::end_of_interrupt();
    if let Some((n, bits)) = binding {
        n.signal(bits);
    }
}

/// One-shot timers, checked by CPU 0's timer tick; at most one per notification, and a timer
/// of a notification nobody holds any more is dropped, so the list is bounded by the
/// notifications that exist.
static TIMERS: Mutex<Vec<(u64, Weak<Notification>, u64)>> = Mutex::new(Vec::new());
/// Whether `TIMERS` may hold any: the tick skips the lock when not.
static TIMERS_ARMED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Signals `bits` on `n` once `ticks` timer ticks of CPU 0 have passed, replacing a timer
/// `n` already has; `NoMemory` (and `n`'s earlier timer, if any, left as it was) if the list
/// cannot grow.
pub fn timer_after(ticks: u64, n: Arc<Notification>, bits: u64) -> Result<(), Error> {
    let deadline = percpu::of(0).ticks.load(Ordering::Relaxed) + ticks.max(1);
    without_interrupts(|| {
        let mut timers = TIMERS.lock();
        // One timer per notification at most: bounded by the notifications budgets paid for.
        let mine = |m: &Weak<Notification>| core::ptr::eq(m.as_ptr(), Arc::as_ptr(&n));
        match timers.iter_mut().find(|(_, m, _)| mine(m)) {
            Some(t) => *t = (deadline, Arc::downgrade(&n), bits),
            None => {
                timers.retain(|(_, m, _)| m.strong_count() > 0);
                timers.try_reserve(1).map_err(|_| Error::NoMemory)?;
                timers.push((deadline, Arc::downgrade(&n), bits));
            }
        }
        TIMERS_ARMED.store(true, Ordering::Release);
        Ok(())
    })
}

/// From CPU 0's timer interrupt.
pub fn timer_tick(now: u64) {
    if !TIMERS_ARMED.load(Ordering::Acquire) {
        return;
    }
    let mut due = Vec::new();
    {
        let mut timers = TIMERS.lock();
        if timers.is_empty() {
            TIMERS_ARMED.store(false, Ordering::Release);
            return;
        }
        timers.retain(|(deadline, n, bits)| {
            if *deadline <= now {
                if let Some(n) = n.upgrade() {
                    due.push((n, *bits));
                }
                false
            } else {
                n.strong_count() > 0
            }
        });
    }
    for (n, bits) in due {
        n.signal(bits);
    }
}
