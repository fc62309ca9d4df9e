//! Threads, the per-CPU scheduler and the context switch.

use alloc::sync::Arc;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::Mutex;

use super::process::Process;
use super::queue::{least_loaded, RunQueue, SleepQueue};
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::{self, vector};
use crate::arch::x86_64::fpu::FpuState;
use crate::arch::x86_64::user_segments::UserSegments;
use crate::arch::x86_64::{apic, gdt, paging, percpu, smp};
use crate::mm::kvm::KernelStack;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Ready = 0,
    Running = 1,
    Sleeping = 2,
    Blocked = 3,
    Dead = 4,
}

pub struct Thread {
    pub tid: u64,
    /// `None` for kernel threads.
    pub process: Option<Arc<Process>>,
    /// The one CPU this thread runs on.
    pub cpu: usize,
    kstack: KernelStack,
    /// The stack went back to `kvm` when the thread, dead, left its CPU (`finish_switch`).
    stack_released: core::sync::atomic::AtomicBool,
    /// What a user thread costs its process's budget, given back when it is off its CPU.
    charge: Mutex<Option<crate::mm::budget::Charge>>,
    /// The kernel RSP saved by the context switch while the thread is not running.
    saved_rsp: UnsafeCell<u64>,
    state: AtomicU8,
    /// A user thread's FS/GS selectors and bases while it is switched out.
    user_segments: UnsafeCell<UserSegments>,
    /// Inbox and pending reply of synchronous IPC.
    pub ipc: crate::ipc::ThreadIpc,
    /// How the thread ended (`abi::thread_exit`), for `thread_wait`.
    exit_status: core::sync::atomic::AtomicU64,
    /// A user thread's x87/SSE/AVX registers while it is switched out (`None`: a kernel
    /// thread, which has none).
    fpu: UnsafeCell<Option<FpuState>>,
}

// SAFETY: `saved_rsp`, `user_segments` and `fpu` are only touched by the context switch on the
// thread's home CPU, with interrupts disabled; everything else is atomic or immutable.
unsafe impl Sync for Thread {}
unsafe impl Send for Thread {}

impl Thread {
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Ready,
            1 => State::Running,
            2 => State::Sleeping,
            3 => State::Blocked,
            _ => State::Dead,
        }
    }
    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }
    /// Records why the thread ends (before it does).
    pub fn set_exit_status(&self, status: u64) {
        self.exit_status.store(status, Ordering::Release);
    }
    pub fn exit_status(&self) -> u64 {
        self.exit_status.load(Ordering::Acquire)
    }
    pub fn kernel_stack(&self) -> KernelStack {
        self.kstack
    }
}

impl Thread {
    /// A dead thread is off its CPU for good: its stack, FPU area and charge go back now,
    /// not when the last reference to it (a thread capability, a waiter) is dropped.
    fn release_resources(&self) {
        if !self.stack_released.swap(true, Ordering::AcqRel) {
            KernelStack::release(self.kstack);
        }
        // SAFETY: the thread is dead and no longer running anywhere; only the context switch
        // touched its FPU slot, and it never will again.
        drop(unsafe { (*self.fpu.get()).take() });
        drop(self.charge.lock().take());
    }
}

impl Drop for Thread {
    fn drop(&mut self) {
        if !self.stack_released.swap(true, Ordering::AcqRel) {
            KernelStack::release(self.kstack);
        }
    }
}

struct CpuSched {
    run: RunQueue<Arc<Thread>>,
    sleep: SleepQueue<Arc<Thread>>,
    current: Option<Arc<Thread>>,
    /// The thread switched away from, dropped by the next one once it runs on its own stack.
    previous: Option<Arc<Thread>>,
    /// Threads homed here and not dead, for placement.
    load: usize,
    /// Where the idle loop's RSP is kept while a thread runs.
    idle_rsp: u64,
    /// Where a dead thread's last RSP goes (never resumed).
    discard_rsp: u64,
    slice_left: u32,
}

