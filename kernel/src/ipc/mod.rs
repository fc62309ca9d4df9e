//! Synchronous IPC and capabilities.
//!
//! - [`cap`]: per-process capability tables with rights, generations and revocation (pure).
//! - [`rendezvous`]: the endpoint state machine (pure).
//! - `endpoint`: endpoints over threads: send, receive, call with a one-shot reply
//!   capability, reply, reply-and-receive, and the direct-switch fastpath.
//! - `notify`: notifications: signal bits, waitable, signalled by interrupts and timers.
//!
//! How a waiting thread gets its result: every thread has an *inbox* (`ThreadIpc`). Whoever
//! completes the thread's operation (a partner, a closing endpoint, a dying server's reply
//! capability) puts the result there and wakes the thread; the thread blocks with the inbox
//! lock held while it checks, so no wake-up is lost.

pub mod cap;
pub mod rendezvous;

#[cfg(target_os = "none")]
mod endpoint;
#[cfg(target_os = "none")]
mod notify;
#[cfg(target_os = "none")]
pub use endpoint::*;
#[cfg(target_os = "none")]
pub use notify::*;

#[cfg(target_os = "none")]
pub use kernel_side::*;

#[cfg(target_os = "none")]
mod kernel_side {
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use spin::Mutex;

    use super::cap::CapNode;
    use super::{Endpoint, Notification};
    use crate::sched::{self, Process, Thread};
    use abi::cap::Kind;
    use abi::Error;

    /// What a capability names.
    #[derive(Clone)]
    pub enum KObject {
        Endpoint(Arc<Endpoint>),
        Notification(Arc<Notification>),
        Process(Arc<Process>),
        IoPorts { base: u16, len: u16 },
        Irq(u8),
        Modules,
        KernelLog,
        Thread(Arc<Thread>),
    }

    impl KObject {
        pub fn kind(&self) -> Kind {
            match self {
                Self::Endpoint(_) => Kind::Endpoint,
                Self::Notification(_) => Kind::Notification,
                Self::Process(_) => Kind::Process,
                Self::IoPorts { .. } => Kind::IoPorts,
                Self::Irq(_) => Kind::Irq,
                Self::Modules => Kind::Modules,
                Self::KernelLog => Kind::KernelLog,
                Self::Thread(_) => Kind::Thread,
            }
        }
    }

    pub type Cap = Arc<CapNode<KObject>>;
    pub type CapTable = super::cap::CapTable<KObject>;

    /// A message in flight: four words, the sender's badge, an optional byte buffer (copied
    /// out of the sender at send time) and an optional capability.
    #[derive(Default)]
    pub struct Message {
        pub badge: u64,
        pub words: [u64; 4],
        /// Charged to the sender's budget until the message is dropped.
        pub data: crate::mm::budget::ChargedBytes,
        pub cap: Option<Cap>,
        /// For a call: where the receiver's reply goes.
        pub reply: Option<ReplyCap>,
    }

    /// The one-shot right to answer a call. If it is dropped unused (the server died, or took
    /// another call first), the caller gets `PeerDied` instead of waiting forever.
    pub struct ReplyCap {
        pub caller: Arc<Thread>,
        used: AtomicBool,
    }

    impl ReplyCap {
        /// Owned by exactly one place at a time (the message, then the server thread), so it
        /// needs no allocation of its own.
        pub fn new(caller: Arc<Thread>) -> Self {
            Self { caller, used: AtomicBool::new(false) }
        }

        /// Spends the capability on a reply the fastpath hands over itself (into the caller's
        /// [`FastMsg`] slot): no delivery, no `PeerDied`, and the caller's reference moves out
        /// without its count changing.
        pub fn into_caller(self) -> Arc<Thread> {
            let this = core::mem::ManuallyDrop::new(self);
            // SAFETY: `this` is never dropped (ManuallyDrop), so `caller` is moved out of it
            // exactly once and the Arc's count stays right; `used` needs no update, since
            // nothing can reach the capability any more.
            unsafe { core::ptr::read(&this.caller) }
        }

        /// Delivers the reply; false if it was already used.
        pub fn answer(&self, result: Result<Message, Error>) -> bool {
            if self.used.swap(true, Ordering::AcqRel) {
                return false;
            }
            deliver(&self.caller, result);
            true
        }

        /// Delivers the reply and, if the caller waits on this CPU, switches to it (the
        /// replier has prepared its own wait).
        pub fn answer_switching(&self, result: Result<Message, Error>) -> bool {
            if self.used.swap(true, Ordering::AcqRel) {
                return false;
            }
            deliver_and_switch(&self.caller, result);
            true
        }

