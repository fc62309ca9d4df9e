//! Processes: an address space, its threads, and how the process ends.

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;
use x86_64::instructions::interrupts::without_interrupts;

use super::thread::{self, Thread};
use crate::arch::x86_64::smp::CpuSet;
use crate::mm::aspace::{AddressSpace, UserAccess};
use crate::mm::budget::{Budget, Charge, Kind};
use crate::klog_limit::{Admit, LineBudget};
use abi::layout::{USER_MAP_BASE, USER_STACK_SIZE, USER_STACK_TOP};

static NEXT_PID: AtomicU64 = AtomicU64::new(1);
/// I/O-port ranges one process may have open.
const MAX_IO_RANGES: usize = 8;

pub struct Process {
    pub pid: u64,
    pub name: String,
    pml4: u64,
    pub aspace: Mutex<AddressSpace>,
    live_threads: AtomicUsize,
    /// Threads created and not yet off their CPU after ending: the address space is freed
    /// when this reaches zero (`thread_gone`).
    unreaped_threads: AtomicUsize,
    killed: AtomicBool,
    /// Every thread has ended.
    finished: AtomicBool,
    /// ... and everything the process held is freed and back with its budget's owner.
    reclaimed: AtomicBool,
    /// What it draws memory from (`mm::budget`): its own, carved from its creator's, or the
    /// root budget for the root task and the kernel's test programs.
    pub budget: Arc<Budget>,
    /// The charge for its fixed tables, given back when it is reclaimed.
    tables_charge: Mutex<Option<Charge>>,
    exit_code: AtomicI64,
    /// A thread blocked in `wait_threads`.
    waiter: Mutex<Option<Arc<Thread>>>,
    /// Next address `map` hands out.
    pub next_map: Mutex<u64>,
    /// Ranges `map` reserved: their pages are mapped on first touch.
    pub demand: Mutex<crate::mm::regions::RegionSet>,
    /// Page faults resolved by mapping a reserved page.
    pub demand_faults: AtomicU64,
    /// CPUs that have run (and may cache translations of) this address space.
    pub ran_on: CpuSet,
    /// Threads killed by a fault, and a bit per exception vector that killed one.
    pub faults: AtomicUsize,
    fault_vectors: AtomicU64,
    /// Benchmark opt-ins (resumable INT3 and page faults) and their counts.
    #[cfg(feature = "testing")]
    pub bench: crate::testing::bench::BenchState,
    /// The capabilities this process holds.
    pub caps: Mutex<crate::ipc::CapTable>,
    /// Endpoints it created: they close when it ends.
    pub owned_endpoints: Mutex<Vec<Weak<crate::ipc::Endpoint>>>,
    /// I/O-port ranges (base, length) enabled, each with the capability that allows it.
    io_ports: Mutex<Vec<((u16, u16), crate::ipc::Cap)>>,
    /// Whether `io_ports` was ever non-empty: a switch to a process without ports into a CPU
    /// whose bitmap is closed has nothing to load.
    io_ports_granted: core::sync::atomic::AtomicBool,
    /// Its threads (to wake blocked ones when it is killed).
    threads: Mutex<Vec<Weak<Thread>>>,
    /// Signalled when it ends (`spawn`'s `exit_notify`).
    pub exit_notify: Mutex<Option<(Arc<crate::ipc::Notification>, u64)>>,
    /// Threads blocked in `process_wait` on it.
    exit_waiters: Mutex<Vec<Arc<Thread>>>,
    /// Whether it was started as a server (listed in READY).
    pub is_server: AtomicBool,
    /// Its share of the kernel log (`user_log_allowed`); taken with interrupts off.
    log_budget: Mutex<LineBudget>,
}

/// Why a program could not be started.
#[derive(Debug)]
pub enum SpawnError {
    Elf(elf::ElfError),
    /// A segment lies outside user space.
    NotUserAddress(u64),
    NoMemory,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Elf(e) => write!(f, "malformed ELF: {e}"),
            Self::NotUserAddress(a) => write!(f, "segment at {a:#x} is outside user space"),
            Self::NoMemory => write!(f, "out of memory"),
        }
    }
}

impl Process {
    /// Loads the ELF `image` into a new address space and starts its first thread with the
    /// argument string `arg`. A malformed image is refused and nothing is left behind.
    pub fn spawn(name: &str, image: &[u8], arg: &str) -> Result<Arc<Process>, SpawnError> {
        Self::spawn_with(name, image, arg, Vec::new(), None, crate::mm::account::root().clone())
    }