impl CpuSched {
    const fn new() -> Self {
        Self {
            run: RunQueue::new(),
            sleep: SleepQueue::new(),
            current: None,
            previous: None,
            load: 0,
            idle_rsp: 0,
            discard_rsp: 0,
            slice_left: SLICE_TICKS,
        }
    }
}

/// Timer ticks a thread runs before another ready thread on its CPU gets a turn.
const SLICE_TICKS: u32 = 2;

static SCHED: [Mutex<CpuSched>; smp::MAX_CPUS] = [const { Mutex::new(CpuSched::new()) }; smp::MAX_CPUS];

/// The scheduler state of `cpu`, locked with interrupts off: the timer interrupt takes the same
/// lock (`tick`), so holding it with interrupts on would deadlock against our own timer.
fn with_sched<R>(cpu: usize, f: impl FnOnce(&mut CpuSched) -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut SCHED[cpu].lock()))
}
static NEXT_TID: AtomicU64 = AtomicU64::new(1);
/// Whether a CPU's `previous` slot holds a thread for `finish_switch` to drop. Touched only by
/// that CPU, with interrupts off (the switch sets it, the switched-to context clears it).
static PREVIOUS_PENDING: [core::sync::atomic::AtomicBool; smp::MAX_CPUS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; smp::MAX_CPUS];

/// The thread running on this CPU (`None` while idle).
pub fn current() -> Option<Arc<Thread>> {
    with_sched(percpu::this().cpu_index, |s| s.current.clone())
}

fn pick_cpu(cpu: Option<usize>) -> usize {
    cpu.unwrap_or_else(|| least_loaded((0..smp::online()).map(|c| with_sched(c, |s| s.load))))
}

/// Reserves a new thread's place on `cpu`: counted in its load, with room for it in the run
/// and sleep queues, so that nothing the thread does later (waking, sleeping, a wake-up from
/// an interrupt) makes them allocate. False, with nothing changed, if the heap cannot make the
/// room. Undone by `release_place`, or by the thread's end (`exit_current`).
fn reserve_place(cpu: usize) -> bool {
    with_sched(cpu, |s| {
        let total = s.load + 1;
        if !s.run.reserve(total) || !s.sleep.reserve(total) {
            return false;
        }
        s.load = total;
        true
    })
}

fn release_place(cpu: usize) {
    with_sched(cpu, |s| s.load -= 1);
}

/// Queues a thread made by `new_thread` (its place is reserved: no allocation).
fn enqueue_new(thread: Arc<Thread>) {
    let cpu = thread.cpu;
    with_sched(cpu, |s| s.run.push(thread));
    kick(cpu);
}

/// Makes CPU `cpu` look at its run queue soon.
fn kick(cpu: usize) {
    if cpu != percpu::this().cpu_index {
        apic::send_ipi(smp::apic_id(cpu), vector::IPI_WAKE);
    }
}

/// Builds a kernel stack whose first switch-in `ret`s to `first_entry` with `r12`/`r13` set.
fn new_thread(
    process: Option<Arc<Process>>,
    cpu: Option<usize>,
    frame: Option<TrapFrame>,
    fpu: Option<FpuState>,
    first_entry: u64,
    r12: u64,
    r13: u64,
    charge: Option<crate::mm::budget::Charge>,
) -> Option<Arc<Thread>> {
    let cpu = pick_cpu(cpu);
    if !reserve_place(cpu) {
        return None;
    }
    let Ok(kstack) = KernelStack::allocate() else {
        release_place(cpu);
        return None;
    };
    let mut sp = kstack.top;
    if let Some(frame) = frame {
        sp -= core::mem::size_of::<TrapFrame>() as u64;
        // SAFETY: the stack is fresh, mapped and owned by this new thread.
        unsafe { (sp as *mut TrapFrame).write(frame) };
    }
    // The context switch pops r15, r14, r13, r12, rbx, rbp, then returns.
    let switch_frame: [u64; 7] = [0, 0, r13, r12, 0, 0, first_entry];
    sp -= core::mem::size_of_val(&switch_frame) as u64;
    // SAFETY: as above; the frame lies below any TrapFrame written.
    unsafe { (sp as *mut [u64; 7]).write(switch_frame) };
    let thread = crate::fallible::try_arc(Thread {
        tid: NEXT_TID.fetch_add(1, Ordering::Relaxed),
        process,
        cpu,
        kstack,
        stack_released: core::sync::atomic::AtomicBool::new(false),
        charge: Mutex::new(charge),
        saved_rsp: UnsafeCell::new(sp),
        state: AtomicU8::new(State::Ready as u8),
        user_segments: UnsafeCell::new(UserSegments::default()),
        ipc: Default::default(),
        exit_status: core::sync::atomic::AtomicU64::new(abi::thread_exit::EXITED),
        fpu: UnsafeCell::new(fpu),
    });
    match thread {
        Ok(t) => Some(t),
        // Dropping the refused value gives its stack (`Thread`'s drop) and charge back.
        Err(refused) => {
            drop(refused);
            release_place(cpu);
            None
        }
    }
}