        /// Whether the caller is gone (its thread ended or its process is being killed).
        pub fn caller_gone(&self) -> bool {
            self.caller.state() == sched::State::Dead || self.caller.process.as_ref().is_some_and(|p| p.is_killed())
        }
    }

    impl Drop for ReplyCap {
        fn drop(&mut self) {
            if !self.used.swap(true, Ordering::AcqRel) {
                deliver(&self.caller, Err(Error::PeerDied));
            }
        }
    }

    /// A message the fastpath hands over: registers only, and for a call its reply capability.
    pub struct FastMsg {
        pub badge: u64,
        pub words: [u64; 4],
        pub reply: Option<ReplyCap>,
    }

    /// A thread's [`FastMsg`] slot. No lock: it is written only by a fastpath on the thread's
    /// own CPU while the thread is blocked and claimed under that CPU's scheduler lock
    /// (`sched::CpuLock`), and read only by the thread itself once it runs again; the claim,
    /// the switch and the resumption are ordered on that one CPU, with interrupts off.
    #[derive(Default)]
    struct FastSlot(core::cell::UnsafeCell<Option<FastMsg>>);

    // SAFETY: see the type: the protocol above serializes every access, on one CPU.
    unsafe impl Sync for FastSlot {}

    impl ThreadIpc {
        /// Hands `msg` to the thread.
        ///
        /// # Safety
        /// The thread is blocked on this CPU and claimed for a direct switch under its
        /// scheduler lock (`CpuLock::blocked_here`, held now): it cannot run or look at the
        /// slot until this CPU switches to it.
        pub unsafe fn hand_over(&self, msg: FastMsg) {
            // SAFETY: per the contract nobody else touches the slot now.
            let slot = unsafe { &mut *self.fast.0.get() };
            // Every resumption empties the slot, so there is nothing to drop: written over
            // without reading it (a message here would only leak, never be reused).
            debug_assert!(slot.is_none(), "a second hand-over without a resumption");
            // SAFETY: `slot` is a valid, exclusive place for an `Option<FastMsg>`.
            unsafe { core::ptr::write(slot, Some(msg)) };
        }

        /// What a fastpath handed over while we waited, if anything; called only by the
        /// thread itself, while it runs.
        pub fn take_handed(&self) -> Option<FastMsg> {
            // SAFETY: the running thread's own slot: a hand-over happens only while it is
            // blocked and claimed, never while it runs.
            unsafe { (*self.fast.0.get()).take() }
        }
    }

    /// Per-thread IPC state.
    #[derive(Default)]
    pub struct ThreadIpc {
        inbox: Mutex<Option<Result<Message, Error>>>,
        /// Filled by the fastpath while this thread is blocked and claimed (under its CPU's
        /// scheduler lock, so it cannot run meanwhile); emptied by the thread when it resumes,
        /// either in the fastpath that blocked it or in [`wait_inbox`].
        fast: FastSlot,
        /// The call this thread received last and has not answered.
        pub caller: Mutex<Option<ReplyCap>>,
        /// Threads blocked in `thread_wait` on this one.
        exit_waiters: Mutex<Vec<Arc<Thread>>>,
    }

    /// Blocks `me` until `t` has ended (its state is Dead, set before `thread_exiting`).
    pub fn wait_thread_exit(me: &Arc<Thread>, t: &Arc<Thread>) -> Result<(), Error> {
        if Arc::ptr_eq(me, t) {
            return Err(Error::InvalidArgument);
        }
        loop {
            {
                let mut w = t.ipc.exit_waiters.lock();
                if t.state() == sched::State::Dead {
                    sched::mark_running(me);
                    return Ok(());
                }
                if !sched::block_unless_killed(me) {
                    w.retain(|x| !Arc::ptr_eq(x, me));
                    return Err(Error::PeerDied);
                }
                if !w.iter().any(|x| Arc::ptr_eq(x, me)) {
                    if w.try_reserve(1).is_err() {
                        sched::mark_running(me);
                        return Err(Error::NoMemory);
                    }
                    w.push(me.clone());
                }
            }
            sched::schedule();
        }
    }

    /// Puts `result` in `t`'s inbox and wakes it.
    pub fn deliver(t: &Arc<Thread>, result: Result<Message, Error>) {
        put_inbox(t, result);
        sched::wake(t);
    }

    /// Fills the inbox; whatever was there (only ever a result for a thread that gave up
    /// waiting) is dropped after the lock is released, since dropping it may deliver in turn.
    fn put_inbox(t: &Arc<Thread>, result: Result<Message, Error>) {
        let old = t.ipc.inbox.lock().replace(result);
        drop(old);
    }