    /// Like `spawn`, with initial capabilities (handles `abi::cap::initial(0..)`) and the CPU of
    /// the first thread.
    pub fn spawn_with(
        name: &str,
        image: &[u8],
        arg: &str,
        caps: Vec<crate::ipc::Cap>,
        cpu: Option<usize>,
        budget: Arc<Budget>,
    ) -> Result<Arc<Process>, SpawnError> {
        let elf = elf::Elf::parse(image).map_err(SpawnError::Elf)?;
        let tables_charge = Charge::new(&budget, Kind::Process, crate::mm::account::process_cost()).map_err(|_| SpawnError::NoMemory)?;
        let mut aspace = AddressSpace::new(budget.clone()).map_err(|_| SpawnError::NoMemory)?;
        for seg in elf.segments() {
            if seg.end() > abi::layout::USER_END || seg.vaddr < 4096 {
                return Err(SpawnError::NotUserAddress(seg.vaddr));
            }
            let access = UserAccess { write: seg.flags.writable(), execute: seg.flags.executable() };
            aspace.write(seg.vaddr, seg.data, access).map_err(|_| SpawnError::NoMemory)?;
            // The rest of the segment (bss) is zero: make sure its pages exist.
            let mut va = (seg.vaddr + seg.data.len() as u64) & !0xfff;
            while va < seg.end() {
                aspace.ensure_page(va, access).map_err(|_| SpawnError::NoMemory)?;
                va += 4096;
            }
        }
        // The stack, with the argument string copied just above the initial RSP.
        let stack_bottom = USER_STACK_TOP - USER_STACK_SIZE;
        aspace.map_fresh(stack_bottom, USER_STACK_SIZE, UserAccess::DATA).map_err(|_| SpawnError::NoMemory)?;
        let arg = &arg.as_bytes()[..arg.len().min(1024)];
        let arg_at = (USER_STACK_TOP - arg.len() as u64) & !0xf;
        aspace.write(arg_at, arg, UserAccess::DATA).map_err(|_| SpawnError::NoMemory)?;
        let rsp = (arg_at - 64) & !0xf;

        let mut owned_name = String::new();
        owned_name.try_reserve_exact(name.len()).map_err(|_| SpawnError::NoMemory)?;
        owned_name.push_str(name);
        let process = crate::fallible::try_arc(Process {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            name: owned_name,
            pml4: aspace.pml4(),
            aspace: Mutex::new(aspace),
            live_threads: AtomicUsize::new(0),
            unreaped_threads: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            reclaimed: AtomicBool::new(false),
            budget,
            tables_charge: Mutex::new(Some(tables_charge)),
            exit_code: AtomicI64::new(0),
            waiter: Mutex::new(None),
            next_map: Mutex::new(USER_MAP_BASE),
            demand: Mutex::new(crate::mm::regions::RegionSet::new()),
            demand_faults: AtomicU64::new(0),
            ran_on: CpuSet::new(),
            faults: AtomicUsize::new(0),
            fault_vectors: AtomicU64::new(0),
            #[cfg(feature = "testing")]
            bench: Default::default(),
            caps: Mutex::new(crate::ipc::CapTable::new()),
            owned_endpoints: Mutex::new(Vec::new()),
            io_ports: Mutex::new(Vec::new()),
            io_ports_granted: core::sync::atomic::AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            exit_notify: Mutex::new(None),
            exit_waiters: Mutex::new(Vec::new()),
            is_server: AtomicBool::new(false),
            log_budget: Mutex::new(LineBudget::new()),
        })
        .map_err(|_| SpawnError::NoMemory)?;
        {
            let mut table = process.caps.lock();
            for cap in caps {
                table.insert(cap).map_err(|_| SpawnError::NoMemory)?;
            }
        }
        thread::spawn_user(&process, elf.entry(), rsp, [arg_at, arg.len() as u64], cpu).ok_or(SpawnError::NoMemory)?;
        log::info!("started {name} as pid {} (entry {:#x}, argument {:?})", process.pid, elf.entry(), core::str::from_utf8(arg).unwrap_or("?"));
        Ok(process)
    }