/// A user thread of `process` that starts at `entry` with `rsp`, RDI = `args[0]`, RSI = `args[1]`.
pub fn spawn_user(process: &Arc<Process>, entry: u64, rsp: u64, args: [u64; 2], cpu: Option<usize>) -> Option<Arc<Thread>> {
    let frame = TrapFrame {
        rip: entry,
        cs: gdt::USER_CS.0 as u64,
        rflags: 0x202, // IF, and the always-one bit 1
        rsp,
        ss: gdt::USER_SS.0 as u64,
        rdi: args[0],
        rsi: args[1],
        ..Default::default()
    };
    let charge = crate::mm::budget::Charge::new(&process.budget, crate::mm::budget::Kind::Threads, crate::mm::account::thread_cost()).ok()?;
    process.thread_started();
    // Every new user thread starts from the initial FPU state, not from its CPU's registers.
    let t = match FpuState::new().and_then(|fpu| new_thread(Some(process.clone()), cpu, Some(frame), Some(fpu), entry::first_entry_to_user(), 0, 0, Some(charge))) {
        Some(t) => t,
        None => {
            process.thread_ended(None);
            return None;
        }
    };
    if !process.add_thread(&t) {
        release_place(t.cpu);
        drop(t);
        process.thread_ended(None);
        return None;
    }
    enqueue_new(t.clone());
    Some(t)
}

/// A kernel thread running `f(arg)` on `cpu` (or the least-loaded CPU).
pub fn spawn_kernel(f: extern "C" fn(u64), arg: u64, cpu: Option<usize>) -> Option<Arc<Thread>> {
    let t = new_thread(None, cpu, None, None, kernel_thread_first_entry as *const () as u64, f as *const () as u64, arg, None)?;
    enqueue_new(t.clone());
    Some(t)
}

// SAFETY: `sched_context_switch` is called only by `schedule` with interrupts off, a valid save
// slot and an RSP that was saved by this routine or built by `new_thread` in the same layout
// (six callee-saved registers, then the return address).
core::arch::global_asm!(
    ".pushsection .text.sched, \"ax\"",
    // sched_context_switch(save: *mut u64, next_rsp: u64): saves the callee-saved registers
    // and RSP of the running context, resumes the one whose RSP is `next_rsp`.
    ".global sched_context_switch",
    "sched_context_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    // A new kernel thread: r12 = function, r13 = argument.
    "kernel_thread_first_entry:",
    "    call {finish}",
    "    mov rdi, r13",
    "    call r12",
    "    call {exit}",
    "    ud2",
    ".popsection",
    finish = sym finish_switch,
    exit = sym kernel_thread_exit,
);

extern "C" {
    fn sched_context_switch(save: *mut u64, next_rsp: u64);
    fn kernel_thread_first_entry();
}

extern "C" fn kernel_thread_exit() -> ! {
    exit_current()
}

/// Runs on the new context's stack right after every switch: drops the previous thread's
/// reference (freeing a dead thread, whose stack is no longer in use).
#[inline]
pub extern "C" fn finish_switch() {
    let cpu = percpu::this().cpu_index;
    // Only `switch` leaves a previous thread behind (a direct switch hands its own reference
    // on): without one, there is nothing to lock for.
    if PREVIOUS_PENDING[cpu].load(Ordering::Relaxed) {
        drop_previous(cpu);
    }
}