    /// Like [`deliver`], but if `t` waits on this CPU, switches to it directly (the fastpath)
    /// instead of queueing it; the caller has set up its own wait first (`prepare_wait`).
    /// Returns whether the switch happened.
    pub fn deliver_and_switch(t: &Arc<Thread>, result: Result<Message, Error>) -> bool {
        put_inbox(t, result);
        STATS.slowpath.fetch_add(1, Ordering::Relaxed);
        if sched::switch_to(t) {
            true
        } else {
            if t.cpu != crate::arch::x86_64::percpu::this().cpu_index {
                STATS.cross_cpu.fetch_add(1, Ordering::Relaxed);
            }
            sched::wake(t);
            false
        }
    }

    /// What a waiter found when it tried to leave its queue.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Withdrawal {
        /// Taken off the queue: nobody will deliver.
        Withdrawn,
        /// A partner already took it off: a delivery is on its way (without blocking).
        Taken,
        /// It waits in no queue (a call waiting for its reply): give up, the reply capability
        /// finds its caller gone.
        NotQueued,
    }

    /// Waits for the inbox to be filled. If the process is killed while waiting, `withdraw`
    /// takes the thread off the queue it waits in; if a partner already took it, the delivery
    /// is awaited all the same, so no message (and no reply capability) is lost.
    pub fn wait_inbox(me: &Arc<Thread>, withdraw: impl Fn() -> Withdrawal) -> Result<Message, Error> {
        let mut ignore_kill = false;
        loop {
            {
                let mut inbox = me.ipc.inbox.lock();
                // A fastpath hand-over counts as a delivery too (a partner found us waiting).
                let got = match inbox.take() {
                    Some(r) => Some(r),
                    None => me.ipc.take_handed().map(|m| Ok(m.into_message())),
                };
                if let Some(r) = got {
                    // We may have marked ourselves blocked before a direct switch.
                    sched::mark_running(me);
                    return r;
                }
                if ignore_kill {
                    sched::block_current(me);
                } else if !sched::block_unless_killed(me) {
                    drop(inbox);
                    match withdraw() {
                        Withdrawal::Taken => {
                            ignore_kill = true;
                            continue;
                        }
                        Withdrawal::Withdrawn | Withdrawal::NotQueued => {
                            return me.ipc.inbox.lock().take().unwrap_or(Err(Error::PeerDied));
                        }
                    }
                }
            }
            sched::schedule();
        }
    }

    impl FastMsg {
        /// The same message for the generic receive path.
        pub fn into_message(self) -> Message {
            Message { badge: self.badge, words: self.words, reply: self.reply, ..Default::default() }
        }
    }

    /// Marks the calling thread blocked unless its inbox is already filled: the step before
    /// a direct switch to a partner, so that the switch does not queue us as runnable.
    pub fn prepare_wait(me: &Arc<Thread>) {
        let inbox = me.ipc.inbox.lock();
        if inbox.is_none() {
            sched::block_current(me);
        }
    }

    /// A thread is exiting (already marked Dead): its unanswered call, if any, fails with
    /// `PeerDied`, and `thread_wait`ers are woken.
    pub fn thread_exiting(t: &Arc<Thread>) {
        let caller = t.ipc.caller.lock().take();
        drop(caller);
        for w in core::mem::take(&mut *t.ipc.exit_waiters.lock()) {
            sched::wake(&w);
        }
        let pending = t.ipc.inbox.lock().take();
        drop(pending);
        let handed = t.ipc.take_handed();
        drop(handed);
    }

    /// Counters over all CPUs.
    pub struct Stats {
        /// Calls and replies that took the fastpath (`syscall::fastpath`): registers handed
        /// over, a direct switch to the partner.
        pub fastpath: AtomicU64,
        /// Deliveries of the generic path (a direct switch to a partner on this CPU, or its
        /// run queue).
        pub slowpath: AtomicU64,
        /// Of those, to a thread on another CPU (a wake-up IPI).
        pub cross_cpu: AtomicU64,
        /// Messages delivered (sends, calls and replies) by the generic path; `ipc_stats`
        /// adds `fastpath`'s.
        pub messages: AtomicU64,
    }

    pub static STATS: Stats =
        Stats { fastpath: AtomicU64::new(0), slowpath: AtomicU64::new(0), cross_cpu: AtomicU64::new(0), messages: AtomicU64::new(0) };

    /// Everything a process held: called when its last thread has ended. Closes the endpoints
    /// it created (their waiters get `PeerDied`) and drops its capabilities, which breaks any
    /// reference cycle through the table.
    pub fn process_ended(p: &Process) {
        for ep in p.owned_endpoints.lock().drain(..) {
            if let Some(ep) = ep.upgrade() {
                ep.close();
            }
        }
        let caps = p.caps.lock().drain();
        drop(caps);
    }
}