    /// A not-present fault at `addr` in a range `map` reserved: map the page (zeroed) and
    /// return true; false if the address was never reserved (the thread is at fault).
    pub fn demand_fault(&self, addr: u64) -> bool {
        let page = addr & !0xfff;
        if !self.demand.lock().contains(page) {
            return false;
        }
        match self.aspace.lock().map_fresh(page, 4096, UserAccess::DATA) {
            // Already mapped: another thread of ours faulted on the same page first.
            Ok(()) | Err(crate::arch::x86_64::paging::MapError::AlreadyMapped(_)) => {
                self.demand_faults.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Counts a thread killed by exception `vector`.
    pub fn record_fault(&self, vector: u64) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        self.fault_vectors.fetch_or(1 << (vector & 63), Ordering::Relaxed);
        // If no thread ends the process explicitly, it ends with this status: a process whose
        // threads all died of faults did not succeed.
        if !self.killed.load(Ordering::Acquire) {
            let _ = self.exit_code.compare_exchange(0, abi::FAULT_EXIT_BASE - vector as i64, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    pub fn fault_vectors(&self) -> u64 {
        self.fault_vectors.load(Ordering::Relaxed)
    }

    pub fn pml4(&self) -> u64 {
        self.pml4
    }

    /// The flag `is_killed` reads, for the per-CPU fast check (`PerCpu::current_killed`).
    pub fn killed_flag(&self) -> &AtomicBool {
        &self.killed
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub fn exit_code(&self) -> i64 {
        self.exit_code.load(Ordering::Acquire)
    }

    pub fn live_threads(&self) -> usize {
        self.live_threads.load(Ordering::Acquire)
    }

    pub(super) fn thread_started(&self) {
        self.live_threads.fetch_add(1, Ordering::AcqRel);
        self.unreaped_threads.fetch_add(1, Ordering::AcqRel);
    }

    /// Called as each thread ends (`None`: one that never ran); the last one finishes the
    /// process: its endpoints close, its capabilities go.
    pub(super) fn thread_ended(&self, t: Option<&Arc<Thread>>) {
        let left = self.live_threads.fetch_sub(1, Ordering::AcqRel) - 1;
        if left <= 1 {
            self.wake_waiter();
        }
        if left == 0 {
            self.finished.store(true, Ordering::Release);
            crate::ipc::process_ended(self);
            self.io_ports.lock().clear();
        }
        if t.is_none() {
            self.thread_gone();
        }
    }

    /// Called once a thread that ended is off its CPU for good (the context switch away from
    /// it has finished, so no CPU runs on this address space for it). After the last one, the
    /// process's memory is freed: interrupts may be off, and the work is bounded by what its
    /// budget allowed it to hold.
    pub(super) fn thread_gone(&self) {
        if self.unreaped_threads.fetch_sub(1, Ordering::AcqRel) == 1 && self.is_finished() {
            self.reclaim();
        }
    }

    /// Frees what the ended process held and closes its budget (what is left of it returns to
    /// its creator), then tells who waits for its end.
    fn reclaim(&self) {
        if self.reclaimed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.aspace.lock().teardown();
        *self.demand.lock() = crate::mm::regions::RegionSet::new();
        *self.threads.lock() = Vec::new();
        *self.caps.lock() = crate::ipc::CapTable::new();
        drop(self.tables_charge.lock().take());
        let peak = self.budget.usage().peak;
        let limit = self.budget.usage().limit;
        if !Arc::ptr_eq(&self.budget, crate::mm::account::root()) {
            self.budget.close();
        }
        let dropped = without_interrupts(|| self.log_budget.lock().take_dropped());
        let dropped = if dropped != 0 { alloc::format!(", {dropped} log lines dropped") } else { String::new() };
        log::info!(
            "{} (pid {}) exited with code {} (memory: peak {} KiB of {} KiB{dropped})",
            self.name,
            self.pid,
            self.exit_code(),
            peak.div_ceil(1024),
            limit.div_ceil(1024)
        );
        let notify = self.exit_notify.lock().take();
        if let Some((n, bits)) = notify {
            n.signal(bits);
        }
        for w in core::mem::take(&mut *self.exit_waiters.lock()) {
            thread::wake(&w);
        }
    }

    /// Whether the process has ended and everything it held is freed.
    pub fn is_reclaimed(&self) -> bool {
        self.reclaimed.load(Ordering::Acquire)
    }

    /// Records a new thread; false if the list cannot grow (no kernel heap left).
    pub(super) fn add_thread(&self, t: &Arc<Thread>) -> bool {
        let mut threads = self.threads.lock();
        threads.retain(|w| w.strong_count() > 0);
        if threads.try_reserve(1).is_err() {
            return false;
        }
        threads.push(Arc::downgrade(t));
        true
    }

    /// Calls `f` for each of its threads that still exists, without collecting them (no
    /// allocation: a kill must work when memory is short). Lock order: this list, then a
    /// CPU's scheduler (`f` may wake the thread).
    pub fn for_each_thread(&self, mut f: impl FnMut(&Arc<Thread>)) {
        for t in self.threads.lock().iter().filter_map(Weak::upgrade) {
            f(&t);
        }
    }

    /// The first of its threads that still exists and satisfies `pick`.
    pub fn find_thread(&self, mut pick: impl FnMut(&Thread) -> bool) -> Option<Arc<Thread>> {
        self.threads.lock().iter().filter_map(Weak::upgrade).find(|t| pick(t))
    }

    /// Blocks `me` until this process has ended; returns its exit code.
    pub fn wait_exit(&self, me: &Arc<Thread>) -> Result<i64, abi::Error> {
        loop {
            {
                let mut w = self.exit_waiters.lock();
                if self.is_reclaimed() {
                    thread::mark_running(me);
                    return Ok(self.exit_code());
                }
                if !thread::block_unless_killed(me) {
                    w.retain(|t| !Arc::ptr_eq(t, me));
                    return Err(abi::Error::PeerDied);
                }
                if !w.iter().any(|t| Arc::ptr_eq(t, me)) {
                    if w.try_reserve(1).is_err() {
                        thread::mark_running(me);
                        return Err(abi::Error::NoMemory);
                    }
                    w.push(me.clone());
                }
            }
            thread::schedule();
        }
    }

    /// Allows ports `base..base + len` to this process (from the next switch to it on) for
    /// as long as `cap`, the I/O-port capability that names them, is not revoked.
    pub fn enable_io_ports(&self, base: u16, len: u16, cap: crate::ipc::Cap) -> Result<(), abi::Error> {
        let mut ports = self.io_ports.lock();
        ports.retain(|(_, c)| c.is_valid());
        if ports.iter().any(|(r, c)| *r == (base, len) && alloc::sync::Arc::ptr_eq(c, &cap)) {
            return Ok(());
        }
        if ports.len() >= MAX_IO_RANGES || ports.try_reserve(1).is_err() {
            return Err(abi::Error::NoMemory);
        }
        ports.push(((base, len), cap));
        self.io_ports_granted.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes this CPU's TSS I/O bitmap allow exactly this process's ports. Called by the
    /// context switch (interrupts off) on the CPU that is switching to one of its threads.
    #[inline]
    pub fn load_io_ports(&self, cpu: usize) {
        if !self.io_ports_granted.load(Ordering::Acquire) && crate::arch::x86_64::cea::io_bitmap_closed(cpu) {
            return;
        }
        self.load_io_ports_slow(cpu);
    }

    fn load_io_ports_slow(&self, cpu: usize) {
        // Lock order: SCHED -> io_ports -> the CPU's loaded set; `ioport_enable` takes
        // io_ports -> loaded set. Only ranges whose capability is still in force open.
        let ports = self.io_ports.lock();
        let mut open = [(0u16, 0u16); MAX_IO_RANGES];
        let mut n = 0;
        for (range, cap) in ports.iter() {
            if cap.is_valid() && n < MAX_IO_RANGES {
                open[n] = *range;
                n += 1;
            }
        }
        crate::arch::x86_64::cea::load_io_ports(cpu, self.pid, &open[..n]);
    }

    pub(super) fn wake_waiter(&self) {
        if let Some(w) = self.waiter.lock().take() {
            thread::wake(&w);
        }
    }

    /// Ends every thread of the process, with `code` as its exit status (first caller wins).
    pub fn kill(self: &Arc<Self>, code: i64) {
        if !self.killed.swap(true, Ordering::AcqRel) {
            self.exit_code.store(code, Ordering::Release);
        }
        // Pairs with `block_unless_killed`: `killed` before the thread states are read.
        core::sync::atomic::fence(Ordering::SeqCst);
        thread::wake_all_of(self);
    }

    /// Blocks the calling thread (of this process) until it is the only one left.
    pub fn wait_others(self: &Arc<Self>, me: &Arc<Thread>) {
        loop {
            {
                let mut w = self.waiter.lock();
                if self.live_threads() <= 1 || self.is_killed() {
                    return;
                }
                *w = Some(me.clone());
                thread::block_current(me);
            }
            thread::schedule();
        }
    }
}

/// Whether a kernel log line that `process` caused (its `log` call, a fault of its own the
/// kernel reports or fixes up, a thread of it killed) may be printed now. Each process has a
/// token bucket (`klog_limit`: a burst of 64 lines, then 10 a second); a line refused is
/// counted, and the next line allowed is preceded by `pid N (name): M log lines dropped`.
/// Safe in interrupt and exception handlers (not NMI): no allocation, its lock taken with
/// interrupts off and never held across anything else.
pub fn user_log_allowed(process: &Process) -> bool {
    let now = crate::arch::x86_64::percpu::ticks_of(0);
    match without_interrupts(|| process.log_budget.lock().admit(now)) {
        Admit::No => false,
        Admit::Yes { dropped: 0 } => true,
        Admit::Yes { dropped } => {
            log::warn!(target: "klog", "pid {} ({}): {dropped} log lines dropped", process.pid, process.name);
            true
        }
    }
}

/// Log lines refused to `process` so far.
pub fn user_log_dropped(process: &Process) -> u64 {
    without_interrupts(|| process.log_budget.lock().dropped_total())
}