#[inline(never)]
fn drop_previous(cpu: usize) {
    PREVIOUS_PENDING[cpu].store(false, Ordering::Relaxed);
    let prev = with_sched(cpu, |s| s.previous.take());
    if let Some(p) = prev.as_ref().filter(|p| p.state() == State::Dead) {
        p.release_resources();
        if let Some(process) = &p.process {
            process.thread_gone();
        }
    }
    drop(prev);
}

/// Switches to the next ready thread of this CPU, or to the idle loop if there is none. The
/// current thread goes back on the queue if it is still runnable.
pub fn schedule() {
    switch(None);
}

/// The IPC fastpath: switches directly to `target`, a thread blocked on this CPU that was
/// just handed a message, without queueing it. False (nothing done) if `target` lives on
/// another CPU or is not blocked; the caller then wakes it the ordinary way.
pub fn switch_to(target: &Arc<Thread>) -> bool {
    if target.cpu != percpu::this().cpu_index || target.state() != State::Blocked {
        return false;
    }
    switch(Some(target))
}

/// Marks the calling thread running again after it marked itself blocked but found its
/// wait already satisfied.
pub fn mark_running(me: &Arc<Thread>) {
    with_sched(me.cpu, |_| {
        if me.state() == State::Blocked {
            me.set_state(State::Running);
        }
    });
}

/// Switches away from the current context: to `direct` if given, else to the next ready
/// thread or the idle loop. If `direct` is no longer blocked (checked under the lock), nothing
/// happens and the result is false; otherwise the result is whether `direct` was switched to.
fn switch(direct: Option<&Arc<Thread>>) -> bool {
    let mut switched_direct = false;
    let were_enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    let me = percpu::this();
    let cpu = me.cpu_index;
    let (save, next_rsp) = {
        let mut s = SCHED[cpu].lock();
        if direct.is_some_and(|t| t.state() != State::Blocked) {
            drop(s);
            if were_enabled {
                x86_64::instructions::interrupts::enable();
            }
            return false;
        }
        let prev = s.current.take();
        if let Some(p) = &prev {
            if p.state() == State::Running {
                p.set_state(State::Ready);
                s.run.push(p.clone());
            }
        }
        let next = match direct {
            Some(t) => {
                switched_direct = true;
                Some(t.clone())
            }
            None => s.run.pop(),
        };
        s.slice_left = SLICE_TICKS;
        me.need_resched.store(false, Ordering::Relaxed);
        if let (Some(p), Some(n)) = (&prev, &next) {
            if Arc::ptr_eq(p, n) {
                n.set_state(State::Running);
                s.current = next;
                drop(s);
                if were_enabled {
                    x86_64::instructions::interrupts::enable();
                }
                return switched_direct;
            }
        }
        let save: *mut u64 = match &prev {
            Some(p) if p.state() == State::Dead => &mut s.discard_rsp,
            Some(p) => p.saved_rsp.get(),
            None => &mut s.idle_rsp,
        };
        if let Some(n) = &next {
            n.set_state(State::Running);
        }
        // SAFETY: interrupts are off; `prev` ran on this CPU until now and `next` (ready or
        // blocked, claimed under the lock) runs nowhere.
        unsafe { exchange_context(me, prev.as_deref(), next.as_deref()) };
        let next_rsp = match &next {
            // SAFETY: a thread not running anywhere has its RSP saved (or its initial one).
            Some(n) => unsafe { *n.saved_rsp.get() },
            None => s.idle_rsp,
        };
        if prev.is_none() && next.is_none() {
            drop(s);
            if were_enabled {
                x86_64::instructions::interrupts::enable();
            }
            return false;
        }
        s.current = next;
        PREVIOUS_PENDING[cpu].store(prev.is_some(), Ordering::Relaxed);
        s.previous = prev;
        (save, next_rsp)
    };
    // SAFETY: `save` outlives the switch (a thread's own slot, kept alive by `previous`, or a
    // per-CPU slot in a static); `next_rsp` was saved by the same switch or built by
    // `new_thread`. Interrupts are off, so nothing on this CPU observes the half-switched state.
    unsafe { sched_context_switch(save, next_rsp) };
    finish_switch();
    if were_enabled {
        x86_64::instructions::interrupts::enable();
    }
    switched_direct
}

