//! The kernel's side of memory budgets (`budget`): the root budget, the kernel's reserve, and
//! what each kind of kernel object costs.
//!
//! **Who owns which memory.** The kernel owns its image, the frame bitmap, the per-CPU entry
//! areas and everything set up before the first process starts, and it keeps a *reserve*
//! ([`reserve_bytes`]): the heap's room to grow, the pool of ready kernel stacks, and a margin
//! for work nobody pays for (the log, run queues, an in-flight reply). Everything else is the
//! root budget, which `init` (the root task) spends directly; every other process spends a
//! budget carved out of its creator's (`spawn`'s `SpawnArgs::budget`). A process pays for the
//! frames of its address space, its threads, the endpoints and notifications it creates, the
//! message buffers it has in flight and its own fixed tables; it gets `NoMemory` at its limit
//! and nobody else notices. When it has ended and the last of its threads is off its CPU, its
//! address space and tables are freed and its budget closes: what it held returns to its
//! creator.

use alloc::sync::Arc;
use spin::Once;

use super::budget::Budget;
use super::kvm::{KSTACK_POOL, KSTACK_SIZE};

static ROOT: Once<Arc<Budget>> = Once::new();

/// A margin for kernel work nobody is charged for.
const MARGIN: u64 = 4 * 1024 * 1024;

/// What the kernel keeps back from the root budget, given `usable` bytes of RAM.
pub const fn reserve_bytes(usable: u64) -> u64 {
    super::heap::growth_ceiling(usable) + KSTACK_POOL as u64 * KSTACK_SIZE + MARGIN
}

/// The root budget: the memory free when it is first asked for (after every CPU is up, before
/// the first process starts) less the kernel's reserve.
pub fn root() -> &'static Arc<Budget> {
    ROOT.call_once(|| {
        let free = super::phys::free_frames() * 4096;
        let reserve = reserve_bytes(super::phys::usable_bytes());
        let limit = free.saturating_sub(reserve);
        log::info!("memory: {} MiB free, {} MiB kept by the kernel, {} MiB for processes", free >> 20, reserve >> 20, limit >> 20);
        Budget::root(limit)
    })
}

/// What one user thread costs: its kernel stack, FPU save area and thread state. (A message
/// buffer it sends is charged on its own while it is in flight, `budget::Kind::Messages`.)
pub fn thread_cost() -> u64 {
    KSTACK_SIZE + crate::arch::x86_64::fpu::config().size as u64 + core::mem::size_of::<crate::sched::Thread>() as u64 + 256
}

/// What a process costs before its first page: the process itself, a full capability table
/// and a full set of `map` ranges (both bounded, paid for in advance).
pub fn process_cost() -> u64 {
    core::mem::size_of::<crate::sched::Process>() as u64
        + abi::cap::SLOTS as u64 * 32
        + super::regions::MAX_RANGES as u64 * 16 * 2
}

/// What an endpoint or a notification costs (the object, its capability node, its share of
/// the owner's tables).
pub fn object_cost<T>() -> u64 {
    core::mem::size_of::<T>() as u64 + 128
}