/// Leaves `prev`'s user state (FS/GS, FPU registers) in its slots and loads `next`'s, with the
/// kernel stack, address space, I/O bitmap and killed flag `next` runs with (the kernel's
/// address space for a kernel thread or the idle loop).
///
/// # Safety
/// Interrupts are off on this CPU (`cpu`); `prev` ran here until now, so the live FS/GS and
/// FPU state is its own; `next` is not running anywhere, so its saved state is stable.
#[inline(always)]
unsafe fn exchange_context(cpu: &percpu::PerCpu, prev: Option<&Thread>, next: Option<&Thread>) {
    let mut live = None;
    if let Some(p) = prev.filter(|p| p.process.is_some() && p.state() != State::Dead) {
        let segments = UserSegments::save();
        live = Some(segments);
        // SAFETY: per the contract; only the context switch touches these slots.
        unsafe {
            *p.user_segments.get() = segments;
            if let Some(fpu) = (*p.fpu.get()).as_mut() {
                fpu.save();
            }
        }
    }
    let process = next.and_then(|n| n.process.as_deref());
    cpu.current_killed.store(process.map_or(core::ptr::null_mut(), |p| p.killed_flag() as *const _ as *mut _), Ordering::Relaxed);
    cpu.current_thread.store(next.map_or(core::ptr::null_mut(), |n| n as *const Thread as *mut _), Ordering::Relaxed);
    let Some(n) = next else {
        paging::switch_to(paging::kernel_pml4());
        return;
    };
    entry::set_kernel_stack(cpu.cpu_index, n.kstack.top);
    match process {
        Some(p) => {
            // The set only grows: a look first spares the locked write on every switch.
            if !p.ran_on.contains(cpu.cpu_index) {
                p.ran_on.insert(cpu.cpu_index);
            }
            // SAFETY: ring 0, interrupts off; `n` is not running anywhere, so its saved state
            // is stable, and it holds selectors it could load itself.
            unsafe {
                (*n.user_segments.get()).restore(live.as_ref());
                if let Some(fpu) = (*n.fpu.get()).as_ref() {
                    fpu.restore();
                }
            }
            paging::switch_to(p.pml4());
            p.load_io_ports(cpu.cpu_index);
        }
        None => paging::switch_to(paging::kernel_pml4()),
    }
}

/// The running thread without locking the scheduler or touching its reference count (the
/// IPC fastpath's view of itself).
///
/// # Safety
/// The reference is used only by the running thread itself, and not after it has ended: its
/// CPU's `current` slot keeps it alive while it runs, and while it is switched out someone
/// who will switch back to it holds it (a queue, a reply capability, a run queue).
#[inline]
pub unsafe fn current_ref<'a>() -> Option<&'a Thread> {
    let t = percpu::this().current_thread.load(Ordering::Relaxed) as *const Thread;
    // SAFETY: non-null is the running thread, alive per the contract.
    unsafe { t.as_ref() }
}

/// This CPU's scheduler, locked, for the IPC fastpath's direct switch: it checks a partner's
/// state and claims it under this lock, so no wake-up from another CPU interleaves.
pub struct CpuLock {
    guard: spin::MutexGuard<'static, CpuSched>,
    cpu: &'static percpu::PerCpu,
}

impl CpuLock {
    /// Locks this CPU's scheduler; interrupts must be off (the timer takes the same lock).
    #[inline]
    pub fn this() -> Self {
        debug_assert!(!x86_64::instructions::interrupts::are_enabled());
        let cpu = percpu::this();
        CpuLock { guard: SCHED[cpu.cpu_index].lock(), cpu }
    }

    /// Whether `t` waits blocked on this CPU: a partner the fastpath may switch to.
    pub fn blocked_here(&self, t: &Thread) -> bool {
        t.cpu == self.cpu.cpu_index && t.state() == State::Blocked
    }

    /// Marks `me`, the running thread, blocked, unless its process is being killed (then
    /// nothing changes and the result is false). As in `block_unless_killed`: the state is
    /// stored before `killed` is read, so either we see the kill or the killer sees us blocked
    /// and wakes us (after this lock is released).
    pub fn block_current_unless_killed(&self, me: &Thread) -> bool {
        me.set_state(State::Blocked);
        core::sync::atomic::fence(Ordering::SeqCst);
        if me.process.as_ref().is_some_and(|p| p.is_killed()) {
            me.set_state(State::Running);
            return false;
        }
        true
    }

    /// Undoes `block_current_unless_killed` when the fastpath gives up after all: false.
    pub fn unblock(&self, me: &Thread) -> bool {
        me.set_state(State::Running);
        false
    }

    /// The running thread's own reference, out of the `current` slot: the fastpath moves it
    /// to whoever will switch back to it (a reply capability, an endpoint's queue).
    pub fn take_current(&mut self) -> Option<Arc<Thread>> {
        self.guard.current.take()
    }

    /// Switches from `me` (the running thread, blocked by `block_current_unless_killed`,
    /// whose reference `take_current` handed on) straight to `next`, a thread `blocked_here`
    /// said waits on this CPU: no run queue, no scheduler decision, the time slice carried
    /// on. Returns, with interrupts still off, when a switch (direct or not) resumes `me`.
    pub fn switch_direct(mut self, me: &Thread, next: Arc<Thread>) {
        debug_assert!(self.blocked_here(&next) && self.guard.current.is_none());
        next.set_state(State::Running);
        // SAFETY: interrupts are off (`this`); `me` ran here until now; `next` was blocked
        // here, checked under this lock, so it runs nowhere.
        unsafe { exchange_context(self.cpu, Some(me), Some(&next)) };
        // SAFETY: `next` is switched out, so its saved RSP is stable.
        let next_rsp = unsafe { *next.saved_rsp.get() };
        self.guard.current = Some(next);
        drop(self.guard);
        // SAFETY: `me`'s save slot outlives the switch (whoever holds `me` keeps it alive);
        // `next_rsp` was saved by a context switch of `next`. Interrupts stay off, so nothing on
        // this CPU sees the half-switched state.
        unsafe { sched_context_switch(me.saved_rsp.get(), next_rsp) };
        finish_switch();
    }
}

/// The timer's part: wake sleepers whose time has come, and count down the time slice.
pub fn tick() {
    let me = percpu::this();
    let now = me.ticks.load(Ordering::Relaxed);
    let mut guard = SCHED[me.cpu_index].lock(); // interrupts are off: we are the timer
    let s = &mut *guard;
    for t in s.sleep.expire(now) {
        t.set_state(State::Ready);
        s.run.push(t);
    }
    s.slice_left = s.slice_left.saturating_sub(1);
    if s.slice_left == 0 && !s.run.is_empty() {
        me.need_resched.store(true, Ordering::Relaxed);
    }
}

/// Whether this CPU has a thread waiting to run (the idle loop's question).
pub fn has_ready() -> bool {
    with_sched(percpu::this().cpu_index, |s| !s.run.is_empty())
}

/// Sleeps the current thread for at least `ticks` timer ticks.
/// A wake-up meant for another wait (a late IPC delivery) does not cut the sleep short; a
/// kill does.
pub fn sleep_ticks(ticks: u64) {
    let me = percpu::this();
    let Some(cur) = current() else { return };
    let deadline = me.ticks.load(Ordering::Relaxed) + ticks.max(1);
    while me.ticks.load(Ordering::Relaxed) < deadline && !cur.process.as_ref().is_some_and(|p| p.is_killed()) {
        with_sched(me.cpu_index, |s| {
            cur.set_state(State::Sleeping);
            s.sleep.insert(deadline, cur.clone());
        });
        schedule();
    }
}

/// Like [`block_current`], unless the thread's process is being killed: then it stays
/// running and the result is false. The state is stored before `killed` is read, and `kill`
/// stores `killed` before it reads thread states (both with a full fence), so either the
/// waiter sees the kill or the killer sees the thread blocked and wakes it.
pub fn block_unless_killed(cur: &Arc<Thread>) -> bool {
    cur.set_state(State::Blocked);
    core::sync::atomic::fence(Ordering::SeqCst);
    if cur.process.as_ref().is_some_and(|p| p.is_killed()) {
        mark_running(cur);
        return false;
    }
    true
}

/// Blocks the current thread until `wake` is called for it. The caller has made itself
/// findable by the waker (under the waker's lock) before calling this.
pub fn block_current(cur: &Arc<Thread>) {
    cur.set_state(State::Blocked);
}

/// Makes a sleeping or blocked thread ready (from any CPU).
pub fn wake(t: &Arc<Thread>) {
    let woken = with_sched(t.cpu, |s| {
        match t.state() {
            State::Blocked => {}
            State::Sleeping => {
                s.sleep.drain_where(|x| Arc::ptr_eq(x, t), drop);
            }
            _ => return false,
        }
        t.set_state(State::Ready);
        // A blocked thread may still be on its way out of `schedule`'s caller on its own
        // CPU; queueing it is still right: its CPU either finds it running (next == prev) or
        // switches to it later.
        if !s.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, t)) {
            s.run.push(t.clone());
        } else {
            t.set_state(State::Running);
        }
        true
    });
    if woken {
        kick(t.cpu);
    }
}

/// Wakes every sleeping or blocked thread of `process` (it is being killed).
pub fn wake_all_of(process: &Arc<Process>) {
    for cpu in 0..smp::online() {
        // Straight from the sleep queue to the run queue: both have room for every thread
        // of this CPU (`reserve_place`), so nothing allocates on the way.
        let taken = with_sched(cpu, |s| {
            let of_process = |t: &Arc<Thread>| t.process.as_ref().is_some_and(|p| Arc::ptr_eq(p, process));
            s.sleep.drain_where(of_process, |t| {
                t.set_state(State::Ready);
                s.run.push(t);
            })
        });
        if taken > 0 || process.ran_on.contains(cpu) {
            kick(cpu);
        }
    }
    // Threads blocked in IPC or a wait notice the kill and withdraw.
    process.for_each_thread(|t| {
        if t.state() == State::Blocked {
            wake(t);
        }
    });
    process.wake_waiter();
}

/// Ends the current thread; never returns.
pub fn exit_current() -> ! {
    x86_64::instructions::interrupts::disable();
    let cur = current().expect("exit_current outside a thread");
    cur.set_state(State::Dead);
    crate::ipc::thread_exiting(&cur);
    with_sched(cur.cpu, |s| s.load -= 1);
    if let Some(p) = &cur.process {
        p.thread_ended(Some(&cur));
    }
    drop(cur);
    schedule();
    unreachable!("a dead thread was scheduled again");
}

/// On the way back to user space: end the thread if its process is being killed, and give
/// the CPU away if the time slice is over.
#[inline]
pub fn before_user_return() {
    let me = percpu::this();
    let killed = me.current_killed.load(Ordering::Relaxed);
    // SAFETY: a non-null pointer is the running thread's process's flag: the thread holds an
    // Arc of that process while it runs, and the switch resets the pointer before it stops.
    if !killed.is_null() && unsafe { (*killed).load(Ordering::Acquire) } {
        if let Some(cur) = current() {
            cur.set_exit_status(abi::thread_exit::PROCESS_ENDED);
            drop(cur);
            exit_current();
        }
    }
    if me.need_resched.load(Ordering::Relaxed) {
        schedule();
    }
}

/// One step of an idle context (a CPU's boot stack, or the BSP waiting in a scenario): run ready
/// threads if there are any, else sleep until the next interrupt.
pub fn idle_once() {
    // Nothing else to do here: give the frames of ended threads' stacks back (only where
    // interrupts are on: `smp::idle` calls this with them off).
    crate::mm::kvm::reclaim_stacks();
    x86_64::instructions::interrupts::disable();
    if has_ready() {
        schedule();
        x86_64::instructions::interrupts::enable();
    } else {
        // STI;HLT: an interrupt between the check and HLT still wakes us.
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}
